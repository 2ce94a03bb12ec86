"""Use cases of the lifecycle: access ingestion, plan, why, pins, report, and the nightly cycle.

The CLI (``tiering plan/why/apply/pin/report/access import``), the scheduler and the HTTP event endpoint
call these functions; none of them parse arguments or print.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from tiering.access.formats import (
    OBJECT_READ_FORMATS,
    IngestStats,
    iter_events,
    iter_object_reads,
    parse_s3_event_document,
)
from tiering.access.keys import DatasetPrefixIndex, ReadCounter
from tiering.access.record import record_reads
from tiering.app import App
from tiering.catalog.leader import LeaderFence, check_fence
from tiering.catalog.models import AuditEntry, Dataset, Pin, PolicyRun, Tier
from tiering.catalog.usage import fold_tier_usage
from tiering.datasets import find_dataset
from tiering.errors import ConflictError, NotLeader, TieringError, UsageError
from tiering.layout import dataset_prefix
from tiering.lifecycle.criteria import check_policy_against_tiers
from tiering.lifecycle.explain import Plan, explain
from tiering.lifecycle.facts import gather_dataset_facts, gather_tier_facts
from tiering.lifecycle.model import Policy, load_policy
from tiering.lifecycle.planner import plan_moves
from tiering.moves.executor import Executor, JobOutcome

#: events rolled up per catalog transaction during an import (a batch is applied whole or not at all)
INGEST_BATCH_LINES = 250_000


# ------------------------------------------------------------------------------------------ policy


def default_policy_path() -> Path:
    return Path(str(resources.files("tiering.policies").joinpath("default.yaml")))


def load_active_policy(app: App, path: str | None = None) -> Policy:
    """The policy named by ``path``, else the config's ``policy:``, else the shipped default."""
    if path is not None:
        chosen = Path(path)
    elif app.config.policy:
        chosen = app.config.resolve_path(app.config.policy)
    else:
        chosen = default_policy_path()
    policy = load_policy(chosen)
    with app.catalog.session() as s:
        check_policy_against_tiers(policy, _tier_facts(app, s))
    return policy


def _tier_facts(app: App, session: Any) -> list[Any]:
    cfg = app.config
    return gather_tier_facts(
        session,
        [(n, t.rank, t.capacity, bool(t.archive)) for n, t in cfg.tiers.items()],
    )


def make_plan(app: App, *, policy: Policy, now: dt.datetime | None = None) -> Plan:
    """Gather facts at ``now`` (default: the app clock) and plan. Reads the catalog, changes nothing."""
    at = now or app.now()
    with _cyclic_gc_paused():
        with app.catalog.session() as s:
            facts = gather_dataset_facts(
                s, now=at, half_life_days=policy.heat_half_life_days, windows=policy.read_windows()
            )
            tiers = _tier_facts(app, s)
        return plan_moves(facts, tiers, policy=policy, now=at, window_timezone=schedule_timezone(app))


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; reference counting still frees everything else.

    Planning a large catalog builds millions of objects that live until the plan is dropped. The collector
    would rescan all of them every time the young generations overflow: a third of the planning time, and
    nothing to collect, since facts and candidates form no cycles.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def schedule_timezone(app: App) -> dt.tzinfo:
    """The zone the nightly cron and the policy window are read in (``schedule.timezone``, default local)."""
    name = app.config.schedule.timezone
    if name == "local":
        return dt.datetime.now().astimezone().tzinfo or dt.UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        from tiering.errors import ConfigError

        raise ConfigError(f"schedule.timezone: unknown time zone {name!r} (e.g. UTC, Europe/Paris)") from None


def why(app: App, label: str, *, policy: Policy, now: dt.datetime | None = None) -> tuple[str, dict[str, Any]]:
    """The explanation ``tiering why`` prints, and the decision as JSON."""
    with app.catalog.session() as s:
        ds_id = find_dataset(s, label).id
    plan = make_plan(app, policy=policy, now=now)
    decision = plan.decisions[ds_id]
    return explain(plan, ds_id), decision.to_json()


# ------------------------------------------------------------------------------------------ pins


@dataclass
class PinRow:
    dataset: str
    tier: str
    until: str
    reason: str
    actor: str
    #: where the dataset is now; when colder than ``tier`` the pin keeps it from sinking further but does
    #: not bring it up: that is a `tiering move` (or a restore from an archive tier)
    current_tier: str = ""


def pin(app: App, label: str, *, tier: str, until: dt.datetime, reason: str = "") -> PinRow:
    """Keep ``label`` on ``tier`` or hotter until ``until`` (UTC). A new pin on the same tier replaces the old."""
    app.config.tier(tier)
    now = app.now()
    if until <= now:
        raise UsageError(f"--until {until.date()} is in the past")
    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        tier_row = s.scalars(select(Tier).where(Tier.name == tier)).one()
        s.execute(delete(Pin).where(Pin.dataset_id == ds.id, Pin.tier_id == tier_row.id))
        s.add(Pin(dataset_id=ds.id, tier_id=tier_row.id, until=until, reason=reason, actor=app.actor, created_at=now))
        s.add(AuditEntry(at=now, actor=app.actor, action="pin", dataset_id=ds.id, dataset_label=ds.label,
                         to_tier=tier, result="ok", detail={"until": until.isoformat(), "reason": reason}))
        return PinRow(ds.label, tier, until.isoformat(), reason, app.actor, ds.home_tier.name)


def unpin(app: App, label: str, *, tier: str | None = None) -> int:
    """Remove the pins of ``label`` (only the one on ``tier`` when given). Returns how many were removed."""
    now = app.now()
    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        stmt = delete(Pin).where(Pin.dataset_id == ds.id)
        if tier is not None:
            app.config.tier(tier)
            stmt = stmt.where(Pin.tier_id == select(Tier.id).where(Tier.name == tier).scalar_subquery())
        n = int(s.execute(stmt).rowcount)  # type: ignore[attr-defined]
        s.add(AuditEntry(at=now, actor=app.actor, action="unpin", dataset_id=ds.id, dataset_label=ds.label,
                         from_tier=tier, result="ok", detail={"removed": n}))
        return n


def list_pins(app: App) -> list[PinRow]:
    with app.catalog.session() as s:
        rows = s.execute(
            select(Dataset.name, Dataset.version, Tier.name, Pin.until, Pin.reason, Pin.actor)
            .join(Dataset, Dataset.id == Pin.dataset_id).join(Tier, Tier.id == Pin.tier_id)
            .order_by(Dataset.name, Dataset.version)
        ).all()
    return [PinRow(f"{n}@{v}", t, u.isoformat(), r, a) for n, v, t, u, r, a in rows]


def pin_is_above(app: App, row: PinRow) -> bool:
    """True when the dataset sits on a tier colder than its pin."""
    return bool(row.current_tier) and app.config.tier(row.current_tier).rank > app.config.tier(row.tier).rank


# ------------------------------------------------------------------------------------------ access


@dataclass
class IngestResult:
    lines: int = 0
    events: int = 0
    counted: int = 0
    unmatched: int = 0
    skipped_non_read: int = 0
    malformed: int = 0
    malformed_examples: list[dict[str, Any]] = field(default_factory=list)
    datasets: int = 0
    seconds: float = 0.0


def prefix_index(app: App) -> DatasetPrefixIndex[int]:
    """(bucket, key prefix) -> dataset id for every dataset on an S3 tier (where access logs come from)."""
    index: DatasetPrefixIndex[int] = DatasetPrefixIndex()
    s3_tiers = {}
    for name, tc in app.config.tiers.items():
        if tc.scheme == "s3":
            u = urlparse(tc.backend)
            s3_tiers[name] = (u.netloc, u.path.strip("/"))
    if not s3_tiers:
        return index
    with app.catalog.session() as s:
        rows = s.execute(
            select(Dataset.id, Dataset.kind, Dataset.name, Dataset.version, Dataset.location_prefix, Tier.name)
            .join(Tier, Tier.id == Dataset.home_tier_id)
            .where(Dataset.state != "deleted")
        ).all()
    for ds_id, kind, name, version, location, tier in rows:
        # a dataset read on any S3 tier counts (a staged restore copy, the home copy, a stale client)
        for tier_name, (bucket, tier_prefix) in s3_tiers.items():
            rel = location if (location and tier_name == tier) else dataset_prefix(kind, name, version)
            full = f"{tier_prefix}/{rel}" if tier_prefix else rel
            index.add(bucket, full, ds_id)
    return index


def own_principals(app: App) -> set[str]:
    """Access key ids tiering itself uses on its S3 tiers: its own GETs (copies, verification) are not reads."""
    keys: set[str] = set()
    for name, tc in app.config.tiers.items():
        if tc.credentials is None:
            continue
        try:
            keys.add(tc.credentials.resolve(name).access_key_id)
        except TieringError:
            continue  # credentials not available to this process: nothing to filter by
    return keys


def _label_resolver(app: App) -> Any:
    cache: dict[str, int | None] = {}

    def resolve(label: str) -> int | None:
        if label not in cache:
            try:
                with app.catalog.session() as s:
                    cache[label] = find_dataset(s, label).id
            except TieringError:
                cache[label] = None
        return cache[label]

    return resolve


def ingest_access(app: App, lines: Iterable[str], fmt: str) -> IngestResult:
    """Count the reads in ``lines`` (a log in format ``fmt``) into the catalog's daily roll-up.

    Malformed lines are counted and reported, never fatal. Reads are written once per dataset-day, in
    transactions of up to ``INGEST_BATCH_LINES`` lines: each batch is applied whole or not at all.
    Raises :class:`~tiering.access.formats.UnknownAccessFormat` before reading a line if ``fmt`` is not a format.
    """
    started = dt.datetime.now(dt.UTC)
    stats = IngestStats()
    counter: ReadCounter[int] = ReadCounter(
        prefix_index(app), resolve_label=_label_resolver(app), ignore_principals=own_principals(app)
    )
    result = IngestResult()
    touched: set[int] = set()

    def flush() -> None:
        batch = counter.drain()
        if batch.counts:
            with app.catalog.session() as s:
                record_reads(s, batch.counts, last_seen=batch.last_seen)
            touched.update(ds for ds, _ in batch.counts)

    remaining = iter(lines)
    while True:
        lines_before = stats.lines
        batch_lines = islice(remaining, INGEST_BATCH_LINES)
        if fmt in OBJECT_READ_FORMATS:  # same counts as the general path, without an AccessEvent per read
            counter.add_object_reads(iter_object_reads(batch_lines, fmt, stats, first_line_no=lines_before + 1))
        else:
            counter.add_all(iter_events(batch_lines, fmt, stats, first_line_no=lines_before + 1))
        flush()
        if stats.lines - lines_before < INGEST_BATCH_LINES:
            break  # the log ended inside this batch
    result.lines, result.events = stats.lines, stats.events
    result.skipped_non_read, result.malformed = stats.skipped_non_read, stats.malformed
    result.malformed_examples = [
        {"line": m.line_no, "reason": m.reason, "excerpt": m.excerpt} for m in stats.malformed_examples
    ]
    result.counted, result.unmatched = counter.counted, counter.unmatched
    result.datasets = len(touched)
    result.seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    return result


def ingest_s3_event_document(
    app: App, body: bytes | str, *, index: DatasetPrefixIndex[int] | None = None
) -> IngestResult:
    """One S3 / MinIO bucket-notification webhook body (``{"Records": [...]}``) into the roll-up."""
    events, stats = parse_s3_event_document(body)
    counter: ReadCounter[int] = ReadCounter(index or prefix_index(app), ignore_principals=own_principals(app))
    counter.add_all(events)
    batch = counter.drain()
    if batch.counts:
        with app.catalog.session() as s:
            record_reads(s, batch.counts, last_seen=batch.last_seen)
    return IngestResult(lines=stats.lines, events=stats.events, counted=counter.counted, unmatched=counter.unmatched,
                        skipped_non_read=stats.skipped_non_read, malformed=stats.malformed,
                        datasets=len({ds for ds, _ in batch.counts}))


# ------------------------------------------------------------------------------------------ nightly cycle


@dataclass
class CycleResult:
    run_id: int | None
    state: str  # done | failed | skipped | interrupted
    planned: int = 0
    done: int = 0
    failed: int = 0
    bytes_moved: int = 0
    skipped_for_budget: int = 0
    resumed: int = 0
    note: str = ""
    moves: list[dict[str, Any]] = field(default_factory=list)


def nightly_cycle(
    app: App,
    *,
    policy: Policy,
    now: dt.datetime | None = None,
    run_key: str | None = None,
    ignore_window: bool = False,
    stop: threading.Event | None = None,
    fence: LeaderFence | None = None,
) -> CycleResult:
    """Resume unfinished moves, plan, and execute the plan within its budget and time window.

    ``run_key`` (e.g. ``nightly:2026-11-30``) makes the run unique: a second scheduler firing for the same
    night finds the key taken and does nothing. A run skipped because it is outside the policy's window gives
    its key back, so the night's run inside the window still happens. Records a ``policy_runs`` row and audit
    entries. ``fence``: the run is a scheduler leader's; its row and every job it creates are written only
    while that leader's epoch is current (else :class:`~tiering.errors.NotLeader`).
    """
    at = now or app.now()
    executor = Executor(app)
    try:
        with app.catalog.session() as s:
            check_fence(s, fence)
            run = PolicyRun(policy_path=policy.source, started_at=at, state="running", run_key=run_key)
            s.add(run)
            s.flush()
            run_id = run.id
    except IntegrityError:
        return CycleResult(None, "skipped", note=f"run {run_key} already happened or is under way elsewhere")
    except TieringError as exc:
        if isinstance(exc.__cause__, IntegrityError):
            return CycleResult(None, "skipped", note=f"run {run_key} already happened or is under way elsewhere")
        raise

    result = CycleResult(run_id, "running")
    # work left by a crash is finished first: it holds datasets the plan would otherwise skip as busy
    resumed = executor.resume_all()
    result.resumed = len(resumed)
    with app.catalog.session() as s:
        fold_tier_usage(s)  # PostgreSQL's usage counters gain a row per writing backend: fold them nightly
    plan = make_plan(app, policy=policy, now=at)
    result.planned = len(plan.moves)
    result.skipped_for_budget = len(plan.skipped_for_budget)
    if not plan.window_open and not ignore_window:
        result.state = "skipped"
        result.note = f"outside the window {plan.window}"
    else:
        for move in plan.moves:
            if stop is not None and stop.is_set():
                result.state = "interrupted"
                result.note = "stopped before all moves ran; unfinished jobs resume next run"
                break
            try:
                outcome = _run_move(app, executor, move, run_id, stop, fence)
            except NotLeader as exc:
                result.state = "interrupted"
                result.note = f"stopped: {exc}"
                break
            result.moves.append({
                "dataset": move.label, "from": move.from_tier, "to": move.to_tier, "bytes": move.size_bytes,
                "rule": move.rule, "reason": move.reason, "state": outcome.state if outcome else "skipped",
                "error": outcome.error if outcome else None,
            })
            if outcome is None:
                continue
            if outcome.state == "done":
                result.done += 1
                result.bytes_moved += outcome.bytes
            elif outcome.state == "failed":
                result.failed += 1
        if result.state == "running":
            result.state = "done" if result.failed == 0 else "failed"
    scrubbed = _scrub_summary(app)
    finished = app.now()
    with app.catalog.session() as s:
        run = s.get_one(PolicyRun, run_id)
        run.state = result.state
        if result.state == "skipped":
            run.run_key = None  # nothing ran: the key stays free for the run inside the window
        run.finished_at = finished
        run.planned, run.done, run.failed, run.bytes_moved = result.planned, result.done, result.failed, \
            result.bytes_moved
        run.summary = {"run_key": run_key,
                       "note": result.note, "resumed": result.resumed, "skipped_for_budget": result.skipped_for_budget,
                       "moves": result.moves[:500], "totals": plan.to_json().get("tiers", []),
                       "scrub": scrubbed}
        s.add(AuditEntry(at=finished, actor=app.actor, action="policy_run", result=result.state,
                         bytes=result.bytes_moved,
                         detail={"run_id": run_id, "planned": result.planned, "done": result.done,
                                 "failed": result.failed, "policy": policy.source, "note": result.note}))
    return result


def _scrub_summary(app: App) -> dict[str, Any]:
    """The night's scrub in report mode (no --deep, nothing removed): counts of findings by kind.

    A scrub that cannot run (the catalog or a tier unreachable) is noted, never fails the night.
    """
    from tiering.scrub import scrub

    try:
        report = scrub(app)
    except TieringError as exc:
        return {"error": str(exc)}
    return {"counts": report.counts, "unfixed": report.unfixed}


def _run_move(app: App, executor: Executor, move: Any, run_id: int, stop: threading.Event | None,
              fence: LeaderFence | None) -> JobOutcome | None:
    reason = f"rule {move.rule}: {move.reason}"
    try:
        job_id = executor.create_job(move.dataset_id, move.to_tier, reason=reason, policy_run_id=run_id,
                                     fence=fence)
    except ConflictError:
        return None  # someone moved or restored it since the plan was made
    except UsageError:
        return None  # already on the target tier
    return executor.run_job(job_id, stop=stop)


def policy_runs(app: App, *, limit: int = 20) -> list[dict[str, Any]]:
    with app.catalog.session() as s:
        return [
            {"id": r.id, "state": r.state, "run_key": r.run_key, "started_at": r.started_at.isoformat(),
             "finished_at": r.finished_at.isoformat() if r.finished_at else None, "planned": r.planned,
             "done": r.done, "failed": r.failed, "bytes_moved": r.bytes_moved, "policy": r.policy_path}
            for r in s.scalars(select(PolicyRun).order_by(PolicyRun.id.desc()).limit(limit))
        ]


# ------------------------------------------------------------------------------------------ report


HEAT_BUCKETS = (0.0, 0.5, 2.0, 8.0, 32.0, float("inf"))


def report(app: App, *, policy: Policy, now: dt.datetime | None = None) -> dict[str, Any]:
    """Per tier: datasets, bytes, capacity used, cost per month; a heat histogram of datasets per tier."""
    from tiering.datasets import tier_usage

    at = now or app.now()
    usage = tier_usage(app)
    with app.catalog.session() as s:
        facts = gather_dataset_facts(s, now=at, half_life_days=policy.heat_half_life_days, windows=(30,))
        total_datasets = s.scalar(select(func.count(Dataset.id)).where(Dataset.state != "deleted")) or 0
    bounds = list(zip(HEAT_BUCKETS, HEAT_BUCKETS[1:], strict=False))
    labels = [f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}" for lo, hi in bounds]
    histogram: dict[str, dict[str, int]] = {u.name: dict.fromkeys(labels, 0) for u in usage}
    for f in facts:
        for label, lo, hi in zip(labels, HEAT_BUCKETS, HEAT_BUCKETS[1:], strict=False):
            if lo <= f.heat < hi:
                histogram.setdefault(f.home_tier, dict.fromkeys(labels, 0))[label] += 1
                break
    tiers = [
        {"name": u.name, "rank": u.rank, "datasets": u.datasets, "used_bytes": u.used_bytes,
         "capacity_bytes": u.capacity_bytes,
         "used_pct": round(100 * u.used_bytes / u.capacity_bytes, 2) if u.capacity_bytes else None,
         "cost_per_month": round(u.cost_per_month, 2), "heat_histogram": histogram.get(u.name, {})}
        for u in usage
    ]
    return {
        "at": at.isoformat(), "datasets": total_datasets,
        "cost_per_month": round(sum(u.cost_per_month for u in usage), 2),
        "heat_half_life_days": policy.heat_half_life_days, "tiers": tiers,
    }
