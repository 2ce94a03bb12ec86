"""Packed steps: copying a job's shards to an archive destination.

On an archive tier, members below the tier's ``pack_threshold`` share shard objects
(:mod:`tiering.transfer.packing`). Their steps carry the shard key as ``dst_key`` and the offset of their
bytes as ``dst_offset``, planned once by :func:`tiering.moves.plan.create_job`, so a retry writes the same
bytes to the same key. The steps of one shard move together: claimed in one transaction, written as one
object, read back and checked member by member, and made verified in one transaction
(:class:`~tiering.catalog.steps.StepStore`). A shard is never partly trusted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from tiering.catalog.steps import ShardRows, StepStore
from tiering.errors import BackendError, StateError, TieringError, TransientBackendError
from tiering.faults import crash_point
from tiering.moves.outcome import JobOutcome
from tiering.storage.base import Backend
from tiering.transfer.control import JobControl
from tiering.transfer.copier import Progress, VerifyMode
from tiering.transfer.packing import MemberSource, ShardLayout, layout_shard, write_shard


@dataclass(frozen=True)
class ShardClaim:
    """The steps of one shard, claimed together: what to write, from where, for which dataset."""

    key: str
    layout: ShardLayout
    sources: dict[str, MemberSource]
    label: str
    steps: int


def _build(rows: ShardRows) -> ShardClaim:
    """The shard's layout and its members' sources; raises when the planned offsets no longer hold."""
    layout = layout_shard(rows.key, [(path, size) for _, path, size, _, _, _, _ in rows.members],
                          attrs={path: (mode, mtime) for _, path, _, _, _, mode, mtime in rows.members})
    sources: dict[str, MemberSource] = {}
    for (mid, path, size, xxh3, planned_offset, _, _), entry in zip(rows.members, layout.entries, strict=True):
        if entry.data_offset != planned_offset:
            raise StateError(f"{rows.label}: member {path} is planned at offset {planned_offset} of {rows.key}, "
                             f"but the shard layout puts it at {entry.data_offset}")
        if mid not in rows.sources:
            raise BackendError(f"member {path} of {rows.label} has no live copy on the source tier")
        key, offset = rows.sources[mid]
        sources[path] = MemberSource(path, size, xxh3, key, offset)
    return ShardClaim(rows.key, layout, sources, rows.label, len(rows.members))


def claim_shard(store: StepStore, job_id: int) -> ShardClaim | None:
    """Claim every step of the first shard no live worker holds; None when there is none left."""
    for key in store.shard_keys(job_id):
        claim = store.claim_shard(job_id, key, _build)
        if claim is not None:
            return claim
    return None


def copy_shards(
    store: StepStore,
    job_id: int,
    src: Backend,
    dst: Backend,
    *,
    dst_tier_id: int,
    workers: int,
    verify: VerifyMode,
    outcome: JobOutcome,
    progress: Progress | None,
    control: JobControl,
) -> None:
    """Write, verify and record every claimable shard of the job, one shard at a time.

    A failed shard is deleted; its steps go back to planned (a transient error with attempts left) or
    fail (the job's ``control`` is then stopped; the source is untouched). Raises :class:`LeaseLost`.
    """
    first = True
    while not control.stopped:
        claim = claim_shard(store, job_id)
        if claim is None:
            return
        try:
            write_shard(
                src, dst, claim.key, claim.layout, claim.sources, label=claim.label,
                workers=workers, verify=verify,
                on_member=(lambda n: progress.add(n)) if progress is not None else None,
            )
        except TieringError as exc:
            with contextlib.suppress(TieringError):
                dst.delete(claim.key)
            message = f"{exc.reason}: {exc}"
            retry = store.record_shard_failure(job_id, claim.key, steps=claim.steps, dst_tier_id=dst_tier_id,
                                               message=message, transient=isinstance(exc, TransientBackendError))
            if not retry:
                outcome.failed += claim.steps
                outcome.failures.append(f"{claim.key}: {message}")
                control.stop()
                return
            continue
        crash_point("after_copy")
        outcome.copied += store.record_shard(job_id, claim.key, steps=claim.steps, dst_tier_id=dst_tier_id)
        if first:
            first = False
            crash_point("after_verify")
