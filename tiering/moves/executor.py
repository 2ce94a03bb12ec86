"""Move jobs: the crash-safe protocol of copy, verify, commit, and only then delete the source.

Per member (a *step*): ``planned -> copying -> verified -> committed -> source_deleted``.

1. :func:`tiering.moves.plan.create_job` writes the job and all its steps before any byte moves.
2. Steps are claimed in batches with a lease (owner, until, epoch) by the
   :class:`~tiering.catalog.steps.StepStore`; every later update of a step is conditional on the epoch it
   was claimed at, so a stalled worker whose lease was taken over can never overwrite newer work (it gets
   :class:`LeaseLost` and stops).
3. The copier streams source -> destination, hashing on the way; destination keys are deterministic, so a
   retry overwrites its own attempt. A destination replica row in state ``copying`` exists before the
   first byte is written, so an abandoned attempt is always found and removed.
4. Verified steps are recorded; a step that fails verification deletes its destination copy and fails
   the job with the reason (``checksum_mismatch``, ``source_changed``...). The source stays.
5. :mod:`tiering.moves.finish` commits and then deletes the source.

This module is the copy phase: it moves bytes and asks the StepStore to claim and record; it writes no SQL.
:meth:`Executor.copy_job` is the copy phase alone (copy and verify every step it can, commit nothing), for
callers that finish a job their own way; :meth:`Executor.run_job` drives a move to its end. Shards of an
archive destination are copied by :mod:`tiering.moves.shards`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, cast

from tiering.app import App
from tiering.catalog.leader import LeaderFence
from tiering.catalog.states import JobPurpose, JobState
from tiering.catalog.steps import JobHead, StepStore
from tiering.catalog.steps import lease_owner_is_dead as lease_owner_is_dead
from tiering.catalog.steps import new_worker_id as new_worker_id
from tiering.errors import BackendError, LeaseLost, StateError, TieringError, TransientBackendError
from tiering.faults import crash_armed, crash_point
from tiering.moves import finish, plan
from tiering.moves.outcome import JobOutcome as JobOutcome
from tiering.moves.shards import copy_shards
from tiering.storage.base import Backend, BatchedSync, ObjectInfo, ReadStream, find_capability
from tiering.transfer.control import JobControl, end_thread
from tiering.transfer.copier import Copier, CopyItem, CopyResult, Progress

log = logging.getLogger(__name__)

#: steps claimed per catalog round trip
CLAIM_BATCH = 128
#: verified copies recorded per catalog transaction, or every RECORD_SECONDS, whichever comes first
RECORD_BATCH = 128
RECORD_SECONDS = 0.5


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

    def head(self, key: str) -> ObjectInfo:
        return self._inner.head(key)

    def unwrap(self) -> Backend:
        return self._inner


class Executor:
    """Runs move jobs against the catalog and the tiers of one :class:`App`."""

    def __init__(self, app: App, *, worker_id: str | None = None) -> None:
        self.app = app
        self.worker_id = worker_id or new_worker_id()
        self.transfer = app.config.transfer
        self.store = StepStore(app.catalog, worker_id=self.worker_id, lease_seconds=self.transfer.lease_seconds,
                               clock=app.now)
        #: epoch at which this worker claimed each step; every update of the step is conditional on it
        self._epochs: dict[int, int] = {}

    def create_job(
        self,
        dataset_id: int,
        dst_tier: str,
        *,
        reason: str = "manual",
        purpose: JobPurpose = JobPurpose.MOVE,
        policy_run_id: int | None = None,
        fence: LeaderFence | None = None,
    ) -> int:
        """See :func:`tiering.moves.plan.create_job`."""
        return plan.create_job(self.app, dataset_id, dst_tier, reason=reason, purpose=purpose,
                               policy_run_id=policy_run_id, fence=fence)

    # ---------------------------------------------------------------- running a job

    def run_job(
        self,
        job_id: int,
        *,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> JobOutcome:
        """Drive one move job as far as it can go: copy, verify, commit, delete source. Resumable at any point.

        A job of another purpose is finished by its owner (its copies are made with :meth:`copy_job`):
        :class:`StateError`.
        """
        started = self.app.now()
        head = self.store.start(job_id)
        if head.purpose != JobPurpose.MOVE:
            raise StateError(f"job {job_id} is a {head.purpose} job, not a move: it is not run as one")
        outcome = self._outcome(head, progress)
        state: str = head.state
        if state == JobState.RUNNING:
            state = self._copy_phase(head, outcome, progress, stop, keep_going=False)
            if state == JobState.FAILED:
                finish.abandon(self.app, job_id, reason=outcome.error or "step failed")
        if state == JobState.RUNNING and not (stop and stop.is_set()):
            state = finish.commit(self.app, job_id)
        if state == JobState.COMMITTED:
            state = finish.delete_sources(self.app, self.store, job_id, head.src_tier, outcome=outcome)
        outcome.state = state
        outcome.seconds = (self.app.now() - started).total_seconds()
        return outcome

    def copy_job(
        self,
        job_id: int,
        *,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> JobOutcome:
        """Copy and verify the job's steps, nothing more: no commit, no delete, no abandon.

        A failed member does not stop the others. The outcome's state is ``running`` when every step this
        worker could take is verified (or ``stop`` came), ``failed`` when some step failed for good (the
        job stays running: its caller keeps or abandons what verified), else the job's state as found.
        """
        started = self.app.now()
        head = self.store.start(job_id)
        outcome = self._outcome(head, progress)
        state: str = head.state
        if state == JobState.RUNNING:
            state = self._copy_phase(head, outcome, progress, stop, keep_going=True)
        outcome.state = state
        outcome.seconds = (self.app.now() - started).total_seconds()
        return outcome

    @staticmethod
    def _outcome(head: JobHead, progress: Progress | None) -> JobOutcome:
        if progress is not None:
            progress.total_bytes = head.bytes
            progress.total_objects = head.members
        return JobOutcome(head.job_id, head.dataset, head.src_tier, head.dst_tier, head.state, head.members,
                          head.bytes)

    def _copy_phase(
        self,
        head: JobHead,
        outcome: JobOutcome,
        progress: Progress | None,
        stop: threading.Event | None,
        *,
        keep_going: bool,
    ) -> str:
        """Copy every claimable step; ``running`` when none failed for good, else ``failed``.
        ``keep_going``: a member failed for good does not stop the copies of the others."""
        job_id, dst_tier_id = head.job_id, head.dst_tier_id
        src_backend = self.app.backend(head.src_tier)
        dst_backend = self.app.backend(head.dst_tier)
        # a previous attempt killed mid-upload may have left an unfinished multipart upload (a job no step of
        # which was ever claimed has had no attempt: nothing to look for)
        if head.attempted:
            with contextlib.suppress(TieringError):
                dst_backend.abort_incomplete(head.prefix)
        source: Backend = _CrashingSource(src_backend) if crash_armed("during_copy") else src_backend  # type: ignore[assignment]
        dst_archive = self.app.config.tier(head.dst_tier).archive
        copier = Copier(
            source,
            dst_backend,
            workers=self.transfer.workers,
            # an archive-class object cannot be read before a restore: trust the streamed hash and the size
            verify="stream" if dst_archive == "glacier" else self.transfer.verify,
        )
        control = JobControl(stop)
        lease_lost = False
        verified: list[CopyResult] = []

        def record() -> None:
            if verified and sync_written is not None:
                sync_written()  # the bytes are on the disk before the catalog says so
            self._record_verified(verified, dst_tier_id, outcome)

        def record_left() -> None:
            # copies already verified are recorded even when the loop ended early: their bytes are good
            nonlocal lease_lost
            try:
                record()
            except LeaseLost:
                lease_lost = True
            except TieringError:
                log.warning("could not record verified copies of job %s; they will be copied again", job_id)

        # cleanups run newest first: claims end, the heartbeat stops, what verified is recorded, the batched
        # sync closes, and steps claimed but never started go back to planned
        control.add_cleanup(_suppressed, self.store.release_unstarted, job_id)
        # a directory tier syncs small members once per recorded batch instead of once each (see FileBackend);
        # not on an archive tier, whose shards are recorded one by one as they are written
        batched_sync = None if dst_archive else find_capability(dst_backend, BatchedSync)
        sync_written = None
        if batched_sync is not None:
            syncing = batched_sync.batched_sync(head.prefix)
            sync_written = syncing.__enter__()
            # what was written and not recorded is copied again by a retry
            control.add_cleanup(_suppressed, syncing.__exit__, None, None, None)
        control.add_cleanup(record_left)
        beating = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(job_id, beating), daemon=True)
        heartbeat.start()
        control.add_cleanup(end_thread, beating, heartbeat)
        try:
            if dst_archive:
                copy_shards(self.store, job_id, source, dst_backend, dst_tier_id=dst_tier_id,
                            workers=self.transfer.workers, verify=copier.verify, outcome=outcome,
                            progress=progress, control=control)
            items = _Prefetched(
                lambda: self._claimed_items(job_id, head.src_tier_id, dst_tier_id, control),
                ahead=CLAIM_BATCH, name=f"tiering-claim-{job_id}",
            )
            control.add_cleanup(items.close)  # no claim runs after this: release_unstarted sees them all
            # claimed ahead but not handed out when a stop comes: back to planned (release_unstarted)
            handed = itertools.takewhile(lambda _: not control.cancelled, items)
            last_flush = time.monotonic()
            # a user's stop: copies still blocked after a short grace are abandoned (their steps go back to
            # planned below), so an endpoint that does not answer cannot hold the stop up
            for result in copier.copy_many(handed, progress=progress, stop=control, give_up=stop):
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
                    control.stop()
                if not result.ok and not _retryable(result) and not keep_going:
                    control.stop()
        except LeaseLost:
            lease_lost = True
        finally:
            control.stop()
            control.run_cleanups()
        if lease_lost:
            raise LeaseLost(job_id, -1)
        settled = self.store.settle(job_id)
        if settled.failed:
            outcome.error = "; ".join(settled.errors)
            return JobState.FAILED
        return JobState.RUNNING

    def _claimed_items(
        self,
        job_id: int,
        src_tier_id: int,
        dst_tier_id: int,
        control: JobControl | threading.Event,
        stop: threading.Event | None = None,
    ) -> Iterator[CopyItem]:
        """Claim steps in batches and yield their copies until none is left or the job stops.
        ``control``: the job's; an Event (and ``stop``) are joined into one."""
        if not isinstance(control, JobControl):
            control = JobControl(control, stop)
        while not control.stopped:
            claimed = self.store.claim(job_id, src_tier_id, dst_tier_id, CLAIM_BATCH)
            if not claimed:
                return
            for step in claimed:
                if control.cancelled:
                    return  # claimed steps not handed out yet go back to planned (release_unstarted)
                if step.src_key is None:
                    raise BackendError(f"member {step.path} has no live copy on the source tier")
                self._epochs[step.step_id] = step.epoch
                yield CopyItem(
                    src_key=step.src_key, dst_key=step.dst_key, size=step.size, expected_xxh3=step.xxh3,
                    ref=step.step_id, src_offset=step.src_offset or 0,
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
        recorded, lost = self.store.record_verified(wanted, dst_tier_id)
        outcome.copied += recorded
        batch.clear()
        if copied_before == 0 and outcome.copied > 0:
            crash_point("after_verify")
        if lost:
            raise LeaseLost(lost[0], wanted[lost[0]])

    def _record_failure(self, result: CopyResult, job_id: int, dst_tier_id: int, outcome: JobOutcome) -> None:
        """Record a failed copy: back to planned for a retry (transient, attempts left) or failed with its reason."""
        err = result.error
        message = f"{err.reason if err is not None else 'error'}: {err}"
        sid = result.item.ref
        if self.store.record_failure(sid, self._epochs.get(sid, -1), job_id=job_id, dst_tier_id=dst_tier_id,
                                     message=message, transient=_retryable(result)):
            outcome.failed += 1
            outcome.failures.append(f"{result.item.src_key}: {message}")

    def _heartbeat(self, job_id: int, stop: threading.Event) -> None:
        interval = max(1.0, self.transfer.lease_seconds / 3)
        while not stop.wait(interval):
            try:
                self.store.renew_leases(job_id)
            except TieringError:
                log.warning("lease renewal for job %s failed; will retry", job_id)

    # ---------------------------------------------------------------- failure and recovery

    def abandon(self, job_id: int, *, reason: str, final_state: JobState = JobState.FAILED) -> None:
        """See :func:`tiering.moves.finish.abandon`."""
        finish.abandon(self.app, job_id, reason=reason, final_state=final_state)

    def cancel(self, job_id: int) -> None:
        """See :func:`tiering.moves.finish.cancel`."""
        finish.cancel(self.app, job_id)

    def unfinished_jobs(self) -> list[int]:
        """Unfinished move jobs (jobs of other purposes are driven by their owners)."""
        return self.store.unfinished_jobs(JobPurpose.MOVE)

    def resume_all(self, *, progress: Progress | None = None) -> list[JobOutcome]:
        """Drive every unfinished move job forward (after a crash, or work left by another worker)."""
        return [self.run_job(job_id, progress=progress) for job_id in self.unfinished_jobs()]


def _suppressed(fn: Callable[..., object], *args: object) -> None:
    """``fn(*args)``, a storage or catalog error ignored: what it would have undone is redone by a retry."""
    with contextlib.suppress(TieringError):
        fn(*args)


def _retryable(result: CopyResult) -> bool:
    return isinstance(result.error, TransientBackendError)
