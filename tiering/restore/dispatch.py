"""The restore dispatcher: one restore job per group of requests (dataset, target tier), then its commit.

**Dispatcher** (:func:`dispatch_restores`; the scheduler runs it every ``schedule.restore_every_seconds``,
``tiering restore --wait`` runs it inline): groups are taken by priority (high, normal, low), then age. For
each, a job with purpose ``restore`` is written (steps ordered by source object and offset, so the members
of one cold shard are read together), the archive is asked to make its objects readable
(:mod:`tiering.restore.thaw`), and :meth:`~tiering.moves.executor.Executor.copy_job` copies and verifies
the members: claimed with leases, copied, hashed and verified. A packed member is read out of its shard
with a ranged GET and lands at its original path. Then one transaction makes the copies **staged**
replicas (state ``live`` on the target, ``expires_at`` set) and the requests ready. The dataset's home
stays on the archive tier: the cold copy stays the master and is never deleted by a restore.

**Partial restores.** A member whose archive copy does not verify does not stop the others: every member
that verifies is staged (live on the target until the requests' expiry), the requests fail with a
``last_error`` naming each bad member on a line of its own (dataset, path, archive object and offset,
expected and actual digest; at most :data:`FAILED_MEMBER_LINES`), and the job ends failed. A later request
for the same target copies only the members still missing there.

**Crash safety.** Everything is resumable by dispatching again: steps already verified are not copied
again, an interrupted copy overwrites its own deterministic key, and a request becomes ready only in the
transaction that makes its copies live (crash point ``restore_after_copy`` lies just before it).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from tiering.app import App
from tiering.catalog.leader import LeaderFence, check_fence
from tiering.catalog.models import AuditEntry, Dataset, Member, MoveJob, MoveStep, Replica, RestoreRequest, Tier
from tiering.catalog.states import (
    UNFINISHED_JOB_STATES,
    JobPurpose,
    JobState,
    ReplicaState,
    StepState,
    check_job,
)
from tiering.catalog.steps import StepStore
from tiering.errors import (
    MoveInProgress,
    TieringError,
)
from tiering.faults import crash_point
from tiering.layout import ManifestMember, build_manifest, dataset_prefix, manifest_key
from tiering.moves.executor import Executor
from tiering.moves.finish import abandon
from tiering.restore.requests import (
    DEFAULT_DAYS,
    PENDING,
    Monotonic,
    RequestState,
    RestoreView,
    Sleep,
    dataset_members,
    extend_staged,
    fail_requests,
    get_restore,
    mark_ready,
    pending_requests,
    remove_unfinished_copies,
    request_restore,
    set_state,
    staged_complete,
)
from tiering.restore.sweep import sweep_group
from tiering.restore.thaw import thaw_archive
from tiering.storage.tree import apply_tree, load_entries, posix_entries
from tiering.transfer.copier import Progress

log = logging.getLogger(__name__)

#: groups a dispatch takes by default
DEFAULT_DISPATCH_LIMIT: Final = 4
#: failed members named one per line in a failed restore's ``last_error``; the others are counted
FAILED_MEMBER_LINES: Final = 50
#: the actual digest in a ``source_changed`` step error (:class:`~tiering.errors.SourceChanged`'s message)
_ACTUAL_DIGEST: Final = re.compile(r" hashes to (\S+ \(\d+ bytes\))")


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
    executor = Executor(app)
    with app.catalog.session() as s:
        ds = s.get_one(Dataset, dataset_id)
        target = s.get_one(Tier, tier_id)
        reqs = pending_requests(s, dataset_id, tier_id)
        outcome = GroupOutcome(ds.label, target.name, [r.id for r in reqs], "waiting")
        if not reqs:
            outcome.state = "ready"
            return outcome
        if ds.home_tier_id == tier_id or staged_complete(s, dataset_id, tier_id):
            mark_ready(s, app, ds, target, reqs, clock(), job_id=None)
            outcome.state, outcome.bytes = "ready", 0
            return outcome
        source = ds.home_tier.name
        priority = min(r.priority for r in reqs)
        unfinished = s.scalars(
            select(MoveJob).where(MoveJob.dataset_id == dataset_id,
                                  MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES]))
        ).first()
        ours = unfinished is not None and unfinished.purpose == JobPurpose.RESTORE and unfinished.dst_tier_id == tier_id
        if unfinished is not None and not ours:
            outcome.error = f"waiting for {unfinished.purpose} job {unfinished.id} of {ds.label} to finish"
            return outcome
        job_id = unfinished.id if unfinished is not None else None
        leftovers = s.scalar(select(func.count(Replica.id)).where(
            Replica.tier_id == tier_id, Replica.member_id.in_(dataset_members(dataset_id)),
            Replica.state == ReplicaState.DELETING))
    if job_id is None:
        if leftovers:
            sweep_group(app, dataset_id, tier_id, clock(), force=True)
        try:
            job_id = executor.create_job(
                dataset_id, target.name, purpose=JobPurpose.RESTORE,
                reason=f"restore request(s) {', '.join(str(i) for i in outcome.request_ids)}",
                fence=fence,
            )
        except MoveInProgress as exc:  # another dispatcher (or a move) got there first
            outcome.error = str(exc)
            return outcome
        # members already live on the target (staged by an earlier, partial restore) need no copy: their steps
        # start verified, and the commit makes the whole copy ready together
        executor.store.skip_present(job_id, tier_id)
    outcome.job_id = job_id
    with app.catalog.session() as s:
        check_fence(s, fence)
        now = clock()
        for req in pending_requests(s, dataset_id, tier_id):
            if req.state == RequestState.QUEUED:
                set_state(req, RequestState.RUNNING, now)
                req.started_at = now
            req.move_job_id, req.updated_at = job_id, now
    try:
        readable = thaw_archive(app, dataset_id, source, priority, sleep=sleep, monotonic=monotonic,
                                 poll_seconds=poll_seconds, max_wait_seconds=max_wait_seconds)
    except TieringError as exc:
        abandon(app, job_id, reason=f"archive restore failed: {exc}")
        fail_requests(app, dataset_id, tier_id, f"{ds.label}: archive restore failed: {exc}")
        outcome.state, outcome.error = "failed", str(exc)
        return outcome
    if not readable:
        outcome.state = "running"
        outcome.error = "the archive has not made every object readable yet; dispatching again carries on"
        return outcome
    # the copy phase alone: what verified is staged here, with an expiry; the home and the source never change
    result = executor.copy_job(job_id, progress=progress, stop=stop)
    outcome.bytes = result.bytes
    if result.state == JobState.FAILED:
        # what verified is staged; the requests fail naming each member that did not, and the job ends
        staged, message = _commit_partial(app, job_id, clock)
        abandon(app, job_id, reason=message)
        outcome.state, outcome.error = ("partial" if staged else "failed"), message
        return outcome
    if result.state != JobState.RUNNING:
        remove_unfinished_copies(app, job_id)
        outcome.state = str(result.state)
        return outcome
    crash_point("restore_after_copy")
    outcome.state = _commit_restore(app, job_id, clock)
    if outcome.state == "running":
        outcome.error = "other workers still copy some members; dispatching again carries on"
    elif outcome.state != "ready":  # cancelled by another process while we copied
        remove_unfinished_copies(app, job_id)
    outcome.seconds = monotonic() - started
    return outcome





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
        reqs = pending_requests(s, ds.id, job.dst_tier_id)
        expires = now + dt.timedelta(days=max([r.days for r in reqs] or [1]))
        staged = 0
        if ds.home_tier_id != job.dst_tier_id:
            staged = StepStore.set_replicas(s, job.dst_tier_id, dataset_members(ds.id), [ReplicaState.VERIFIED],
                                            ReplicaState.LIVE, expires_at=expires)
            extend_staged(s, ds.id, job.dst_tier_id, expires)
        readable = s.scalar(select(func.count(Replica.id)).where(
            Replica.tier_id == job.dst_tier_id, Replica.member_id.in_(dataset_members(ds.id)),
            Replica.state == ReplicaState.LIVE)) or 0
        head = (f"restore of {ds.label} to {target.name} failed for {failed} of {ds.member_count} members; "
                f"{readable} are readable there until {expires.isoformat(timespec='seconds')}; "
                "request it again once the archive copy is fixed (only the missing members are copied)")
        if not failed:
            head = f"restore of {ds.label} to {target.name} failed: {job.last_error or 'unknown error'}"
        more = [f"... and {failed - len(lines)} more members"] if failed > len(lines) else []
        message = "\n".join([head, *lines, *more])
        for req in reqs:
            set_state(req, RequestState.FAILED, now)
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
        StepStore.set_replicas(s, job.dst_tier_id, dataset_members(ds.id), [ReplicaState.VERIFIED],
                               ReplicaState.LIVE, expires_at=now)
        reqs = pending_requests(s, ds.id, job.dst_tier_id)
        expires = mark_ready(s, app, ds, target, reqs, now, job_id=job_id)
        StepStore.commit_steps(s, job_id, now)
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


