"""Fault injection for tests: a backend wrapper that corrupts or fails on demand."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import BinaryIO, cast

from tiering.errors import BackendError, ObjectNotFound, TransientBackendError
from tiering.storage.base import Backend, Location, ObjectInfo, ReadStream, delete_each


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

    def unwrap(self) -> Backend:
        """The wrapped backend (see :func:`~tiering.storage.base.find_capability`)."""
        return self.inner

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
