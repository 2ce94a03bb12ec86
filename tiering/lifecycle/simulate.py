"""Replay a :class:`~tiering.access.traces.Trace` through a placement policy and count what it would have served.

Ours (``policy:<stem>``) runs the production functions of :mod:`tiering.lifecycle.placement`: :func:`plan_placement`
at every midnight (UTC), :func:`plan_admission` for each new dataset, and, every ``promotion_interval_s``,
:func:`plan_promotions` over the datasets read since the last short pass. The baselines make the same
nightly decisions over the same capacities, each by its own rank, and admit a new dataset onto hot by
moving out their lowest-ranked residents (as a cache would):

``lru``     hot holds the most recently used datasets that fit.
``lfu``     hot holds the most used (uses ever, ties to the most recent).
``s3-it``   the S3 Intelligent-Tiering rule without a capacity: no use for 30 days -> warm, 90 -> archive, any
            use -> hot at the next pass; ``peak_hot_bytes`` says what hot it would need.
``s3-it-capped``  the same rule with hot capped: the most recently used of the datasets it wants hot.
``oracle``  knows the next day's reads: hot holds the most reads per byte of the coming day.

Tiers are hot (bounded), warm (unbounded) and an archive (unbounded); a read of an archived dataset is a
``cold_read`` (a restore) and the dataset comes back to warm at the end of its pass. Datasets that exist
before their first event start on warm. A move is any change of tier of an existing dataset (a new dataset's
first landing is not a move); a ping-pong is a move up within ``pingpong_days`` of a move down.
``usd_per_month`` is the mean over nights of the stored bytes priced by each tier's $/TiB-month.

Pure: the trace and the settings in, a dict out; no clock, no IO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from tiering.access.traces import DELETE, READ, Trace
from tiering.lifecycle.placement import (
    DAY,
    NO_TIER,
    DatasetTable,
    DecayedUses,
    Knobs,
    Placement,
    TiB,
    TierSpec,
    greedy_fit,
    plan_admission,
    plan_placement,
    plan_promotions,
)

BASELINES: tuple[str, ...] = ("lru", "lfu", "s3-it", "s3-it-capped", "oracle")
HOT, WARM, COLD = 0, 1, 2
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SimSettings:
    """How a replay runs, every default written down.

    Tier prices are the shape of an on-premise NVMe / HDD / tape site ($/TiB-month, restore $/TiB).
    """

    hot_usd_per_tib_month: float = 100.0
    warm_usd_per_tib_month: float = 20.0
    cold_usd_per_tib_month: float = 2.0
    cold_restore_usd_per_tib: float = 20.0
    #: reads of one dataset by one reader closer than this are one use
    session_s: float = 3600.0
    #: the short promotion pass of ours runs this often (None: nightly passes only)
    promotion_interval_s: float | None = 600.0
    #: ours: a dataset moved up stays at least this long (the policy's minimum residency, a floor)
    min_residency_days: float = 1.0
    #: a move up this soon after a move down is a ping-pong
    pingpong_days: float = 14.0
    #: S3 Intelligent-Tiering's idle days to infrequent access and to archive
    s3_it_warm_days: float = 30.0
    s3_it_archive_days: float = 90.0

    def tiers(self, hot_bytes: int | None, warm_bytes: int | None = None) -> tuple[TierSpec, ...]:
        return (
            TierSpec("hot", HOT, hot_bytes, self.hot_usd_per_tib_month),
            TierSpec("warm", WARM, warm_bytes, self.warm_usd_per_tib_month),
            TierSpec("cold", COLD, None, self.cold_usd_per_tib_month, archive=True,
                     restore_usd_per_tib=self.cold_restore_usd_per_tib),
        )


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    hot_requests: int = 0
    read_bytes: int = 0
    hot_bytes: int = 0
    cold_reads: int = 0
    bytes_moved: int = 0
    moves: int = 0
    pingpongs: int = 0
    peak_hot: int = 0
    usd: list[float] = field(default_factory=list)


class _Sim:
    """The state of one replay: every dataset's tier, its uses, and the counters."""

    def __init__(self, trace: Trace, tiers: Sequence[TierSpec], knobs: Knobs, settings: SimSettings) -> None:
        n = len(trace.names)
        self.trace, self.tiers, self.knobs, self.settings = trace, tuple(tiers), knobs, settings
        self.start = float(trace.t[0]) if len(trace) else 0.0
        self.size = trace.size.copy()
        self.tier = np.full(n, NO_TIER, dtype=np.int8)
        self.tier[trace.preexisting] = WARM
        self.active = trace.preexisting.copy()
        self.uses = DecayedUses(n, half_life_days=knobs.half_life_days, epoch=self.start)
        self.last_down = np.full(n, -np.inf)
        self.resident_until = np.zeros(n)
        self.c = _Counters()
        self.table = DatasetTable(size=self.size, tier=self.tier, uses=self.uses, active=self.active,
                                  resident_until=self.resident_until, ids=trace.names)

    def apply(self, target: npt.NDArray[np.int8], now: float) -> None:
        changed = np.flatnonzero((target != self.tier) & self.active & (target != NO_TIER))
        if changed.size == 0:
            return
        old = self.tier[changed]
        new = target[changed]
        moved = old >= 0
        self.c.moves += int(moved.sum())
        self.c.bytes_moved += int(self.size[changed[moved]].sum())
        up = changed[moved & (new < old)]
        self.c.pingpongs += int(((now - self.last_down[up]) < self.settings.pingpong_days * DAY).sum())
        self.last_down[changed[moved & (new > old)]] = now
        self.resident_until[changed[new < old]] = now + self.settings.min_residency_days * DAY
        self.tier[changed] = new

    def hot_used(self) -> int:
        return int(self.size[(self.tier == HOT) & self.active].sum())

    def sample_cost(self) -> None:
        usd = 0.0
        for tier in self.tiers:
            usd += self.size[(self.tier == tier.rank) & self.active].sum() / TiB * tier.usd_per_tib_month
        self.c.usd.append(float(usd))


class _Policy:
    """A placement policy as the replay drives it."""

    name = ""
    short_pass = False

    def nightly(self, sim: _Sim, now: float) -> npt.NDArray[np.int8]:
        raise NotImplementedError

    def admit(self, sim: _Sim, i: int, now: float) -> npt.NDArray[np.int8]:
        raise NotImplementedError

    def promote(self, sim: _Sim, now: float, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int8] | None:
        return None


class _Ours(_Policy):
    def __init__(self, name: str, short_pass: bool) -> None:
        self.name = name
        self.short_pass = short_pass

    def nightly(self, sim: _Sim, now: float) -> npt.NDArray[np.int8]:
        return plan_placement(sim.table, sim.tiers, sim.knobs, now=now).target

    def admit(self, sim: _Sim, i: int, now: float) -> npt.NDArray[np.int8]:
        return plan_admission(sim.table, sim.tiers, sim.knobs, now=now, index=i).target

    def promote(self, sim: _Sim, now: float, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int8] | None:
        plan: Placement = plan_promotions(sim.table, sim.tiers, sim.knobs, now=now, candidates=rows)
        return plan.target if plan.moves else None


class _Ranked(_Policy):
    """A baseline that fills hot by a priority (higher stays) and sends the rest to warm."""

    def __init__(self, name: str) -> None:
        self.name = name

    def priority(self, sim: _Sim, now: float) -> F64:
        if self.name == "lfu":
            return np.asarray(sim.uses.count + sim.uses.last_use / 1e12, dtype=np.float64)
        return sim.uses.last_use

    def wanted_hot(self, sim: _Sim, now: float) -> npt.NDArray[np.bool_]:
        return np.asarray(sim.active & np.isfinite(sim.uses.last_use))

    def nightly(self, sim: _Sim, now: float) -> npt.NDArray[np.int8]:
        target = np.where(sim.active, np.int8(WARM), np.int8(NO_TIER)).astype(np.int8)
        target[sim.tier == COLD] = COLD
        pri = self.priority(sim, now)
        rows = np.flatnonzero(self.wanted_hot(sim, now))
        rows = rows[np.argsort(-pri[rows], kind="stable")]
        cap = sim.tiers[HOT].capacity_bytes
        take = rows if cap is None else greedy_fit(rows, sim.size, float(cap))
        target[take] = HOT
        return target

    def admit(self, sim: _Sim, i: int, now: float) -> npt.NDArray[np.int8]:
        target = sim.tier.copy()
        target[i] = WARM
        cap = sim.tiers[HOT].capacity_bytes
        size = int(sim.size[i])
        if cap is None:
            target[i] = HOT
            return target
        if size > cap:
            return target
        pri = self.priority(sim, now)
        mine = pri[i]
        hot = np.flatnonzero((sim.tier == HOT) & sim.active)
        free = cap - int(sim.size[hot].sum())
        if size <= free:
            target[i] = HOT
            return target
        hot = hot[np.argsort(pri[hot], kind="stable")]
        cum = np.cumsum(sim.size[hot])
        k = int(np.searchsorted(cum, size - free, side="left"))
        if k < hot.size and pri[hot[k]] < mine:
            target[hot[: k + 1]] = WARM
            target[i] = HOT
        return target


class _S3IntelligentTiering(_Ranked):
    def nightly(self, sim: _Sim, now: float) -> npt.NDArray[np.int8]:
        target = super().nightly(sim, now)
        idle = now - sim.uses.last_use
        s = sim.settings
        target[sim.active & (idle >= s.s3_it_archive_days * DAY)] = COLD
        return target

    def wanted_hot(self, sim: _Sim, now: float) -> npt.NDArray[np.bool_]:
        idle = now - sim.uses.last_use
        return np.asarray(sim.active & (idle < sim.settings.s3_it_warm_days * DAY))


class _Oracle(_Ranked):
    """Knows every read of the day ahead: ranks by the next day's reads per byte."""

    def __init__(self, trace: Trace) -> None:
        super().__init__("oracle")
        reads = trace.op == READ
        self.read_t = trace.t[reads]
        self.read_ds = trace.ds[reads]
        self.n = len(trace.names)
        self._day: tuple[float, F64] | None = None

    def _next(self, now: float) -> F64:
        if self._day is None or self._day[0] != now:
            lo, hi = np.searchsorted(self.read_t, [now, now + DAY])
            counts = np.bincount(self.read_ds[lo:hi], minlength=self.n).astype(np.float64)
            self._day = (now, counts)
        return self._day[1]

    def priority(self, sim: _Sim, now: float) -> F64:
        return np.asarray(self._next(now) / np.maximum(sim.size, 1), dtype=np.float64)

    def wanted_hot(self, sim: _Sim, now: float) -> npt.NDArray[np.bool_]:
        return np.asarray(sim.active & (self.priority(sim, now) > 0))




def make_policy(name: str, trace: Trace, start: float, *, short_pass: bool = True) -> _Policy:
    """The policy called ``name``: ``policy:<stem>`` (ours) or one of :data:`BASELINES`."""
    if name.startswith("policy:"):
        return _Ours(name, short_pass)
    if name in ("lru", "lfu"):
        return _Ranked(name)
    if name in ("s3-it", "s3-it-capped"):
        return _S3IntelligentTiering(name)
    if name == "oracle":
        return _Oracle(trace)
    raise ValueError(f"unknown policy {name!r}")


def run(
    trace: Trace,
    policy: str,
    *,
    hot_bytes: int | None,
    knobs: Knobs | None = None,
    settings: SimSettings | None = None,
    warm_bytes: int | None = None,
) -> dict[str, Any]:
    """Replay ``trace`` through ``policy`` with ``hot_bytes`` of hot; the run's counters as a dict."""
    knobs = knobs or Knobs()
    settings = settings or SimSettings()
    if policy == "s3-it":
        hot_bytes = None
    tiers = settings.tiers(hot_bytes, warm_bytes)
    sim = _Sim(trace, tiers, knobs, settings)
    pol = make_policy(policy, trace, sim.start, short_pass=settings.promotion_interval_s is not None)
    _replay(sim, pol, settings)
    c = sim.c
    return {
        "name": policy,
        "capacity": {"hot": hot_bytes, "warm": warm_bytes, "cold": None},
        "requests": c.requests,
        "hot_hit_requests": c.hot_requests / c.requests if c.requests else 0.0,
        "hot_hit_bytes": c.hot_bytes / c.read_bytes if c.read_bytes else 0.0,
        "cold_reads": c.cold_reads,
        "bytes_moved": c.bytes_moved,
        "moves": c.moves,
        "pingpongs": c.pingpongs,
        "usd_per_month": sum(c.usd) / len(c.usd) if c.usd else 0.0,
        "peak_hot_bytes": c.peak_hot,
    }


def _replay(sim: _Sim, pol: _Policy, settings: SimSettings) -> None:
    trace = sim.trace
    if len(trace) == 0:
        return
    is_use = trace.uses(settings.session_s)
    origin = math.floor(sim.start / DAY) * DAY
    step = settings.promotion_interval_s if (pol.short_pass and settings.promotion_interval_s) else DAY
    seg = np.floor((trace.t - origin) / step).astype(np.int64)
    bounds = np.flatnonzero(np.diff(seg)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(trace)]])
    next_night = origin + DAY
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        seg_start = origin + float(seg[lo]) * step
        while next_night <= seg_start:
            _night(sim, pol, next_night)
            next_night += DAY
        _segment(sim, pol, lo, hi, is_use, now=min(seg_start + step, next_night))
    _night(sim, pol, next_night)


def _night(sim: _Sim, pol: _Policy, now: float) -> None:
    sim.apply(pol.nightly(sim, now), now)
    sim.c.peak_hot = max(sim.c.peak_hot, sim.hot_used())
    sim.sample_cost()


def _segment(sim: _Sim, pol: _Policy, lo: int, hi: int, is_use: npt.NDArray[np.bool_], *, now: float) -> None:
    trace = sim.trace
    op = trace.op[lo:hi]
    ds = trace.ds[lo:hi]
    t = trace.t[lo:hi]
    changes = np.flatnonzero(op != READ)
    for k in changes.tolist():
        i = int(ds[k])
        at = float(t[k])
        if op[k] == DELETE:
            sim.active[i] = False
            sim.tier[i] = NO_TIER
            continue
        sim.size[i] = max(int(sim.size[i]), int(trace.nbytes[lo + k]))
        sim.uses.record([i], [at])
        if not sim.active[i]:
            sim.active[i] = True
            sim.tier[i] = NO_TIER
            target = pol.admit(sim, i, at)
            placed = int(target[i])
            sim.tier[i] = placed if placed != NO_TIER else WARM
            target[i] = sim.tier[i]
            sim.apply(target, at)
    reads = np.flatnonzero((op == READ) & sim.active[ds])
    if reads.size:
        rds = ds[reads]
        where = sim.tier[rds]
        nbytes = trace.nbytes[lo:hi][reads]
        hit = where == HOT
        c = sim.c
        c.requests += int(reads.size)
        c.hot_requests += int(hit.sum())
        c.read_bytes += int(nbytes.sum())
        c.hot_bytes += int(nbytes[hit].sum())
        cold = np.unique(rds[where == COLD])
        if cold.size:
            c.cold_reads += int(cold.size)
            target = sim.tier.copy()
            target[cold] = WARM
            sim.apply(target, now)
    used = np.flatnonzero(is_use[lo:hi] & (op == READ))
    if used.size:
        sim.uses.record(ds[used], t[used])
    if pol.short_pass and reads.size:
        promoted = pol.promote(sim, now, np.unique(ds[reads]))
        if promoted is not None:
            sim.apply(promoted, now)


def capacity_bytes(trace: Trace, spec: str) -> int:
    """``10%`` of all the trace's dataset bytes, or a byte count (``5e12``)."""
    total = int(trace.size.sum())
    spec = spec.strip()
    if spec.endswith("%"):
        return int(total * float(spec[:-1]) / 100.0)
    return int(float(spec))


def simulate(
    trace: Trace,
    *,
    hot: str,
    policies: Sequence[str] = ("policy:default", *BASELINES),
    knobs: Knobs | None = None,
    settings: SimSettings | None = None,
) -> dict[str, Any]:
    """Every policy over ``trace`` with hot capacity ``hot`` (see :func:`capacity_bytes`): ``{"runs": [...]}``."""
    hot_bytes = capacity_bytes(trace, hot)
    runs = [run(trace, p, hot_bytes=hot_bytes, knobs=knobs, settings=settings) for p in policies]
    return {"runs": runs}


def with_knobs(knobs: Knobs, **changes: Any) -> Knobs:
    """``knobs`` with ``changes`` (validated again)."""
    return replace(knobs, **changes)
