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

The dispatcher that copies them is :mod:`tiering.restore.dispatch`, the archive protocol
:mod:`tiering.restore.thaw`, the expiry of staged copies :mod:`tiering.restore.sweep`. This module files,
cancels and lists requests and says where a dataset can be read.

Times are UTC from the app's clock (or ``now=``); durations are seconds; sizes are bytes.
"""


from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ScalarSelect

from tiering.app import App
from tiering.catalog.models import AuditEntry, Dataset, Member, MoveJob, MoveStep, Replica, RestoreRequest, Tier
from tiering.catalog.queries import find_dataset
from tiering.catalog.states import (
    UNFINISHED_JOB_STATES,
    DatasetState,
    JobState,
    ReplicaState,
    StepState,
)
from tiering.errors import (
    DatasetArchived,
    IllegalTransition,
    RestoreNotFound,
    TieringError,
    UsageError,
)
from tiering.layout import parse_label
from tiering.moves.finish import cancel

log = logging.getLogger(__name__)
#: priority names and their catalog values (lower runs first)
PRIORITIES: Final = {"high": 0, "normal": 1, "low": 2}
PRIORITY_NAMES: Final = {v: k for k, v in PRIORITIES.items()}
#: the ETA's rate is measured over the bytes verified in this many recent seconds
RATE_WINDOW_SECONDS: Final = 120.0
DEFAULT_DAYS: Final = 7
#: rows per statement when ids are listed (SQLite limits bound parameters)
_ID_CHUNK: Final = 500


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


def set_state(req: RestoreRequest, wanted: RequestState, now: dt.datetime) -> None:
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
class JobProgress:
    bytes_done: int
    eta_seconds: float | None


def _job_progress(s: Session, job: MoveJob, total: int, now: dt.datetime) -> JobProgress:
    """Bytes verified so far by a restore job and an ETA from the recent rate (catalog facts only, so any
    process can show them while another one copies)."""
    done_steps = and_(MoveStep.job_id == job.id,
                      MoveStep.state.in_([StepState.VERIFIED, StepState.COMMITTED]))
    done = int(s.scalar(
        select(func.coalesce(func.sum(Member.size), 0)).join(MoveStep, MoveStep.member_id == Member.id)
        .where(done_steps)
    ) or 0)
    if job.state not in (JobState.PLANNED, JobState.RUNNING):
        return JobProgress(done, None)
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
    return JobProgress(done, eta)


def restore_view(
    s: Session, req: RestoreRequest, now: dt.datetime, cache: dict[int, JobProgress] | None = None
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
        cache: dict[int, JobProgress] = {}
        return [restore_view(s, r, now, cache) for r in rows]


def get_restore(app: App, request_id: int, *, now: dt.datetime | None = None) -> RestoreView:
    with app.catalog.session() as s:
        req = s.get(RestoreRequest, request_id)
        if req is None:
            raise RestoreNotFound(request_id)
        return restore_view(s, req, now or app.now())


# ------------------------------------------------------------------------------------------ staged copies


def staged_complete(s: Session, dataset_id: int, tier_id: int) -> bool:
    """True when every member of the dataset has a live replica on ``tier_id`` (expired or not)."""
    members = s.scalar(select(func.count(Member.id)).where(Member.dataset_id == dataset_id)) or 0
    live = s.scalar(
        select(func.count(Replica.id)).join(Member, Member.id == Replica.member_id)
        .where(Member.dataset_id == dataset_id, Replica.tier_id == tier_id, Replica.state == ReplicaState.LIVE)
    ) or 0
    return members > 0 and live == members


def dataset_members(dataset_id: int) -> ScalarSelect[int]:
    return select(Member.id).where(Member.dataset_id == dataset_id).scalar_subquery()


def extend_staged(s: Session, dataset_id: int, tier_id: int, expires: dt.datetime) -> dt.datetime:
    """Make the staged copy on ``tier_id`` last at least until ``expires``; returns its new expiry."""
    current: dt.datetime | None = s.scalar(
        select(func.min(Replica.expires_at)).where(
            Replica.tier_id == tier_id, Replica.member_id.in_(dataset_members(dataset_id)),
            Replica.state == ReplicaState.LIVE,
        )
    )
    if current is not None and current >= expires:
        return current
    s.execute(
        update(Replica)
        .where(Replica.tier_id == tier_id, Replica.member_id.in_(dataset_members(dataset_id)),
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
        v = restore_view(s, pending[0], now)
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
        ds = find_dataset(s, label)
        if ds.state == DatasetState.REGISTERING:
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
        if ds.home_tier_id == target.id or staged_complete(s, ds.id, target.id):
            expires = now + dt.timedelta(days=days)
            if ds.home_tier_id != target.id:
                extend_staged(s, ds.id, target.id, expires)
                note = "already staged there: expiry extended"
            else:
                note = f"{ds.label} lives on {to}"
            set_state(req, RequestState.READY, now)
            req.ready_at, req.expires_at, req.bytes_done = now, expires, ds.size_bytes
        else:
            running = s.scalars(
                select(RestoreRequest).where(
                    RestoreRequest.dataset_id == ds.id, RestoreRequest.tier_id == target.id,
                    RestoreRequest.state == RequestState.RUNNING, RestoreRequest.id != req.id,
                ).limit(1)
            ).first()
            if running is not None:
                set_state(req, RequestState.RUNNING, now)
                req.move_job_id, req.started_at = running.move_job_id, now
                note = f"joined request {running.id} under way"
        view = restore_view(s, req, now)
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
        set_state(req, RequestState.CANCELLED, now)
        group = and_(RestoreRequest.dataset_id == req.dataset_id, RestoreRequest.tier_id == req.tier_id,
                     RestoreRequest.id != req.id)
        ds = s.get_one(Dataset, req.dataset_id)
        if previous == RequestState.READY and ds.home_tier_id != req.tier_id:
            others = s.scalar(select(func.max(RestoreRequest.expires_at)).where(
                group, RestoreRequest.state == RequestState.READY))
            s.execute(
                update(Replica)
                .where(Replica.tier_id == req.tier_id, Replica.member_id.in_(dataset_members(ds.id)),
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
            cancel(app, job_to_stop)
        remove_unfinished_copies(app, job_to_stop)
    return get_restore(app, request_id, now=now)


def remove_unfinished_copies(app: App, job_id: int) -> None:
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


def chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    return [ids[i:i + _ID_CHUNK] for i in range(0, len(ids), _ID_CHUNK)]



def pending_requests(s: Session, dataset_id: int, tier_id: int) -> list[RestoreRequest]:
    return list(s.scalars(
        select(RestoreRequest)
        .where(RestoreRequest.dataset_id == dataset_id, RestoreRequest.tier_id == tier_id,
               RestoreRequest.state.in_([str(x) for x in PENDING]))
        .order_by(RestoreRequest.id)
    ))


def mark_ready(
    s: Session, app: App, ds: Dataset, target: Tier, reqs: list[RestoreRequest], now: dt.datetime,
    *, job_id: int | None,
) -> dt.datetime:
    """Requests ready from ``now`` for their own days; the staged copy lasts until the latest expiry."""
    latest = now
    for req in reqs:
        expires = now + dt.timedelta(days=req.days)
        latest = max(latest, expires)
        set_state(req, RequestState.READY, now)
        req.ready_at, req.expires_at, req.bytes_done = now, expires, req.bytes_total
        if job_id is not None:
            req.move_job_id = job_id
    if ds.home_tier_id != target.id:
        latest = extend_staged(s, ds.id, target.id, latest)
    return latest


def fail_requests(app: App, dataset_id: int, tier_id: int, message: str) -> None:
    now = app.now()
    with app.catalog.session() as s:
        for req in pending_requests(s, dataset_id, tier_id):
            set_state(req, RequestState.FAILED, now)
            req.last_error = message[:4000]


