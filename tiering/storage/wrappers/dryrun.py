"""Dry run: a backend wrapper that reads through and records every change instead of making it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from tiering.errors import BackendError
from tiering.storage.base import Backend, Location, ObjectInfo, PosixEntry, ReadStream, check_key, delete_each


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

    def unwrap(self) -> Backend:
        """The wrapped backend (see :func:`~tiering.storage.base.find_capability`)."""
        return self.inner

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
