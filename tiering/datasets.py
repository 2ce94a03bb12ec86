"""Use cases shared by the CLI, the Python API and the scheduler.

Each function takes an :class:`~tiering.app.App` and plain arguments, does one thing, and returns data
(dataclasses) for the caller to print or serialise. Errors are :class:`~tiering.errors.TieringError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tiering.access.record import record_read
from tiering.app import App
from tiering.catalog.models import AuditEntry, Dataset, Member, MoveJob, Replica, Tier, TreeEntry
from tiering.catalog.queries import find_dataset as find_dataset
from tiering.catalog.states import TRUSTED_REPLICA_STATES, DatasetState
from tiering.catalog.usage import tier_usage as counted_tier_usage
from tiering.errors import (
    PathNotFound,
    TieringError,
    UsageError,
)
from tiering.layout import (
    check_kind,
    dataset_prefix,
)
from tiering.moves.executor import Executor, JobOutcome
from tiering.storage.base import Backend, Location
from tiering.transfer.copier import Progress
from tiering.transfer.hashing import CHUNK_SIZE, Digests
from tiering.transfer.verify import ShardScan, StoredObject, StoredShard, hash_many, scan_many

ProgressFactory = Callable[[str, Progress], Any]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ lookups


def find_tier(session: Session, app: App, name: str) -> Tier:
    app.config.tier(name)  # raises TierNotFound with the list of configured tiers
    return session.scalars(select(Tier).where(Tier.name == name)).one()


# ------------------------------------------------------------------------------------------ resolve


@dataclass
class Resolved:
    label: str
    tier: str
    kind: str
    url: str
    endpoint: str = ""
    bucket: str = ""
    prefix: str = ""
    path: str = ""
    members: int = 0
    bytes: int = 0


def resolve(app: App, label: str, *, record: bool = True) -> Resolved:
    """Where to read a dataset now; records one read (unless ``record`` is False).

    A restored (staged, unexpired) copy on a tier hotter than the home is preferred. A dataset whose home
    is an archive tier and that has no such copy raises :class:`~tiering.errors.DatasetArchived`, naming
    the restore command or the restore under way.
    """
    from tiering.restore.requests import archived_error, readable_copy

    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        if ds.state == DatasetState.REGISTERING:
            raise UsageError(f"{ds.label} is still being registered; run the same `tiering register` again")
        tier = ds.home_tier.name
        prefix = ds.location_prefix or dataset_prefix(ds.kind, ds.name, ds.version)
        staged = readable_copy(s, ds, app.now())
        if staged is not None:
            tier, prefix = staged, dataset_prefix(ds.kind, ds.name, ds.version)
        elif ds.home_tier.archive:
            raise archived_error(s, app, ds, app.now())
        if record:
            record_read(s, ds.id, app.now())
        out = Resolved(ds.label, tier, ds.kind, "", members=ds.member_count, bytes=ds.size_bytes)
    loc: Location = app.backend(tier).locate(prefix)
    out.url, out.endpoint, out.bucket = loc.url, loc.endpoint, loc.bucket
    out.prefix, out.path = loc.key, loc.path
    return out


# ------------------------------------------------------------------------------------------ move


def move(
    app: App,
    label: str,
    *,
    to: str,
    reason: str = "manual",
    dry_run: bool = False,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> JobOutcome:
    """Move a dataset's home to tier ``to`` with the full copy-verify-commit-delete protocol."""
    app.config.tier(to)
    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        dataset_id, src = ds.id, ds.home_tier.name
        label = ds.label
        if src == to:
            raise UsageError(f"{label} is already on tier {to}")
        if ds.state == DatasetState.REGISTERING:
            raise UsageError(f"{label} is still being registered")
        if dry_run:
            return JobOutcome(0, label, src, to, "dry-run", ds.member_count, ds.size_bytes)
    executor = Executor(app)
    job_id = executor.create_job(dataset_id, to, reason=reason)
    return executor.run_job(job_id, progress=progress, stop=stop)


def resume(app: App, *, progress: Progress | None = None) -> list[JobOutcome]:
    """Drive every unfinished move job to its end (after a crash or an interruption)."""
    return Executor(app).resume_all(progress=progress)


# ------------------------------------------------------------------------------------------ verify


@dataclass
class VerifyProblem:
    path: str
    tier: str
    key: str
    #: missing | size_mismatch | checksum_mismatch | error; in a packed shard also unsafe_tar_entry,
    #: tar_name_mismatch, unexpected_tar_entry (see :class:`tiering.transfer.packing.ShardProblem`)
    problem: str
    detail: str = ""
    #: why, in one word: the problem itself, or for ``missing`` and ``error`` the backend error's reason
    #: (``unreachable``, ``access_denied``, ...): the CLI prints one line per (tier, problem, reason)
    reason: str = ""


@dataclass
class VerifyReport:
    label: str
    replicas_checked: int = 0
    bytes_read: int = 0
    problems: list[VerifyProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(app: App, label: str, *, tier: str | None = None, progress: Progress | None = None) -> VerifyReport:
    """Re-read every trusted replica of a dataset (or only those on ``tier``) and compare with the catalog."""
    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        stmt = (
            select(Member.path, Member.size, Member.xxh3, Tier.name, Replica.key, Replica.shard_offset)
            .join(Replica, Replica.member_id == Member.id)
            .join(Tier, Tier.id == Replica.tier_id)
            .where(Member.dataset_id == ds.id, Replica.state.in_([str(x) for x in TRUSTED_REPLICA_STATES]))
            .order_by(Tier.rank, Member.path)
        )
        if tier is not None:
            find_tier(s, app, tier)
            stmt = stmt.where(Tier.name == tier)
        rows = s.execute(stmt).all()
        report = VerifyReport(ds.label)
    if progress is not None:
        progress.total_bytes = sum(r[1] for r in rows)
        progress.total_objects = len(rows)

    def problem(row: Any, got: Digests | TieringError) -> tuple[VerifyProblem | None, int]:
        path, size, xxh3, tier_name, key, _offset = row
        if isinstance(got, TieringError):
            kind = "missing" if got.reason == "object_not_found" else "error"
            return VerifyProblem(path, tier_name, key, kind, str(got), got.reason), 0
        if got.size != size:
            return VerifyProblem(path, tier_name, key, "size_mismatch", f"{got.size} != {size} bytes",
                                 "size_mismatch"), got.size
        if got.xxh3 != xxh3:
            return VerifyProblem(path, tier_name, key, "checksum_mismatch", f"{got.xxh3} != {xxh3}",
                                 "checksum_mismatch"), size
        return None, size

    # members packed in a shard are checked by reading the shard once, front to back, tar headers included
    singles = [r for r in rows if r[5] is None]
    shards: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        if r[5] is not None:
            shards.setdefault((r[3], r[4]), []).append(r)

    def found_in(where: tuple[str, str], members: list[Any], scan: ShardScan) -> list[VerifyProblem]:
        tier_name, key = where
        if scan.error is not None and not scan.opened:
            kind = "missing" if scan.error.reason == "object_not_found" else "error"
            return [VerifyProblem(m[0], tier_name, key, kind, str(scan.error), scan.error.reason) for m in members]
        if scan.error is not None:
            return [VerifyProblem("", tier_name, key, "error", str(scan.error), scan.error.reason)]
        return [VerifyProblem(p.path, tier_name, key, p.problem,
                              p.detail + (f" (member bytes at offset {p.offset})" if p.offset is not None else ""),
                              p.problem)
                for p in scan.problems]

    workers = app.config.transfer.workers
    objects = [StoredObject(app.backend(r[3]), r[4]) for r in singles]
    for row, got in zip(singles, hash_many(objects, workers=workers), strict=True):
        found, nbytes = problem(row, got)
        report.replicas_checked += 1
        report.bytes_read += nbytes
        if progress is not None:
            progress.add(row[1], failed=found is not None)
        if found is not None:
            report.problems.append(found)
    # a tier the config no longer names: its shards are reported as unreadable, as a failed open is
    backends: dict[str, Backend | TieringError] = {}
    for tier_name, _key in shards:
        if tier_name not in backends:
            try:
                backends[tier_name] = app.backend(tier_name)
            except TieringError as exc:
                backends[tier_name] = exc
    stored = [StoredShard(backend, key,
                          {offset: (path, size, xxh3) for path, size, xxh3, _t, _k, offset in members})
              for (tier_name, key), members in shards.items()
              if not isinstance(backend := backends[tier_name], TieringError)]
    scans = scan_many(stored, workers=workers, on_member=progress.add if progress is not None else None)
    with contextlib.closing(scans):  # its pool is shut down before the audit entry is written
        for where, members in shards.items():
            reached = backends[where[0]]
            scan = ShardScan(error=reached, opened=False) if isinstance(reached, TieringError) else next(scans)
            report.replicas_checked += len(members)
            report.bytes_read += 0 if scan.error is not None else scan.nbytes
            report.problems.extend(found_in(where, members, scan))
    now = app.now()
    with app.catalog.session() as s:
        ds = find_dataset(s, report.label)
        s.add(AuditEntry(
            at=now, actor=app.actor, action="verify", dataset_id=ds.id, dataset_label=ds.label,
            from_tier=tier, to_tier=None, bytes=report.bytes_read, result="ok" if report.ok else "failed",
            detail={"replicas": report.replicas_checked, "problems": [asdict(p) for p in report.problems[:50]]},
        ))
    return report


# ------------------------------------------------------------------------------------------ listing


@dataclass
class TierUsage:
    name: str
    rank: int
    backend: str
    archive: str
    capacity_bytes: int | None
    used_bytes: int
    datasets: int
    cost_per_tib_month: float

    @property
    def free_bytes(self) -> int | None:
        return None if self.capacity_bytes is None else max(0, self.capacity_bytes - self.used_bytes)

    @property
    def cost_per_month(self) -> float:
        return self.used_bytes / 2**40 * self.cost_per_tib_month


def tier_usage(app: App) -> list[TierUsage]:
    """Per configured tier: bytes held by trusted replicas, datasets homed there, capacity, cost."""
    with app.catalog.session() as s:
        used = counted_tier_usage(s)
        homed = dict(
            s.execute(
                select(Dataset.home_tier_id, func.count(Dataset.id))
                .where(Dataset.state != DatasetState.DELETED)
                .group_by(Dataset.home_tier_id)
            ).all()
        )
        tiers = {t.name: t for t in s.scalars(select(Tier))}
    out = []
    for name in app.config.tiers_by_rank():
        t = tiers[name]
        tc = app.config.tiers[name]
        out.append(TierUsage(
            name, tc.rank, tc.backend, tc.archive or "", tc.capacity, int(used.get(t.id, 0)),
            int(homed.get(t.id, 0)), tc.cost_per_tib_month,
        ))
    return out


@dataclass
class DatasetRow:
    label: str
    name: str
    version: str
    kind: str
    owner: str
    tier: str
    state: str
    members: int
    bytes: int
    tags: dict[str, str]
    created_at: str
    last_access_at: str | None


def list_datasets(
    app: App, *, tier: str | None = None, kind: str | None = None, name: str | None = None
) -> list[DatasetRow]:
    with app.catalog.session() as s:
        stmt = (
            select(Dataset).join(Tier, Tier.id == Dataset.home_tier_id)
            .where(Dataset.state != DatasetState.DELETED).order_by(Dataset.name, Dataset.version)
        )
        if tier is not None:
            find_tier(s, app, tier)
            stmt = stmt.where(Tier.name == tier)
        if kind is not None:
            stmt = stmt.where(Dataset.kind == check_kind(kind))
        if name is not None:
            stmt = stmt.where(Dataset.name == name)
        return [
            DatasetRow(
                d.label, d.name, d.version, d.kind, d.owner, d.home_tier.name, d.state, d.member_count,
                d.size_bytes, dict(d.tags), d.created_at.isoformat(),
                d.last_access_at.isoformat() if d.last_access_at else None,
            )
            for d in s.scalars(stmt)
        ]


@dataclass
class DatasetDetail:
    dataset: DatasetRow
    content_digest: str
    adopted: bool
    replicas: dict[str, dict[str, int]]  # tier -> state -> count
    members: list[dict[str, Any]]
    history: list[dict[str, Any]]
    reads_30d: int
    jobs: list[dict[str, Any]]


def show(app: App, label: str, *, member_limit: int = 20) -> DatasetDetail:
    with app.catalog.session() as s:
        d = find_dataset(s, label)
        row = DatasetRow(
            d.label, d.name, d.version, d.kind, d.owner, d.home_tier.name, d.state, d.member_count,
            d.size_bytes, dict(d.tags), d.created_at.isoformat(),
            d.last_access_at.isoformat() if d.last_access_at else None,
        )
        replicas: dict[str, dict[str, int]] = {}
        for tier_name, state, n in s.execute(
            select(Tier.name, Replica.state, func.count(Replica.id))
            .join(Replica, Replica.tier_id == Tier.id)
            .join(Member, Member.id == Replica.member_id)
            .where(Member.dataset_id == d.id)
            .group_by(Tier.name, Replica.state)
        ):
            replicas.setdefault(tier_name, {})[state] = n
        members = [
            {"path": m.path, "size": m.size, "xxh3_128": m.xxh3}
            for m in s.scalars(
                select(Member).where(Member.dataset_id == d.id).order_by(Member.path).limit(member_limit)
            )
        ]
        history = [
            {"at": a.at.isoformat(), "actor": a.actor, "action": a.action, "from": a.from_tier, "to": a.to_tier,
             "bytes": a.bytes, "result": a.result}
            for a in s.scalars(select(AuditEntry).where(AuditEntry.dataset_id == d.id).order_by(AuditEntry.id))
        ]
        from tiering.catalog.models import AccessDaily

        since = (app.now() - dt.timedelta(days=30)).date()
        reads = s.scalar(
            select(func.coalesce(func.sum(AccessDaily.reads), 0)).where(
                AccessDaily.dataset_id == d.id, AccessDaily.day > since
            )
        )
        jobs = [
            {"id": j.id, "state": j.state, "purpose": j.purpose, "reason": j.reason, "error": j.last_error,
             "created_at": j.created_at.isoformat()}
            for j in s.scalars(select(MoveJob).where(MoveJob.dataset_id == d.id).order_by(MoveJob.id))
        ]
        return DatasetDetail(row, d.content_digest, d.adopted, replicas, members, history, int(reads or 0), jobs)


#: ``read_member(..., verify_first=True)`` holds a member in memory to check it before writing a byte; a
#: larger member is refused (write it to a file instead: ``save_member``)
VERIFY_FIRST_MAX_BYTES = 256 * 1024 * 1024


def read_member(
    app: App, label: str, path: str, out: io.RawIOBase | Any, *, verify_first: bool = False,
    max_buffer: int = VERIFY_FIRST_MAX_BYTES,
) -> int:
    """Copy one member's bytes to ``out`` and verify them (size and xxh3-128). Returns bytes written.

    Reads the trusted copy on the hottest tier; a member packed in a shard is read with one ranged GET.
    Without ``verify_first`` the bytes are written as they stream and checked at the end: after a
    ``CorruptedCopy`` the caller must discard what ``out`` received. With ``verify_first`` (for a stream that
    cannot be taken back, such as stdout) the member is read into memory and checked first, and ``out``
    receives nothing unless it verifies; a member over ``max_buffer`` bytes raises ``UsageError`` before
    any read. Raises ``DatasetArchived`` when the only copy needs an archive restore first,
    ``CorruptedCopy`` (naming the dataset and path) when the bytes do not match the catalog.
    """
    from tiering.errors import ArchivedObject, CorruptedCopy
    from tiering.restore.requests import archived_error

    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        m = s.scalars(select(Member).where(Member.dataset_id == ds.id, Member.path == path)).first()
        if m is None:
            link = s.scalars(select(TreeEntry).where(TreeEntry.dataset_id == ds.id, TreeEntry.path == path,
                                                      TreeEntry.kind == "link")).first()
            if link is not None:
                raise UsageError(f"{ds.label}:{path} is a symbolic link to {link.target}: read what it points to")
            raise PathNotFound(f"{ds.label}:{path}")
        if verify_first and m.size > max_buffer:
            raise UsageError(f"{ds.label}:{path} is {m.size} bytes, more than the {max_buffer} bytes checked in "
                             "memory before they are written out: give --out FILE")
        rep = s.scalars(
            select(Replica).join(Tier, Tier.id == Replica.tier_id)
            .where(Replica.member_id == m.id, Replica.state.in_([str(x) for x in TRUSTED_REPLICA_STATES]))
            .order_by(Tier.rank)
        ).first()
        if rep is None:
            raise PathNotFound(f"{ds.label}:{path} has no readable copy")
        tier_name, key, offset, size, expected = rep.tier.name, rep.key, rep.shard_offset, m.size, m.xxh3
        record_read(s, ds.id, app.now())
        ds_label = ds.label
    try:
        stream = app.backend(tier_name).open_read(key, offset=offset or 0,
                                                  length=size if offset is not None else None)
    except ArchivedObject:
        with app.catalog.session() as s:
            raise archived_error(s, app, find_dataset(s, label), app.now()) from None
    digests = Digests()
    held: list[bytes] = []
    try:
        while True:
            chunk = stream.read(CHUNK_SIZE)
            if not chunk:
                break
            digests.update(chunk)
            if verify_first:
                held.append(chunk)
                if digests.size > max_buffer:  # longer than the catalog says: it cannot verify
                    break
            else:
                out.write(chunk)
    finally:
        stream.close()
    if digests.xxh3 != expected or digests.size != size:
        where = f"{tier_name}:{key}" + (f"@{offset}" if offset is not None else "")
        raise CorruptedCopy(f"{where} (member {path} of {ds_label})", "reader", expected,
                            f"{digests.xxh3} ({digests.size} bytes)")
    for chunk in held:
        out.write(chunk)
    return digests.size


def member_attributes(app: App, label: str, path: str) -> tuple[int | None, int | None]:
    """A member's recorded permission bits and modification time (ns), each None when not known."""
    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        row = s.execute(select(Member.mode, Member.mtime_ns)
                        .where(Member.dataset_id == ds.id, Member.path == path)).first()
        if row is None:
            raise PathNotFound(f"{ds.label}:{path}")
        return row[0], row[1]
def save_member(app: App, label: str, path: str, dest: str | os.PathLike[str]) -> int:
    """Write one member to the file ``dest``, verified: the bytes go to a temporary file beside it, which
    becomes ``dest`` only once they hash right and is removed otherwise (``dest`` is then untouched).
    Returns bytes written; raises as :func:`read_member`."""
    target = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            n = read_member(app, label, path, fh)
        # the file comes back as it was registered: its permission bits and modification time
        mode, mtime_ns = member_attributes(app, label, path)
        if mode is not None:
            os.chmod(tmp, mode)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return n


def iter_labels(app: App) -> Iterable[str]:
    return (r.label for r in list_datasets(app))
