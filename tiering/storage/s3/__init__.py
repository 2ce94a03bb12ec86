"""S3-compatible buckets as tiers: ``s3://bucket/prefix``.

This module registers the ``s3`` scheme and imports nothing heavy: boto3 and botocore are loaded when the
first S3 backend is built, so memory and file users do not load them. The backend itself is
:class:`tiering.storage.s3.backend.S3Backend` (``core`` holds its client and request paths, ``upload`` its
write path, ``errors`` the translation of vendor errors, ``wire`` checksums and XML, ``lean`` the hand-signed
request path).
"""

from __future__ import annotations

from tiering.config import TierConfig, TransferConfig
from tiering.storage.base import Backend
from tiering.storage.registry import register_scheme
from tiering.storage.wrappers.retry import RetryingBackend

#: first retry of a whole S3 operation after this many seconds (doubling, with jitter); botocore has
#: already retried the single request by then, so the wrapper waits longer than botocore does
S3_RETRY_BASE_DELAY = 1.0


def open_s3(name: str, tier: TierConfig, transfer: TransferConfig) -> Backend:
    """The backend of S3 tier ``name``, wrapped in a :class:`RetryingBackend`.

    It retries transient errors per request (``transfer.retries`` times) and per operation in the wrapper
    (``transfer.retries`` retries after the first attempt); both stop at the request's or the operation's
    time limit (``transfer.request_budget``). Raises ``ConfigError`` when the tier's credentials source cannot
    be read, ``ValueError`` on a bad URL.
    """
    from tiering.storage.s3.backend import S3Backend

    return RetryingBackend(
        S3Backend.from_config(name, tier, transfer),
        attempts=transfer.retries + 1,
        base_delay=S3_RETRY_BASE_DELAY,
        budget=transfer.request_budget,
    )


register_scheme("s3", open_s3)
