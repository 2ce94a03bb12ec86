"""Behaviour that wraps any backend: retry, fault injection, dry run.

Each wrapper satisfies the :class:`~tiering.storage.base.Backend` protocol itself, exposes the inner
backend's ``url`` and keeps it as ``inner``. They stack; ``tiering.app`` is the one place that stacks them
(e.g. ``DryRunBackend(RetryingBackend(S3Backend(...)))``). Attributes a wrapper does not define (such as
``S3Backend.request_restore``) are looked up on the inner backend.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO, TypeVar, cast

from tiering.errors import BackendError, ObjectNotFound, TransientBackendError
from tiering.storage.base import Backend, Location, ObjectInfo, PosixEntry, ReadStream, check_key, delete_each

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

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy, pickle): do not recurse
            raise AttributeError(name)
        return getattr(self.inner, name)

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
        restore: Callable[..., None] = self.inner.request_restore  # type: ignore[attr-defined]
        self._retry("request_restore", key, lambda: restore(key, days=days, retrieval_tier=retrieval_tier))

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


def _flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]


class _CorruptingReader:
    """Passes bytes through, inverting the first byte it hands out."""

    def __init__(self, raw: BinaryIO | ReadStream) -> None:
        self._raw = raw
        self._done = False

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        if data and not self._done:
            self._done = True
            data = _flip(data)
        return data

    def close(self) -> None:
        self._raw.close()


class _FailingReader:
    """Passes bytes through until ``limit`` bytes have gone by, then raises ``make_error()``."""

    def __init__(
        self, raw: BinaryIO | ReadStream, limit: int, make_error: Callable[[], BaseException]
    ) -> None:
        self._raw = raw
        self._left = limit
        self._make_error = make_error

    def read(self, size: int = -1, /) -> bytes:
        if self._left <= 0:
            raise self._make_error()
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._raw.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._raw.close()


class FaultyBackend:
    """Fault injection for tests: a backend that corrupts or fails on demand.

    * ``corrupt_reads``: ``open_read`` streams have their first byte inverted.
    * ``corrupt_writes``: ``put`` stores the body with its first byte inverted (the caller's hashing
      wrapper has seen the true bytes, so a read-back verification must catch it).
    * ``fail_puts_after_bytes=N``: ``put`` reads N bytes of the body, hands them on, then raises
      ``fail_with`` mid-stream, like a connection dropping during an upload.
    * ``fail_calls={"head": 2, ...}``: the next 2 calls of that operation raise ``fail_with`` before
      reaching the inner backend (operations: put, open_read, head, delete, list, abort_incomplete).
    * ``fail_times``: how many put faults (mid-stream failures) to inject; None means every put.

    ``fail_with`` is an exception class (a ``BackendError`` subclass gets ``backend=`` and ``key=``) or
    a factory ``(key) -> exception``. ``calls`` counts every call by operation name.
    """

    def __init__(
        self,
        inner: Backend,
        *,
        corrupt_reads: bool = False,
        corrupt_writes: bool = False,
        fail_puts_after_bytes: int | None = None,
        fail_times: int | None = None,
        fail_calls: Mapping[str, int] | None = None,
        fail_with: type[BaseException] | Callable[[str], BaseException] = TransientBackendError,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.corrupt_reads = corrupt_reads
        self.corrupt_writes = corrupt_writes
        self.fail_puts_after_bytes = fail_puts_after_bytes
        self.fail_times = fail_times
        self.fail_calls: dict[str, int] = dict(fail_calls or {})
        self.fail_with = fail_with
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy, pickle): do not recurse
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"FaultyBackend({self.inner!r})"

    def _error(self, key: str, what: str) -> BaseException:
        factory = self.fail_with
        message = f"injected fault: {what}"
        if isinstance(factory, type) and issubclass(factory, BaseException):
            if issubclass(factory, ObjectNotFound):
                return factory(key, backend=self.url)
            if issubclass(factory, BackendError):
                return factory(message, backend=self.url, key=key)
            return factory(message)
        make = cast("Callable[[str], BaseException]", factory)
        return make(key)

    def _enter(self, op: str, key: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.fail_calls.get(op, 0) > 0:
            self.fail_calls[op] -= 1
            raise self._error(key, f"{op} refused")

    def put(
        self,
        key: str,
        body: BinaryIO | ReadStream,
        *,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_xxh3: str | None = None,
    ) -> bool:
        self._enter("put", key)
        stream: BinaryIO | ReadStream = body
        limit = self.fail_puts_after_bytes
        if limit is not None and (self.fail_times is None or self.fail_times > 0):
            if self.fail_times is not None:
                self.fail_times -= 1
            what = f"put failed after {limit} bytes"
            stream = _FailingReader(stream, limit, lambda: self._error(key, what))
        if self.corrupt_writes:
            stream = _CorruptingReader(stream)
        return self.inner.put(key, stream, size=size, metadata=metadata, content_xxh3=content_xxh3)

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        self._enter("open_read", key)
        stream = self.inner.open_read(key, offset=offset, length=length)
        return _CorruptingReader(stream) if self.corrupt_reads else stream

    def head(self, key: str) -> ObjectInfo:
        self._enter("head", key)
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        self._enter("delete", key)
        self.inner.delete(key)

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        return delete_each(self, keys)  # one fault check per key, as with ``delete``

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._enter("list", prefix)
        return self.inner.list(prefix)

    def abort_incomplete(self, prefix: str = "") -> int:
        self._enter("abort_incomplete", prefix)
        return self.inner.abort_incomplete(prefix)

    def locate(self, key: str) -> Location:
        return self.inner.locate(key)

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class RecordedWrite:
    """One change a dry run would have made. ``size`` is the caller's hint (bytes), maybe None."""

    op: str  # "put", "delete", "abort_incomplete", "request_restore", "apply_tree", "remove_tree"
    key: str
    size: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    detail: Mapping[str, Any] = field(default_factory=dict)


class DryRunBackend:
    """Reads pass through; writes, deletes and restores are recorded in ``recorded`` and not done.

    A recorded ``put`` does not read its body (a dry run moves no bytes), so a hashing wrapper around
    the body sees nothing. Reads after a recorded write still see the inner backend's state.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url
        self.recorded: list[RecordedWrite] = []

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy, pickle): do not recurse
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"DryRunBackend({self.inner!r})"

    def put(
        self,
        key: str,
        body: BinaryIO | ReadStream,
        *,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_xxh3: str | None = None,
    ) -> bool:
        self.recorded.append(RecordedWrite("put", check_key(key), size, dict(metadata or {})))
        return False

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        return self.inner.open_read(key, offset=offset, length=length)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        self.recorded.append(RecordedWrite("delete", key))

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        return delete_each(self, keys)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def abort_incomplete(self, prefix: str = "") -> int:
        self.recorded.append(RecordedWrite("abort_incomplete", prefix))
        return 0

    def request_restore(self, key: str, *, days: int, retrieval_tier: str = "Standard") -> None:
        self.recorded.append(
            RecordedWrite("request_restore", key, detail={"days": days, "retrieval_tier": retrieval_tier})
        )

    def ensure_bucket(self) -> bool:
        self.recorded.append(RecordedWrite("ensure_bucket", ""))
        return False

    def apply_tree(self, prefix: str, entries: Sequence[PosixEntry]) -> None:
        self.recorded.append(RecordedWrite("apply_tree", prefix, detail={"entries": len(entries)}))

    def remove_tree(self, prefix: str, entries: Sequence[PosixEntry]) -> None:
        self.recorded.append(RecordedWrite("remove_tree", prefix, detail={"entries": len(entries)}))

    def locate(self, key: str) -> Location:
        return self.inner.locate(key)

    def close(self) -> None:
        self.inner.close()
