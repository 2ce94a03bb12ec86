"""Retry of transient backend errors with exponential backoff and jitter, within an operation's time limit."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, BinaryIO, TypeVar

from tiering.errors import BackendError, PermanentBackendError, TransientBackendError
from tiering.storage.base import Archive, Backend, Location, ObjectInfo, ReadStream, check_key, find_capability

log = logging.getLogger(__name__)

T = TypeVar("T")

#: a non-seekable ``put`` body of at most this many bytes (known ``size``) is buffered so it can be retried
DEFAULT_BUFFER_LIMIT = 8 * 2**20


def _seek_position(body: Any) -> int | None:
    """The current position of ``body`` if it can be rewound to it, else None."""
    try:
        if body.seekable():
            return int(body.tell())
    except (AttributeError, OSError, ValueError):
        pass
    return None


class _BufferedBody:
    """A body read fully into memory, replayable from the start for every attempt."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        out = self._data[self._pos:end]
        self._pos += len(out)
        return out

    def rewind(self) -> None:
        self._pos = 0

    def close(self) -> None:
        """Nothing to release; the original body was read to its end."""


class RetryingBackend:
    """Retries :class:`~tiering.errors.TransientBackendError` with exponential backoff and jitter.

    ``attempts`` is the total number of tries (>= 1), so ``attempts=1`` never retries; the delay before
    retry ``n`` (1-based) is ``base_delay * 2**(n-1)`` capped at ``max_delay`` seconds, then scaled by a
    random factor in [0.5, 1) so that many workers hitting one server do not retry in lock step.
    Other errors (permanent, not found, archived) are raised at once.

    ``budget(nbytes)`` (optional) is the time one operation moving ``nbytes`` bytes may take in all (seconds):
    no retry waits or starts past it, and the last error is raised, saying so. Without it only ``attempts``
    limits the retries.

    What can be retried:

    * ``head``, ``delete``, ``abort_incomplete``, ``request_restore``: the whole call.
    * ``delete_many``: the whole call, then the keys that failed transiently, as a smaller batch.
    * ``open_read``: opening the stream; an error while the caller reads it is the caller's to handle
      (the copier retries the member).
    * ``list``: resumes after the last key already yielded (keys come in order), so nothing repeats.
    * ``put``: only when the body can be replayed: a seekable body is rewound to where it started; a
      non-seekable body with a known ``size`` up to ``buffer_limit`` bytes is read into memory once
      (still in order, once, so a hashing wrapper sees each byte exactly once). Any other body gets a
      single attempt, since its bytes are gone after the first try.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        attempts: int,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        budget: Callable[[int], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts counts the first try too: it must be at least 1")
        self.inner = inner
        self.url = inner.url
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.buffer_limit = buffer_limit
        self.budget = budget
        self._sleep = sleep
        self._rng = rng
        self._monotonic = monotonic

    def unwrap(self) -> Backend:
        """The wrapped backend (see :func:`~tiering.storage.base.find_capability`)."""
        return self.inner

    def __repr__(self) -> str:
        return f"RetryingBackend({self.inner!r}, attempts={self.attempts})"

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return ceiling * (0.5 + self._rng() / 2)

    def _retry(
        self, op: str, key: str, call: Callable[[], T], *, before_retry: Callable[[], None] | None = None,
        attempts: int | None = None, nbytes: int = 0,
    ) -> T:
        attempts = self.attempts if attempts is None else attempts
        limit = self.budget(nbytes) if self.budget is not None else None
        deadline = self._monotonic() + limit if limit is not None else None
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except TransientBackendError as exc:
                if attempt >= attempts:
                    raise
                wait_s = self.delay(attempt)
                if deadline is not None and self._monotonic() + wait_s >= deadline:
                    raise TransientBackendError(
                        f"{exc} (gave up after {attempt} attempt(s): past the operation's {limit:g} s limit, "
                        f"transfer.request_timeout_seconds)", backend=exc.backend, key=exc.key,
                    ) from exc
                log.warning(
                    "%s %s on %s failed (attempt %d/%d), retrying in %.2fs: %s",
                    op, key, self.url, attempt, attempts, wait_s, exc,
                )
                self._sleep(wait_s)
                if before_retry is not None:
                    before_retry()
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def put(
        self,
        key: str,
        body: BinaryIO | ReadStream,
        *,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_xxh3: str | None = None,
    ) -> bool:
        start = _seek_position(body)
        if start is not None:
            seekable: Any = body

            def rewind() -> None:
                seekable.seek(start)

            return self._retry(
                "put", key, lambda: self.inner.put(key, body, size=size, metadata=metadata, content_xxh3=content_xxh3),
                before_retry=rewind, nbytes=size or 0,
            )
        if size is not None and size <= self.buffer_limit:
            check_key(key)  # fail before reading the body
            buffered = _BufferedBody(_read_all(body))
            return self._retry(
                "put", key,
                lambda: self.inner.put(key, buffered, size=size, metadata=metadata, content_xxh3=content_xxh3),
                before_retry=buffered.rewind, nbytes=size,
            )
        return self.inner.put(key, body, size=size, metadata=metadata, content_xxh3=content_xxh3)

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        return self._retry("open_read", key, lambda: self.inner.open_read(key, offset=offset, length=length))

    def head(self, key: str) -> ObjectInfo:
        return self._retry("head", key, lambda: self.inner.head(key))

    def delete(self, key: str) -> None:
        self._retry("delete", key, lambda: self.inner.delete(key))

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        pending = list(keys)
        failed: dict[str, BackendError] = {}
        for attempt in range(1, self.attempts + 1):
            if not pending:
                break
            batch = pending
            failed.update(self._retry("delete_many", batch[0], partial(self.inner.delete_many, batch)))
            pending = [k for k in batch if isinstance(failed.get(k), TransientBackendError)]
            if pending and attempt < self.attempts:
                wait_s = self.delay(attempt)
                log.warning("delete of %d keys on %s failed (attempt %d/%d), retrying in %.2fs: %s",
                            len(pending), self.url, attempt, self.attempts, wait_s, failed[pending[0]])
                self._sleep(wait_s)
                for key in pending:
                    del failed[key]
        return failed

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        last: str | None = None
        failures = 0
        while True:
            try:
                for info in self.inner.list(prefix):
                    if last is not None and info.key <= last:
                        continue  # already yielded before the failure
                    yield info
                    last = info.key
                return
            except TransientBackendError as exc:
                failures += 1
                if failures >= self.attempts:
                    raise
                wait_s = self.delay(failures)
                log.warning("list %s on %s failed after %r, resuming in %.2fs: %s",
                            prefix, self.url, last, wait_s, exc)
                self._sleep(wait_s)

    def abort_incomplete(self, prefix: str = "") -> int:
        return self._retry("abort_incomplete", prefix, lambda: self.inner.abort_incomplete(prefix))

    def request_restore(self, key: str, *, days: int, retrieval_tier: str = "Standard") -> None:
        archive = find_capability(self.inner, Archive)
        if archive is None:
            raise PermanentBackendError("the backend cannot restore archived objects", backend=self.url, key=key)
        self._retry(
            "request_restore", key, lambda: archive.request_restore(key, days=days, retrieval_tier=retrieval_tier)
        )

    def locate(self, key: str) -> Location:
        return self.inner.locate(key)

    def close(self) -> None:
        self.inner.close()


def _read_all(body: BinaryIO | ReadStream) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = body.read(2**20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)

