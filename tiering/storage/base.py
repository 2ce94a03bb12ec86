"""The storage contract every tier backend fulfils.

A backend stores opaque objects under string keys (``/``-separated, no leading slash, no ``..``).
It knows nothing of datasets, digests or the catalog: the copier and executor build those on top.
The same conformance suite (``tests/conformance``) runs against every implementation.

Rules shared by all methods:

* ``put`` overwrites an existing key and is atomic: a reader sees the old object or the whole new
  one, never a part. A failed ``put`` leaves no partial object (a multipart upload is aborted, a temp
  file removed).
* ``delete`` of a missing key is not an error (idempotent); ``delete_many`` removes many keys in as few
  requests as the store allows (S3 DeleteObjects: 1,000 keys per request) and reports failures per key.
* ``head`` and ``open_read`` of a missing key raise :class:`~tiering.errors.ObjectNotFound`.
* Failures are raised as :class:`~tiering.errors.BackendError` subclasses, never vendor errors:
  ``TransientBackendError`` is worth retrying, ``PermanentBackendError`` is not.
* Metadata keys are lower-case ASCII; values are ASCII strings. Sizes are bytes.

Abilities only some backends have are small protocols of their own (:class:`Archive`, :class:`Buckets`,
:class:`BatchedSync`, :class:`PosixTree`, :class:`ListsIncompleteUploads`). A caller asks for one with
:func:`find_capability`, which looks through the wrappers (retry, dry run, fault injection) by their
:class:`Unwrapper` ``unwrap``, never by attribute forwarding.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, TypeVar, cast, runtime_checkable

from tiering.errors import BackendError, TieringError

#: metadata key under which our own digest of an object is stored (``x-amz-meta-xxh3-128`` on S3)
DIGEST_METADATA_KEY = "xxh3-128"


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend knows of one stored object."""

    key: str
    size: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: storage class as the backend reports it ("STANDARD", "GLACIER", ...); "" when not applicable
    storage_class: str = ""
    #: for archive backends: True when the object needs a restore before it can be read
    archived: bool = False
    #: for archive backends: True while a restore is under way
    restore_in_progress: bool = False
    #: when the object was last written (UTC), where the backend tells (``list`` of S3 and directories)
    modified: dt.datetime | None = None


@dataclass(frozen=True)
class IncompleteUpload:
    """An upload begun and never completed nor aborted (an S3 multipart upload); ``initiated`` is UTC."""

    key: str
    upload_id: str
    initiated: dt.datetime | None


@dataclass(frozen=True)
class Location:
    """Where a client reads an object or prefix directly (no secrets)."""

    kind: str  # "s3", "file" or "memory"
    url: str  # s3://bucket/key or file:///abs/path
    endpoint: str = ""
    bucket: str = ""
    key: str = ""
    path: str = ""


@dataclass(frozen=True)
class PosixEntry:
    """The POSIX attributes of one path of a dataset's tree, relative to the dataset's prefix.

    ``kind`` is ``"file"`` (an object already stored: its ``mode`` and ``mtime_ns``), ``"dir"`` (a directory,
    made when missing) or ``"link"`` (a symbolic link to ``target``, relative to the link's directory).
    ``mode`` holds permission bits (``0o755``), ``mtime_ns`` nanoseconds since the epoch; None leaves as is.
    """

    path: str
    kind: str
    mode: int | None = None
    mtime_ns: int | None = None
    target: str = ""


class ReadStream(Protocol):
    """A file-like object opened by :meth:`Backend.open_read`."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """A place where a tier keeps objects."""

    #: a URL naming this backend, safe to print (never carries credentials)
    url: str

    def put(
        self,
        key: str,
        body: BinaryIO | ReadStream,
        *,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_xxh3: str | None = None,
    ) -> bool:
        """Store all bytes read from ``body`` (until EOF) under ``key``, overwriting atomically.

        ``size`` is a hint (bytes) that lets a backend choose a single request or multipart.
        ``content_xxh3`` is the xxh3-128 the body must hash to. A backend that can check what it stores
        against it does so and returns True: the local backends hash what they write; S3 hashes what it reads
        from ``body`` and sends every request's checksum (CRC32, or MD5 as ``Content-MD5``), which the
        endpoint checks against what it received (only where the endpoint enforces it, learnt once by a
        probe). A body that does not hash to ``content_xxh3`` is refused with ``DigestRefused`` and nothing
        is stored (a multipart upload is aborted). False means no such check was made (no ``content_xxh3``,
        an endpoint that checks no request checksum): the caller then verifies the copy some other way,
        such as reading it back.
        Raises ``InsufficientStorage`` when the destination is full, ``BackendError`` otherwise.
        """
        ...

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        """Open ``key`` for streaming, from ``offset`` for ``length`` bytes (to the end when None).

        Raises ``ObjectNotFound`` when missing, ``ArchivedObject`` when it needs a restore first.
        The caller closes the stream.
        """
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size, metadata and archive state of ``key``. Raises ``ObjectNotFound`` when missing."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; missing is fine."""
        ...

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        """Remove every key of ``keys`` (missing is fine); returns the keys that could not be removed, with why.

        Raises only for a failure of the whole call that says nothing per key (the store unreachable).
        """
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order. Metadata may be empty."""
        ...

    def abort_incomplete(self, prefix: str = "") -> int:
        """Remove unfinished uploads (multipart, temp files) under ``prefix``; returns how many."""
        ...

    def locate(self, key: str) -> Location:
        """Where a client reads ``key`` (or a prefix) directly."""
        ...

    def close(self) -> None:
        """Release connections and pools. Safe to call twice."""
        ...


@runtime_checkable
class ListsIncompleteUploads(Protocol):
    """A backend that can name its unfinished uploads one by one and abort one (S3 multipart uploads)."""

    def list_incomplete(self, prefix: str = "") -> Iterator[IncompleteUpload]:
        """Every unfinished upload whose key starts with ``prefix``. Raises ``BackendError``."""
        ...

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one upload; one already completed or aborted is fine. Raises ``BackendError``."""
        ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``ValueError``."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key {key!r}")
    return key


def delete_each(backend: Backend, keys: Sequence[str]) -> dict[str, BackendError]:
    """``delete_many`` for a backend without a batch delete: one ``delete`` per key, failures collected."""
    failed: dict[str, BackendError] = {}
    for key in keys:
        try:
            backend.delete(key)
        except BackendError as exc:
            failed[key] = exc
    return failed


def delete_keys(backend: Backend, keys: Iterable[str]) -> dict[str, TieringError]:
    """``delete_many`` of ``keys`` (duplicates removed: packed members share their shard's key), where a failure
    of the whole call (the store unreachable) is reported as a failure of every key; never raises."""
    unique = list(dict.fromkeys(keys))
    try:
        return dict(backend.delete_many(unique))
    except TieringError as whole:
        return dict.fromkeys(unique, whole)


def read_up_to(body: BinaryIO | ReadStream, limit: int) -> bytes:
    """Read until ``limit`` bytes or EOF: a stream may return short reads before its end."""
    first = body.read(limit)
    if not first or len(first) >= limit:
        return first
    chunks = [first]
    got = len(first)
    while got < limit:
        chunk = body.read(limit - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


@runtime_checkable
class PosixTree(Protocol):
    """A backend whose objects are files in a directory tree users read directly (a directory tier): it can
    give a dataset's files their modes and times back, and hold its directories and symbolic links."""

    def apply_tree(self, prefix: str, entries: Sequence[PosixEntry]) -> None:
        """Make ``entries`` true under ``prefix``: modes and times of files already stored, directories
        (made when missing), symbolic links (replacing what is at their path). Idempotent. A link whose
        target would resolve outside ``prefix`` is refused with ``PermanentBackendError`` and not left behind.
        """
        ...

    def remove_tree(self, prefix: str, entries: Sequence[PosixEntry]) -> None:
        """Remove the links of ``entries`` and their directories that are empty (after the objects went)."""
        ...


@runtime_checkable
class Archive(Protocol):
    """A backend whose objects may sit in an archive storage class (S3 Glacier): ``head`` reports an object's
    ``storage_class``, whether it is ``archived`` and whether a restore is under way (``restore_in_progress``);
    ``open_read`` of an archived object raises ``ArchivedObject``."""

    def request_restore(self, key: str, *, days: int, retrieval_tier: str = "Standard") -> None:
        """Ask for a readable copy of archived ``key`` kept ``days`` days, fetched at ``retrieval_tier``
        ("Expedited", "Standard", "Bulk"). Asking again while one is under way is fine. Raises
        ``ObjectNotFound`` when missing, ``PermanentBackendError`` when the object is not archived."""
        ...


@runtime_checkable
class Buckets(Protocol):
    """A backend whose objects live in a bucket that may have to be made first (S3)."""

    def ensure_bucket(self) -> bool:
        """Create the bucket when it is missing; True when it was created now. Raises ``BackendError``."""
        ...


@runtime_checkable
class BatchedSync(Protocol):
    """A backend that can defer the durability of small writes under a prefix to one sync (a directory tier)."""

    def batched_sync(self, prefix: str) -> AbstractContextManager[Callable[[], None]]:
        """While the context is open, small ``put`` calls under ``prefix`` skip their own sync; calling the
        function it yields makes every write so far durable. Leaving the context syncs what is left."""
        ...


@runtime_checkable
class Unwrapper(Protocol):
    """A backend that wraps another (retry, dry run, fault injection): ``unwrap`` returns the wrapped one."""

    def unwrap(self) -> Backend:
        """The backend this one wraps."""
        ...


C = TypeVar("C")

#: wrappers looked through at most; a cycle of wrappers would be a bug, not a reason to hang
_UNWRAP_MAX = 32


def find_capability(backend: Backend, capability: Callable[..., C]) -> C | None:
    """The outermost layer of ``backend`` (itself, or a backend it wraps, found by :class:`Unwrapper`) that
    has ``capability`` (a runtime-checkable protocol of this module), or None when no layer has it.

    The outermost layer is the one to call: a retrying wrapper that implements ``request_restore`` retries it,
    a dry run records it instead of asking; a wrapper that does not implement it is looked through.
    """
    # typed as a callable, not type[C]: mypy refuses a protocol class where type[C] is expected
    wanted = cast("type[C]", capability)
    layer: object = backend
    for _ in range(_UNWRAP_MAX):
        if isinstance(layer, wanted):
            return layer
        if not isinstance(layer, Unwrapper):
            return None
        layer = layer.unwrap()
    return None
