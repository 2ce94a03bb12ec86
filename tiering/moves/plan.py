"""Planning a job: the job and one planned step per member are written before any byte moves.

Steps are in the order of their source objects, so the members of one shard are read one after another.
On an archive destination, members below the tier's ``pack_threshold`` are placed in tar shard objects
(:mod:`tiering.transfer.packing`) here, once: their steps name the shard (``dst_key``) and their offset in
it (``dst_offset``), so a retry writes the same bytes to the same key.
"""

from __future__ import annotations

from sqlalchemy import and_, insert, select

from tiering.app import App
from tiering.catalog.leader import LeaderFence, check_fence
from tiering.catalog.models import Dataset, Member, MoveJob, MoveStep, Replica, Tier
from tiering.catalog.states import UNFINISHED_JOB_STATES, DatasetState, JobPurpose, JobState, StepState
from tiering.errors import DatasetNotFound, MoveInProgress, UsageError
from tiering.faults import crash_point
from tiering.layout import dataset_prefix
from tiering.transfer.packing import plan_shards


def create_job(
    app: App,
    dataset_id: int,
    dst_tier: str,
    *,
    reason: str = "manual",
    purpose: JobPurpose = JobPurpose.MOVE,
    policy_run_id: int | None = None,
    fence: LeaderFence | None = None,
) -> int:
    """Write a job and one planned step per member. Nothing is copied yet.

    A move marks the dataset ``moving``; a restore stages copies elsewhere and leaves the dataset as it is.
    ``fence``: the job is a leader's work; it is written only while that leader's epoch is current
    (else :class:`~tiering.errors.NotLeader`, and nothing is written). Raises ``DatasetNotFound``,
    ``UsageError`` (already there), ``MoveInProgress``.
    """
    app.config.tier(dst_tier)
    purpose = JobPurpose(purpose)
    now = app.now()
    with app.catalog.session() as s:
        check_fence(s, fence)
        ds = s.get(Dataset, dataset_id, with_for_update=True)
        if ds is None:
            raise DatasetNotFound(str(dataset_id))
        dst = s.scalars(select(Tier).where(Tier.name == dst_tier)).one()
        if ds.home_tier_id == dst.id:
            raise UsageError(f"{ds.label} is already on tier {dst_tier}")
        busy = s.execute(
            select(MoveJob.id, MoveJob.purpose).where(
                MoveJob.dataset_id == ds.id, MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES])
            )
        ).first()
        if busy is not None:
            raise MoveInProgress(ds.label, busy.id, purpose=busy.purpose)
        prefix = dataset_prefix(ds.kind, ds.name, ds.version)
        job = MoveJob(
            dataset_id=ds.id, src_tier_id=ds.home_tier_id, dst_tier_id=dst.id, purpose=purpose,
            state=JobState.PLANNED, reason=reason, actor=app.actor, policy_run_id=policy_run_id,
            bytes_total=ds.size_bytes, created_at=now, updated_at=now,
        )
        s.add(job)
        s.flush()
        # steps in the order of their source objects: members of one shard are read one after another
        members = s.execute(
            select(Member.id, Member.path, Member.size)
            .outerjoin(Replica, and_(Replica.member_id == Member.id, Replica.tier_id == ds.home_tier_id))
            .where(Member.dataset_id == ds.id)
            .order_by(Replica.key, Replica.shard_offset, Member.path)
        ).all()
        packed = shard_placements(app, dst_tier, prefix, [(path, size) for _, path, size in members])
        if members:
            s.execute(
                insert(MoveStep),
                [
                    {"job_id": job.id, "member_id": mid, "state": StepState.PLANNED,
                     "dst_key": packed[path][0] if path in packed else prefix + path,
                     "dst_offset": packed[path][1] if path in packed else None,
                     "epoch": 0, "attempts": 0, "updated_at": now}
                    for mid, path, _size in members
                ],
            )
        if purpose == JobPurpose.MOVE:
            ds.state = DatasetState.MOVING
        job_id = job.id
    crash_point("after_plan")
    return job_id


def shard_placements(
    app: App, dst_tier: str, prefix: str, members: list[tuple[str, int]]
) -> dict[str, tuple[str, int]]:
    """For an archive destination: member path -> (shard key, offset of its bytes); empty otherwise."""
    tier = app.config.tier(dst_tier)
    if not tier.archive:
        return {}
    shards = plan_shards(members, threshold=tier.pack_threshold, shard_size=tier.shard_size)
    return {e.path: (prefix + shard.name, e.data_offset) for shard in shards for e in shard.entries}
