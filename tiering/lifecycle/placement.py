"""Placement as ranking under capacity: pure functions from columnar facts, tiers, knobs and ``now`` to targets.

Every bounded tier holds the datasets with the highest score per byte that fit, filled hottest first. A dataset
that is not resident on a tier takes a resident's place only when the swap pays for its own copy: residents rank
with their score raised by :attr:`Knobs.hysteresis` and by the copy cost spread over :attr:`Knobs.payback_days`,
so a newcomer must beat them by that much (bytes moved are a cost, and nothing ping-pongs on noise). Floors
(pins, "never archive", minimum residency) are never broken; when floors alone do not fit a tier, the tier's
capacity wins and the dataset is reported in :attr:`Placement.conflicts`. Unbounded tiers split by economics: a
dataset goes to an archive tier only when it has been idle long enough and its expected restores cost less
than the storage it saves.

Three entry points share one score (:func:`score_per_gib`):

- :func:`plan_placement`: the nightly pass over every dataset.
- :func:`plan_promotions`: the short pass every few minutes: datasets used since the last pass move up, within a
  byte and move budget, displacing only residents they beat with the same hysteresis.
- :func:`plan_admission`: where a new dataset lands: the hottest tier with room after making room by rank.

The score is a decayed use count per byte (LRFU per byte): each use adds one to a counter that halves every
:attr:`Knobs.half_life_days`. :class:`DecayedUses` keeps it incrementally in forward-decay form (each use adds
``2 ** ((t - epoch) / half_life)``, read back by one multiplication), so recording a use and scoring 10^6
datasets are both a few array operations. Other scores from the literature are kept selectable
(:data:`SCORES`) so ``bench/placement.py`` can measure them side by side.

No IO, no clock: time is a parameter, in seconds since the Unix epoch (UTC). Sizes are bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tiering.errors import UsageError

DAY = 86_400.0
GiB = float(2**30)
TiB = float(2**40)
#: rank stored for a dataset that is on no tier yet (a new registration) or is gone
NO_TIER = -1
#: floor of a dataset without one: any tier will do
NO_FLOOR = 127
#: the smallest size a score divides by, so an empty dataset does not score infinity
MIN_SCORED_BYTES = 4096.0
#: forward-decay exponents are rebased before they reach this many half-lives (float64 tops out near 1024)
_REBASE_HALF_LIVES = 400.0

#: residents sorted at first by the short pass and admission (the rest only when a candidate needs more)
_PARTIAL_SORT = 512
#: selectable scores; see :func:`score_per_gib`
SCORES: tuple[str, ...] = ("lrfu", "gdsf", "recency-size", "lfu-size")

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]


class PlacementError(UsageError):
    """Placement inputs that do not agree (unknown score, tiers without a rank order, mismatched columns)."""

    reason = "placement"


@dataclass(frozen=True, slots=True)
class TierSpec:
    """One tier as placement sees it.

    ``rank`` 0 is the hottest. ``capacity_bytes`` None is unbounded. ``restore_usd_per_tib`` is what reading a
    TiB back from this tier costs (an archive's recall); ``restore_usd_per_request`` the fixed part per restore.
    """

    name: str
    rank: int
    capacity_bytes: int | None
    usd_per_tib_month: float
    archive: bool = False
    restore_usd_per_tib: float = 0.0
    restore_usd_per_request: float = 0.0


@dataclass(frozen=True, slots=True)
class Knobs:
    """The score's and the passes' settings, every default written down.

    Defaults were tuned with ``python -m bench.placement`` on the tuning traces only (bench/traces/README.md).
    """

    #: one of :data:`SCORES`
    score: str = "lrfu"
    #: a use's weight halves after this many days (lrfu); the counter in :class:`DecayedUses` must use the same
    half_life_days: float = 1.0
    #: value per byte is uses / size ** size_exponent: 1 ranks for requests served, 0 for bytes served
    size_exponent: float = 1.0
    #: a resident keeps its place unless a newcomer scores this fraction higher (noise guard)
    hysteresis: float = 0.5
    #: the copy of one GiB into a tier (and of the GiB it displaces out) costs as much as this many uses
    move_cost_uses_per_gib: float = 0.02
    #: a swap must repay its copies within this many days of the newcomer's extra uses
    payback_days: float = 7.0
    #: gdsf: the inflation value grows by this much per day (stands in for the value of the last eviction)
    gdsf_aging_per_day: float = 0.5
    #: a dataset idle at least this long may go to an archive tier (if its restores would cost less than it saves)
    archive_after_idle_days: float = 60.0
    #: the short pass moves a dataset up only with this many decayed uses: a second touch, so a one-off read
    #: does not push out within minutes what is read again (as in 2Q and ARC)
    entry_min_uses: float = 1.0
    #: the same for the nightly pass (which sees a whole day, so a lower bar)
    nightly_entry_min_uses: float = 0.0
    #: the short pass moves at most this many bytes up per run
    promotion_max_bytes: int = 2**42
    #: the short pass moves at most this many datasets up per run
    promotion_max_moves: int = 50
    #: a dataset used this recently is not demoted by the short pass or an admission (it just earned its place)
    recent_use_guard_days: float = 0.0

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise PlacementError(f"unknown placement score {self.score!r}; valid scores: {', '.join(SCORES)}")
        if self.half_life_days <= 0 or self.payback_days <= 0:
            raise PlacementError("half_life_days and payback_days must be positive")


class DecayedUses:
    """Per-dataset use counters that halve every ``half_life_days``, kept in forward-decay form.

    ``acc[i]`` is ``sum(2 ** ((t - epoch) / half_life))`` over the uses of dataset ``i``; :meth:`at` turns it
    into the decayed count at a time. ``last_use`` is the time of the last use (``-inf`` if none) and ``count``
    the number of uses ever. Times are seconds (UTC epoch). Arrays grow with :meth:`grow`.
    """

    def __init__(self, n: int, *, half_life_days: float, epoch: float) -> None:
        self.half_life_s = half_life_days * DAY
        self.epoch = epoch
        self.acc: F64 = np.zeros(n)
        self.last_use: F64 = np.full(n, -np.inf)
        self.count: I64 = np.zeros(n, dtype=np.int64)

    def grow(self, n: int) -> None:
        """Make room for datasets ``0 .. n-1`` (new ones start unused)."""
        extra = n - len(self.acc)
        if extra > 0:
            self.acc = np.concatenate([self.acc, np.zeros(extra)])
            self.last_use = np.concatenate([self.last_use, np.full(extra, -np.inf)])
            self.count = np.concatenate([self.count, np.zeros(extra, dtype=np.int64)])

    def record(self, index: npt.ArrayLike, at: npt.ArrayLike) -> None:
        """Count one use of ``index[k]`` at ``at[k]`` for every k (indices may repeat)."""
        idx = np.asarray(index, dtype=np.int64)
        times = np.asarray(at, dtype=np.float64)
        if idx.size == 0:
            return
        if (float(times.max()) - self.epoch) / self.half_life_s > _REBASE_HALF_LIVES:
            self._rebase(float(times.max()))
        np.add.at(self.acc, idx, np.exp2((times - self.epoch) / self.half_life_s))
        np.maximum.at(self.last_use, idx, times)
        np.add.at(self.count, idx, 1)

    def at(self, now: float, index: npt.ArrayLike | None = None) -> F64:
        """The decayed use counts at ``now`` (of ``index`` only, if given)."""
        acc = self.acc if index is None else self.acc[np.asarray(index, dtype=np.int64)]
        return acc * math.exp2(-(now - self.epoch) / self.half_life_s)

    def _rebase(self, to: float) -> None:
        self.acc *= math.exp2(-(to - self.epoch) / self.half_life_s)
        self.epoch = to


@dataclass(slots=True)
class DatasetTable:
    """Facts about N datasets, one numpy column each (row ``i`` is dataset ``i``).

    ``tier``: current rank, :data:`NO_TIER` if on none (new). ``floor``: the coldest rank allowed (pins,
    "never archive", tag floors folded in by the caller), :data:`NO_FLOOR` if none. ``resident_until``: the
    end of the minimum residency on the current tier (seconds; it may not go colder before then).
    ``uses`` holds the use counters. ``ids`` names rows in move reasons (row numbers if None).
    ``active`` False leaves a row out (deleted).
    """

    size: I64
    tier: I8
    uses: DecayedUses
    floor: I8 | None = None
    resident_until: F64 | None = None
    active: npt.NDArray[np.bool_] | None = None
    ids: Sequence[str] | None = None

    def __len__(self) -> int:
        return len(self.size)

    def label(self, i: int) -> str:
        return self.ids[i] if self.ids is not None else f"#{i}"


@dataclass(frozen=True, slots=True)
class Move:
    """Dataset row ``index`` goes from tier ``src`` to ``dst`` (names; ``src`` "" for a new dataset)."""

    index: int
    dataset: str
    src: str
    dst: str
    size: int
    reason: str


@dataclass(slots=True)
class Placement:
    """The answer of a pass: a target rank per row (``target``), the moves, and floors that did not fit."""

    target: I8
    moves: list[Move] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def score_per_gib(table: DatasetTable, knobs: Knobs, now: float, index: npt.ArrayLike | None = None) -> F64:
    """Value per GiB of keeping each dataset hot (higher is better), for rows ``index`` or all.

    ``lrfu``: decayed uses per day per GiB ** size_exponent (the decayed count times ln 2 / half-life is the
    use rate it implies). ``gdsf``: GreedyDual-Size-Frequency with a continuous inflation value,
    ``aging * days since last use before now`` subtracted from ``uses / size``. ``recency-size``: one over
    (days since last use x GiB). ``lfu-size``: uses ever per GiB.
    """
    sel: slice | I64 = slice(None) if index is None else np.asarray(index, dtype=np.int64)
    gib = np.maximum(table.size[sel].astype(np.float64), MIN_SCORED_BYTES) / GiB
    per = gib**knobs.size_exponent if knobs.size_exponent != 1.0 else gib
    uses = table.uses
    if knobs.score == "lrfu":
        rate = uses.acc[sel] * math.exp2(-(now - uses.epoch) / uses.half_life_s) * (math.log(2) / knobs.half_life_days)
        return np.asarray(rate / per, dtype=np.float64)
    idle_days = np.maximum(now - uses.last_use[sel], 0.0) / DAY
    if knobs.score == "gdsf":
        value = uses.count[sel] / per - knobs.gdsf_aging_per_day * idle_days
        return np.asarray(np.where(np.isfinite(value), value, -np.inf), dtype=np.float64)
    if knobs.score == "recency-size":
        return np.asarray(1.0 / ((idle_days + 1.0 / 24) * per), dtype=np.float64)
    return np.asarray(uses.count[sel] / per, dtype=np.float64)


def _swap_bonus(knobs: Knobs) -> float:
    """What a newcomer must score above a resident, per GiB: both copies spread over the payback window."""
    return 2.0 * knobs.move_cost_uses_per_gib / knobs.payback_days


def _defend(score: F64, knobs: Knobs) -> F64:
    """A resident's score as a newcomer must beat it."""
    return np.asarray(np.where(score > 0, score * (1.0 + knobs.hysteresis), score) + _swap_bonus(knobs))


def greedy_fit(order: I64, size: I64, room: float, rounds: int = 8) -> I64:
    """The rows of ``order`` (best first) a greedy fill takes into ``room`` bytes, skipping what does not fit."""
    taken: list[I64] = []
    rest = order
    for _ in range(rounds):
        if rest.size == 0 or room <= 0:
            break
        fits = rest[size[rest] <= room]
        if fits.size == 0:
            break
        cum = np.cumsum(size[fits])
        k = int(np.searchsorted(cum, room, side="right"))
        taken.append(fits[:k])
        room -= float(cum[k - 1]) if k else 0.0
        rest = fits[k + 1 :]  # fits[k] did not fit; later, smaller rows may
    return np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)


def _check(tiers: Sequence[TierSpec]) -> list[TierSpec]:
    ordered = sorted(tiers, key=lambda t: t.rank)
    if [t.rank for t in ordered] != list(range(len(ordered))):
        raise PlacementError(f"tier ranks must be 0..{len(ordered) - 1}, got {[t.rank for t in ordered]}")
    if not ordered:
        raise PlacementError("placement needs at least one tier")
    return ordered


def coldest_allowed(table: DatasetTable, now: float) -> I8:
    """Per row, the coldest rank it may be placed on: its floor, and its current tier while resident_until runs."""
    n = len(table)
    floor = table.floor.copy() if table.floor is not None else np.full(n, NO_FLOOR, dtype=np.int8)
    if table.resident_until is not None:
        held = (table.resident_until > now) & (table.tier >= 0)
        floor[held] = np.minimum(floor[held], table.tier[held])
    return floor


def plan_placement(table: DatasetTable, tiers: Sequence[TierSpec], knobs: Knobs, *, now: float) -> Placement:
    """The nightly pass: a target rank for every active row, and the moves that get there.

    Bounded tiers are filled hottest first: rows whose floor forces them onto the tier (or hotter), then the
    rest by score, residents defended by the swap cost and hysteresis, greedily while bytes fit. A tier's
    capacity is never exceeded; a floor that does not fit becomes a conflict and the row goes one tier colder.
    What no bounded tier takes goes to the hottest unbounded non-archive tier, or to an unbounded archive tier
    when the row has been idle :attr:`Knobs.archive_after_idle_days` and its expected restores per month cost
    less than the storage the archive saves. Rows with ``active`` False keep rank :data:`NO_TIER`.
    """
    ordered = _check(tiers)
    n = len(table)
    active = table.active if table.active is not None else np.ones(n, dtype=bool)
    score = score_per_gib(table, knobs, now)
    floor = coldest_allowed(table, now)
    target = np.full(n, NO_TIER, dtype=np.int8)
    open_rows = active.copy()
    conflicts: list[str] = []
    cutoff: dict[int, float] = {}
    for tier in ordered:
        if tier.capacity_bytes is None:
            continue
        r = tier.rank
        key = np.where(table.tier == r, _defend(score, knobs), score)
        room = float(tier.capacity_bytes)
        forced = np.flatnonzero(open_rows & (floor <= r))
        forced = forced[np.argsort(-key[forced], kind="stable")]
        took = greedy_fit(forced, table.size, room, rounds=len(forced) + 1 if len(forced) < 64 else 8)
        room -= float(table.size[took].sum())
        target[took] = r
        open_rows[took] = False
        for i in np.setdiff1d(forced, took)[:20]:
            conflicts.append(f"{table.label(int(i))}: its floor keeps it on {tier.name} or hotter, "
                             f"but {tier.name} has no room left; placed colder")
        entering = table.uses.at(now) >= knobs.nightly_entry_min_uses
        rest = np.flatnonzero(open_rows & (entering | (table.tier == r)) & np.isfinite(score))
        rest = rest[np.argsort(-key[rest], kind="stable")]
        took = greedy_fit(rest, table.size, room)
        target[took] = r
        open_rows[took] = False
        cutoff[r] = float(key[took].min()) if took.size else math.inf
    _place_unbounded(table, ordered, knobs, now, target=target, open_rows=open_rows, floor=floor, score=score)
    moves = _moves(table, ordered, target, score, cutoff, knobs, now)
    return Placement(target=target, moves=moves, conflicts=conflicts)


def _place_unbounded(
    table: DatasetTable,
    ordered: list[TierSpec],
    knobs: Knobs,
    now: float,
    *,
    target: I8,
    open_rows: npt.NDArray[np.bool_],
    floor: I8,
    score: F64,
) -> None:
    unbounded = [t for t in ordered if t.capacity_bytes is None]
    if not unbounded:
        left = np.flatnonzero(open_rows)
        if left.size:  # every tier is full: the rows stay where they are, and they are not moved
            target[left] = table.tier[left]
        return
    plain = next((t for t in unbounded if not t.archive), unbounded[0])
    rows = np.flatnonzero(open_rows)
    target[rows] = plain.rank
    for arch in (t for t in unbounded if t.archive and t.rank > plain.rank):
        uses_per_month = table.uses.at(now, rows) * (math.log(2) / knobs.half_life_days) * 30.0
        tib = table.size[rows] / TiB
        restore = uses_per_month * (tib * arch.restore_usd_per_tib + arch.restore_usd_per_request)
        saving = tib * (plain.usd_per_tib_month - arch.usd_per_tib_month)
        cheap = (restore < saving) & (floor[rows] >= arch.rank)
        # archived rows stay while that holds (a recall is decided by score); others go only after idling
        idle = (now - table.uses.last_use[rows]) >= knobs.archive_after_idle_days * DAY
        go = cheap & (idle | (table.tier[rows] == arch.rank))
        target[rows[go]] = arch.rank


def _moves(
    table: DatasetTable, ordered: list[TierSpec], target: I8, score: F64, cutoff: dict[int, float], knobs: Knobs,
    now: float,
) -> list[Move]:
    changed = np.flatnonzero((target != table.tier) & (target != NO_TIER))
    names = [t.name for t in ordered]
    moves: list[Move] = []
    for i in changed.tolist():
        src, dst = int(table.tier[i]), int(target[i])
        size = int(table.size[i])
        s = float(score[i])
        if src == NO_TIER:
            reason = f"new; scores {s:.3g}"
        elif dst < src:
            low = cutoff.get(dst, math.inf)
            reads = math.ceil(2 * knobs.move_cost_uses_per_gib * size / GiB)
            reason = (f"scores {s:.3g} uses/day/GiB, {names[dst]}'s lowest kept scores {low:.3g}; "
                      f"the swap pays after {reads} reads")
        elif ordered[dst].archive:
            idle = (now - float(table.uses.last_use[i])) / DAY
            reason = f"idle {idle:.0f} days; its expected restores cost less than {names[dst]} saves"
        else:
            low = cutoff.get(src, math.inf)
            reason = f"scores {s:.3g} uses/day/GiB, below {names[src]}'s lowest kept {low:.3g}"
        moves.append(Move(i, table.label(i), names[src] if src >= 0 else "", names[dst], size, reason))
    return moves


def plan_promotions(
    table: DatasetTable, tiers: Sequence[TierSpec], knobs: Knobs, *, now: float, candidates: npt.ArrayLike
) -> Placement:
    """The short pass: move ``candidates`` (rows used since the last pass) up where they beat the residents.

    Best score first, each candidate goes to the hottest bounded tier above its own where it fits after
    moving out residents it beats (defended as in the nightly pass); the displaced go one tier colder (only
    into room there). At most :attr:`Knobs.promotion_max_moves` moves up and
    :attr:`Knobs.promotion_max_bytes` bytes up. Rows under a floor or minimum residency are never moved out.
    """
    ordered = _check(tiers)
    cand = np.unique(np.asarray(candidates, dtype=np.int64))
    cand = cand[(table.tier[cand] > 0) & (table.uses.at(now, cand) >= knobs.entry_min_uses)]
    if table.active is not None:
        cand = cand[table.active[cand]]
    if cand.size == 0:
        return Placement(target=table.tier.copy())
    target = table.tier.copy()
    cscore = score_per_gib(table, knobs, now, cand)
    order = np.argsort(-cscore, kind="stable")
    cand, cscore = cand[order], cscore[order]
    moves: list[Move] = []
    budget = knobs.promotion_max_bytes
    promoted = 0
    state = _TierState(table, ordered, knobs, now, target, limit=float(cscore[0]))
    for i, s in zip(cand.tolist(), cscore.tolist(), strict=True):
        if promoted >= knobs.promotion_max_moves:
            break
        size = int(table.size[i])
        if size > budget or not math.isfinite(s):
            continue
        if state.admit(i, s, above=int(table.tier[i]), moves=moves) is not None:
            budget -= size
            promoted += 1
    return Placement(target=target, moves=moves)


def plan_admission(
    table: DatasetTable, tiers: Sequence[TierSpec], knobs: Knobs, *, now: float, index: int
) -> Placement:
    """Where new row ``index`` lands: the hottest bounded tier that has room after making room by rank.

    Its score (a registration is a use) must beat the residents it displaces, as in the short pass. If no
    bounded tier takes it, it lands on the hottest unbounded non-archive tier.
    """
    ordered = _check(tiers)
    target = table.tier.copy()
    moves: list[Move] = []
    s = float(score_per_gib(table, knobs, now, [index])[0])
    state = _TierState(table, ordered, knobs, now, target, limit=s)
    if state.admit(index, s, above=len(ordered), moves=moves) is None:
        plain = next((t for t in ordered if t.capacity_bytes is None and not t.archive), None)
        if plain is None:
            return Placement(target=target, conflicts=[f"{table.label(index)}: no tier has room"])
        target[index] = plain.rank
        moves.append(Move(index, table.label(index), "", plain.name, int(table.size[index]),
                          f"new; scores {s:.3g}, no bounded tier had room it could take"))
    return Placement(target=target, moves=moves)


@dataclass(slots=True)
class _Residents:
    """A bounded tier's bytes held, and its residents a candidate of this pass could move out, lowest key first."""

    used: float
    rows: I64
    key: F64
    cum: I64
    #: False while rows holds only the lowest keys (a partial sort); the rest are in spare_rows / spare_key
    complete: bool
    spare_rows: I64
    spare_key: F64


class _TierState:
    """Residents of the bounded tiers, for admitting rows one by one, kept up to date as rows move.

    Only residents whose defended key is below ``limit`` (the best candidate's score) can ever move out, so
    only those are sorted. A row moved in or pushed down during the pass is not moved again in it.
    """

    def __init__(self, table: DatasetTable, ordered: list[TierSpec], knobs: Knobs, now: float,
                 target: I8, *, limit: float) -> None:
        self.table, self.ordered, self.knobs, self.now, self.target = table, ordered, knobs, now, target
        self.limit = limit
        self._cache: dict[int, _Residents] = {}

    def residents(self, rank: int) -> _Residents:
        got = self._cache.get(rank)
        if got is None:
            table = self.table
            rows = np.flatnonzero(self.target == rank)
            used = float(table.size[rows].sum())
            floor = table.floor[rows] if table.floor is not None else np.full(rows.size, NO_FLOOR, dtype=np.int8)
            evictable = floor > rank
            if table.resident_until is not None:
                evictable &= table.resident_until[rows] <= self.now
            guard = self.knobs.recent_use_guard_days * DAY
            if guard > 0:
                evictable &= (self.now - table.uses.last_use[rows]) > guard
            rows = rows[evictable]
            key = _defend(score_per_gib(table, self.knobs, self.now, rows), self.knobs)
            low = key < self.limit
            rows, key = rows[low], key[low]
            spare_rows, spare_key = rows[:0], key[:0]
            complete = rows.size <= _PARTIAL_SORT
            if not complete:  # most passes need only the few lowest: sort those, keep the rest aside
                part = np.argpartition(key, _PARTIAL_SORT)
                spare_rows, spare_key = rows[part[_PARTIAL_SORT:]], key[part[_PARTIAL_SORT:]]
                rows, key = rows[part[:_PARTIAL_SORT]], key[part[:_PARTIAL_SORT]]
            order = np.lexsort((rows, key))
            rows, key = rows[order], key[order]
            got = _Residents(used, rows, key, np.cumsum(table.size[rows]), complete, spare_rows, spare_key)
            self._cache[rank] = got
        return got

    @staticmethod
    def _complete(res: _Residents, table: DatasetTable) -> None:
        rows = np.concatenate([res.rows, res.spare_rows])
        key = np.concatenate([res.key, res.spare_key])
        order = np.lexsort((rows, key))
        res.rows, res.key = rows[order], key[order]
        res.cum = np.cumsum(table.size[res.rows])
        res.complete = True
        res.spare_rows, res.spare_key = res.rows[:0], res.key[:0]

    def admit(self, i: int, s: float, *, above: int, moves: list[Move]) -> int | None:
        table = self.table
        size = int(table.size[i])
        for tier in self.ordered:
            if tier.rank >= above:
                return None
            if tier.capacity_bytes is None or size > tier.capacity_bytes:
                continue
            res = self.residents(tier.rank)
            short = size - (tier.capacity_bytes - res.used)
            out = np.zeros(0, dtype=np.int64)
            low = math.inf
            if short > 0:
                if res.rows.size == 0 or res.key[0] >= s:
                    continue
                k = int(np.searchsorted(res.cum, short, side="left"))
                if k >= res.rows.size and not res.complete:
                    self._complete(res, table)
                    k = int(np.searchsorted(res.cum, short, side="left"))
                if k >= res.rows.size or res.key[k] >= s:
                    continue
                out, low = res.rows[: k + 1], float(res.key[0])
                if not self._push_down(out, tier.rank, moves):
                    continue
                res.used -= float(res.cum[k])
                res.rows, res.key, res.cum = res.rows[k + 1 :], res.key[k + 1 :], res.cum[k + 1 :] - res.cum[k]
            src = int(table.tier[i])
            src_name = self.ordered[src].name if src >= 0 else ""
            reads = math.ceil(2 * self.knobs.move_cost_uses_per_gib * size / GiB)
            why = (f"scores {s:.3g} uses/day/GiB, {tier.name}'s lowest resident scores {low:.3g} defended; "
                   f"the swap pays after {reads} reads") if out.size else f"scores {s:.3g}; {tier.name} has room"
            if src < 0:
                why = "new; " + why
            moves.append(Move(i, table.label(i), src_name, tier.name, size, why))
            self.target[i] = tier.rank
            res.used += size
            if src >= 0 and src in self._cache:
                self._cache[src].used -= size
            return tier.rank
        return None

    def _push_down(self, rows: I64, rank: int, moves: list[Move]) -> bool:
        """Move ``rows`` out of ``rank`` to the next tier colder that takes them (only into room there)."""
        below = next((t for t in self.ordered if t.rank > rank), None)
        if below is None:
            return False
        need = int(self.table.size[rows].sum())
        if below.capacity_bytes is not None:
            room = self.residents(below.rank)
            if room.used + need > below.capacity_bytes:
                return False
            room.used += need
        src = self.ordered[rank].name
        for j in rows.tolist():
            moves.append(Move(j, self.table.label(j), src, below.name, int(self.table.size[j]),
                              f"displaced from {src} by a dataset that scores higher"))
            self.target[j] = below.rank
        return True
