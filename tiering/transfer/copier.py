"""Parallel, verified copies of many objects between two backends.

One copy: stream the source through an xxh3-128 hasher into the destination (our digest travels as
object metadata), check that the streamed bytes hash to the expected digest (else the source changed),
then verify what the destination holds. A copy that fails any check is deleted from the destination; the
source is never touched here.

How the destination is verified (``verify``):

* ``auto`` (the default): the destination backend is handed the catalog's xxh3-128 with the bytes and
  checks what it stores against it, refusing a body that does not match before anything is kept: a local
  tier hashes what it writes; S3 hashes what it reads and sends every request's checksum
  (``x-amz-checksum-crc32``, or ``Content-MD5`` where only that is checked), which the endpoint checks
  against what it received. No second request reads the copy back. Where that check cannot be made (an
  endpoint that checks neither, a first registration with no digest yet), the copy is read back as with
  ``readback``.
* ``readback``: re-read the destination and hash it.
* ``stream``: trust the hash of the bytes sent and check only the stored size.

Copies run in a bounded thread pool: at most ``workers`` copies at once, and never more than a few
futures queued per worker, so a million-member dataset does not become a million futures. A second bound,
``max_inflight_bytes``, adapts the concurrency to object size: small objects are latency-bound (each
copy is two or three requests of a few milliseconds), so many run at once; large ones are bandwidth-bound
and held in memory part by part, so only as many as fit in the byte budget run at once (one always may).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

from tiering.errors import CorruptedCopy, DigestRefused, SourceChanged, TieringError
from tiering.storage.base import DIGEST_METADATA_KEY, Backend, read_up_to
from tiering.transfer.control import JobControl, as_control
from tiering.transfer.hashing import Digests, HashingReader, hash_stream

#: bytes of objects being copied at once (an object counts with its size, at most this much)
DEFAULT_INFLIGHT_BYTES = 512 * 2**20
#: a readback of an object this large (bytes) fetches ranges of READBACK_RANGE bytes over READBACK_STREAMS
#: connections at once and hashes them in order: one GET stream is slower than the server can send
READBACK_PARALLEL_FROM = 64 * 2**20
READBACK_RANGE = 16 * 2**20
READBACK_STREAMS = 4
#: seconds the copies under way get to finish after a give-up (Ctrl-C, SIGTERM) before they are abandoned
GIVE_UP_GRACE_SECONDS = 2.0
_GIVE_UP_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class CopyItem:
    src_key: str
    dst_key: str
    size: int
    #: xxh3-128 the source is expected to hash to; None when unknown (first registration)
    expected_xxh3: str | None
    #: caller's handle (member id, step id); returned untouched in the result
    ref: int = 0
    #: for a member inside a shard: where its bytes start in ``src_key``
    src_offset: int = 0


@dataclass(frozen=True)
class CopyResult:
    item: CopyItem
    ok: bool
    xxh3: str = ""
    size: int = 0
    md5: str | None = None
    error: TieringError | None = None
    seconds: float = 0.0


class Progress:
    """Thread-safe counters a display can poll: bytes and objects done out of totals."""

    def __init__(self, total_bytes: int = 0, total_objects: int = 0) -> None:
        self.total_bytes = total_bytes
        self.total_objects = total_objects
        self.done_bytes = 0
        self.done_objects = 0
        self.failed_objects = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def add(self, nbytes: int, *, failed: bool = False) -> None:
        with self._lock:
            self.done_bytes += nbytes
            self.done_objects += 1
            if failed:
                self.failed_objects += 1

    @property
    def rate(self) -> float:
        """Bytes per second since start."""
        elapsed = time.monotonic() - self.started
        return self.done_bytes / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.rate
        if rate <= 0:
            return None
        return max(0.0, (self.total_bytes - self.done_bytes) / rate)


VerifyMode = Literal["auto", "readback", "stream"]

#: a stop signal that is always set: a budget reservation with it never waits
_ALREADY_SET = threading.Event()
_ALREADY_SET.set()


class _ByteBudget:
    """At most ``limit`` bytes reserved at once, except that a reservation always succeeds when none is held."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, stop: threading.Event | JobControl | None) -> bool:
        """Reserve ``n`` bytes (capped at the limit); False when ``stop`` was set while waiting."""
        n = min(n, self._limit)
        with self._cond:
            while self._held and self._held + n > self._limit:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.2)
            self._held += n
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self._held -= min(n, self._limit)
            self._cond.notify_all()


class Copier:
    """Copies items from ``src`` to ``dst`` with verification. Stateless between calls."""

    def __init__(
        self,
        src: Backend,
        dst: Backend,
        *,
        workers: int = 8,
        verify: VerifyMode = "auto",
        md5: bool = False,
        on_before_put: Callable[[CopyItem], None] | None = None,
        max_inflight_bytes: int = DEFAULT_INFLIGHT_BYTES,
    ) -> None:
        self.src = src
        self.dst = dst
        self.workers = workers
        self.verify = verify
        self.md5 = md5
        self.max_inflight_bytes = max_inflight_bytes
        self._on_before_put = on_before_put

    def copy_one(self, item: CopyItem) -> CopyResult:
        """Copy and verify one item. Never raises a TieringError: failures come back in the result."""
        started = time.monotonic()
        try:
            digests, checked = self._stream(item)
            if not checked:
                self._verify_destination(item, digests)
        except TieringError as exc:
            with contextlib.suppress(TieringError):
                self.dst.delete(item.dst_key)
            return CopyResult(item, ok=False, error=exc, seconds=time.monotonic() - started)
        except BaseException:
            # interrupted mid-copy: the destination key is deterministic, a retry overwrites it, and
            # recovery deletes it if the move is abandoned; do not mask the interrupt with cleanup IO
            raise
        return CopyResult(
            item, ok=True, xxh3=digests.xxh3, size=digests.size, md5=digests.md5,
            seconds=time.monotonic() - started,
        )

    def _check_source(self, item: CopyItem, digests: Digests) -> None:
        if item.expected_xxh3 is not None and (
            digests.xxh3 != item.expected_xxh3 or digests.size != item.size
        ):
            raise SourceChanged(
                f"{self.src.url}/{item.src_key}", item.expected_xxh3, f"{digests.xxh3} ({digests.size} bytes)"
            )

    def _stream(self, item: CopyItem) -> tuple[Digests, bool]:
        """Stream the source through the hasher into the destination; returns the digests of what was read
        and whether the destination checked what it stored against the expected digest."""
        length = item.size if item.src_offset or item.size == 0 else None
        raw = self.src.open_read(item.src_key, offset=item.src_offset, length=length)
        reader = HashingReader(raw, Digests(md5=self.md5), limit=item.size if item.src_offset else None)
        metadata = {DIGEST_METADATA_KEY: item.expected_xxh3} if item.expected_xxh3 else {}
        expected = item.expected_xxh3 if self.verify == "auto" else None
        try:
            if self._on_before_put is not None:
                self._on_before_put(item)
            checked = self.dst.put(item.dst_key, reader, size=item.size, metadata=metadata, content_xxh3=expected)
        except DigestRefused as exc:
            # refused because the source changed under us, or because the bytes changed on the way
            self._check_source(item, reader.digests)
            raise CorruptedCopy(f"{self.src.url}/{item.src_key}", f"{self.dst.url}/{item.dst_key}",
                                str(item.expected_xxh3), f"refused by the destination ({exc})") from exc
        finally:
            reader.close()
        digests = reader.digests
        self._check_source(item, digests)
        return digests, checked

    def _verify_destination(self, item: CopyItem, digests: Digests) -> None:
        dst_name = f"{self.dst.url}/{item.dst_key}"
        if self.verify != "stream":  # readback, or auto where the destination could not check what it stored
            if digests.size >= READBACK_PARALLEL_FROM:
                check = self._read_back_in_ranges(item.dst_key, digests.size)
            else:
                check = self._read_back(item.dst_key)
            if check.xxh3 != digests.xxh3 or check.size != digests.size:
                raise CorruptedCopy(
                    f"{self.src.url}/{item.src_key}", dst_name, digests.xxh3, f"{check.xxh3} ({check.size} bytes)"
                )
        else:
            info = self.dst.head(item.dst_key)
            if info.size != digests.size:
                raise CorruptedCopy(
                    f"{self.src.url}/{item.src_key}", dst_name, f"{digests.size} bytes", f"{info.size} bytes"
                )

    def _read_back(self, key: str) -> Digests:
        stream = self.dst.open_read(key)
        try:
            return hash_stream(stream)
        finally:
            stream.close()

    def _read_back_in_ranges(self, key: str, size: int) -> Digests:
        """Hash ``key`` as stored, fetching ranges concurrently and hashing them in order.

        The stored size comes from ``head``: ranges alone would not see bytes past the expected end. At most
        ``READBACK_STREAMS + 1`` ranges are held in memory.
        """
        stored = self.dst.head(key).size
        if stored != size:
            check = Digests()
            check.size = stored  # the size mismatch is the finding; no need to read the bytes
            return check

        def fetch(offset: int) -> bytes:
            length = min(READBACK_RANGE, size - offset)
            stream = self.dst.open_read(key, offset=offset, length=length)
            try:
                return read_up_to(stream, length)
            finally:
                stream.close()

        check = Digests()
        offsets = iter(range(0, size, READBACK_RANGE))
        with ThreadPoolExecutor(max_workers=READBACK_STREAMS, thread_name_prefix="readback") as pool:
            ahead = deque(pool.submit(fetch, off) for off in itertools.islice(offsets, READBACK_STREAMS))
            try:
                while ahead:
                    data = ahead.popleft().result()
                    nxt = next(offsets, None)
                    if nxt is not None:
                        ahead.append(pool.submit(fetch, nxt))
                    check.update(data)
            finally:
                for fut in ahead:
                    fut.cancel()
        return check

    def copy_many(
        self,
        items: Iterable[CopyItem],
        *,
        progress: Progress | None = None,
        stop: threading.Event | JobControl | None = None,
        give_up: threading.Event | None = None,
        give_up_grace: float = GIVE_UP_GRACE_SECONDS,
    ) -> Iterator[CopyResult]:
        """Copy every item; yield results as they finish (any order).

        At most ``workers`` copies run and at most ``2 * workers`` are queued, and the objects submitted
        add up to at most ``max_inflight_bytes`` (one object always may go). When ``stop`` is set, no new
        copy starts; those running finish and are yielded (``stop`` may be the job's :class:`JobControl`).
        When ``give_up`` is set (a user's Ctrl-C or
        SIGTERM), no new copy starts either, and those still running ``give_up_grace`` seconds later are
        abandoned: the iteration ends without their results and without waiting for their threads (a copy
        blocked on an endpoint that does not answer holds its thread until its request's deadline). An
        abandoned copy leaves at most a partial destination object under its deterministic key, which the
        next attempt overwrites.
        """
        window = 2 * self.workers
        budget = _ByteBudget(self.max_inflight_bytes)

        def run(item: CopyItem) -> CopyResult:
            try:
                return self.copy_one(item)
            finally:
                budget.release(item.size)

        control = as_control(stop)

        def halted() -> bool:
            return control.stopped or bool(give_up and give_up.is_set())

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="copy")
        abandoned = False
        try:
            pending: set[Future[CopyResult]] = set()
            it = iter(items)
            exhausted = False
            waiting: CopyItem | None = None
            gave_up_at: float | None = None
            while True:
                while not exhausted and len(pending) < window and not halted():
                    if waiting is None:
                        try:
                            waiting = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                    # never block on the budget while copies are pending: their results must be yielded
                    if pending and not budget.acquire(waiting.size, _ALREADY_SET):
                        break
                    if not pending and not budget.acquire(waiting.size, control):
                        break
                    pending.add(pool.submit(run, waiting))
                    waiting = None
                if not pending:
                    return
                timeout: float | None = None
                if give_up is not None:
                    if give_up.is_set():
                        gave_up_at = time.monotonic() if gave_up_at is None else gave_up_at
                        timeout = gave_up_at + give_up_grace - time.monotonic()
                        if timeout <= 0:
                            abandoned = True
                            return
                    else:
                        timeout = _GIVE_UP_POLL_SECONDS  # a give-up must be seen while copies block
                done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
                for fut in done:
                    result = fut.result()
                    if progress is not None:
                        progress.add(result.item.size, failed=not result.ok)
                    yield result
        finally:
            pool.shutdown(wait=not abandoned, cancel_futures=abandoned)
