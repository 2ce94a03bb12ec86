"""Tier backends: the :class:`Backend` protocol, its implementations and the wrappers around them.

``open_backend(name, tier, transfer)`` builds the backend a tier's URL names:

* ``memory://NAME``: :class:`MemoryBackend` (backends with the same NAME share their objects)
* ``file:///abs/path``: :class:`FileBackend` rooted at that directory
* ``s3://bucket/prefix``: :class:`~tiering.storage.s3.S3Backend` wrapped in :class:`RetryingBackend`

boto3 is imported only when an S3 backend is built, so memory/file users do not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from tiering.config import TierConfig, TransferConfig
from tiering.storage.base import DIGEST_METADATA_KEY, Backend, Location, ObjectInfo, ReadStream, check_key
from tiering.storage.file import FileBackend
from tiering.storage.memory import MemoryBackend
from tiering.storage.wrappers import DryRunBackend, FaultyBackend, RecordedWrite, RetryingBackend

if TYPE_CHECKING:
    from tiering.storage.s3 import S3Backend

__all__ = [
    "DIGEST_METADATA_KEY",
    "Backend",
    "DryRunBackend",
    "FaultyBackend",
    "FileBackend",
    "Location",
    "MemoryBackend",
    "ObjectInfo",
    "ReadStream",
    "RecordedWrite",
    "RetryingBackend",
    "S3Backend",
    "check_key",
    "open_backend",
]

#: first retry of a whole S3 operation after this many seconds (doubling, with jitter); botocore has
#: already retried the single request by then, so the wrapper waits longer than botocore does
S3_RETRY_BASE_DELAY = 1.0


def open_backend(name: str, tier: TierConfig, transfer: TransferConfig) -> Backend:
    """The backend of tier ``name``, ready to use (no request is made here).

    S3 backends retry transient errors per request (``transfer.retries`` times) and in a
    :class:`RetryingBackend` (per operation: ``transfer.retries`` retries after the first attempt); both stop
    at the request's or the operation's time limit (``transfer.request_budget``).
    Raises ``ConfigError`` when the tier's credentials source cannot be read, ``ValueError`` on a bad URL.
    """
    parsed = urlparse(tier.backend)
    if parsed.scheme == "memory":
        return MemoryBackend((parsed.netloc + parsed.path).strip("/") or name)
    if parsed.scheme == "file":
        return FileBackend(unquote(parsed.path))
    if parsed.scheme == "s3":
        from tiering.storage.s3 import S3Backend

        return RetryingBackend(
            S3Backend.from_config(name, tier, transfer),
            attempts=transfer.retries + 1,
            base_delay=S3_RETRY_BASE_DELAY,
            budget=transfer.request_budget,
        )
    raise ValueError(f"tier {name!r}: unsupported backend URL {tier.backend!r}")


def __getattr__(name: str) -> object:
    # S3Backend is re-exported lazily: importing boto3 costs ~0.3 s that memory/file users should not pay
    if name == "S3Backend":
        from tiering.storage.s3 import S3Backend

        return S3Backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
