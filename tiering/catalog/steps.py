"""The catalog side of a job's steps: claims, leases, recording, release. No bytes move here.

A :class:`StepStore` owns every statement that changes the state of a move step or of the destination
replica row beside it, as a scheduler's datastore owns acquiring and releasing its jobs. Each method is
one transaction and returns what it took or how many rows it changed. Every state change is checked
against the tables of :mod:`tiering.catalog.states` before the statement is sent, and the statement is
conditional on the states it starts from, so an illegal move raises
:class:`~tiering.errors.IllegalTransition` instead of reaching the catalog.

Leases: a step is claimed with an owner, a lease end and a new epoch. Every later update of the step is
conditional on the epoch it was claimed at (and its owner), so a stalled worker whose lease was taken over
can never overwrite newer work: it gets :class:`~tiering.errors.LeaseLost`. A lease held by a process on
this host that no longer exists is broken at once.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from tiering.catalog.db import Catalog, dialect_insert
from tiering.catalog.models import Dataset, Member, MoveJob, MoveStep, Replica, Tier
from tiering.catalog.states import (
    TRUSTED_REPLICA_STATES,
    UNFINISHED_JOB_STATES,
    JobPurpose,
    JobState,
    ReplicaState,
    StepState,
    check_job,
    check_replica,
    check_step,
)
from tiering.errors import LeaseLost, MoveJobNotFound
from tiering.layout import dataset_prefix

# Core tables for the hot bookkeeping paths: batched UPDATEs without the ORM's per-statement overhead
STEPS = cast(Table, MoveStep.__table__)
REPLICAS = cast(Table, Replica.__table__)

#: a step whose copy failed transiently goes back to planned this many times before the job fails
MAX_STEP_ATTEMPTS = 3

_T = TypeVar("_T")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` names a process on this host that no longer runs."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_s = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    pid = int(pid_s)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def step_moves(froms: Iterable[StepState], to: StepState) -> list[str]:
    """The states a step may leave for ``to``, every one checked against the table (the WHERE of the update)."""
    states = list(froms)
    for state in states:
        check_step(state, to)
    return [str(s) for s in states]


def replica_moves(froms: Iterable[ReplicaState], to: ReplicaState) -> list[str]:
    """As :func:`step_moves`, for replica rows."""
    states = list(froms)
    for state in states:
        check_replica(state, to)
    return [str(s) for s in states]


def _by_epoch(steps: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """Step ids of (step id, epoch) pairs grouped by epoch: one conditional UPDATE per epoch (usually one)."""
    groups: dict[int, list[int]] = {}
    for sid, epoch in steps:
        groups.setdefault(epoch, []).append(sid)
    return groups


@dataclass(frozen=True)
class JobHead:
    """What the copy phase needs to know of a job, read once when it starts."""

    job_id: int
    dataset: str
    src_tier: str
    dst_tier: str
    src_tier_id: int
    dst_tier_id: int
    state: JobState
    purpose: JobPurpose
    members: int
    bytes: int
    prefix: str
    #: some step was claimed before: an earlier attempt may have left unfinished uploads
    attempted: bool


@dataclass(frozen=True)
class ClaimedStep:
    """A claimed step with its member's copy on the source tier (``src_key`` None: no trusted copy there)."""

    step_id: int
    epoch: int
    member_id: int
    dst_key: str
    path: str
    size: int
    xxh3: str | None
    src_key: str | None
    src_offset: int | None


@dataclass(frozen=True)
class ShardRows:
    """The steps of one claimed shard, in shard order: (member id, path, size, xxh3, planned offset, mode,
    mtime_ns), and each member's trusted source copy (member id -> key, offset)."""

    key: str
    label: str
    members: list[tuple[int, str, int, str, int | None, int | None, int | None]]
    sources: dict[int, tuple[str, int | None]]


@dataclass(frozen=True)
class Settled:
    """The failed steps of a job after its copy phase: how many, and the first errors."""

    failed: int
    errors: list[str]


class StepStore:
    """Claims, leases and records the steps of move jobs for one worker."""

    def __init__(self, catalog: Catalog, *, worker_id: str, lease_seconds: float,
                 clock: Callable[[], dt.datetime]) -> None:
        self.catalog = catalog
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.now = clock

    def _until(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.lease_seconds)

    # ---------------------------------------------------------------- the job

    def start(self, job_id: int) -> JobHead:
        """Read the job; a planned job becomes running. Raises :class:`MoveJobNotFound`."""
        with self.catalog.session() as s:
            job = s.get(MoveJob, job_id)
            if job is None:
                raise MoveJobNotFound(job_id)
            ds = s.get_one(Dataset, job.dataset_id)
            src = s.get_one(Tier, job.src_tier_id)
            dst = s.get_one(Tier, job.dst_tier_id)
            if job.state == JobState.PLANNED:
                check_job(job.state, JobState.RUNNING)
                job.state = JobState.RUNNING
                job.updated_at = self.now()
            attempted = s.scalar(
                select(MoveStep.id).where(MoveStep.job_id == job_id, MoveStep.attempts > 0).limit(1)
            ) is not None
            return JobHead(
                job_id, ds.label, src.name, dst.name, src.id, dst.id, JobState(job.state), JobPurpose(job.purpose),
                ds.member_count, ds.size_bytes, dataset_prefix(ds.kind, ds.name, ds.version), attempted,
            )

    # ---------------------------------------------------------------- single steps

    def claim(self, job_id: int, src_tier_id: int, dst_tier_id: int, limit: int) -> list[ClaimedStep]:
        """Claim up to ``limit`` claimable unpacked steps, by step id, with their members' source copies.

        The destination replica row of each exists (state ``copying``) when this returns, before the first
        byte is written: an abandoned attempt is findable.
        """
        with self.catalog.session() as s:
            claimed = self._claim(s, job_id, dst_tier_id, limit)
            if not claimed:
                return []
            members = {
                mid: (path, size, xxh3, key if state in TRUSTED_REPLICA_STATES else None, offset)
                for mid, path, size, xxh3, key, state, offset in s.execute(
                    select(Member.id, Member.path, Member.size, Member.xxh3, REPLICAS.c.key, REPLICAS.c.state,
                           REPLICAS.c.shard_offset)
                    .outerjoin(REPLICAS, and_(REPLICAS.c.member_id == Member.id, REPLICAS.c.tier_id == src_tier_id))
                    .where(Member.id.in_([c[2] for c in claimed]))
                )
            }
        return [ClaimedStep(sid, epoch, mid, key, *members[mid]) for sid, epoch, mid, key in claimed]

    def _claim(self, s: Session, job_id: int, dst_tier_id: int, limit: int) -> list[tuple[int, int, int, str]]:
        now = self.now()
        # SQL leaves out what is surely not claimable, our own copies in flight (the claims run ahead of
        # recording) and live leases of other hosts, so however many there are, the steps behind them are
        # found; a live lease of another process on this host is claimable only if that process died
        stmt = (
            select(STEPS.c.id, STEPS.c.epoch, STEPS.c.lease_owner, STEPS.c.lease_until)
            .where(
                STEPS.c.job_id == job_id,
                STEPS.c.state.in_(step_moves([StepState.PLANNED, StepState.COPYING], StepState.COPYING)),
                STEPS.c.dst_offset.is_(None),  # members packed into a shard are claimed by claim_shard
                or_(
                    STEPS.c.state == StepState.PLANNED,
                    STEPS.c.lease_owner.is_(None),
                    STEPS.c.lease_until.is_(None),
                    STEPS.c.lease_until < now,
                    and_(STEPS.c.lease_owner != self.worker_id,
                         STEPS.c.lease_owner.startswith(f"{socket.gethostname()}:", autoescape=True)),
                ),
            )
            .order_by(STEPS.c.id)
            .limit(limit * 2)
        )
        if self.catalog.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        candidates = [
            (sid, epoch)
            for sid, epoch, owner, lease_until in s.execute(stmt)
            if owner is None or (owner != self.worker_id and (lease_until is None or lease_until < now
                                                              or lease_owner_is_dead(owner)))
        ][:limit]
        if not candidates:
            return []
        # a step whose epoch moved on since the SELECT was claimed by someone else and is left alone;
        # RETURNING gives exactly the steps taken
        claimed: list[tuple[int, int, int, str]] = []
        for epoch, ids in _by_epoch(candidates).items():
            claimed.extend(
                (sid, ep, mid, key)
                for sid, ep, mid, key in s.execute(
                    update(STEPS)
                    .where(STEPS.c.id.in_(ids), STEPS.c.epoch == epoch)
                    .values(
                        state=StepState.COPYING, lease_owner=self.worker_id, lease_until=self._until(now),
                        epoch=epoch + 1, attempts=STEPS.c.attempts + 1, updated_at=now,
                    )
                    .returning(STEPS.c.id, STEPS.c.epoch, STEPS.c.member_id, STEPS.c.dst_key)
                )
            )
        if not claimed:
            return []
        claimed.sort()
        # One upsert: new rows are inserted, existing ones (not live) go back to copying.
        replica_moves([x for x in ReplicaState if x != ReplicaState.LIVE], ReplicaState.COPYING)
        upsert = dialect_insert(self.catalog.dialect, REPLICAS)
        s.execute(
            upsert.on_conflict_do_update(
                index_elements=[REPLICAS.c.member_id, REPLICAS.c.tier_id],
                set_={"state": ReplicaState.COPYING, "verified_at": None},
                # every state but LIVE (an IN list cannot be sent with executemany)
                where=REPLICAS.c.state != ReplicaState.LIVE,
            ),
            [{"member_id": mid, "tier_id": dst_tier_id, "key": key, "state": ReplicaState.COPYING}
             for _, _, mid, key in claimed],
        )
        return claimed

    def record_verified(self, wanted: Mapping[int, int], dst_tier_id: int) -> tuple[int, list[int]]:
        """Mark verified, in one transaction, the steps of ``wanted`` (step id -> epoch claimed at) this worker
        still owns at that epoch, and their destination rows. Returns (steps marked, step ids whose lease
        was lost)."""
        if not wanted:
            return 0, []
        now = self.now()
        with self.catalog.session() as s:
            # conditional on owner and epoch: RETURNING names the steps that were still ours
            ours: dict[int, int] = {}
            for epoch, ids in _by_epoch(wanted.items()).items():
                for sid, mid in s.execute(
                    update(STEPS)
                    .where(STEPS.c.id.in_(ids), STEPS.c.epoch == epoch, STEPS.c.lease_owner == self.worker_id,
                           STEPS.c.state.in_(step_moves([StepState.COPYING], StepState.VERIFIED)))
                    .values(state=StepState.VERIFIED, lease_owner=None, lease_until=None, last_error=None,
                            updated_at=now)
                    .returning(STEPS.c.id, STEPS.c.member_id)
                ):
                    ours[sid] = mid
            if ours:
                s.execute(
                    update(REPLICAS)
                    .where(REPLICAS.c.tier_id == dst_tier_id, REPLICAS.c.member_id.in_(list(ours.values())),
                           REPLICAS.c.state.in_(replica_moves([ReplicaState.COPYING, ReplicaState.LIVE],
                                                              ReplicaState.VERIFIED)))
                    .values(state=ReplicaState.VERIFIED, verified_at=now)
                )
        return len(ours), [sid for sid in wanted if sid not in ours]

    def record_failure(self, step_id: int, epoch: int, *, job_id: int, dst_tier_id: int, message: str,
                       transient: bool) -> bool:
        """Record a failed copy: back to planned (``transient`` with attempts left; returns False) or failed
        with its reason (returns True). Its destination row goes (the copier deleted the object). Raises
        :class:`LeaseLost` when the step is no longer ours at ``epoch``."""
        now = self.now()
        with self.catalog.session() as s:
            step = s.get_one(MoveStep, step_id)
            to = StepState.PLANNED if transient and step.attempts < MAX_STEP_ATTEMPTS else StepState.FAILED
            res = s.execute(
                update(MoveStep)
                .where(MoveStep.id == step_id, MoveStep.epoch == epoch,
                       MoveStep.state.in_(step_moves([StepState.COPYING], to)))
                .values(state=to, lease_owner=None, lease_until=None, last_error=message, updated_at=now)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise LeaseLost(step_id, epoch)
            s.execute(
                delete(Replica).where(
                    Replica.member_id == step.member_id, Replica.tier_id == dst_tier_id,
                    Replica.state != ReplicaState.LIVE,
                )
            )
            if to == StepState.FAILED:
                s.execute(update(MoveJob).where(MoveJob.id == job_id).values(last_error=message))
        return to == StepState.FAILED

    def release_unstarted(self, job_id: int) -> int:
        """Steps this worker claimed but never copied go back to planned for any worker; returns how many."""
        with self.catalog.session() as s:
            res = s.execute(
                update(MoveStep)
                .where(MoveStep.job_id == job_id, MoveStep.lease_owner == self.worker_id,
                       MoveStep.state.in_(step_moves([StepState.COPYING], StepState.PLANNED)))
                .values(state=StepState.PLANNED, lease_owner=None, lease_until=None)
            )
            return int(res.rowcount)  # type: ignore[attr-defined]

    def renew_leases(self, job_id: int) -> int:
        """Push the lease end of every step this worker copies for ``job_id``; returns how many."""
        with self.catalog.session() as s:
            res = s.execute(
                update(MoveStep)
                .where(MoveStep.job_id == job_id, MoveStep.lease_owner == self.worker_id,
                       MoveStep.state == StepState.COPYING)
                .values(lease_until=self._until(self.now()))
            )
            return int(res.rowcount)  # type: ignore[attr-defined]

    def settle(self, job_id: int, *, errors: int = 5) -> Settled:
        """How many steps of the job failed, and the first ``errors`` of their errors."""
        with self.catalog.session() as s:
            failed = and_(MoveStep.job_id == job_id, MoveStep.state == StepState.FAILED)
            count = int(s.scalar(select(func.count(MoveStep.id)).where(failed)) or 0)
            messages = list(s.scalars(select(MoveStep.last_error).where(failed).limit(errors))) if count else []
        return Settled(count, [m or "" for m in messages])

    def skip_present(self, job_id: int, tier_id: int) -> int:
        """Planned steps whose member is already live on ``tier_id`` need no copy: they become verified."""
        with self.catalog.session() as s:
            res = s.execute(
                update(MoveStep)
                .where(MoveStep.job_id == job_id,
                       MoveStep.state.in_(step_moves([StepState.PLANNED], StepState.VERIFIED)),
                       MoveStep.member_id.in_(select(Replica.member_id).where(
                           Replica.tier_id == tier_id, Replica.state == ReplicaState.LIVE)))
                .values(state=StepState.VERIFIED)
                .execution_options(synchronize_session=False)
            )
            return int(res.rowcount)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- the commit's share (inside its transaction)

    @staticmethod
    def pending(s: Session, job_id: int) -> bool:
        """Whether some step of the job is neither verified nor committed (another worker still has it)."""
        return s.scalar(
            select(MoveStep.id).where(
                MoveStep.job_id == job_id, MoveStep.state.not_in([StepState.VERIFIED, StepState.COMMITTED])
            ).limit(1)
        ) is not None

    @staticmethod
    def commit_steps(s: Session, job_id: int, now: dt.datetime) -> None:
        """Every verified step of the job becomes committed, in the caller's transaction."""
        s.execute(
            update(MoveStep)
            .where(MoveStep.job_id == job_id,
                   MoveStep.state.in_(step_moves([StepState.VERIFIED], StepState.COMMITTED)))
            .values(state=StepState.COMMITTED, updated_at=now)
            .execution_options(synchronize_session=False)  # no step is loaded in the session
        )

    @staticmethod
    def set_replicas(s: Session, tier_id: int, member_ids: object, froms: Iterable[ReplicaState],
                     to: ReplicaState, **values: object) -> int:
        """Replicas of ``member_ids`` (ids or a subquery) on ``tier_id`` in one of ``froms`` move to ``to``,
        with further ``values``, in the caller's transaction. Returns how many."""
        res = s.execute(
            update(Replica)
            .where(Replica.tier_id == tier_id, Replica.member_id.in_(member_ids),  # type: ignore[arg-type]
                   Replica.state.in_(replica_moves(froms, to)))
            .values(state=to, **values)
            .execution_options(synchronize_session=False)  # no replica is loaded in the session
        )
        return int(res.rowcount)  # type: ignore[attr-defined]

    def sources_deleted(self, step_ids: list[int], replica_ids: list[int]) -> None:
        """The source copies of committed steps are gone: their rows go, the steps are source_deleted."""
        with self.catalog.session() as s:
            s.execute(delete(Replica).where(Replica.id.in_(replica_ids)))
            s.execute(
                update(MoveStep)
                .where(MoveStep.id.in_(step_ids),
                       MoveStep.state.in_(step_moves([StepState.COMMITTED], StepState.SOURCE_DELETED)))
                .values(state=StepState.SOURCE_DELETED, updated_at=self.now())
            )

    def sources_already_gone(self, job_id: int, src_tier_id: int) -> int:
        """Committed steps whose source row is already gone (a crash between delete and bookkeeping)."""
        with self.catalog.session() as s:
            res = s.execute(
                update(MoveStep)
                .where(
                    MoveStep.job_id == job_id,
                    MoveStep.state.in_(step_moves([StepState.COMMITTED], StepState.SOURCE_DELETED)),
                    ~select(Replica.id).where(
                        Replica.member_id == MoveStep.member_id, Replica.tier_id == src_tier_id
                    ).exists(),
                )
                .values(state=StepState.SOURCE_DELETED, updated_at=self.now())
            )
            return int(res.rowcount)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- packed steps (archive destinations)
    #
    # The steps of one shard move together: claimed in one transaction, recorded verified in one. A shard is
    # never partly trusted.

    def shard_keys(self, job_id: int) -> list[str]:
        """Keys of the job's shards with a step still to copy, in key order."""
        with self.catalog.session() as s:
            return list(
                s.scalars(
                    select(MoveStep.dst_key)
                    .where(MoveStep.job_id == job_id, MoveStep.dst_offset.is_not(None),
                           MoveStep.state.in_([StepState.PLANNED, StepState.COPYING]))
                    .distinct()
                    .order_by(MoveStep.dst_key)
                )
            )

    def claim_shard(self, job_id: int, key: str, build: Callable[[ShardRows], _T]) -> _T | None:
        """Claim every step of shard ``key`` unless a live worker holds one; None then.

        ``build`` turns the claimed rows into what the caller writes; it runs inside the claim's transaction,
        so an error it raises leaves nothing claimed. The destination rows exist (``copying``) before the
        first byte is written.
        """
        with self.catalog.session() as s:
            now = self.now()
            job = s.get_one(MoveJob, job_id)
            in_shard = and_(MoveStep.job_id == job_id, MoveStep.dst_key == key)
            stmt = select(MoveStep.state, MoveStep.lease_owner, MoveStep.lease_until).where(in_shard)
            if self.catalog.dialect == "postgresql":
                stmt = stmt.with_for_update()  # SQLite already holds the write lock (BEGIN IMMEDIATE)
            for state, owner, lease_until in s.execute(stmt):
                if state not in (StepState.PLANNED, StepState.COPYING):
                    return None
                if owner is not None and (owner == self.worker_id or (
                        lease_until is not None and lease_until >= now and not lease_owner_is_dead(owner))):
                    return None
            s.execute(
                update(MoveStep)
                .where(in_shard, MoveStep.state.in_(step_moves([StepState.PLANNED, StepState.COPYING],
                                                               StepState.COPYING)))
                .values(
                    state=StepState.COPYING, lease_owner=self.worker_id, lease_until=self._until(now),
                    epoch=MoveStep.epoch + 1, attempts=MoveStep.attempts + 1, updated_at=now,
                )
            )
            ds = s.get_one(Dataset, job.dataset_id)
            members = [
                (mid, path, size, xxh3, offset, mode, mtime)
                for mid, path, size, xxh3, offset, mode, mtime in s.execute(
                    select(Member.id, Member.path, Member.size, Member.xxh3, MoveStep.dst_offset, Member.mode,
                           Member.mtime_ns)
                    .join(MoveStep, MoveStep.member_id == Member.id)
                    .where(in_shard)
                    .order_by(MoveStep.dst_offset)
                )
            ]
            sources = {
                mid: (rkey, offset)
                for mid, rkey, offset in s.execute(
                    select(Replica.member_id, Replica.key, Replica.shard_offset)
                    .join(MoveStep, MoveStep.member_id == Replica.member_id)
                    .where(in_shard, Replica.tier_id == job.src_tier_id,
                           Replica.state.in_([ReplicaState.LIVE, ReplicaState.VERIFIED]))
                )
            }
            built = build(ShardRows(key, ds.label, members, sources))
            member_ids = select(MoveStep.member_id).where(in_shard).scalar_subquery()
            existing = set(s.scalars(select(Replica.member_id).where(
                Replica.tier_id == job.dst_tier_id, Replica.member_id.in_(member_ids))))
            new_rows = [
                {"member_id": mid, "tier_id": job.dst_tier_id, "key": key, "state": ReplicaState.COPYING,
                 "shard_offset": offset}
                for mid, _, _, _, offset, _, _ in members if mid not in existing
            ]
            if new_rows:
                s.execute(insert(Replica), new_rows)
            if existing:
                s.execute(
                    update(Replica)
                    .where(Replica.tier_id == job.dst_tier_id, Replica.member_id.in_(member_ids),
                           Replica.state.in_(replica_moves(
                               [ReplicaState.COPYING, ReplicaState.VERIFIED, ReplicaState.DELETING],
                               ReplicaState.COPYING)))
                    .values(
                        state=ReplicaState.COPYING, verified_at=None, key=key,
                        shard_offset=select(MoveStep.dst_offset)
                        .where(MoveStep.job_id == job_id, MoveStep.member_id == Replica.member_id)
                        .scalar_subquery(),
                    )
                )
            return built

    def record_shard(self, job_id: int, key: str, *, steps: int, dst_tier_id: int) -> int:
        """Every step of the shard (``steps`` of them, all ours) and its rows become verified; returns ``steps``.
        Raises :class:`LeaseLost` (rolling the whole shard back) when another worker owns part of it."""
        now = self.now()
        in_shard = and_(MoveStep.job_id == job_id, MoveStep.dst_key == key)
        with self.catalog.session() as s:
            res = s.execute(
                update(MoveStep)
                .where(in_shard, MoveStep.lease_owner == self.worker_id,
                       MoveStep.state.in_(step_moves([StepState.COPYING], StepState.VERIFIED)))
                .values(state=StepState.VERIFIED, lease_owner=None, lease_until=None, last_error=None,
                        updated_at=now)
            )
            if res.rowcount != steps:  # type: ignore[attr-defined]
                raise LeaseLost(job_id, -1)
            self.set_replicas(s, dst_tier_id, select(MoveStep.member_id).where(in_shard).scalar_subquery(),
                              [ReplicaState.COPYING, ReplicaState.LIVE], ReplicaState.VERIFIED, verified_at=now)
        return steps

    def record_shard_failure(self, job_id: int, key: str, *, steps: int, dst_tier_id: int, message: str,
                             transient: bool) -> bool:
        """Put the shard's steps back to planned (returns True) or fail them (returns False); its rows go."""
        in_shard = and_(MoveStep.job_id == job_id, MoveStep.dst_key == key)
        with self.catalog.session() as s:
            attempts = s.scalar(select(func.max(MoveStep.attempts)).where(in_shard)) or 0
            retry = transient and attempts < MAX_STEP_ATTEMPTS
            to = StepState.PLANNED if retry else StepState.FAILED
            res = s.execute(
                update(MoveStep)
                .where(in_shard, MoveStep.lease_owner == self.worker_id,
                       MoveStep.state.in_(step_moves([StepState.COPYING], to)))
                .values(state=to, lease_owner=None, lease_until=None, last_error=message, updated_at=self.now())
            )
            if res.rowcount != steps:  # type: ignore[attr-defined]
                raise LeaseLost(job_id, -1)
            s.execute(
                delete(Replica).where(
                    Replica.tier_id == dst_tier_id, Replica.state != ReplicaState.LIVE,
                    Replica.member_id.in_(select(MoveStep.member_id).where(in_shard).scalar_subquery()),
                )
            )
            if not retry:
                s.execute(update(MoveJob).where(MoveJob.id == job_id).values(last_error=message))
        return retry

    # ---------------------------------------------------------------- jobs to resume

    def unfinished_jobs(self, purpose: JobPurpose) -> list[int]:
        """Ids of the unfinished jobs of ``purpose``, oldest first."""
        with self.catalog.session() as s:
            return list(
                s.scalars(
                    select(MoveJob.id)
                    .where(MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES]), MoveJob.purpose == purpose)
                    .order_by(MoveJob.id)
                )
            )
