"""Behaviour that wraps any backend: retry, fault injection, dry run.

Each wrapper satisfies the :class:`~tiering.storage.base.Backend` protocol itself, exposes the inner
backend's ``url`` and keeps it as ``inner``. They stack; ``tiering.app`` and the scheme factories of
:mod:`tiering.storage.registry` are where they are stacked (e.g. ``DryRunBackend(RetryingBackend(S3Backend(...)))``).
A wrapper forwards no attribute it does not define: abilities some backends have (``request_restore``,
``batched_sync``, ...) are found through the wrappers' ``unwrap`` by :func:`~tiering.storage.base.find_capability`.
"""

from tiering.storage.wrappers.dryrun import DryRunBackend, RecordedWrite
from tiering.storage.wrappers.faulty import FaultyBackend
from tiering.storage.wrappers.retry import DEFAULT_BUFFER_LIMIT, RetryingBackend

__all__ = ["DEFAULT_BUFFER_LIMIT", "DryRunBackend", "FaultyBackend", "RecordedWrite", "RetryingBackend"]
