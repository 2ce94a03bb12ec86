"""Expiry of staged copies (:func:`sweep_expired`).

Staged copies whose expiry has passed are removed: replicas become ``deleting``, objects are deleted, rows
removed, requests expire, and the audit log says so. A staged copy is never removed when it is a member's
only durable verified copy, nor on the dataset's home tier.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.orm import aliased

from tiering.app import App
from tiering.catalog.models import AuditEntry, Dataset, Member, MoveJob, Replica, RestoreRequest, Tier
from tiering.catalog.states import (
    TRUSTED_REPLICA_STATES,
    UNFINISHED_JOB_STATES,
    ReplicaState,
)
from tiering.errors import (
    TieringError,
)
from tiering.layout import dataset_prefix, manifest_key
from tiering.restore.requests import (
    RequestState,
    chunks,
    dataset_members,
    set_state,
)
from tiering.storage.base import delete_keys
from tiering.storage.tree import load_entries, remove_tree

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ sweeper


@dataclass
class SweepReport:
    """Per swept group: dataset label, tier, replicas removed, bytes freed; and copies kept because they
    were a member's last durable verified copy."""

    removed: list[dict[str, object]] = field(default_factory=list)
    kept_last_copy: int = 0


def sweep_expired(app: App, now: dt.datetime | None = None) -> SweepReport:
    """Remove every staged copy whose expiry has passed at ``now`` (default: the app's clock).

    Per dataset and tier: replicas become ``deleting`` (so nothing resolves to them any more), the objects
    are deleted, the rows removed, the ready requests marked expired, and one ``expire`` audit entry
    written. A replica on the dataset's home tier, or one that is a member's only durable verified copy,
    is never removed. A sweep interrupted by a crash is finished by the next one. Idempotent.
    """
    now = now or app.now()
    with app.catalog.session() as s:
        groups = s.execute(
            select(Member.dataset_id, Replica.tier_id)
            .join(Member, Member.id == Replica.member_id)
            .join(Dataset, Dataset.id == Member.dataset_id)
            .where(Replica.expires_at.is_not(None), Replica.tier_id != Dataset.home_tier_id,
                   ((Replica.state == ReplicaState.LIVE) & (Replica.expires_at <= now))
                   | (Replica.state == ReplicaState.DELETING))
            .distinct()
        ).all()
    report = SweepReport()
    for dataset_id, tier_id in groups:
        sweep_group(app, int(dataset_id), int(tier_id), now, report=report)
    # a ready request past its own expiry is over, even while a later one keeps the copy
    with app.catalog.session() as s:
        for req in s.scalars(select(RestoreRequest).where(
                RestoreRequest.state == RequestState.READY, RestoreRequest.expires_at <= now)):
            set_state(req, RequestState.EXPIRED, now)
    return report


def sweep_group(
    app: App, dataset_id: int, tier_id: int, now: dt.datetime, *, force: bool = False,
    report: SweepReport | None = None,
) -> None:
    """Remove the expired (all, with ``force``) staged replicas of one dataset on one tier."""
    elsewhere = aliased(Replica)
    durable_elsewhere = exists().where(
        elsewhere.member_id == Replica.member_id, elsewhere.tier_id != Replica.tier_id,
        elsewhere.state.in_([str(x) for x in TRUSTED_REPLICA_STATES]), elsewhere.expires_at.is_(None),
    )
    with app.catalog.session() as s:
        ds = s.get_one(Dataset, dataset_id)
        tier = s.get_one(Tier, tier_id)
        if ds.home_tier_id == tier_id:
            return
        busy = s.scalar(select(MoveJob.id).where(
            MoveJob.dataset_id == dataset_id, MoveJob.dst_tier_id == tier_id,
            MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES])).limit(1))
        if busy is not None:
            return  # a move or restore towards this tier is writing there now
        expired = (Replica.state == ReplicaState.LIVE) & (Replica.expires_at <= now) if not force \
            else Replica.state == ReplicaState.LIVE
        ours = and_(Replica.tier_id == tier_id, Replica.member_id.in_(dataset_members(dataset_id)),
                    Replica.expires_at.is_not(None))
        kept = s.scalar(select(func.count(Replica.id)).where(ours, expired, ~durable_elsewhere)) or 0
        s.execute(update(Replica).where(ours, expired, durable_elsewhere).values(state=ReplicaState.DELETING))
        doomed = s.execute(
            select(Replica.id, Replica.key, Member.size).join(Member, Member.id == Replica.member_id)
            .where(ours, Replica.state == ReplicaState.DELETING)
        ).all()
        label, tier_name = ds.label, tier.name
        prefix = dataset_prefix(ds.kind, ds.name, ds.version)
        entries = load_entries(s, dataset_id)
    if kept:
        log.warning("%s on %s: %d expired staged replica(s) kept: they are the only durable verified copy",
                    label, tier_name, kept)
    backend = app.backend(tier_name)
    gone: list[int] = []
    freed = 0
    failed = delete_keys(backend, (key for _rid, key, _size in doomed))
    for key, why in failed.items():
        log.warning("could not delete expired staged copy %s on %s (next sweep retries): %s", key, tier_name, why)
    for rid, key, size in doomed:
        if key in failed:
            continue
        gone.append(rid)
        freed += size
    for chunk in chunks(gone):
        with app.catalog.session() as s:
            s.execute(delete(Replica).where(Replica.id.in_(chunk)))
    with app.catalog.session() as s:
        left = s.scalar(select(func.count(Replica.id)).where(
            Replica.tier_id == tier_id, Replica.member_id.in_(dataset_members(dataset_id))))
        if not left:
            with contextlib.suppress(TieringError):
                remove_tree(backend, prefix, entries)
                backend.delete(manifest_key(prefix))
            for req in s.scalars(select(RestoreRequest).where(
                    RestoreRequest.dataset_id == dataset_id, RestoreRequest.tier_id == tier_id,
                    RestoreRequest.state == RequestState.READY)):
                set_state(req, RequestState.EXPIRED, now)
        if gone or kept:
            s.add(AuditEntry(
                at=now, actor=app.actor, action="expire", dataset_id=dataset_id, dataset_label=label,
                from_tier=tier_name, to_tier=None, bytes=freed, result="ok" if not kept else "partial",
                detail={"removed": len(gone), "kept_last_copy": kept, "forced": force},
            ))
    if report is not None:
        report.removed.append({"dataset": label, "tier": tier_name, "replicas": len(gone), "bytes": freed})
        report.kept_last_copy += kept

