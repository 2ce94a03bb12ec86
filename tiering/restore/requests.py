"""Restores: make an archived dataset readable on a faster tier for a number of days.

A **restore request** (table ``restore_requests``) is one user's wish: dataset, target tier, days, priority.
Its states, guarded by :data:`REQUEST_TRANSITIONS`::

    queued ──> running ──> ready ──> expired
      │  │        │          │
      │  └────────┴──> failed│
      └───────────┴──────────┴──> cancelled

**Coalescing.** Requests for the same dataset and target tier (a *group*) share one copy: the dispatcher
runs one restore job per group, and every request of the group becomes ready together. Each request keeps
its own expiry (``ready_at + days``); the staged copy lasts until the latest one (the later expiry wins). A
request for a dataset already readable on the target is ready at once and only extends the expiry.

**Dispatcher** (:func:`dispatch_restores`; the scheduler runs it every ``schedule.restore_every_seconds``,
``tiering restore --wait`` runs it inline): groups are taken by priority (high, normal, low), then age. For
each, a move job with ``purpose="restore"`` is written (steps ordered by source object and offset, so the
members of one cold shard are read together) and driven by the :class:`~tiering.moves.executor.Executor`'s copy
phase: claimed with leases, copied, hashed and verified. A packed member is read out of its shard with a
ranged GET and lands at its original path. Then one transaction makes the copies **staged** replicas
(state ``live`` on the target, ``expires_at`` set) and the requests ready. The dataset's home stays on the
archive tier: the cold copy stays the master and is never deleted by a restore.

**Partial restores.** A member whose archive copy does not verify does not stop the others: every member
that verifies is staged (live on the target until the requests' expiry), the requests fail with a
``last_error`` naming each bad member on a line of its own (dataset, path, archive object and offset,
expected and actual digest; at most :data:`FAILED_MEMBER_LINES`), and the job ends failed. A later request
for the same target copies only the members still missing there.

**Glacier protocol.** When the source tier has ``archive: glacier``, each object needed (shard objects,
not members) is first asked for with ``RestoreObject`` (retrieval tier from the priority: high=Expedited,
normal=Standard, low=Bulk), and ``head`` is polled until it is readable (``sleep`` and clock injectable,
bounded by ``max_wait_seconds``; a dispatch that runs out of time leaves the request running and the next
dispatch carries on). A restore already under way is joined, not repeated.

**Sweeper** (:func:`sweep_expired`): removes staged copies whose expiry has passed: replicas become
``deleting``, objects are deleted, rows removed, requests expire, and the audit log says so. A staged copy
is never removed when it is a member's only durable verified copy, nor on the dataset's home tier.

**Crash safety.** Everything is resumable by dispatching again: steps already verified are not copied
again, an interrupted copy overwrites its own deterministic key, and a request becomes ready only in the
transaction that makes its copies live (crash point ``restore_after_copy`` lies just before it).

Times are UTC from the app's clock (or ``now=``); durations are seconds; sizes are bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ScalarSelect

from tiering.app import App
from tiering.catalog.leader import LeaderFence, check_fence
from tiering.catalog.models import AuditEntry, Dataset, Member, MoveJob, MoveStep, Replica, RestoreRequest, Tier
from tiering.catalog.states import (
    TRUSTED_REPLICA_STATES,
    UNFINISHED_JOB_STATES,
    JobState,
    ReplicaState,
    StepState,
    check_job,
)
from tiering.errors import (
    ConfigError,
    DatasetArchived,
    IllegalTransition,
    MoveInProgress,
    PermanentBackendError,
    RestoreNotFound,
    TieringError,
    UsageError,
)
from tiering.faults import crash_point
from tiering.layout import ManifestMember, build_manifest, dataset_prefix, manifest_key, parse_label
from tiering.moves.executor import Executor
from tiering.storage.base import Archive, delete_keys, find_capability
from tiering.storage.tree import apply_tree, load_entries, posix_entries, remove_tree
from tiering.transfer.copier import Progress

log = logging.getLogger(__name__)

#: priority names and their catalog values (lower runs first)
PRIORITIES: Final = {"high": 0, "normal": 1, "low": 2}
PRIORITY_NAMES: Final = {v: k for k, v in PRIORITIES.items()}
#: Glacier retrieval tier asked for, by priority value
RETRIEVAL_TIERS: Final = {0: "Expedited", 1: "Standard", 2: "Bulk"}
#: days an archive keeps its temporary readable copy of an object we restore (we copy it at once)
GLACIER_RESTORE_DAYS: Final = 2
#: the ETA's rate is measured over the bytes verified in this many recent seconds
RATE_WINDOW_SECONDS: Final = 120.0
DEFAULT_DAYS: Final = 7
#: groups a dispatch takes by default
DEFAULT_DISPATCH_LIMIT: Final = 4
#: rows per statement when ids are listed (SQLite limits bound parameters)
_ID_CHUNK: Final = 500
#: failed members named one per line in a failed restore's ``last_error``; the others are counted
FAILED_MEMBER_LINES: Final = 50
#: the actual digest in a ``source_changed`` step error (:class:`~tiering.errors.SourceChanged`'s message)
_ACTUAL_DIGEST: Final = re.compile(r" hashes to (\S+ \(\d+ bytes\))")


class RequestState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"


REQUEST_TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.QUEUED: frozenset({RequestState.RUNNING, RequestState.READY, RequestState.CANCELLED,
                                    RequestState.FAILED}),
    RequestState.RUNNING: frozenset({RequestState.READY, RequestState.FAILED, RequestState.CANCELLED}),
    RequestState.READY: frozenset({RequestState.EXPIRED, RequestState.CANCELLED}),
    RequestState.EXPIRED: frozenset(),
    RequestState.CANCELLED: frozenset(),
    RequestState.FAILED: frozenset(),
}

#: requests still waiting for their copy
PENDING: Final = (RequestState.QUEUED, RequestState.RUNNING)
#: requests that still want the data
ACTIVE: Final = (RequestState.QUEUED, RequestState.RUNNING, RequestState.READY)

Sleep = Callable[[float], None]
Monotonic = Callable[[], float]


def _set_state(req: RestoreRequest, wanted: RequestState, now: dt.datetime) -> None:
    if wanted not in REQUEST_TRANSITIONS[RequestState(req.state)]:
        raise IllegalTransition("restore request", req.state, wanted)
    req.state = wanted
    req.updated_at = now


def parse_priority(name: str) -> int:
    try:
        return PRIORITIES[name]
    except KeyError:
        raise UsageError(f"unknown priority {name!r}: expected high, normal or low") from None


def format_duration(seconds: float | None) -> str:
    """``None`` -> ``"-"``; otherwise ``"45 s"``, ``"12 min"``, ``"3.5 h"``, ``"2.0 d"``."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# ------------------------------------------------------------------------------------------ views


@dataclass
class RestoreView:
    """One request as users see it (``tiering restores``). ``progress`` is 0..1; ``eta_seconds`` None when
    unknown (queued, or no rate measured yet)."""

    id: int
    dataset: str
    target: str
    requested_by: str
    priority: str
    state: str
    days: int
    bytes_total: int
    bytes_done: int
    progress: float
    eta_seconds: float | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    ready_at: dt.datetime | None
    expires_at: dt.datetime | None
    job_id: int | None
    last_error: str | None = None
    note: str = ""


@dataclass(frozen=True)
class _JobProgress:
    bytes_done: int
    eta_seconds: float | None


def _job_progress(s: Session, job: MoveJob, total: int, now: dt.datetime) -> _JobProgress:
    """Bytes verified so far by a restore job and an ETA from the recent rate (catalog facts only, so any
    process can show them while another one copies)."""
    done_steps = and_(MoveStep.job_id == job.id,
                      MoveStep.state.in_([StepState.VERIFIED, StepState.COMMITTED]))
    done = int(s.scalar(
        select(func.coalesce(func.sum(Member.size), 0)).join(MoveStep, MoveStep.member_id == Member.id)
        .where(done_steps)
    ) or 0)
    if job.state not in (JobState.PLANNED, JobState.RUNNING):
        return _JobProgress(done, None)
    since = now - dt.timedelta(seconds=RATE_WINDOW_SECONDS)
    recent = int(s.scalar(
        select(func.coalesce(func.sum(Member.size), 0))
        .join(MoveStep, MoveStep.member_id == Member.id)
        .join(Replica, and_(Replica.member_id == Member.id, Replica.tier_id == job.dst_tier_id))
        .where(done_steps, Replica.verified_at >= since)
    ) or 0)
    elapsed = (now - job.created_at).total_seconds()
    # the recent rate when there is one; the average since the job started otherwise
    rate = recent / max(1.0, min(RATE_WINDOW_SECONDS, elapsed)) if recent else (done / elapsed if elapsed > 0 else 0.0)
    eta = max(0.0, (total - done) / rate) if rate > 0 else None
    return _JobProgress(done, eta)


def _view(
    s: Session, req: RestoreRequest, now: dt.datetime, cache: dict[int, _JobProgress] | None = None
) -> RestoreView:
    ds = s.get_one(Dataset, req.dataset_id)
    target = s.get_one(Tier, req.tier_id)
    done, eta, note = req.bytes_done, None, ""
    if req.state in PENDING and req.move_job_id is not None:
        cache = {} if cache is None else cache
        if req.move_job_id not in cache:
            cache[req.move_job_id] = _job_progress(s, s.get_one(MoveJob, req.move_job_id), req.bytes_total, now)
        progress = cache[req.move_job_id]
        done, eta = progress.bytes_done, progress.eta_seconds
        if done == 0 and ds.home_tier.archive == "glacier":
            note = "waiting for the archive to make the objects readable"
    return RestoreView(
        id=req.id, dataset=ds.label, target=target.name, requested_by=req.requested_by,
        priority=PRIORITY_NAMES.get(req.priority, str(req.priority)), state=req.state, days=req.days,
        bytes_total=req.bytes_total, bytes_done=done,
        progress=1.0 if req.bytes_total == 0 else min(1.0, done / req.bytes_total),
        eta_seconds=eta, created_at=req.created_at, started_at=req.started_at, ready_at=req.ready_at,
        expires_at=req.expires_at, job_id=req.move_job_id, last_error=req.last_error, note=note,
    )


def list_restores(app: App, *, include_finished: bool = False, now: dt.datetime | None = None) -> list[RestoreView]:
    """Requests, active ones first (running, queued by priority and age, ready), then with
    ``include_finished`` the expired, cancelled and failed ones, newest first."""
    now = now or app.now()
    order = {RequestState.RUNNING: 0, RequestState.QUEUED: 1, RequestState.READY: 2}
    with app.catalog.session() as s:
        stmt = select(RestoreRequest)
        if not include_finished:
            stmt = stmt.where(RestoreRequest.state.in_([str(x) for x in ACTIVE]))
        rows = list(s.scalars(stmt))

        def rank(r: RestoreRequest) -> tuple[int, int, float]:
            if r.state in PENDING:  # the order the dispatcher takes them in
                return order[RequestState(r.state)], r.priority, r.created_at.timestamp()
            return order.get(RequestState(r.state), 3), 0, -float(r.id)

        rows.sort(key=rank)
        cache: dict[int, _JobProgress] = {}
        return [_view(s, r, now, cache) for r in rows]


def get_restore(app: App, request_id: int, *, now: dt.datetime | None = None) -> RestoreView:
    with app.catalog.session() as s:
        req = s.get(RestoreRequest, request_id)
        if req is None:
            raise RestoreNotFound(request_id)
        return _view(s, req, now or app.now())


# ------------------------------------------------------------------------------------------ staged copies


def _staged_complete(s: Session, dataset_id: int, tier_id: int) -> bool:
    """True when every member of the dataset has a live replica on ``tier_id`` (expired or not)."""
    members = s.scalar(select(func.count(Member.id)).where(Member.dataset_id == dataset_id)) or 0
    live = s.scalar(
        select(func.count(Replica.id)).join(Member, Member.id == Replica.member_id)
        .where(Member.dataset_id == dataset_id, Replica.tier_id == tier_id, Replica.state == ReplicaState.LIVE)
    ) or 0
    return members > 0 and live == members


def _dataset_members(dataset_id: int) -> ScalarSelect[int]:
    return select(Member.id).where(Member.dataset_id == dataset_id).scalar_subquery()


def _extend_staged(s: Session, dataset_id: int, tier_id: int, expires: dt.datetime) -> dt.datetime:
    """Make the staged copy on ``tier_id`` last at least until ``expires``; returns its new expiry."""
    current: dt.datetime | None = s.scalar(
        select(func.min(Replica.expires_at)).where(
            Replica.tier_id == tier_id, Replica.member_id.in_(_dataset_members(dataset_id)),
            Replica.state == ReplicaState.LIVE,
        )
    )
    if current is not None and current >= expires:
        return current
    s.execute(
        update(Replica)
        .where(Replica.tier_id == tier_id, Replica.member_id.in_(_dataset_members(dataset_id)),
               Replica.state == ReplicaState.LIVE, Replica.expires_at.is_not(None))
        .values(expires_at=expires)
        .execution_options(synchronize_session=False)  # no replica is loaded in the session: nothing to sync
    )
    return expires


def readable_copy(s: Session, ds: Dataset, now: dt.datetime) -> str | None:
    """The hottest tier, other than the dataset's home and hotter than it, holding a complete live copy
    that has not expired (a staged restore); None when there is none."""
    rows = s.execute(
        select(Tier.name, func.count(Replica.id))
        .join(Replica, Replica.tier_id == Tier.id)
        .join(Member, Member.id == Replica.member_id)
        .where(Member.dataset_id == ds.id, Tier.id != ds.home_tier_id, Tier.rank < ds.home_tier.rank,
               Replica.state == ReplicaState.LIVE,
               (Replica.expires_at.is_(None)) | (Replica.expires_at > now))
        .group_by(Tier.name, Tier.rank)
        .order_by(Tier.rank)
    ).all()
    for name, count in rows:
        if ds.member_count > 0 and count == ds.member_count:
            return str(name)
    return None


def archived_error(s: Session, app: App, ds: Dataset, now: dt.datetime) -> DatasetArchived:
    """The error for reading ``ds`` while it sits on an archive tier with no readable staged copy: names
    the restore command, or the restore already under way with its progress and ETA."""
    pending = list(s.scalars(
        select(RestoreRequest)
        .where(RestoreRequest.dataset_id == ds.id, RestoreRequest.state.in_([str(x) for x in PENDING]))
        .order_by(RestoreRequest.state.desc(), RestoreRequest.priority, RestoreRequest.created_at)
    ))
    if pending:
        v = _view(s, pending[0], now)
        eta = f", ETA {format_duration(v.eta_seconds)}" if v.eta_seconds is not None else ""
        hint = (f"a restore to {v.target} is {v.state} (request {v.id}, {v.progress:.0%} done{eta}); "
                f"`tiering restores` shows it, `tiering resolve {ds.label} --restore --wait` waits for it")
    else:
        hottest = app.config.tiers_by_rank()[0]
        hint = (f"it is on archive tier {ds.home_tier.name}; restore it first: "
                f"`tiering restore {ds.label} --to {hottest} --days {DEFAULT_DAYS}` "
                f"(or `tiering resolve {ds.label} --restore --wait`)")
    return DatasetArchived(ds.label, hint)


# ------------------------------------------------------------------------------------------ requests


def _find_dataset(s: Session, label: str) -> Dataset:
    from tiering.datasets import find_dataset

    return find_dataset(s, label)


def request_restore(
    app: App,
    label: str,
    *,
    to: str,
    days: int = DEFAULT_DAYS,
    priority: str = "normal",
    requested_by: str | None = None,
) -> RestoreView:
    """File a request to have ``label`` readable on tier ``to`` for ``days`` days (>= 1). Copies nothing.

    When the dataset is already readable there (its home, or a complete staged copy), the request is ready
    at once and the staged copy's expiry is extended if needed. Otherwise it is queued, or joins the group's
    restore under way. Raises ``UsageError`` (bad days, priority, an archive target), ``TierNotFound``,
    ``DatasetNotFound``.
    """
    prio = parse_priority(priority)
    if days < 1:
        raise UsageError(f"--days must be at least 1, got {days}")
    tier_cfg = app.config.tier(to)
    if tier_cfg.archive:
        raise UsageError(f"tier {to!r} is an archive tier: restore to a tier that can be read directly")
    parse_label(label)
    now = app.now()
    with app.catalog.session() as s:
        ds = _find_dataset(s, label)
        if ds.state == "registering":
            raise UsageError(f"{ds.label} is still being registered")
        target = s.scalars(select(Tier).where(Tier.name == to)).one()
        req = RestoreRequest(
            dataset_id=ds.id, tier_id=target.id, days=days, priority=prio, state=RequestState.QUEUED,
            requested_by=requested_by or app.actor, bytes_total=ds.size_bytes, bytes_done=0,
            created_at=now, updated_at=now,
        )
        s.add(req)
        s.flush()
        note = ""
        if ds.home_tier_id == target.id or _staged_complete(s, ds.id, target.id):
            expires = now + dt.timedelta(days=days)
            if ds.home_tier_id != target.id:
                _extend_staged(s, ds.id, target.id, expires)
                note = "already staged there: expiry extended"
            else:
                note = f"{ds.label} lives on {to}"
            _set_state(req, RequestState.READY, now)
            req.ready_at, req.expires_at, req.bytes_done = now, expires, ds.size_bytes
        else:
            running = s.scalars(
                select(RestoreRequest).where(
                    RestoreRequest.dataset_id == ds.id, RestoreRequest.tier_id == target.id,
                    RestoreRequest.state == RequestState.RUNNING, RestoreRequest.id != req.id,
                ).limit(1)
            ).first()
            if running is not None:
                _set_state(req, RequestState.RUNNING, now)
                req.move_job_id, req.started_at = running.move_job_id, now
                note = f"joined request {running.id} under way"
        view = _view(s, req, now)
        view.note = note or view.note
        return view


def cancel_restore(app: App, request_id: int) -> RestoreView:
    """Cancel one request. Others for the same dataset and tier are unaffected; when none still waits,
    the copy under way is stopped and its partial copies removed. A ready request's staged copy then
    lasts only as long as the other ready requests want it (or expires now). Raises ``RestoreNotFound``,
    ``UsageError`` for a finished request."""
    now = app.now()
    job_to_stop: int | None = None
    with app.catalog.session() as s:
        req = s.get(RestoreRequest, request_id, with_for_update=True)
        if req is None:
            raise RestoreNotFound(request_id)
        if req.state not in ACTIVE:
            raise UsageError(f"restore request {request_id} is {req.state}; only queued, running or ready "
                             "requests can be cancelled")
        previous = req.state
        _set_state(req, RequestState.CANCELLED, now)
        group = and_(RestoreRequest.dataset_id == req.dataset_id, RestoreRequest.tier_id == req.tier_id,
                     RestoreRequest.id != req.id)
        ds = s.get_one(Dataset, req.dataset_id)
        if previous == RequestState.READY and ds.home_tier_id != req.tier_id:
            others = s.scalar(select(func.max(RestoreRequest.expires_at)).where(
                group, RestoreRequest.state == RequestState.READY))
            s.execute(
                update(Replica)
                .where(Replica.tier_id == req.tier_id, Replica.member_id.in_(_dataset_members(ds.id)),
                       Replica.state == ReplicaState.LIVE, Replica.expires_at.is_not(None))
                .values(expires_at=max(others, now) if others is not None else now)
            )
        elif previous in PENDING and req.move_job_id is not None:
            still_wanted = s.scalar(select(func.count(RestoreRequest.id)).where(
                group, RestoreRequest.state.in_([str(x) for x in PENDING])))
            if not still_wanted:
                job_to_stop = req.move_job_id
        s.add(AuditEntry(
            at=now, actor=app.actor, action="restore_cancel", dataset_id=ds.id, dataset_label=ds.label,
            from_tier=None, to_tier=s.get_one(Tier, req.tier_id).name, bytes=0, result="ok",
            detail={"request_id": req.id, "was": previous},
        ))
    if job_to_stop is not None:
        with contextlib.suppress(UsageError):  # it finished meanwhile: the sweeper handles its copy
            Executor(app).cancel(job_to_stop)
        _remove_unfinished_copies(app, job_to_stop)
    return get_restore(app, request_id, now=now)


def _remove_unfinished_copies(app: App, job_id: int) -> None:
    """Delete what a restore job that will never commit wrote on its target: every step's object whose
    member has no live copy there (found by the step's deterministic key, so a copy that landed after its
    replica row was removed is found too), then the rows."""
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id)
        if job.state in UNFINISHED_JOB_STATES:
            return
        dst = s.get_one(Tier, job.dst_tier_id).name
        live = select(Replica.member_id).where(Replica.tier_id == job.dst_tier_id,
                                               Replica.state == ReplicaState.LIVE)
        keys = list(s.scalars(select(MoveStep.dst_key).where(
            MoveStep.job_id == job_id, MoveStep.member_id.not_in(live)).distinct()))
        dst_tier_id = job.dst_tier_id
    backend = app.backend(dst)
    for key in keys:
        try:
            backend.delete(key)
        except TieringError as exc:
            log.warning("could not delete partial restore copy %s on %s: %s", key, dst, exc)
            return  # keep the rows: the next attempt finds the objects through them
    with app.catalog.session() as s:
        s.execute(delete(Replica).where(
            Replica.tier_id == dst_tier_id, Replica.state != ReplicaState.LIVE,
            Replica.member_id.in_(select(MoveStep.member_id).where(MoveStep.job_id == job_id))))


def _chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    return [ids[i:i + _ID_CHUNK] for i in range(0, len(ids), _ID_CHUNK)]


# ------------------------------------------------------------------------------------------ dispatcher


@dataclass
class GroupOutcome:
    """What one dispatch did for one dataset and target tier."""

    dataset: str
    target: str
    request_ids: list[int]
    state: str  # ready | running | waiting | partial (some members staged) | failed | cancelled
    job_id: int | None = None
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class DispatchReport:
    groups: list[GroupOutcome] = field(default_factory=list)


def _pending_groups(app: App, dataset_ids: Collection[int] | None) -> list[tuple[int, int]]:
    """(dataset_id, tier_id) of every group with a pending request: by best priority, then oldest."""
    with app.catalog.session() as s:
        stmt = (
            select(RestoreRequest.dataset_id, RestoreRequest.tier_id)
            .where(RestoreRequest.state.in_([str(x) for x in PENDING]))
            .group_by(RestoreRequest.dataset_id, RestoreRequest.tier_id)
            .order_by(func.min(RestoreRequest.priority), func.min(RestoreRequest.created_at),
                      func.min(RestoreRequest.id))
        )
        if dataset_ids is not None:
            stmt = stmt.where(RestoreRequest.dataset_id.in_(list(dataset_ids)))
        return [(int(d), int(t)) for d, t in s.execute(stmt).all()]


def dispatch_restores(
    app: App,
    *,
    now: dt.datetime | None = None,
    limit: int = DEFAULT_DISPATCH_LIMIT,
    dataset_ids: Collection[int] | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    sleep: Sleep = time.sleep,
    monotonic: Monotonic = time.monotonic,
    poll_seconds: float = 30.0,
    max_wait_seconds: float = 0.0,
    fence: LeaderFence | None = None,
) -> DispatchReport:
    """Serve pending restore requests: at most ``limit`` groups (dataset, target), best priority first,
    then oldest; only those of ``dataset_ids`` when given.

    For each group: ready at once when the data is already there; otherwise its restore job is created or
    resumed, archive objects are asked for and polled (for at most ``max_wait_seconds`` seconds, every
    ``poll_seconds``), members are copied and verified, and the requests become ready with their expiry.
    ``now`` fixes the time used for request timestamps and expiries (default: the app's clock at the
    moment). ``progress`` receives bytes copied; ``stop`` (a ``threading.Event``) stops starting copies.
    Safe to run in several processes at once and again after a crash. Returns what was done per group.
    ``fence``: the dispatch is a scheduler leader's; a group's job is created and its requests taken only
    while that leader's epoch is current (else :class:`~tiering.errors.NotLeader`).
    """
    clock: Callable[[], dt.datetime] = (lambda: now) if now is not None else app.now
    report = DispatchReport()
    for dataset_id, tier_id in _pending_groups(app, dataset_ids)[:max(0, limit)]:
        if stop is not None and stop.is_set():
            break
        report.groups.append(_dispatch_group(
            app, dataset_id, tier_id, clock=clock, progress=progress, stop=stop, sleep=sleep,
            monotonic=monotonic, poll_seconds=poll_seconds, max_wait_seconds=max_wait_seconds, fence=fence,
        ))
    return report


def _dispatch_group(
    app: App,
    dataset_id: int,
    tier_id: int,
    *,
    clock: Callable[[], dt.datetime],
    progress: Progress | None,
    stop: threading.Event | None,
    sleep: Sleep,
    monotonic: Monotonic,
    poll_seconds: float,
    max_wait_seconds: float,
    fence: LeaderFence | None = None,
) -> GroupOutcome:
    started = monotonic()
    with app.catalog.session() as s:
        ds = s.get_one(Dataset, dataset_id)
        target = s.get_one(Tier, tier_id)
        reqs = _pending_requests(s, dataset_id, tier_id)
        outcome = GroupOutcome(ds.label, target.name, [r.id for r in reqs], "waiting")
        if not reqs:
            outcome.state = "ready"
            return outcome
        if ds.home_tier_id == tier_id or _staged_complete(s, dataset_id, tier_id):
            _mark_ready(s, app, ds, target, reqs, clock(), job_id=None)
            outcome.state, outcome.bytes = "ready", 0
            return outcome
        source = ds.home_tier.name
        priority = min(r.priority for r in reqs)
        unfinished = s.scalars(
            select(MoveJob).where(MoveJob.dataset_id == dataset_id,
                                  MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES]))
        ).first()
        if unfinished is not None and not (unfinished.purpose == "restore" and unfinished.dst_tier_id == tier_id):
            outcome.error = f"waiting for {unfinished.purpose} job {unfinished.id} of {ds.label} to finish"
            return outcome
        job_id = unfinished.id if unfinished is not None else None
        leftovers = s.scalar(select(func.count(Replica.id)).where(
            Replica.tier_id == tier_id, Replica.member_id.in_(_dataset_members(dataset_id)),
            Replica.state == ReplicaState.DELETING))
    if job_id is None:
        if leftovers:
            _sweep_group(app, dataset_id, tier_id, clock(), force=True)
        try:
            job_id = Executor(app).create_job(
                dataset_id, target.name, purpose="restore",
                reason=f"restore request(s) {', '.join(str(i) for i in outcome.request_ids)}",
                fence=fence,
            )
        except MoveInProgress as exc:  # another dispatcher (or a move) got there first
            outcome.error = str(exc)
            return outcome
        _skip_staged_members(app, job_id, tier_id)
    outcome.job_id = job_id
    with app.catalog.session() as s:
        check_fence(s, fence)
        now = clock()
        for req in _pending_requests(s, dataset_id, tier_id):
            if req.state == RequestState.QUEUED:
                _set_state(req, RequestState.RUNNING, now)
                req.started_at = now
            req.move_job_id, req.updated_at = job_id, now
    try:
        readable = _thaw_archive(app, dataset_id, source, priority, sleep=sleep, monotonic=monotonic,
                                 poll_seconds=poll_seconds, max_wait_seconds=max_wait_seconds)
    except TieringError as exc:
        Executor(app).abandon(job_id, reason=f"archive restore failed: {exc}")
        _fail_requests(app, dataset_id, tier_id, f"{ds.label}: archive restore failed: {exc}")
        outcome.state, outcome.error = "failed", str(exc)
        return outcome
    if not readable:
        outcome.state = "running"
        outcome.error = "the archive has not made every object readable yet; dispatching again carries on"
        return outcome
    result = Executor(app).run_job(job_id, progress=progress, stop=stop)
    outcome.bytes = result.bytes
    if result.state == JobState.FAILED:
        # what verified is staged; the requests fail naming each member that did not, and the job ends
        staged, message = _commit_partial(app, job_id, clock)
        Executor(app).abandon(job_id, reason=message)
        outcome.state, outcome.error = ("partial" if staged else "failed"), message
        return outcome
    if result.state != JobState.RUNNING:
        _remove_unfinished_copies(app, job_id)
        outcome.state = str(result.state)
        return outcome
    crash_point("restore_after_copy")
    outcome.state = _commit_restore(app, job_id, clock)
    if outcome.state == "running":
        outcome.error = "other workers still copy some members; dispatching again carries on"
    elif outcome.state != "ready":  # cancelled by another process while we copied
        _remove_unfinished_copies(app, job_id)
    outcome.seconds = monotonic() - started
    return outcome


def _skip_staged_members(app: App, job_id: int, tier_id: int) -> None:
    """Steps of a new restore job whose member is already live on the target (staged by an earlier, partial
    restore) need no copy: they start verified, and the commit makes the whole copy ready together."""
    with app.catalog.session() as s:
        s.execute(
            update(MoveStep)
            .where(MoveStep.job_id == job_id, MoveStep.state == StepState.PLANNED,
                   MoveStep.member_id.in_(select(Replica.member_id).where(
                       Replica.tier_id == tier_id, Replica.state == ReplicaState.LIVE)))
            .values(state=StepState.VERIFIED)
            .execution_options(synchronize_session=False)
        )


def _pending_requests(s: Session, dataset_id: int, tier_id: int) -> list[RestoreRequest]:
    return list(s.scalars(
        select(RestoreRequest)
        .where(RestoreRequest.dataset_id == dataset_id, RestoreRequest.tier_id == tier_id,
               RestoreRequest.state.in_([str(x) for x in PENDING]))
        .order_by(RestoreRequest.id)
    ))


def _mark_ready(
    s: Session, app: App, ds: Dataset, target: Tier, reqs: list[RestoreRequest], now: dt.datetime,
    *, job_id: int | None,
) -> dt.datetime:
    """Requests ready from ``now`` for their own days; the staged copy lasts until the latest expiry."""
    latest = now
    for req in reqs:
        expires = now + dt.timedelta(days=req.days)
        latest = max(latest, expires)
        _set_state(req, RequestState.READY, now)
        req.ready_at, req.expires_at, req.bytes_done = now, expires, req.bytes_total
        if job_id is not None:
            req.move_job_id = job_id
    if ds.home_tier_id != target.id:
        latest = _extend_staged(s, ds.id, target.id, latest)
    return latest


def _fail_requests(app: App, dataset_id: int, tier_id: int, message: str) -> None:
    now = app.now()
    with app.catalog.session() as s:
        for req in _pending_requests(s, dataset_id, tier_id):
            _set_state(req, RequestState.FAILED, now)
            req.last_error = message[:4000]


def _failed_member_lines(s: Session, job: MoveJob, label: str) -> tuple[list[str], int]:
    """One line per failed member of a restore job (at most FAILED_MEMBER_LINES) and how many failed:
    dataset, path, the archive object and offset read, expected and actual digest (or the error)."""
    src = s.get_one(Tier, job.src_tier_id).name
    failed = and_(MoveStep.job_id == job.id, MoveStep.state == StepState.FAILED)
    total = int(s.scalar(select(func.count(MoveStep.id)).where(failed)) or 0)
    rows = s.execute(
        select(Member.path, Member.size, Member.xxh3, MoveStep.last_error, Replica.key, Replica.shard_offset)
        .join(MoveStep, MoveStep.member_id == Member.id)
        .outerjoin(Replica, and_(Replica.member_id == Member.id, Replica.tier_id == job.src_tier_id))
        .where(failed).order_by(Member.path).limit(FAILED_MEMBER_LINES)
    ).all()
    lines = []
    for path, size, xxh3, error, key, offset in rows:
        where = f"{src}:{key}" + (f" at offset {offset}" if offset is not None else "") if key else f"tier {src}"
        actual = _ACTUAL_DIGEST.search(error or "")
        if actual is not None and (error or "").startswith("source_changed"):
            why = f"corrupt archive copy: hashes to {actual.group(1)}, catalog says {xxh3} ({size} bytes)"
        else:
            why = (error or "unknown error")[:300]
        lines.append(f"{label}:{path}: {where}: {why}")
    return lines, total


def _commit_partial(app: App, job_id: int, clock: Callable[[], dt.datetime]) -> tuple[int, str]:
    """For a restore job some of whose members failed: in one transaction, its verified copies become the
    staged copy (live until the latest expiry its requests ask for) and its pending requests fail with a
    ``last_error`` of one line per failed member. Returns (members staged, that message). A later request
    copies only the members still missing there."""
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id, with_for_update=True)
        ds = s.get_one(Dataset, job.dataset_id)
        target = s.get_one(Tier, job.dst_tier_id)
        lines, failed = _failed_member_lines(s, job, ds.label)
        now = clock()
        reqs = _pending_requests(s, ds.id, job.dst_tier_id)
        expires = now + dt.timedelta(days=max([r.days for r in reqs] or [1]))
        staged = 0
        if ds.home_tier_id != job.dst_tier_id:
            staged = s.execute(
                update(Replica)
                .where(Replica.tier_id == job.dst_tier_id, Replica.member_id.in_(_dataset_members(ds.id)),
                       Replica.state == ReplicaState.VERIFIED)
                .values(state=ReplicaState.LIVE, expires_at=expires)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            _extend_staged(s, ds.id, job.dst_tier_id, expires)
        readable = s.scalar(select(func.count(Replica.id)).where(
            Replica.tier_id == job.dst_tier_id, Replica.member_id.in_(_dataset_members(ds.id)),
            Replica.state == ReplicaState.LIVE)) or 0
        head = (f"restore of {ds.label} to {target.name} failed for {failed} of {ds.member_count} members; "
                f"{readable} are readable there until {expires.isoformat(timespec='seconds')}; "
                "request it again once the archive copy is fixed (only the missing members are copied)")
        if not failed:
            head = f"restore of {ds.label} to {target.name} failed: {job.last_error or 'unknown error'}"
        more = [f"... and {failed - len(lines)} more members"] if failed > len(lines) else []
        message = "\n".join([head, *lines, *more])
        for req in reqs:
            _set_state(req, RequestState.FAILED, now)
            req.last_error = message
        s.add(AuditEntry(
            at=now, actor=app.actor, action="restore", dataset_id=ds.id, dataset_label=ds.label,
            from_tier=ds.home_tier.name, to_tier=target.name, bytes=0, result="partial" if staged else "failed",
            detail={"job_id": job_id, "requests": [r.id for r in reqs], "staged": staged, "failed": failed,
                    "members": lines[:10]},
        ))
    return staged, message


def _commit_restore(app: App, job_id: int, clock: Callable[[], dt.datetime]) -> str:
    """Make a restore job's verified copies the staged copy and its requests ready, in one transaction.

    Returns ``"ready"``, or ``"running"`` while some steps are not verified yet (another worker has them).
    """
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id)
        pending = s.scalar(select(MoveStep.id).where(
            MoveStep.job_id == job_id, MoveStep.state.not_in([StepState.VERIFIED, StepState.COMMITTED])).limit(1))
        if job.state != JobState.RUNNING:
            return "ready" if job.state == JobState.DONE else str(job.state)
        if pending is not None:
            return "running"
        ds = s.get_one(Dataset, job.dataset_id)
        target = s.get_one(Tier, job.dst_tier_id)
        rows = s.execute(select(Member.path, Member.size, Member.xxh3, Member.md5, Member.sha256, Member.mode,
                                Member.mtime_ns)
                         .where(Member.dataset_id == ds.id)).all()
        entries = load_entries(s, ds.id)
        manifest = build_manifest(
            name=ds.name, version=ds.version, kind=ds.kind, owner=ds.owner, tags=dict(ds.tags),
            tier=target.name, written_at=clock(), entries=entries,
            members=[ManifestMember(p, sz, x, m5, s2, mode=mode, mtime_ns=mtime)
                     for p, sz, x, m5, s2, mode, mtime in rows],
        )
        prefix = dataset_prefix(ds.kind, ds.name, ds.version)
        tree = [] if target.archive else posix_entries({r[0]: (r[5], r[6]) for r in rows}, entries)
    # the staged copy describes itself like any other copy (removed again with it by the sweeper)
    target_backend = app.backend(target.name)
    target_backend.put(manifest_key(prefix), io.BytesIO(manifest), size=len(manifest))
    # a directory tier holds the dataset as it was registered: modes, times, directories, links
    apply_tree(target_backend, prefix, tree)
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id, with_for_update=True)
        if job.state != JobState.RUNNING:
            return "ready" if job.state == JobState.DONE else str(job.state)
        now = clock()
        ds = s.get_one(Dataset, job.dataset_id)
        target = s.get_one(Tier, job.dst_tier_id)
        s.execute(
            update(Replica)
            .where(Replica.tier_id == job.dst_tier_id, Replica.member_id.in_(_dataset_members(ds.id)),
                   Replica.state == ReplicaState.VERIFIED)
            .values(state=ReplicaState.LIVE, expires_at=now)
            .execution_options(synchronize_session=False)  # no replica or step is loaded in this session
        )
        reqs = _pending_requests(s, ds.id, job.dst_tier_id)
        expires = _mark_ready(s, app, ds, target, reqs, now, job_id=job_id)
        s.execute(update(MoveStep).where(MoveStep.job_id == job_id)
                  .values(state=StepState.COMMITTED, updated_at=now).execution_options(synchronize_session=False))
        check_job(job.state, JobState.COMMITTED)
        check_job(JobState.COMMITTED, JobState.DONE)
        job.state = JobState.DONE
        job.updated_at = job.finished_at = now
        s.add(AuditEntry(
            at=now, actor=app.actor, action="restore", dataset_id=ds.id, dataset_label=ds.label,
            from_tier=ds.home_tier.name, to_tier=target.name, bytes=ds.size_bytes, result="ok",
            detail={"job_id": job_id, "requests": [r.id for r in reqs], "expires_at": expires.isoformat(),
                    "members": ds.member_count},
        ))
    return "ready"


def _thaw_archive(
    app: App,
    dataset_id: int,
    source: str,
    priority: int,
    *,
    sleep: Sleep,
    monotonic: Monotonic,
    poll_seconds: float,
    max_wait_seconds: float,
) -> bool:
    """For a ``glacier`` source tier: ask the archive for every object the dataset needs (shards and single
    objects, each once) and poll until all are readable. True when they are (or the tier is no archive);
    False when ``max_wait_seconds`` ran out first. Raises ``BackendError``, ``ConfigError``."""
    if app.config.tier(source).archive != "glacier":
        return True
    with app.catalog.session() as s:
        keys = list(s.scalars(
            select(Replica.key).join(Member, Member.id == Replica.member_id)
            .where(Member.dataset_id == dataset_id, Replica.tier_id == select(Dataset.home_tier_id)
                   .where(Dataset.id == dataset_id).scalar_subquery(),
                   Replica.state.in_([str(x) for x in TRUSTED_REPLICA_STATES]))
            .distinct().order_by(Replica.key)
        ))
    backend = app.backend(source)
    archive = find_capability(backend, Archive)
    waiting: list[str] = []
    for key in keys:
        info = backend.head(key)
        if not info.archived:
            continue
        if not info.restore_in_progress:
            if archive is None:
                raise ConfigError(f"tier {source!r} has archive: glacier but its backend cannot restore objects")
            try:
                archive.request_restore(key, days=GLACIER_RESTORE_DAYS,
                                        retrieval_tier=RETRIEVAL_TIERS.get(priority, "Standard"))
            except PermanentBackendError:
                # InvalidObjectState: it left the archive class meanwhile and reads as it is
                if backend.head(key).archived:
                    raise
                continue
        waiting.append(key)
    deadline = monotonic() + max_wait_seconds
    while waiting:
        waiting = [k for k in waiting if backend.head(k).archived]
        if not waiting:
            break
        left = deadline - monotonic()
        if left <= 0:
            log.info("restore of dataset %s: %d archive object(s) not readable yet", dataset_id, len(waiting))
            return False
        sleep(min(poll_seconds, left))
    return True


def restore_and_wait(
    app: App,
    label: str,
    *,
    to: str,
    days: int = DEFAULT_DAYS,
    priority: str = "normal",
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    sleep: Sleep = time.sleep,
    monotonic: Monotonic = time.monotonic,
    poll_seconds: float = 30.0,
    max_wait_seconds: float = 86400.0,
) -> RestoreView:
    """File a request and run the dispatcher for this dataset until the request is ready, failed or
    cancelled, or ``max_wait_seconds`` passed (then it is returned still running). Never raises for a
    failed restore: the returned view says so (``state``, ``last_error``)."""
    view = request_restore(app, label, to=to, days=days, priority=priority)
    if view.state != RequestState.QUEUED and view.state != RequestState.RUNNING:
        return view
    with app.catalog.session() as s:
        dataset_id = s.get_one(RestoreRequest, view.id).dataset_id
    deadline = monotonic() + max_wait_seconds
    while True:
        dispatch_restores(app, dataset_ids=[dataset_id], limit=1, progress=progress, stop=stop, sleep=sleep,
                          monotonic=monotonic, poll_seconds=poll_seconds,
                          max_wait_seconds=max(0.0, deadline - monotonic()))
        view = get_restore(app, view.id)
        if view.state not in PENDING or (stop is not None and stop.is_set()):
            return view
        left = deadline - monotonic()
        if left <= 0:
            return view
        sleep(min(poll_seconds, left))


# ------------------------------------------------------------------------------------------ sweeper


@dataclass
class SweepReport:
    """Per swept group: dataset label, tier, replicas removed, bytes freed; and copies kept because they
    were a member's last durable verified copy."""

    removed: list[dict[str, object]] = field(default_factory=list)
    kept_last_copy: int = 0


def sweep_expired(app: App, now: dt.datetime | None = None) -> SweepReport:
    """Remove every staged copy whose expiry has passed at ``now`` (default: the app's clock).

    Per dataset and tier: replicas become ``deleting`` (so nothing resolves to them any more), the objects
    are deleted, the rows removed, the ready requests marked expired, and one ``expire`` audit entry
    written. A replica on the dataset's home tier, or one that is a member's only durable verified copy,
    is never removed. A sweep interrupted by a crash is finished by the next one. Idempotent.
    """
    now = now or app.now()
    with app.catalog.session() as s:
        groups = s.execute(
            select(Member.dataset_id, Replica.tier_id)
            .join(Member, Member.id == Replica.member_id)
            .join(Dataset, Dataset.id == Member.dataset_id)
            .where(Replica.expires_at.is_not(None), Replica.tier_id != Dataset.home_tier_id,
                   ((Replica.state == ReplicaState.LIVE) & (Replica.expires_at <= now))
                   | (Replica.state == ReplicaState.DELETING))
            .distinct()
        ).all()
    report = SweepReport()
    for dataset_id, tier_id in groups:
        _sweep_group(app, int(dataset_id), int(tier_id), now, report=report)
    # a ready request past its own expiry is over, even while a later one keeps the copy
    with app.catalog.session() as s:
        for req in s.scalars(select(RestoreRequest).where(
                RestoreRequest.state == RequestState.READY, RestoreRequest.expires_at <= now)):
            _set_state(req, RequestState.EXPIRED, now)
    return report


def _sweep_group(
    app: App, dataset_id: int, tier_id: int, now: dt.datetime, *, force: bool = False,
    report: SweepReport | None = None,
) -> None:
    """Remove the expired (all, with ``force``) staged replicas of one dataset on one tier."""
    elsewhere = aliased(Replica)
    durable_elsewhere = exists().where(
        elsewhere.member_id == Replica.member_id, elsewhere.tier_id != Replica.tier_id,
        elsewhere.state.in_([str(x) for x in TRUSTED_REPLICA_STATES]), elsewhere.expires_at.is_(None),
    )
    with app.catalog.session() as s:
        ds = s.get_one(Dataset, dataset_id)
        tier = s.get_one(Tier, tier_id)
        if ds.home_tier_id == tier_id:
            return
        busy = s.scalar(select(MoveJob.id).where(
            MoveJob.dataset_id == dataset_id, MoveJob.dst_tier_id == tier_id,
            MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES])).limit(1))
        if busy is not None:
            return  # a move or restore towards this tier is writing there now
        expired = (Replica.state == ReplicaState.LIVE) & (Replica.expires_at <= now) if not force \
            else Replica.state == ReplicaState.LIVE
        ours = and_(Replica.tier_id == tier_id, Replica.member_id.in_(_dataset_members(dataset_id)),
                    Replica.expires_at.is_not(None))
        kept = s.scalar(select(func.count(Replica.id)).where(ours, expired, ~durable_elsewhere)) or 0
        s.execute(update(Replica).where(ours, expired, durable_elsewhere).values(state=ReplicaState.DELETING))
        doomed = s.execute(
            select(Replica.id, Replica.key, Member.size).join(Member, Member.id == Replica.member_id)
            .where(ours, Replica.state == ReplicaState.DELETING)
        ).all()
        label, tier_name = ds.label, tier.name
        prefix = dataset_prefix(ds.kind, ds.name, ds.version)
        entries = load_entries(s, dataset_id)
    if kept:
        log.warning("%s on %s: %d expired staged replica(s) kept: they are the only durable verified copy",
                    label, tier_name, kept)
    backend = app.backend(tier_name)
    gone: list[int] = []
    freed = 0
    failed = delete_keys(backend, (key for _rid, key, _size in doomed))
    for key, why in failed.items():
        log.warning("could not delete expired staged copy %s on %s (next sweep retries): %s", key, tier_name, why)
    for rid, key, size in doomed:
        if key in failed:
            continue
        gone.append(rid)
        freed += size
    for chunk in _chunks(gone):
        with app.catalog.session() as s:
            s.execute(delete(Replica).where(Replica.id.in_(chunk)))
    with app.catalog.session() as s:
        left = s.scalar(select(func.count(Replica.id)).where(
            Replica.tier_id == tier_id, Replica.member_id.in_(_dataset_members(dataset_id))))
        if not left:
            with contextlib.suppress(TieringError):
                remove_tree(backend, prefix, entries)
                backend.delete(manifest_key(prefix))
            for req in s.scalars(select(RestoreRequest).where(
                    RestoreRequest.dataset_id == dataset_id, RestoreRequest.tier_id == tier_id,
                    RestoreRequest.state == RequestState.READY)):
                _set_state(req, RequestState.EXPIRED, now)
        if gone or kept:
            s.add(AuditEntry(
                at=now, actor=app.actor, action="expire", dataset_id=dataset_id, dataset_label=label,
                from_tier=tier_name, to_tier=None, bytes=freed, result="ok" if not kept else "partial",
                detail={"removed": len(gone), "kept_last_copy": kept, "forced": force},
            ))
    if report is not None:
        report.removed.append({"dataset": label, "tier": tier_name, "replicas": len(gone), "bytes": freed})
        report.kept_last_copy += kept
