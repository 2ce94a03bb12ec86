"""Tier backends: the :class:`Backend` protocol, its implementations and the wrappers around them.

``open_backend(name, tier, transfer)`` builds the backend a tier's URL names, by the factory its scheme
registered in :mod:`tiering.storage.registry`. The built-in kinds register themselves when imported here:

* ``memory://NAME``: :class:`MemoryBackend` (backends with the same NAME share their objects)
* ``file:///abs/path``: :class:`FileBackend` rooted at that directory
* ``s3://bucket/prefix``: :class:`~tiering.storage.s3.backend.S3Backend` wrapped in :class:`RetryingBackend`
  (boto3 is imported only when an S3 backend is built)
"""

from __future__ import annotations

import tiering.storage.s3  # noqa: F401  (registers the s3 scheme)
from tiering.storage.base import (
    DIGEST_METADATA_KEY,
    Archive,
    Backend,
    BatchedSync,
    Buckets,
    ListsIncompleteUploads,
    Location,
    ObjectInfo,
    PosixTree,
    ReadStream,
    Unwrapper,
    check_key,
    find_capability,
)
from tiering.storage.file import FileBackend
from tiering.storage.memory import MemoryBackend
from tiering.storage.registry import open_backend, register_scheme
from tiering.storage.wrappers import DryRunBackend, FaultyBackend, RecordedWrite, RetryingBackend

__all__ = [
    "DIGEST_METADATA_KEY",
    "Archive",
    "Backend",
    "BatchedSync",
    "Buckets",
    "DryRunBackend",
    "FaultyBackend",
    "FileBackend",
    "ListsIncompleteUploads",
    "Location",
    "MemoryBackend",
    "ObjectInfo",
    "PosixTree",
    "ReadStream",
    "RecordedWrite",
    "RetryingBackend",
    "Unwrapper",
    "check_key",
    "find_capability",
    "open_backend",
    "register_scheme",
]
