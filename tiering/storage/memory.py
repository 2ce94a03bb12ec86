"""An in-process backend: a real implementation of the contract, used by functional tests and dry runs."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO
from urllib.parse import urlparse

from tiering.config import TierConfig, TransferConfig
from tiering.errors import BackendError, DigestRefused, ObjectNotFound
from tiering.storage.base import Location, ObjectInfo, ReadStream, check_key, delete_each
from tiering.storage.registry import register_scheme
from tiering.transfer.hashing import xxh3_bytes


class MemoryBackend:
    """Objects kept in a dict. Thread-safe. ``memory://name`` backends with one name share their store."""

    _stores: dict[str, dict[str, tuple[bytes, dict[str, str]]]] = {}
    _stores_lock = threading.Lock()

    def __init__(self, name: str = "default") -> None:
        self.url = f"memory://{name}"
        with self._stores_lock:
            self._objects = self._stores.setdefault(name, {})
        self._lock = threading.Lock()

    @classmethod
    def forget_all(cls) -> None:
        with cls._stores_lock:
            cls._stores.clear()

    def put(
        self,
        key: str,
        body: BinaryIO | ReadStream,
        *,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_xxh3: str | None = None,
    ) -> bool:
        check_key(key)
        buf = io.BytesIO()
        while True:
            chunk = body.read(1024 * 1024)
            if not chunk:
                break
            buf.write(chunk)
        data = buf.getvalue()
        if content_xxh3 is not None and xxh3_bytes(data) != content_xxh3:
            raise DigestRefused(f"{key}: the body does not hash to {content_xxh3}", backend=self.url, key=key)
        with self._lock:
            self._objects[key] = (data, dict(metadata or {}))
        return content_xxh3 is not None

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        with self._lock:
            try:
                data, _ = self._objects[key]
            except KeyError:
                raise ObjectNotFound(key, backend=self.url) from None
        end = len(data) if length is None else min(len(data), offset + length)
        return io.BytesIO(data[offset:end])

    def head(self, key: str) -> ObjectInfo:
        with self._lock:
            try:
                data, meta = self._objects[key]
            except KeyError:
                raise ObjectNotFound(key, backend=self.url) from None
        return ObjectInfo(key=key, size=len(data), metadata=dict(meta))

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        return delete_each(self, keys)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            items = sorted((k, len(v[0]), dict(v[1])) for k, v in self._objects.items() if k.startswith(prefix))
        for key, size, meta in items:
            yield ObjectInfo(key=key, size=size, metadata=meta)

    def abort_incomplete(self, prefix: str = "") -> int:
        return 0

    def locate(self, key: str) -> Location:
        return Location(kind="memory", url=f"{self.url}/{key}", key=key)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MemoryBackend({self.url!r})"


def open_memory(name: str, tier: TierConfig, transfer: TransferConfig) -> MemoryBackend:
    """``memory://NAME``: the store NAME (the tier's name when the URL names none), shared by its backends."""
    parsed = urlparse(tier.backend)
    return MemoryBackend((parsed.netloc + parsed.path).strip("/") or name)


register_scheme("memory", open_memory)
