"""Move jobs: the crash-safe protocol of copy, verify, commit, and only then delete the source.

Per member (a *step*): ``planned -> copying -> verified -> committed -> source_deleted``.

1. :meth:`Executor.create_job` writes the job and all its steps before any byte moves.
2. Steps are claimed in batches with a lease (owner, until, epoch). Every later update of a step is
   conditional on the epoch it was claimed at, so a stalled worker whose lease was taken over can never
   overwrite newer work (it gets :class:`LeaseLost` and stops).
3. The copier streams source -> destination, hashing on the way; destination keys are deterministic, so a
   retry overwrites its own attempt. A destination replica row in state ``copying`` exists before the
   first byte is written, so an abandoned attempt is always found and removed.
4. Verified steps are recorded; a step that fails verification deletes its destination copy and fails
   the job with the reason (``checksum_mismatch``, ``source_changed``...). The source stays.
5. When every step is verified, one transaction makes the destination replicas live, moves the dataset's
   home, and marks the source replicas ``deleting``.
6. Only then are the source objects deleted. A failed delete is retried on resume, never fatal.

A lease held by a process on this host that no longer exists is broken at once, so ``tiering resume``
right after a crash does not wait for the lease to time out.

On an archive destination, members below the tier's ``pack_threshold`` go into tar shard objects
(:mod:`tiering.transfer.packing`): their steps name the shard (``dst_key``) and their offset in it (``dst_offset``),
and the steps of one shard are claimed, written, verified and recorded together (see "packed steps").
A job with ``purpose="restore"`` stops after the copy phase: :mod:`tiering.restore.requests` commits its copies as
staged ones with an expiry; the dataset's home does not move and the source is never deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import logging
import os
import posixpath
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from tiering.app import App
from tiering.catalog.db import dialect_insert
from tiering.catalog.leader import LeaderFence, check_fence
from tiering.catalog.models import AuditEntry, Dataset, Member, MoveJob, MoveStep, Replica, Tier
from tiering.catalog.states import (
    TRUSTED_REPLICA_STATES,
    UNFINISHED_JOB_STATES,
    JobState,
    ReplicaState,
    StepState,
    check_job,
)
from tiering.config import normalise_endpoint
from tiering.errors import (
    BackendError,
    DatasetNotFound,
    LeaseLost,
    MoveInProgress,
    MoveJobNotFound,
    StateError,
    TieringError,
    TransientBackendError,
    UsageError,
)
from tiering.faults import crash_armed, crash_point
from tiering.layout import ManifestMember, build_manifest, dataset_prefix, manifest_key
from tiering.storage.base import Backend, BatchedSync, Location, ReadStream, delete_keys, find_capability
from tiering.storage.tree import apply_tree, load_entries, posix_entries, remove_tree
from tiering.transfer.copier import Copier, CopyItem, CopyResult, Progress, VerifyMode
from tiering.transfer.packing import MemberSource, ShardLayout, layout_shard, plan_shards, write_shard

log = logging.getLogger(__name__)

# Core tables for the hot bookkeeping paths: batched UPDATEs without the ORM's per-statement overhead
STEPS = cast(Table, MoveStep.__table__)
REPLICAS = cast(Table, Replica.__table__)

#: steps claimed per catalog round trip
CLAIM_BATCH = 128
#: verified copies recorded per catalog transaction, or every RECORD_SECONDS, whichever comes first
RECORD_BATCH = 128
RECORD_SECONDS = 0.5
#: a step whose copy failed transiently goes back to planned this many times before the job fails
MAX_STEP_ATTEMPTS = 3
#: source copies deleted per catalog transaction after commit
DELETE_BATCH = 4000


_T = TypeVar("_T")


class _Prefetched(Generic[_T]):
    """Items of an iterator produced on a thread of their own, up to ``ahead`` in front of the consumer.

    The copy loop's thread hands out copies and collects results; the catalog round trips of claiming the
    next steps (~10 statements, slow while copy threads hold the GIL) run beside it instead of stalling it.
    An exception of the producer is raised by the consumer's ``next``. :meth:`close` stops the producer
    and waits for it, so nothing is claimed after it returns.
    """

    _END = object()

    def __init__(self, make: Callable[[], Iterator[_T]], *, ahead: int, name: str) -> None:
        self._queue: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=ahead)
        self._closed = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(make,), name=name, daemon=True)
        self._thread.start()

    def _offer(self, entry: tuple[object, BaseException | None]) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, make: Callable[[], Iterator[_T]]) -> None:
        try:
            for item in make():
                if not self._offer((item, None)):
                    return
            self._offer((self._END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who raises it
            self._offer((self._END, exc))

    def __iter__(self) -> _Prefetched[_T]:
        return self

    def __next__(self) -> _T:
        if self._finished:
            raise StopIteration
        item, exc = self._queue.get()
        if item is self._END:
            self._finished = True
            if exc is not None:
                raise exc
            raise StopIteration
        return cast(_T, item)

    def close(self) -> None:
        self._closed.set()
        self._thread.join()


def _by_epoch(steps: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """Step ids of (step id, epoch) pairs grouped by epoch: one conditional UPDATE per epoch (usually one)."""
    groups: dict[int, list[int]] = {}
    for sid, epoch in steps:
        groups.setdefault(epoch, []).append(sid)
    return groups


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` names a process on this host that no longer runs."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_s = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    pid = int(pid_s)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass
class JobOutcome:
    job_id: int
    dataset: str
    src_tier: str
    dst_tier: str
    state: str
    members: int = 0
    bytes: int = 0
    copied: int = 0
    failed: int = 0
    error: str | None = None
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


class _CrashingReader:
    """Passes bytes through and hits the ``during_copy`` crash point halfway through a member."""

    def __init__(self, raw: ReadStream, size: int) -> None:
        self._raw = raw
        self._half = max(1, size // 2)
        self._seen = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        self._seen += len(data)
        if self._seen >= self._half:
            crash_point("during_copy")
        return data

    def close(self) -> None:
        self._raw.close()


class _CrashingSource:
    """Source wrapper used only when the ``during_copy`` crash point is armed."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self.url = inner.url

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        info_size = length if length is not None else self._inner.head(key).size
        return _CrashingReader(self._inner.open_read(key, offset=offset, length=length), info_size)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class Executor:
    """Runs move jobs against the catalog and the tiers of one :class:`App`."""

    def __init__(self, app: App, *, worker_id: str | None = None) -> None:
        self.app = app
        self.worker_id = worker_id or new_worker_id()
        self.transfer = app.config.transfer
        #: epoch at which this worker claimed each step; every update of the step is conditional on it
        self._epochs: dict[int, int] = {}

    # ---------------------------------------------------------------- planning a job

    def create_job(
        self,
        dataset_id: int,
        dst_tier: str,
        *,
        reason: str = "manual",
        purpose: str = "move",
        policy_run_id: int | None = None,
        fence: LeaderFence | None = None,
    ) -> int:
        """Write a move job and one planned step per member. Nothing is copied yet.

        ``fence``: the job is a leader's work; it is written only while that leader's epoch is current
        (else :class:`~tiering.errors.NotLeader`, and nothing is written).
        """
        self.app.config.tier(dst_tier)
        now = self.app.now()
        with self.app.catalog.session() as s:
            check_fence(s, fence)
            ds = s.get(Dataset, dataset_id, with_for_update=True)
            if ds is None:
                raise DatasetNotFound(str(dataset_id))
            dst = s.scalars(select(Tier).where(Tier.name == dst_tier)).one()
            if ds.home_tier_id == dst.id:
                raise UsageError(f"{ds.label} is already on tier {dst_tier}")
            busy = s.execute(
                select(MoveJob.id, MoveJob.purpose).where(
                    MoveJob.dataset_id == ds.id, MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES])
                )
            ).first()
            if busy is not None:
                raise MoveInProgress(ds.label, busy.id, purpose=busy.purpose)
            prefix = dataset_prefix(ds.kind, ds.name, ds.version)
            job = MoveJob(
                dataset_id=ds.id, src_tier_id=ds.home_tier_id, dst_tier_id=dst.id, purpose=purpose,
                state=JobState.PLANNED, reason=reason, actor=self.app.actor, policy_run_id=policy_run_id,
                bytes_total=ds.size_bytes, created_at=now, updated_at=now,
            )
            s.add(job)
            s.flush()
            # steps in the order of their source objects: members of one shard are read one after another
            members = s.execute(
                select(Member.id, Member.path, Member.size)
                .outerjoin(Replica, and_(Replica.member_id == Member.id, Replica.tier_id == ds.home_tier_id))
                .where(Member.dataset_id == ds.id)
                .order_by(Replica.key, Replica.shard_offset, Member.path)
            ).all()
            packed = self._shard_placements(dst_tier, prefix, [(path, size) for _, path, size in members])
            if members:
                s.execute(
                    insert(MoveStep),
                    [
                        {"job_id": job.id, "member_id": mid, "state": StepState.PLANNED,
                         "dst_key": packed[path][0] if path in packed else prefix + path,
                         "dst_offset": packed[path][1] if path in packed else None,
                         "epoch": 0, "attempts": 0, "updated_at": now}
                        for mid, path, _size in members
                    ],
                )
            if purpose == "move":  # a restore stages copies elsewhere; the dataset stays where it is
                ds.state = "moving"
            job_id = job.id
        crash_point("after_plan")
        return job_id

    def _shard_placements(
        self, dst_tier: str, prefix: str, members: list[tuple[str, int]]
    ) -> dict[str, tuple[str, int]]:
        """For an archive destination: member path -> (shard key, offset of its bytes); empty otherwise."""
        tier = self.app.config.tier(dst_tier)
        if not tier.archive:
            return {}
        shards = plan_shards(members, threshold=tier.pack_threshold, shard_size=tier.shard_size)
        return {e.path: (prefix + shard.name, e.data_offset) for shard in shards for e in shard.entries}

    # ---------------------------------------------------------------- running a job

    def run_job(
        self,
        job_id: int,
        *,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> JobOutcome:
        """Drive one job as far as it can go: copy, verify, commit, delete source. Resumable at any point."""
        started = self.app.now()
        with self.app.catalog.session() as s:
            job = s.get(MoveJob, job_id)
            if job is None:
                raise MoveJobNotFound(job_id)
            ds = s.get_one(Dataset, job.dataset_id)
            src = s.get_one(Tier, job.src_tier_id)
            dst = s.get_one(Tier, job.dst_tier_id)
            outcome = JobOutcome(job_id, ds.label, src.name, dst.name, job.state, ds.member_count, ds.size_bytes)
            if job.state == JobState.PLANNED:
                check_job(job.state, JobState.RUNNING)
                job.state = JobState.RUNNING
                job.updated_at = self.app.now()
            state = job.state
            purpose = job.purpose
        if progress is not None:
            progress.total_bytes = outcome.bytes
            progress.total_objects = outcome.members
        if state == JobState.RUNNING:
            state = self._copy_phase(job_id, src.name, dst.name, outcome, progress, stop)
        if purpose == "restore":
            # a restore only stages verified copies: tiering.restore.requests commits them with their expiry, the
            # dataset's home never moves and the source is never deleted
            outcome.state = state
            outcome.seconds = (self.app.now() - started).total_seconds()
            return outcome
        if state == JobState.RUNNING and not (stop and stop.is_set()):
            state = self._commit(job_id)
        if state == JobState.COMMITTED:
            state = self._delete_sources(job_id, src.name, outcome=outcome)
        outcome.state = state
        outcome.seconds = (self.app.now() - started).total_seconds()
        return outcome

    def _claim(self, s: Session, job_id: int, dst_tier_id: int, limit: int) -> list[tuple[int, int, int, str]]:
        """Claim up to ``limit`` claimable steps; returns (step_id, epoch, member_id, dst_key) by step id."""
        now = self.app.now()
        until = now + dt.timedelta(seconds=self.transfer.lease_seconds)
        # SQL leaves out what is surely not claimable, our own copies in flight (the claims run ahead of
        # recording) and live leases of other hosts, so however many there are, the steps behind them are
        # found; a live lease of another process on this host is claimable only if that process died
        stmt = (
            select(STEPS.c.id, STEPS.c.epoch, STEPS.c.lease_owner, STEPS.c.lease_until)
            .where(
                STEPS.c.job_id == job_id,
                STEPS.c.state.in_([StepState.PLANNED, StepState.COPYING]),
                STEPS.c.dst_offset.is_(None),  # members packed into a shard are claimed by _claim_shard
                or_(
                    STEPS.c.state == StepState.PLANNED,
                    STEPS.c.lease_owner.is_(None),
                    STEPS.c.lease_until.is_(None),
                    STEPS.c.lease_until < now,
                    and_(STEPS.c.lease_owner != self.worker_id,
                         STEPS.c.lease_owner.startswith(f"{socket.gethostname()}:", autoescape=True)),
                ),
            )
            .order_by(STEPS.c.id)
            .limit(limit * 2)
        )
        if self.app.catalog.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        candidates = [
            (sid, epoch)
            for sid, epoch, owner, lease_until in s.execute(stmt)
            if owner is None or (owner != self.worker_id and (lease_until is None or lease_until < now
                                                              or lease_owner_is_dead(owner)))
        ][:limit]
        if not candidates:
            return []
        # a step whose epoch moved on since the SELECT was claimed by someone else and is left alone;
        # RETURNING gives exactly the steps taken
        claimed: list[tuple[int, int, int, str]] = []
        for epoch, ids in _by_epoch(candidates).items():
            claimed.extend(
                (sid, ep, mid, key)
                for sid, ep, mid, key in s.execute(
                    update(STEPS)
                    .where(STEPS.c.id.in_(ids), STEPS.c.epoch == epoch)
                    .values(
                        state=StepState.COPYING, lease_owner=self.worker_id, lease_until=until, epoch=epoch + 1,
                        attempts=STEPS.c.attempts + 1, updated_at=now,
                    )
                    .returning(STEPS.c.id, STEPS.c.epoch, STEPS.c.member_id, STEPS.c.dst_key)
                )
            )
        if not claimed:
            return []
        claimed.sort()
        # the destination replica row exists before the first byte is written: an abandoned attempt is
        # findable. One upsert: new rows are inserted, existing ones (not live) go back to copying.
        upsert = dialect_insert(self.app.catalog.dialect, REPLICAS)
        s.execute(
            upsert.on_conflict_do_update(
                index_elements=[REPLICAS.c.member_id, REPLICAS.c.tier_id],
                set_={"state": ReplicaState.COPYING, "verified_at": None},
                where=REPLICAS.c.state != ReplicaState.LIVE,
            ),
            [{"member_id": mid, "tier_id": dst_tier_id, "key": key, "state": ReplicaState.COPYING}
             for _, _, mid, key in claimed],
        )
        return claimed

    def _copy_phase(
        self,
        job_id: int,
        src_name: str,
        dst_name: str,
        outcome: JobOutcome,
        progress: Progress | None,
        stop: threading.Event | None,
    ) -> str:
        src_backend = self.app.backend(src_name)
        dst_backend = self.app.backend(dst_name)
        with self.app.catalog.session() as s:
            job = s.get_one(MoveJob, job_id)
            ds = s.get_one(Dataset, job.dataset_id)
            src_tier_id, dst_tier_id = job.src_tier_id, job.dst_tier_id
            # a restore copies every member it can: tiering.restore.requests stages what verified and names the rest
            keep_going = job.purpose == "restore"
            prefix = dataset_prefix(ds.kind, ds.name, ds.version)
            attempted = s.scalar(
                select(MoveStep.id).where(MoveStep.job_id == job_id, MoveStep.attempts > 0).limit(1)
            ) is not None
        # a previous attempt killed mid-upload may have left an unfinished multipart upload (a job no step of
        # which was ever claimed has had no attempt: nothing to look for)
        if attempted:
            with contextlib.suppress(TieringError):
                dst_backend.abort_incomplete(prefix)
        source: Backend = _CrashingSource(src_backend) if crash_armed("during_copy") else src_backend  # type: ignore[assignment]
        dst_archive = self.app.config.tier(dst_name).archive
        copier = Copier(
            source,
            dst_backend,
            workers=self.transfer.workers,
            # an archive-class object cannot be read before a restore: trust the streamed hash and the size
            verify="stream" if dst_archive == "glacier" else self.transfer.verify,
        )
        internal_stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(job_id, internal_stop), daemon=True)
        lease_lost = False
        verified: list[CopyResult] = []
        items: _Prefetched[CopyItem] | None = None
        # a directory tier syncs small members once per recorded batch instead of once each (see FileBackend);
        # not on an archive tier, whose shards are recorded one by one as they are written
        batched_sync = None if dst_archive else find_capability(dst_backend, BatchedSync)
        syncing = contextlib.ExitStack()
        sync_written = syncing.enter_context(batched_sync.batched_sync(prefix)) if batched_sync is not None else None

        def record() -> None:
            if verified and sync_written is not None:
                sync_written()  # the bytes are on the disk before the catalog says so
            self._record_verified(verified, dst_tier_id, outcome)

        heartbeat.start()
        try:
            if dst_archive:
                self._copy_shards(job_id, source, dst_backend, copier.verify, outcome, progress,
                                  internal_stop, stop)
            items = _Prefetched(
                lambda: self._claimed_items(job_id, src_tier_id, dst_tier_id, internal_stop, stop),
                ahead=CLAIM_BATCH, name=f"tiering-claim-{job_id}",
            )
            # claimed ahead but not handed out when a stop comes: back to planned (_release_unstarted)
            handed = itertools.takewhile(lambda _: not (stop is not None and stop.is_set()), items)
            last_flush = time.monotonic()
            # a user's stop: copies still blocked after a short grace are abandoned (their steps go back to
            # planned below), so an endpoint that does not answer cannot hold the stop up
            for result in copier.copy_many(handed, progress=progress, stop=internal_stop, give_up=stop):
                try:
                    if result.ok:
                        crash_point("after_copy")
                        verified.append(result)
                        if len(verified) >= RECORD_BATCH or time.monotonic() - last_flush >= RECORD_SECONDS:
                            record()
                            last_flush = time.monotonic()
                    else:
                        record()
                        self._record_failure(result, job_id, dst_tier_id, outcome)
                except LeaseLost:
                    lease_lost = True
                    internal_stop.set()
                if not result.ok and not _retryable(result) and not keep_going:
                    internal_stop.set()
        except LeaseLost:
            lease_lost = True
        finally:
            internal_stop.set()
            if items is not None:
                items.close()  # no claim runs after this: _release_unstarted below sees them all
            heartbeat.join(timeout=5)
            # copies already verified are recorded even when the loop ended early: their bytes are good
            try:
                record()
            except LeaseLost:
                lease_lost = True
            except TieringError:
                log.warning("could not record verified copies of job %s; they will be copied again", job_id)
            with contextlib.suppress(TieringError):
                syncing.close()  # what was written and not recorded is copied again by a retry
            self._release_unstarted(job_id)
        if lease_lost:
            raise LeaseLost(job_id, -1)
        return self._settle_copy_phase(job_id, outcome)

    def _claimed_items(
        self,
        job_id: int,
        src_tier_id: int,
        dst_tier_id: int,
        internal_stop: threading.Event,
        stop: threading.Event | None,
    ) -> Iterator[CopyItem]:
        while not internal_stop.is_set() and not (stop and stop.is_set()):
            with self.app.catalog.session() as s:
                claimed = self._claim(s, job_id, dst_tier_id, CLAIM_BATCH)
                if not claimed:
                    return
                # each member with its copy on the source tier: the key only if that copy is trusted
                members = {
                    mid: (path, size, xxh3, key if state in TRUSTED_REPLICA_STATES else None, offset)
                    for mid, path, size, xxh3, key, state, offset in s.execute(
                        select(Member.id, Member.path, Member.size, Member.xxh3, REPLICAS.c.key, REPLICAS.c.state,
                               REPLICAS.c.shard_offset)
                        .outerjoin(REPLICAS, and_(REPLICAS.c.member_id == Member.id,
                                                  REPLICAS.c.tier_id == src_tier_id))
                        .where(Member.id.in_([c[2] for c in claimed]))
                    )
                }
            for sid, epoch, mid, dst_key in claimed:
                if stop is not None and stop.is_set():
                    return  # claimed steps not handed out yet go back to planned (_release_unstarted)
                path, size, xxh3, src_key, src_offset = members[mid]
                if src_key is None:
                    raise BackendError(f"member {path} has no live copy on the source tier")
                self._epochs[sid] = epoch
                yield CopyItem(
                    src_key=src_key, dst_key=dst_key, size=size, expected_xxh3=xxh3, ref=sid,
                    src_offset=src_offset or 0,
                )

    def _record_verified(self, batch: list[CopyResult], dst_tier_id: int, outcome: JobOutcome) -> None:
        """Mark a batch of verified copies in one transaction; empties ``batch``.

        Only steps this worker still owns at the epoch it claimed them are marked; any other means the
        lease was taken over, and :class:`LeaseLost` is raised after the rest are recorded.
        """
        if not batch:
            return
        copied_before = outcome.copied
        wanted = {r.item.ref: self._epochs.get(r.item.ref, -1) for r in batch}
        now = self.app.now()
        with self.app.catalog.session() as s:
            # conditional on owner and epoch: RETURNING names the steps that were still ours
            ours: dict[int, int] = {}
            for epoch, ids in _by_epoch(wanted.items()).items():
                for sid, mid in s.execute(
                    update(STEPS)
                    .where(STEPS.c.id.in_(ids), STEPS.c.epoch == epoch, STEPS.c.lease_owner == self.worker_id)
                    .values(state=StepState.VERIFIED, lease_owner=None, lease_until=None, last_error=None,
                            updated_at=now)
                    .returning(STEPS.c.id, STEPS.c.member_id)
                ):
                    ours[sid] = mid
            if ours:
                s.execute(
                    update(REPLICAS)
                    .where(REPLICAS.c.tier_id == dst_tier_id, REPLICAS.c.member_id.in_(list(ours.values())))
                    .values(state=ReplicaState.VERIFIED, verified_at=now)
                )
        outcome.copied += len(ours)
        lost = [sid for sid in wanted if sid not in ours]
        batch.clear()
        if copied_before == 0 and outcome.copied > 0:
            crash_point("after_verify")
        if lost:
            raise LeaseLost(lost[0], wanted[lost[0]])

    def _record_failure(self, result: CopyResult, job_id: int, dst_tier_id: int, outcome: JobOutcome) -> None:
        """Record a failed copy: back to planned for a retry (transient, attempts left) or failed with its reason."""
        sid = result.item.ref
        epoch = self._epochs.get(sid, -1)
        now = self.app.now()
        err = result.error
        reason = err.reason if err is not None else "error"
        message = f"{reason}: {err}"
        with self.app.catalog.session() as s:
            step = s.get_one(MoveStep, sid)
            back_to = StepState.PLANNED if _retryable(result) and step.attempts < MAX_STEP_ATTEMPTS else None
            res = s.execute(
                update(MoveStep)
                .where(MoveStep.id == sid, MoveStep.epoch == epoch)
                .values(state=back_to or StepState.FAILED, lease_owner=None, lease_until=None,
                        last_error=message, updated_at=now)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(sid, epoch)
            # the copier already deleted the bad destination object
            s.execute(
                delete(Replica).where(
                    Replica.member_id == step.member_id, Replica.tier_id == dst_tier_id,
                    Replica.state != ReplicaState.LIVE,
                )
            )
            if back_to is None:
                outcome.failed += 1
                outcome.failures.append(f"{result.item.src_key}: {message}")
                s.execute(update(MoveJob).where(MoveJob.id == job_id).values(last_error=message))

    def _release_unstarted(self, job_id: int) -> None:
        """Steps claimed but never copied (a stop, an error elsewhere) go back to planned for any worker."""
        with contextlib.suppress(TieringError), self.app.catalog.session() as s:
            s.execute(
                update(MoveStep)
                .where(MoveStep.job_id == job_id, MoveStep.lease_owner == self.worker_id,
                       MoveStep.state == StepState.COPYING)
                .values(state=StepState.PLANNED, lease_owner=None, lease_until=None)
            )

    def _heartbeat(self, job_id: int, stop: threading.Event) -> None:
        interval = max(1.0, self.transfer.lease_seconds / 3)
        while not stop.wait(interval):
            until = self.app.now() + dt.timedelta(seconds=self.transfer.lease_seconds)
            try:
                with self.app.catalog.session() as s:
                    s.execute(
                        update(MoveStep)
                        .where(MoveStep.job_id == job_id, MoveStep.lease_owner == self.worker_id,
                               MoveStep.state == StepState.COPYING)
                        .values(lease_until=until)
                    )
            except TieringError:
                log.warning("lease renewal for job %s failed; will retry", job_id)

    def _settle_copy_phase(self, job_id: int, outcome: JobOutcome) -> str:
        with self.app.catalog.session() as s:
            counts: dict[str, int] = {}
            for (st,) in s.execute(select(MoveStep.state).where(MoveStep.job_id == job_id)):
                counts[st] = counts.get(st, 0) + 1
            if counts.get(StepState.FAILED):
                failed_errors = list(
                    s.scalars(
                        select(MoveStep.last_error).where(
                            MoveStep.job_id == job_id, MoveStep.state == StepState.FAILED
                        ).limit(5)
                    )
                )
                outcome.error = "; ".join(e or "" for e in failed_errors)
        if counts.get(StepState.FAILED):
            if self._purpose(job_id) == "restore":
                return JobState.FAILED  # left running: tiering.restore.requests stages what verified, then abandons it
            self.abandon(job_id, reason=outcome.error or "step failed")
            return JobState.FAILED
        return JobState.RUNNING

    def _purpose(self, job_id: int) -> str:
        with self.app.catalog.session() as s:
            return str(s.scalars(select(MoveJob.purpose).where(MoveJob.id == job_id)).one())

    # ---------------------------------------------------------------- packed steps (archive destinations)
    #
    # On an archive tier, members below the tier's pack_threshold share shard objects (tiering.transfer.packing).
    # Their steps carry the shard key as dst_key and the offset of their bytes as dst_offset, planned once
    # in create_job, so a retry writes the same bytes to the same key. The steps of one shard move together:
    # claimed in one transaction, written as one object, read back and checked member by member, and made
    # verified in one transaction. A shard is never partly trusted.

    def _copy_shards(
        self,
        job_id: int,
        src: Backend,
        dst: Backend,
        verify: VerifyMode,
        outcome: JobOutcome,
        progress: Progress | None,
        internal_stop: threading.Event,
        stop: threading.Event | None,
    ) -> None:
        """Write, verify and record every claimable shard of the job, one shard at a time.

        A failed shard is deleted; its steps go back to planned (a transient error with attempts left) or
        fail (the job is then abandoned by the caller, the source untouched). Raises :class:`LeaseLost`.
        """
        first = True
        while not internal_stop.is_set() and not (stop and stop.is_set()):
            claim = self._claim_shard(job_id)
            if claim is None:
                return
            try:
                write_shard(
                    src, dst, claim.key, claim.layout, claim.sources, label=claim.label,
                    workers=self.transfer.workers, verify=verify,
                    on_member=(lambda n: progress.add(n)) if progress is not None else None,
                )
            except TieringError as exc:
                with contextlib.suppress(TieringError):
                    dst.delete(claim.key)
                if not self._record_shard_failure(job_id, claim, exc, outcome):
                    internal_stop.set()
                    return
                continue
            crash_point("after_copy")
            self._record_shard(job_id, claim, outcome)
            if first:
                first = False
                crash_point("after_verify")

    def _claim_shard(self, job_id: int) -> _ShardClaim | None:
        """Claim every step of the first shard no live worker holds; None when there is none left."""
        with self.app.catalog.session() as s:
            keys = list(
                s.scalars(
                    select(MoveStep.dst_key)
                    .where(MoveStep.job_id == job_id, MoveStep.dst_offset.is_not(None),
                           MoveStep.state.in_([StepState.PLANNED, StepState.COPYING]))
                    .distinct()
                    .order_by(MoveStep.dst_key)
                )
            )
        for key in keys:
            with self.app.catalog.session() as s:
                claim = self._claim_shard_steps(s, job_id, key)
            if claim is not None:
                return claim
        return None

    def _claim_shard_steps(self, s: Session, job_id: int, key: str) -> _ShardClaim | None:
        now = self.app.now()
        job = s.get_one(MoveJob, job_id)
        in_shard = and_(MoveStep.job_id == job_id, MoveStep.dst_key == key)
        stmt = select(MoveStep.state, MoveStep.lease_owner, MoveStep.lease_until).where(in_shard)
        if self.app.catalog.dialect == "postgresql":
            stmt = stmt.with_for_update()  # SQLite already holds the write lock (BEGIN IMMEDIATE)
        for state, owner, lease_until in s.execute(stmt):
            if state not in (StepState.PLANNED, StepState.COPYING):
                return None
            if owner is not None and (owner == self.worker_id or (
                    lease_until is not None and lease_until >= now and not lease_owner_is_dead(owner))):
                return None
        s.execute(
            update(MoveStep).where(in_shard).values(
                state=StepState.COPYING, lease_owner=self.worker_id,
                lease_until=now + dt.timedelta(seconds=self.transfer.lease_seconds),
                epoch=MoveStep.epoch + 1, attempts=MoveStep.attempts + 1, updated_at=now,
            )
        )
        ds = s.get_one(Dataset, job.dataset_id)
        members = s.execute(
            select(Member.id, Member.path, Member.size, Member.xxh3, MoveStep.dst_offset, Member.mode,
                   Member.mtime_ns)
            .join(MoveStep, MoveStep.member_id == Member.id)
            .where(in_shard)
            .order_by(MoveStep.dst_offset)
        ).all()
        src_rows = {
            mid: (rkey, offset)
            for mid, rkey, offset in s.execute(
                select(Replica.member_id, Replica.key, Replica.shard_offset)
                .join(MoveStep, MoveStep.member_id == Replica.member_id)
                .where(in_shard, Replica.tier_id == job.src_tier_id,
                       Replica.state.in_([ReplicaState.LIVE, ReplicaState.VERIFIED]))
            )
        }
        layout = layout_shard(key, [(path, size) for _, path, size, _, _, _, _ in members],
                              attrs={path: (mode, mtime) for _, path, _, _, _, mode, mtime in members})
        sources: dict[str, MemberSource] = {}
        for (mid, path, size, xxh3, planned_offset, _, _), entry in zip(members, layout.entries, strict=True):
            if entry.data_offset != planned_offset:
                raise StateError(f"{ds.label}: member {path} is planned at offset {planned_offset} of {key}, "
                                 f"but the shard layout puts it at {entry.data_offset}")
            if mid not in src_rows:
                raise BackendError(f"member {path} of {ds.label} has no live copy on the source tier")
            sources[path] = MemberSource(path, size, xxh3, src_rows[mid][0], src_rows[mid][1])
        # the destination rows exist before the first byte is written: an abandoned shard is findable
        member_ids = select(MoveStep.member_id).where(in_shard).scalar_subquery()
        existing = set(s.scalars(select(Replica.member_id).where(
            Replica.tier_id == job.dst_tier_id, Replica.member_id.in_(member_ids))))
        new_rows = [
            {"member_id": mid, "tier_id": job.dst_tier_id, "key": key, "state": ReplicaState.COPYING,
             "shard_offset": offset}
            for mid, _, _, _, offset, _, _ in members if mid not in existing
        ]
        if new_rows:
            s.execute(insert(Replica), new_rows)
        if existing:
            s.execute(
                update(Replica)
                .where(Replica.tier_id == job.dst_tier_id, Replica.member_id.in_(member_ids),
                       Replica.state != ReplicaState.LIVE)
                .values(
                    state=ReplicaState.COPYING, verified_at=None, key=key,
                    shard_offset=select(MoveStep.dst_offset)
                    .where(MoveStep.job_id == job_id, MoveStep.member_id == Replica.member_id)
                    .scalar_subquery(),
                )
            )
        return _ShardClaim(key, layout, sources, ds.label, len(members), job.dst_tier_id)

    def _record_shard(self, job_id: int, claim: _ShardClaim, outcome: JobOutcome) -> None:
        now = self.app.now()
        in_shard = and_(MoveStep.job_id == job_id, MoveStep.dst_key == claim.key)
        with self.app.catalog.session() as s:
            res = s.execute(
                update(MoveStep)
                .where(in_shard, MoveStep.lease_owner == self.worker_id, MoveStep.state == StepState.COPYING)
                .values(state=StepState.VERIFIED, lease_owner=None, lease_until=None, last_error=None,
                        updated_at=now)
            )
            if res.rowcount != claim.steps:  # type: ignore[attr-defined]
                raise LeaseLost(job_id, -1)  # rolls the whole shard back: another worker owns part of it
            s.execute(
                update(Replica)
                .where(Replica.tier_id == claim.dst_tier_id,
                       Replica.member_id.in_(select(MoveStep.member_id).where(in_shard).scalar_subquery()))
                .values(state=ReplicaState.VERIFIED, verified_at=now)
            )
        outcome.copied += claim.steps

    def _record_shard_failure(self, job_id: int, claim: _ShardClaim, exc: TieringError, outcome: JobOutcome) -> bool:
        """Put the shard's steps back to planned (returns True) or fail them (returns False)."""
        message = f"{exc.reason}: {exc}"
        in_shard = and_(MoveStep.job_id == job_id, MoveStep.dst_key == claim.key)
        with self.app.catalog.session() as s:
            attempts = s.scalar(select(func.max(MoveStep.attempts)).where(in_shard)) or 0
            retry = isinstance(exc, TransientBackendError) and attempts < MAX_STEP_ATTEMPTS
            res = s.execute(
                update(MoveStep)
                .where(in_shard, MoveStep.lease_owner == self.worker_id, MoveStep.state == StepState.COPYING)
                .values(state=StepState.PLANNED if retry else StepState.FAILED, lease_owner=None,
                        lease_until=None, last_error=message, updated_at=self.app.now())
            )
            if res.rowcount != claim.steps:  # type: ignore[attr-defined]
                raise LeaseLost(job_id, -1)
            s.execute(
                delete(Replica).where(
                    Replica.tier_id == claim.dst_tier_id, Replica.state != ReplicaState.LIVE,
                    Replica.member_id.in_(select(MoveStep.member_id).where(in_shard).scalar_subquery()),
                )
            )
            if not retry:
                s.execute(update(MoveJob).where(MoveJob.id == job_id).values(last_error=message))
        if not retry:
            outcome.failed += claim.steps
            outcome.failures.append(f"{claim.key}: {message}")
        return retry

    # ---------------------------------------------------------------- commit

    def _commit(self, job_id: int) -> str:
        with self.app.catalog.session() as s:
            job = s.get_one(MoveJob, job_id)
            pending = s.scalar(
                select(MoveStep.id).where(
                    MoveStep.job_id == job_id, MoveStep.state.not_in([StepState.VERIFIED, StepState.COMMITTED])
                ).limit(1)
            )
            if pending is not None:
                return str(job.state)  # another worker still owns some steps
            ds = s.get_one(Dataset, job.dataset_id)
            dst = s.get_one(Tier, job.dst_tier_id)
            label, ds_prefix, src_id, dst_id = ds.label, dataset_prefix(ds.kind, ds.name, ds.version), \
                job.src_tier_id, job.dst_tier_id
            rows = s.execute(
                select(Member.path, Member.size, Member.xxh3, Member.md5, Member.sha256, Replica.key,
                       Replica.shard_offset, Member.mode, Member.mtime_ns)
                .outerjoin(Replica, and_(Replica.member_id == Member.id, Replica.tier_id == dst_id))
                .where(Member.dataset_id == ds.id)
            ).all()
            # the catalog, not the source's manifest, carries modes, times, directories and links: an
            # archive tier's manifest cannot be read before a restore
            entries = load_entries(s, ds.id)
            # a packed member's shard is recorded relative to the dataset's directory
            manifest = build_manifest(
                name=ds.name, version=ds.version, kind=ds.kind, owner=ds.owner, tags=dict(ds.tags),
                tier=dst.name, written_at=self.app.now(), entries=entries,
                members=[
                    ManifestMember(p, sz, x, m5, s2, shard=key.removeprefix(ds_prefix) if off is not None else None,
                                   offset=off, mode=mode, mtime_ns=mtime)
                    for p, sz, x, m5, s2, key, off, mode, mtime in rows
                ],
            )
            tree = [] if dst.archive else posix_entries({r[0]: (r[7], r[8]) for r in rows}, entries)
        dst_backend = self.app.backend(dst.name)
        dst_backend.put(manifest_key(ds_prefix), io.BytesIO(manifest), size=len(manifest))
        apply_tree(dst_backend, ds_prefix, tree)
        crash_point("before_commit")
        now = self.app.now()
        with self.app.catalog.session() as s:
            job = s.get_one(MoveJob, job_id, with_for_update=True)
            if job.state != JobState.RUNNING:
                return str(job.state)
            check_job(job.state, JobState.COMMITTED)
            member_ids = select(Member.id).where(Member.dataset_id == job.dataset_id).scalar_subquery()
            s.execute(
                update(Replica)
                .where(Replica.tier_id == dst_id, Replica.member_id.in_(member_ids))
                # a staged restore copy that becomes the home copy no longer expires
                .values(state=ReplicaState.LIVE, expires_at=None)
                # no replica or step is loaded in this session: nothing to synchronise
                .execution_options(synchronize_session=False)
            )
            s.execute(
                update(Replica)
                .where(Replica.tier_id == src_id, Replica.member_id.in_(member_ids))
                .values(state=ReplicaState.DELETING)
                .execution_options(synchronize_session=False)
            )
            s.execute(
                update(MoveStep)
                .where(MoveStep.job_id == job_id)
                .values(state=StepState.COMMITTED, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            ds = s.get_one(Dataset, job.dataset_id)
            ds.home_tier_id = dst_id
            ds.home_since = now
            ds.state = "active"
            job.state = JobState.COMMITTED
            job.updated_at = now
            src_name = s.get_one(Tier, src_id).name
            s.add(AuditEntry(
                at=now, actor=self.app.actor, action=job.purpose, dataset_id=ds.id, dataset_label=label,
                from_tier=src_name, to_tier=dst.name, bytes=ds.size_bytes, result="ok",
                detail={"job_id": job_id, "reason": job.reason, "members": ds.member_count},
            ))
        crash_point("after_commit")
        return JobState.COMMITTED

    # ---------------------------------------------------------------- delete the source, last

    def _delete_sources(self, job_id: int, src_name: str, *, outcome: JobOutcome | None = None) -> str:
        """Delete the committed steps' source copies, then the source manifest; DONE when all are gone.

        A source key that is the same object as a destination of this job (two tiers configured on one place)
        is never deleted: its step keeps the source replica, records why in ``last_error``, and the job stays
        COMMITTED, with the reason in ``outcome.error``.
        """
        src_backend = self.app.backend(src_name)
        with self.app.catalog.session() as s:
            job = s.get_one(MoveJob, job_id)
            ds = s.get_one(Dataset, job.dataset_id)
            src_tier_id = job.src_tier_id
            dst_name = s.get_one(Tier, job.dst_tier_id).name
            targets = s.execute(
                select(MoveStep.id, Replica.id, Replica.key, Replica.shard_offset)
                .join(Replica, and_(Replica.member_id == MoveStep.member_id, Replica.tier_id == src_tier_id))
                .where(MoveStep.job_id == job_id, MoveStep.state == StepState.COMMITTED)
            ).all()
            # an adopted dataset kept its own layout on the source tier until now
            src_prefix = ds.location_prefix or dataset_prefix(ds.kind, ds.name, ds.version)
            entries = load_entries(s, ds.id)
            dst_prefix = dataset_prefix(ds.kind, ds.name, ds.version)
            dst_keys = s.scalars(select(MoveStep.dst_key).where(MoveStep.job_id == job_id)).all()
        protected = _destination_places(src_backend, self.app.backend(dst_name),
                                        [*dst_keys, manifest_key(dst_prefix)])
        refused: list[tuple[int, str]] = []
        if protected:
            kept = [t for t in targets if _place(src_backend.locate(t[2])) in protected]
            if kept:
                refused = [(sid, key) for sid, _rid, key, _offset in kept]
                kept_steps = {sid for sid, _key in refused}
                targets = [t for t in targets if t[0] not in kept_steps]
                self._refuse_deletes(job_id, refused, src_name, dst_name, outcome)
        failures = len(refused)
        # batches: one request per batch where the store can (DeleteObjects), one transaction per batch
        for start in range(0, len(targets), DELETE_BATCH):
            batch = targets[start:start + DELETE_BATCH]
            # members packed in one shard share its key
            failed = delete_keys(src_backend, (key for _sid, _rid, key, _offset in batch))
            for key, why in failed.items():
                log.warning("could not delete source %s (will retry on resume): %s", key, why)
            done = [(sid, rid) for sid, rid, key, _offset in batch if key not in failed]
            failures += len(batch) - len(done)
            if done:
                with self.app.catalog.session() as s:
                    s.execute(delete(Replica).where(Replica.id.in_([rid for _, rid in done])))
                    s.execute(
                        update(MoveStep).where(MoveStep.id.in_([sid for sid, _ in done]))
                        .values(state=StepState.SOURCE_DELETED, updated_at=self.app.now())
                    )
            if start == 0:
                crash_point("during_delete")
        # steps whose source replica row is already gone (crash between delete and bookkeeping)
        with self.app.catalog.session() as s:
            s.execute(
                update(MoveStep)
                .where(
                    MoveStep.job_id == job_id, MoveStep.state == StepState.COMMITTED,
                    ~select(Replica.id).where(
                        Replica.member_id == MoveStep.member_id, Replica.tier_id == src_tier_id
                    ).exists(),
                )
                .values(state=StepState.SOURCE_DELETED, updated_at=self.app.now())
            )
        if failures:
            return JobState.COMMITTED
        if _place(src_backend.locate(manifest_key(src_prefix))) not in protected:
            with contextlib.suppress(TieringError):
                remove_tree(src_backend, src_prefix, entries)
                src_backend.delete(manifest_key(src_prefix))
        crash_point("after_delete")
        with self.app.catalog.session() as s:
            job = s.get_one(MoveJob, job_id)
            s.get_one(Dataset, job.dataset_id).location_prefix = ""
            check_job(job.state, JobState.DONE)
            job.state = JobState.DONE
            job.finished_at = job.updated_at = self.app.now()
        return JobState.DONE

    def _refuse_deletes(self, job_id: int, refused: list[tuple[int, str]], src_name: str, dst_name: str,
                        outcome: JobOutcome | None) -> None:
        """Record on each step (and the job) why its source copy was kept: deleting it would delete the copy the
        move just committed, the only one."""
        first = refused[0][1]
        message = (f"refused to delete source {first} on tier {src_name}: it is the very object this move "
                   f"wrote on tier {dst_name} (the two tiers share one place); the data stays, fix the config")
        log.error("move job %s: %s (%d source objects kept)", job_id, message, len(refused))
        with self.app.catalog.session() as s:
            for sid, key in refused:
                s.execute(update(MoveStep).where(MoveStep.id == sid).values(
                    last_error=message.replace(first, key, 1), updated_at=self.app.now()))
            s.execute(update(MoveJob).where(MoveJob.id == job_id).values(last_error=message))
        if outcome is not None:
            outcome.error = message
            outcome.failures.extend(key for _sid, key in refused)

    # ---------------------------------------------------------------- failure and recovery

    def abandon(self, job_id: int, *, reason: str, final_state: JobState = JobState.FAILED) -> None:
        """Give up a job that has not committed: remove destination copies, keep the source, free the dataset."""
        with self.app.catalog.session() as s:
            job = s.get_one(MoveJob, job_id)
            if job.state not in (JobState.PLANNED, JobState.RUNNING):
                return
            dst = s.get_one(Tier, job.dst_tier_id)
            leftovers = s.execute(
                select(Replica.id, Replica.key)
                .join(MoveStep, and_(MoveStep.member_id == Replica.member_id, MoveStep.job_id == job_id))
                .where(Replica.tier_id == job.dst_tier_id, Replica.state != ReplicaState.LIVE)
            ).all()
            ds = s.get_one(Dataset, job.dataset_id)
            prefix = dataset_prefix(ds.kind, ds.name, ds.version)
            entries = load_entries(s, ds.id)
        dst_backend = self.app.backend(dst.name)
        delete_keys(dst_backend, (key for _rid, key in leftovers))
        with contextlib.suppress(TieringError):
            dst_backend.abort_incomplete(prefix)
        with contextlib.suppress(TieringError):
            remove_tree(dst_backend, prefix, entries)
        now = self.app.now()
        with self.app.catalog.session() as s:
            s.execute(delete(Replica).where(Replica.id.in_([r[0] for r in leftovers])))
            job = s.get_one(MoveJob, job_id)
            check_job(job.state, final_state)
            job.state = final_state
            job.last_error = reason
            job.finished_at = job.updated_at = now
            ds = s.get_one(Dataset, job.dataset_id)
            ds.state = "active"
            s.add(AuditEntry(
                at=now, actor=self.app.actor, action=job.purpose, dataset_id=ds.id, dataset_label=ds.label,
                from_tier=s.get_one(Tier, job.src_tier_id).name, to_tier=dst.name, bytes=0,
                result="cancelled" if final_state == JobState.CANCELLED else "failed",
                detail={"job_id": job_id, "error": reason[:2000]},
            ))

    def unfinished_jobs(self) -> list[int]:
        """Unfinished move jobs; restore jobs are driven by :func:`tiering.restore.requests.dispatch_restores`."""
        with self.app.catalog.session() as s:
            return list(
                s.scalars(
                    select(MoveJob.id)
                    .where(MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES]), MoveJob.purpose == "move")
                    .order_by(MoveJob.id)
                )
            )

    def resume_all(self, *, progress: Progress | None = None) -> list[JobOutcome]:
        """Drive every unfinished job forward (after a crash, or work left by another worker)."""
        return [self.run_job(job_id, progress=progress) for job_id in self.unfinished_jobs()]

    def cancel(self, job_id: int) -> None:
        """Cancel a job that has not committed; its destination copies are removed."""
        with self.app.catalog.session() as s:
            job = s.get(MoveJob, job_id)
            if job is None:
                raise MoveJobNotFound(job_id)
            if job.state not in (JobState.PLANNED, JobState.RUNNING):
                raise UsageError(f"move job {job_id} is {job.state}; only planned or running jobs can be cancelled")
        self.abandon(job_id, reason="cancelled", final_state=JobState.CANCELLED)


@dataclass(frozen=True)
class _ShardClaim:
    """The steps of one shard, claimed together: what to write, from where, for which dataset."""

    key: str
    layout: ShardLayout
    sources: dict[str, MemberSource]
    label: str
    steps: int
    dst_tier_id: int


def _place(location: Location) -> str:
    """One string per stored object, equal for two locations exactly when they name the same object: the S3
    endpoint normalised (host case, default ports, loopback), the bucket, the key without empty or dot parts;
    a file's absolute path (its root was resolved when the backend was built)."""
    if location.kind == "s3":
        endpoint = normalise_endpoint(location.endpoint) if location.endpoint else "aws"
        return f"s3 {endpoint} {location.bucket.lower()}/{posixpath.normpath('/' + location.key).lstrip('/')}"
    if location.kind == "file":
        return f"file {os.path.normpath(location.path)}"
    return f"{location.kind} {location.url}"


def _destination_places(src: Backend, dst: Backend, dst_keys: list[str]) -> frozenset[str]:
    """The places of ``dst_keys`` on ``dst`` when ``src`` and ``dst`` may share objects (one's root inside the
    other's), else nothing: two distinct tiers cost two ``locate`` calls, not one per key."""
    src_root, dst_root = _place(src.locate("")), _place(dst.locate(""))
    if not (src_root.startswith(dst_root) or dst_root.startswith(src_root)):
        return frozenset()
    return frozenset(_place(dst.locate(key)) for key in dst_keys)


def _retryable(result: CopyResult) -> bool:
    return isinstance(result.error, TransientBackendError)


