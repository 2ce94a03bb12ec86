"""Finishing a job: commit, then delete the source, last; or abandon a job that will not commit.

When every step is verified, one transaction makes the destination replicas live, moves the dataset's
home, and marks the source replicas ``deleting``. Only then are the source objects deleted; a failed
delete is retried on resume, never fatal. A job given up before its commit is abandoned: its destination
copies are removed, the source stays.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import posixpath

from sqlalchemy import and_, delete, select, update

from tiering.app import App
from tiering.catalog.models import AuditEntry, Dataset, Member, MoveJob, MoveStep, Replica, Tier
from tiering.catalog.states import DatasetState, JobState, ReplicaState, StepState, check_job
from tiering.catalog.steps import StepStore
from tiering.config import normalise_endpoint
from tiering.errors import MoveJobNotFound, TieringError, UsageError
from tiering.faults import crash_point
from tiering.layout import ManifestMember, build_manifest, dataset_prefix, manifest_key
from tiering.moves.outcome import JobOutcome
from tiering.storage.base import Backend, Location, delete_keys
from tiering.storage.tree import apply_tree, load_entries, posix_entries, remove_tree

log = logging.getLogger(__name__)

#: source copies deleted per catalog transaction after commit
DELETE_BATCH = 4000


def commit(app: App, job_id: int) -> str:
    """Write the destination's manifest and tree, then in one transaction make the destination copies live,
    move the dataset's home and mark the source copies ``deleting``. Returns the job's state: ``committed``,
    or as it was while another worker still owns some steps."""
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id)
        if StepStore.pending(s, job_id):
            return str(job.state)  # another worker still owns some steps
        ds = s.get_one(Dataset, job.dataset_id)
        dst = s.get_one(Tier, job.dst_tier_id)
        label, ds_prefix, src_id, dst_id = ds.label, dataset_prefix(ds.kind, ds.name, ds.version), \
            job.src_tier_id, job.dst_tier_id
        rows = s.execute(
            select(Member.path, Member.size, Member.xxh3, Member.md5, Member.sha256, Replica.key,
                   Replica.shard_offset, Member.mode, Member.mtime_ns)
            .outerjoin(Replica, and_(Replica.member_id == Member.id, Replica.tier_id == dst_id))
            .where(Member.dataset_id == ds.id)
        ).all()
        # the catalog, not the source's manifest, carries modes, times, directories and links: an
        # archive tier's manifest cannot be read before a restore
        entries = load_entries(s, ds.id)
        # a packed member's shard is recorded relative to the dataset's directory
        manifest = build_manifest(
            name=ds.name, version=ds.version, kind=ds.kind, owner=ds.owner, tags=dict(ds.tags),
            tier=dst.name, written_at=app.now(), entries=entries,
            members=[
                ManifestMember(p, sz, x, m5, s2, shard=key.removeprefix(ds_prefix) if off is not None else None,
                               offset=off, mode=mode, mtime_ns=mtime)
                for p, sz, x, m5, s2, key, off, mode, mtime in rows
            ],
        )
        tree = [] if dst.archive else posix_entries({r[0]: (r[7], r[8]) for r in rows}, entries)
    dst_backend = app.backend(dst.name)
    dst_backend.put(manifest_key(ds_prefix), io.BytesIO(manifest), size=len(manifest))
    apply_tree(dst_backend, ds_prefix, tree)
    crash_point("before_commit")
    now = app.now()
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id, with_for_update=True)
        if job.state != JobState.RUNNING:
            return str(job.state)
        check_job(job.state, JobState.COMMITTED)
        member_ids = select(Member.id).where(Member.dataset_id == job.dataset_id).scalar_subquery()
        # a staged restore copy that becomes the home copy no longer expires
        StepStore.set_replicas(s, dst_id, member_ids, [ReplicaState.VERIFIED, ReplicaState.LIVE], ReplicaState.LIVE,
                               expires_at=None)
        StepStore.set_replicas(s, src_id, member_ids, [ReplicaState.LIVE, ReplicaState.VERIFIED],
                               ReplicaState.DELETING)
        StepStore.commit_steps(s, job_id, now)
        ds = s.get_one(Dataset, job.dataset_id)
        ds.home_tier_id = dst_id
        ds.home_since = now
        ds.state = DatasetState.ACTIVE
        job.state = JobState.COMMITTED
        job.updated_at = now
        src_name = s.get_one(Tier, src_id).name
        s.add(AuditEntry(
            at=now, actor=app.actor, action=job.purpose, dataset_id=ds.id, dataset_label=label,
            from_tier=src_name, to_tier=dst.name, bytes=ds.size_bytes, result="ok",
            detail={"job_id": job_id, "reason": job.reason, "members": ds.member_count},
        ))
    crash_point("after_commit")
    return JobState.COMMITTED

def delete_sources(
    app: App, store: StepStore, job_id: int, src_name: str, *, outcome: JobOutcome | None = None
) -> str:
    """Delete the committed steps' source copies, then the source manifest; DONE when all are gone.

    A source key that is the same object as a destination of this job (two tiers configured on one place)
    is never deleted: its step keeps the source replica, records why in ``last_error``, and the job stays
    COMMITTED, with the reason in ``outcome.error``.
    """
    src_backend = app.backend(src_name)
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id)
        ds = s.get_one(Dataset, job.dataset_id)
        src_tier_id = job.src_tier_id
        dst_name = s.get_one(Tier, job.dst_tier_id).name
        targets = s.execute(
            select(MoveStep.id, Replica.id, Replica.key, Replica.shard_offset)
            .join(Replica, and_(Replica.member_id == MoveStep.member_id, Replica.tier_id == src_tier_id))
            .where(MoveStep.job_id == job_id, MoveStep.state == StepState.COMMITTED)
        ).all()
        # an adopted dataset kept its own layout on the source tier until now
        src_prefix = ds.location_prefix or dataset_prefix(ds.kind, ds.name, ds.version)
        entries = load_entries(s, ds.id)
        dst_prefix = dataset_prefix(ds.kind, ds.name, ds.version)
        dst_keys = s.scalars(select(MoveStep.dst_key).where(MoveStep.job_id == job_id)).all()
    protected = _destination_places(src_backend, app.backend(dst_name),
                                    [*dst_keys, manifest_key(dst_prefix)])
    refused: list[tuple[int, str]] = []
    if protected:
        kept = [t for t in targets if _place(src_backend.locate(t[2])) in protected]
        if kept:
            refused = [(sid, key) for sid, _rid, key, _offset in kept]
            kept_steps = {sid for sid, _key in refused}
            targets = [t for t in targets if t[0] not in kept_steps]
            _refuse_deletes(app, job_id, refused, src_name, dst_name, outcome)
    failures = len(refused)
    # batches: one request per batch where the store can (DeleteObjects), one transaction per batch
    for start in range(0, len(targets), DELETE_BATCH):
        batch = targets[start:start + DELETE_BATCH]
        # members packed in one shard share its key
        failed = delete_keys(src_backend, (key for _sid, _rid, key, _offset in batch))
        for key, why in failed.items():
            log.warning("could not delete source %s (will retry on resume): %s", key, why)
        done = [(sid, rid) for sid, rid, key, _offset in batch if key not in failed]
        failures += len(batch) - len(done)
        if done:
            store.sources_deleted([sid for sid, _ in done], [rid for _, rid in done])
        if start == 0:
            crash_point("during_delete")
    # steps whose source replica row is already gone (crash between delete and bookkeeping)
    store.sources_already_gone(job_id, src_tier_id)
    if failures:
        return JobState.COMMITTED
    if _place(src_backend.locate(manifest_key(src_prefix))) not in protected:
        with contextlib.suppress(TieringError):
            remove_tree(src_backend, src_prefix, entries)
            src_backend.delete(manifest_key(src_prefix))
    crash_point("after_delete")
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id)
        s.get_one(Dataset, job.dataset_id).location_prefix = ""
        check_job(job.state, JobState.DONE)
        job.state = JobState.DONE
        job.finished_at = job.updated_at = app.now()
    return JobState.DONE

def _refuse_deletes(app: App, job_id: int, refused: list[tuple[int, str]], src_name: str, dst_name: str,
                    outcome: JobOutcome | None) -> None:
    """Record on each step (and the job) why its source copy was kept: deleting it would delete the copy the
    move just committed, the only one."""
    first = refused[0][1]
    message = (f"refused to delete source {first} on tier {src_name}: it is the very object this move "
               f"wrote on tier {dst_name} (the two tiers share one place); the data stays, fix the config")
    log.error("move job %s: %s (%d source objects kept)", job_id, message, len(refused))
    with app.catalog.session() as s:
        for sid, key in refused:
            s.execute(update(MoveStep).where(MoveStep.id == sid).values(
                last_error=message.replace(first, key, 1), updated_at=app.now()))
        s.execute(update(MoveJob).where(MoveJob.id == job_id).values(last_error=message))
    if outcome is not None:
        outcome.error = message
        outcome.failures.extend(key for _sid, key in refused)

def abandon(app: App, job_id: int, *, reason: str, final_state: JobState = JobState.FAILED) -> None:
    """Give up a job that has not committed: remove destination copies, keep the source, free the dataset."""
    with app.catalog.session() as s:
        job = s.get_one(MoveJob, job_id)
        if job.state not in (JobState.PLANNED, JobState.RUNNING):
            return
        dst = s.get_one(Tier, job.dst_tier_id)
        leftovers = s.execute(
            select(Replica.id, Replica.key)
            .join(MoveStep, and_(MoveStep.member_id == Replica.member_id, MoveStep.job_id == job_id))
            .where(Replica.tier_id == job.dst_tier_id, Replica.state != ReplicaState.LIVE)
        ).all()
        ds = s.get_one(Dataset, job.dataset_id)
        prefix = dataset_prefix(ds.kind, ds.name, ds.version)
        entries = load_entries(s, ds.id)
    dst_backend = app.backend(dst.name)
    delete_keys(dst_backend, (key for _rid, key in leftovers))
    with contextlib.suppress(TieringError):
        dst_backend.abort_incomplete(prefix)
    with contextlib.suppress(TieringError):
        remove_tree(dst_backend, prefix, entries)
    now = app.now()
    with app.catalog.session() as s:
        s.execute(delete(Replica).where(Replica.id.in_([r[0] for r in leftovers])))
        job = s.get_one(MoveJob, job_id)
        check_job(job.state, final_state)
        job.state = final_state
        job.last_error = reason
        job.finished_at = job.updated_at = now
        ds = s.get_one(Dataset, job.dataset_id)
        ds.state = DatasetState.ACTIVE
        s.add(AuditEntry(
            at=now, actor=app.actor, action=job.purpose, dataset_id=ds.id, dataset_label=ds.label,
            from_tier=s.get_one(Tier, job.src_tier_id).name, to_tier=dst.name, bytes=0,
            result="cancelled" if final_state == JobState.CANCELLED else "failed",
            detail={"job_id": job_id, "error": reason[:2000]},
        ))



def _place(location: Location) -> str:
    """One string per stored object, equal for two locations exactly when they name the same object: the S3
    endpoint normalised (host case, default ports, loopback), the bucket, the key without empty or dot parts;
    a file's absolute path (its root was resolved when the backend was built)."""
    if location.kind == "s3":
        endpoint = normalise_endpoint(location.endpoint) if location.endpoint else "aws"
        return f"s3 {endpoint} {location.bucket.lower()}/{posixpath.normpath('/' + location.key).lstrip('/')}"
    if location.kind == "file":
        return f"file {os.path.normpath(location.path)}"
    return f"{location.kind} {location.url}"


def _destination_places(src: Backend, dst: Backend, dst_keys: list[str]) -> frozenset[str]:
    """The places of ``dst_keys`` on ``dst`` when ``src`` and ``dst`` may share objects (one's root inside the
    other's), else nothing: two distinct tiers cost two ``locate`` calls, not one per key."""
    src_root, dst_root = _place(src.locate("")), _place(dst.locate(""))
    if not (src_root.startswith(dst_root) or dst_root.startswith(src_root)):
        return frozenset()
    return frozenset(_place(dst.locate(key)) for key in dst_keys)




def cancel(app: App, job_id: int) -> None:
    """Cancel a job that has not committed; its destination copies are removed."""
    with app.catalog.session() as s:
        job = s.get(MoveJob, job_id)
        if job is None:
            raise MoveJobNotFound(job_id)
        if job.state not in (JobState.PLANNED, JobState.RUNNING):
            raise UsageError(f"move job {job_id} is {job.state}; only planned or running jobs can be cancelled")
    abandon(app, job_id, reason="cancelled", final_state=JobState.CANCELLED)
