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
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from sqlalchemy import and_, delete, func, insert, literal_column, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from tiering.access.record import record_read
from tiering.app import App
from tiering.catalog.db import describe_db_error
from tiering.catalog.models import AuditEntry, Dataset, Member, MoveJob, Replica, Tier, TreeEntry
from tiering.catalog.states import TRUSTED_REPLICA_STATES, ReplicaState
from tiering.catalog.usage import tier_usage as counted_tier_usage
from tiering.errors import (
    CatalogError,
    DatasetExists,
    DatasetNotFound,
    InvalidName,
    PathNotFound,
    PrefixInUse,
    RegistrationInProgress,
    TieringError,
    UsageError,
)
from tiering.faults import crash_point
from tiering.layout import (
    KEY_MAX,
    KINDS,
    MANIFEST_DIR,
    MEMBER_PATH_MAX,
    ManifestEntry,
    ManifestMember,
    build_manifest,
    check_kind,
    check_member_path,
    check_members_form_a_tree,
    check_name,
    check_owner,
    check_tags,
    content_digest,
    dataset_prefix,
    manifest_key,
    parse_label,
    prefix_ancestors,
)
from tiering.moves.executor import Executor, JobOutcome, lease_owner_is_dead, new_worker_id
from tiering.storage.base import Backend, Location, ObjectInfo, ReadStream, delete_keys, read_up_to
from tiering.storage.file import FileBackend
from tiering.storage.tree import apply_tree, posix_entries, remove_tree, scan_directory, scan_file, tree_rows
from tiering.transfer.copier import Copier, CopyItem, Progress
from tiering.transfer.hashing import CHUNK_SIZE, Digests, hash_stream
from tiering.transfer.packing import scan_shard

ProgressFactory = Callable[[str, Progress], Any]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ lookups


def find_dataset(session: Session, label: str) -> Dataset:
    """``name@version`` or ``name`` (the newest registered version). Raises DatasetNotFound."""
    name, version = parse_label(label)
    stmt = select(Dataset).where(Dataset.name == name, Dataset.state != "deleted")
    if version is not None:
        stmt = stmt.where(Dataset.version == version)
    else:
        stmt = stmt.order_by(Dataset.created_at.desc(), Dataset.id.desc())
    ds = session.scalars(stmt.limit(1)).first()
    if ds is None:
        raise DatasetNotFound(name, version)
    return ds


def _tier_row(session: Session, app: App, name: str) -> Tier:
    app.config.tier(name)  # raises TierNotFound with the list of configured tiers
    return session.scalars(select(Tier).where(Tier.name == name)).one()


# ------------------------------------------------------------------------------------------ register


@dataclass
class RegisterResult:
    label: str
    tier: str
    members: int
    bytes: int
    content_digest: str
    adopted: bool
    already_registered: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class _SourceFile:
    path: str  # member path
    size: int
    key: str  # key in the source backend
    mode: int | None = None  # permission bits of a local file
    mtime_ns: int | None = None


def _scan_local(
    source: Path, *, follow_links: bool = False,
) -> tuple[FileBackend, list[_SourceFile], list[ManifestEntry]]:
    """The files, directories and links of a local source (see :func:`tiering.storage.tree.scan_directory` for what
    is refused)."""
    if not source.exists() and not source.is_symlink():
        raise PathNotFound(str(source))
    entries: list[ManifestEntry] = []
    if source.is_dir():
        root = source
        try:
            tree = scan_directory(source, follow_links=follow_links)
        except InvalidName as exc:  # the refusal names the source it came from
            raise InvalidName(f"{str(source).rstrip('/')}: {exc}") from None
        files = [_SourceFile(f.path, f.size, f.path, f.mode, f.mtime_ns) for f in tree.files]
        entries = tree.entries
    else:
        root = source.parent
        f = scan_file(source)
        files = [_SourceFile(_member_path(str(source), f.path), f.size, f.path, f.mode, f.mtime_ns)]
    if not files:
        raise UsageError(f"{source} holds no files to register")
    return FileBackend(root, fsync=False), files, entries


#: registering local files keeps the bytes the hashing pass read of files up to this size for the upload
#: (one read of each instead of two, and the bytes sent are the bytes hashed), up to PRELOAD_BYTES in all
PRELOAD_FILE_MAX = 1024 * 1024
PRELOAD_BYTES = 256 * 1024 * 1024


class _Preloaded:
    """A registration's local source that hands out the bytes the hashing pass kept, once each; anything
    else (a file not kept, a second read, a range) is read from ``inner``. The copier only reads through it;
    anything else is asked of ``inner`` (``unwrap``)."""

    def __init__(self, inner: Backend, kept: dict[str, bytes]) -> None:
        self._inner = inner
        self._kept = kept
        self.url = inner.url

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        data = self._kept.pop(key, None)  # atomic: a copy thread takes it once, and the memory goes with it
        if data is None or offset:
            return self._inner.open_read(key, offset=offset, length=length)
        return io.BytesIO(data if length is None else data[:length])

    def head(self, key: str) -> ObjectInfo:
        return self._inner.head(key)

    def unwrap(self) -> Backend:
        return self._inner


#: a hashing task reads files until it holds this many, or HASH_TASK_BYTES (one future per small file
#: would cost more than reading it)
HASH_TASK_FILES = 64
HASH_TASK_BYTES = 8 * 1024 * 1024
#: threads of the hashing pass at most: a read from the page cache and its hash take ~10 us per 16 KiB
#: file, and more threads only fight over the GIL (5,000 x 16 KiB: 0.08 s on one thread, 0.29 s on 32;
#: 1,000 x 1 MiB: 0.05 s on 2-4, 0.13 s on 32); a few still overlap the reads of a slower source
HASH_THREADS = 4
#: local files smaller than this on average are read on the calling thread, unless reading the first task
#: kept it waiting for storage: each read hands the GIL to another thread, which costs more than the read
#: (5,000 x 16 KiB from the page cache: 0.12-0.27 s on one thread, 0.55-0.92 s and 0.75-1.19 CPU-s on 4);
#: larger files gain from a second thread (1,000 x 1 MiB: 0.15-0.30 s on one, 0.12-0.16 s on 2-4)
SMALL_FILES = 256 * 1024


def _hash_all(
    backend: Backend, files: list[_SourceFile], workers: int, *, local: bool,
) -> tuple[dict[str, Digests], dict[str, bytes]]:
    """Digests of every file (by member path) and, for ``local`` files, the bytes of the small ones (by key).

    Local files are read on at most HASH_THREADS threads, several per task; objects on a tier (adopting)
    one per task on ``workers`` threads, as each read waits for a server.
    """
    kept: dict[str, bytes] = {}
    budget = PRELOAD_BYTES if local else 0
    per_task = HASH_TASK_FILES if local else 1
    tasks: list[list[tuple[_SourceFile, bool]]] = [[]]
    task_bytes = 0
    for f in files:
        take = f.size <= PRELOAD_FILE_MAX and f.size <= budget
        if take:
            budget -= f.size
        if len(tasks[-1]) >= per_task or (tasks[-1] and task_bytes + f.size > HASH_TASK_BYTES):
            tasks.append([])
            task_bytes = 0
        tasks[-1].append((f, take))
        task_bytes += f.size

    def one(f: _SourceFile, take: bool) -> Digests:
        stream = backend.open_read(f.key)
        try:
            if not take:
                return hash_stream(stream, md5=False)
            data = read_up_to(stream, f.size + 1)
            digests = Digests()
            digests.update(data)
            if len(data) > f.size:  # it grew since the scan: hash it all, keep nothing (the copy will see it)
                while chunk := stream.read(CHUNK_SIZE):
                    digests.update(chunk)
                return digests
        finally:
            stream.close()
        kept[f.key] = data
        return digests

    def task(batch: list[tuple[_SourceFile, bool]]) -> list[tuple[str, Digests]]:
        return [(f.path, one(f, take)) for f, take in batch]

    digests: dict[str, Digests] = {}
    threads = max(1, min(workers, HASH_THREADS) if local else workers)
    if local and threads > 1 and sum(f.size for f in files) < SMALL_FILES * len(files):
        wall, cpu = time.monotonic(), time.thread_time()
        digests.update(task(tasks[0]))
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        tasks = tasks[1:]
        if wall < 2 * cpu:  # on the CPU more than half the time: the files came from memory
            threads = 1
    if threads == 1:
        for batch in tasks:
            digests.update(task(batch))
        return digests, kept
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done in pool.map(task, tasks):
            digests.update(done)
    return digests, kept


#: how a registration owns its name@version (see :func:`register`)
_REGISTERING = "registering"


def register(
    app: App,
    source: str,
    *,
    name: str,
    version: str,
    kind: str = "dataset",
    tier: str | None = None,
    owner: str = "",
    tags: dict[str, str] | None = None,
    adopt: bool = False,
    progress: Progress | None = None,
    follow_links: bool = False,
) -> RegisterResult:
    """Register ``source`` as ``name@version``.

    A local directory or file is uploaded to ``tier`` (hashing on the way, verified at the destination).
    With ``adopt``, an ``s3://`` or ``file://`` prefix already inside a configured tier is registered in
    place: its objects are read and hashed, not copied. Registering the same name@version again is a
    no-op when the content is identical and :class:`DatasetExists` otherwise.

    A local directory's file modes and times, directories and symbolic links are recorded too; a link that
    leads outside the directory, a FIFO, a socket or a device is refused (:class:`UsageError`) before
    anything is uploaded. ``follow_links`` reads what every link points to instead, wherever it is.
    Every name, path and length is checked before a byte moves (:class:`UsageError`, exit 2). Then the
    registration owns its name@version: it commits a ``registering`` row naming itself
    (``host:pid:token``) with a lease before its first upload, renews the lease while it uploads, and
    finishes only if it still owns the row. A registration that finds the row owned by another one whose
    lease runs is refused with :class:`RegistrationInProgress` (exit 4) before it uploads anything. A row
    whose owner is gone (its lease ran out, or it names a process of this host that no longer runs) is
    taken over, so the same command run again after a crash finishes the work. A lease rather than the
    content digest decides: two registrations of the same content at once would still race on the same
    keys and rows. A registration stalled past its lease (``transfer.lease_seconds``) stops starting
    uploads at its next renewal and never commits, but an upload already under way may still land.
    An adopted prefix may not overlap another dataset's objects (:class:`PrefixInUse`). Any failure after
    the first upload removes what this registration uploaded and its row.
    """
    check_name(name)
    check_name(version, "version")
    check_kind(kind)
    check_owner(owner)
    tags = check_tags(dict(tags or {}))
    started = app.now()
    label = f"{name}@{version}"
    if adopt:
        tier_name, rel_prefix = _tier_for_url(app, source)
        if tier is not None and tier != tier_name:
            raise UsageError(f"{source} is inside tier {tier_name!r}, not {tier!r}")
        if not rel_prefix:
            raise UsageError(f"{source} is the root of tier {tier_name!r}: adopt a prefix inside it")
        tier = tier_name
        src_backend: Backend = app.backend(tier)
        files = [
            _SourceFile(_member_path(source, info.key[len(rel_prefix):]), info.size, info.key)
            for info in src_backend.list(rel_prefix)
            if not info.key[len(rel_prefix):].startswith(MANIFEST_DIR + "/")
        ]
        if not files:
            raise PathNotFound(source)
        tree_entries: list[ManifestEntry] = []
    else:
        if source.startswith(("s3://", "file://")):
            raise UsageError(f"{source}: to register objects already on a tier in place, add --adopt")
        if tier is None:
            tier = app.config.tiers_by_rank()[0]
        app.config.tier(tier)
        src_backend, files, tree_entries = _scan_local(Path(source).expanduser(), follow_links=follow_links)
        rel_prefix = ""
    prefix = rel_prefix if adopt else dataset_prefix(kind, name, version)
    check_members_form_a_tree(f.path for f in files)
    dst_backend = app.backend(tier)
    _check_key_lengths(dst_backend, tier, prefix, files)
    claim = _Claim(name=name, version=version, kind=kind, owner=owner, tags=tags, tier=tier, adopt=adopt,
                   prefix=prefix, token=new_worker_id())
    with app.catalog.session() as s:  # refused now rather than after hashing: nothing here waits for it
        _refuse_conflicts(s, app, claim)

    workers = app.config.transfer.workers
    digests, kept = _hash_all(src_backend, files, workers, local=not adopt)
    content = content_digest((f.path, f.size, digests[f.path].xxh3) for f in files)
    total = sum(f.size for f in files)

    done = _take_ownership(app, claim, content)
    if done is not None:
        return done
    uploaded: list[str] = []
    applied: list[ManifestEntry] = []  # directories and links given to a directory tier
    lost = threading.Event()
    stop_renewing = threading.Event()
    renewer = threading.Thread(target=_renew_lease, args=(app, claim, lost, stop_renewing), daemon=True)
    renewer.start()
    try:
        if not adopt:
            if progress is not None:
                progress.total_bytes, progress.total_objects = total, len(files)
            copy_from = cast(Backend, _Preloaded(src_backend, kept)) if kept else src_backend
            copier = Copier(copy_from, dst_backend, workers=workers, verify=app.config.transfer.verify)
            uploaded = [prefix + f.path for f in files]
            items = (
                CopyItem(src_key=f.key, dst_key=prefix + f.path, size=f.size, expected_xxh3=digests[f.path].xxh3)
                for f in files
            )
            failures = [r for r in copier.copy_many(items, progress=progress, stop=lost) if not r.ok]
            if lost.is_set():
                raise _OwnershipLost(label)
            if failures:
                raise failures[0].error or TieringError("copy failed")
            crash_point("register_after_upload")
        manifest = build_manifest(
            name=name, version=version, kind=kind, owner=owner, tags=tags, tier=tier, written_at=app.now(),
            members=[ManifestMember(f.path, f.size, digests[f.path].xxh3, mode=f.mode, mtime_ns=f.mtime_ns)
                     for f in files],
            entries=tree_entries,
        )
        uploaded.append(manifest_key(prefix))
        dst_backend.put(manifest_key(prefix), io.BytesIO(manifest), size=len(manifest))
        if not app.config.tier(tier).archive:  # a directory tier holds the tree as registered
            applied = tree_entries
            apply_tree(dst_backend, prefix,
                       posix_entries({f.path: (f.mode, f.mtime_ns) for f in files}, tree_entries))
        _finish_registration(app, claim, source=source, files=files, digests=digests, content=content,
                             total=total, tree_entries=tree_entries)
    except _OwnershipLost:
        # another registration took the row over (this one stalled past its lease): the keys are now its
        # keys, so nothing is removed here
        raise RegistrationInProgress(label, " (it took over after this one's lease ran out)") from None
    except Exception as exc:
        # a refused or failed registration changes nothing: remove what it uploaded and its row
        _undo_registration(app, dst_backend, claim, uploaded)
        remove_tree(dst_backend, prefix, applied)
        if isinstance(exc, SQLAlchemyError):
            raise CatalogError(f"catalog refused registering {label}: {describe_db_error(exc)}") from exc
        raise
    finally:
        stop_renewing.set()
        renewer.join(timeout=5)
    seconds = (app.now() - started).total_seconds()
    return RegisterResult(label, tier, len(files), total, content, adopt, seconds=seconds)


class _OwnershipLost(Exception):
    """Raised inside :func:`register` when its row was taken over by another registration."""


@dataclass(frozen=True)
class _Claim:
    """What a registration asks to own, and the token that names it."""

    name: str
    version: str
    kind: str
    owner: str
    tags: dict[str, str]
    tier: str
    adopt: bool
    prefix: str  # where its objects go (or are, adopting), relative to the tier root
    token: str  # host:pid:random, as a move worker's lease owner

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def _member_path(source: str, path: str) -> str:
    """``path`` checked as a member path; a refusal names the source it came from."""
    try:
        return check_member_path(path)
    except InvalidName as exc:
        raise InvalidName(f"{source.rstrip('/')}: {exc}") from None


#: the longest object key S3 servers take (UTF-8 bytes; AWS, MinIO and SeaweedFS refuse longer ones)
S3_KEY_BYTES_MAX = 1024
#: the longest path a directory tier can open (Linux PATH_MAX, bytes)
FILE_PATH_BYTES_MAX = 4095


def _check_key_lengths(backend: Backend, tier: str, prefix: str, files: list[_SourceFile]) -> None:
    """Every key must fit the catalog (2048 characters; an adopted prefix 1024) and the tier (S3: 1024
    bytes with the tier's own prefix; a directory: the length of a path)."""
    if len(prefix) > MEMBER_PATH_MAX:
        raise UsageError(f"prefix {prefix[:60]!r}... is {len(prefix)} characters, longer than {MEMBER_PATH_MAX}")
    base = backend.locate("")
    if base.kind == "s3":
        room, what = S3_KEY_BYTES_MAX - len(base.key.encode()), f"the {S3_KEY_BYTES_MAX}-byte key limit of S3"
    elif base.kind == "file":
        room, what = FILE_PATH_BYTES_MAX - len(base.path.encode()) - 1, "the longest path a filesystem opens"
    else:
        room, what = KEY_MAX * 4, ""
    for f in files:
        key = prefix + f.path
        if len(key) > KEY_MAX:
            raise UsageError(f"member {f.path[:60]!r}... makes a key of {len(key)} characters, longer than {KEY_MAX}")
        if len(key.encode()) > room:
            raise UsageError(f"member {f.path[:60]!r}... would be stored on tier {tier} under a key longer than "
                             f"{what}")


def _owner_gone(owner: str | None, lease_until: dt.datetime | None, now: dt.datetime) -> bool:
    """True when a ``registering`` row's owner no longer holds it: no owner (a row from before owners were
    kept), its lease ran out, or it names a process of this host that no longer runs."""
    return owner is None or lease_until is None or lease_until < now or lease_owner_is_dead(owner)


def _refuse_conflicts(s: Session, app: App, claim: _Claim) -> None:
    """Raise when another registration owns the row of ``claim``, or when its prefix overlaps another
    dataset's objects. Reads only."""
    row = s.execute(
        select(Dataset.state, Dataset.registration_owner, Dataset.registration_lease_until)
        .where(Dataset.name == claim.name, Dataset.version == claim.version)
    ).first()
    if row is not None and row[0] == _REGISTERING and not _owner_gone(row[1], row[2], app.now()):
        raise RegistrationInProgress(claim.label)
    _refuse_overlaps(s, claim)


def _refuse_overlaps(s: Session, claim: _Claim) -> None:
    """One prefix, one dataset. Moves write every dataset under its standard ``<kind>/<name>/<version>/``
    on whichever tier it goes to, so an adopted prefix may not overlap (contain, or sit inside) the standard
    prefix of any other dataset, on any tier; nor another adopted prefix on the same tier; nor any object
    the catalog holds on that tier. A plain registration's standard prefix may not overlap an adopted one."""
    others = and_(Dataset.state != "deleted", or_(Dataset.name != claim.name, Dataset.version != claim.version))
    p = claim.prefix
    overlaps = or_(Dataset.location_prefix.in_(prefix_ancestors(p)),
                   func.substr(Dataset.location_prefix, 1, len(p)) == p)
    adopted = (
        select(Dataset.name, Dataset.version, Dataset.location_prefix, Tier.name)
        .join(Tier, Tier.id == Dataset.home_tier_id)
        .where(others, Dataset.location_prefix != literal_column("''"), overlaps)  # as the partial index says
    )
    if claim.adopt:
        adopted = adopted.where(Tier.name == claim.tier)
    what = f"adopting {claim.tier}:{p}" if claim.adopt else f"registering {claim.label} under {p!r}"
    hit = s.execute(adopted.limit(1)).first()
    if hit is not None:
        raise PrefixInUse(what, f"{hit[0]}@{hit[1]}", f"adopted in place under {hit[2]!r} on tier {hit[3]}")
    if not claim.adopt:
        return
    parts = p.rstrip("/").split("/")
    if parts[0] in KINDS:
        same = [Dataset.kind == parts[0]]
        if len(parts) > 1:
            same.append(Dataset.name == parts[1])
        if len(parts) > 2:
            same.append(Dataset.version == parts[2])
        std = s.execute(select(Dataset.kind, Dataset.name, Dataset.version).where(others, *same).limit(1)).first()
        if std is not None:
            raise PrefixInUse(what, f"{std[1]}@{std[2]}",
                              f"its objects go under {dataset_prefix(*std)!r} on every tier it is moved to")
    key = s.execute(
        select(Dataset.name, Dataset.version, Replica.key)
        .join(Member, Member.dataset_id == Dataset.id)
        .join(Replica, Replica.member_id == Member.id)
        .join(Tier, Tier.id == Replica.tier_id)
        .where(others, Tier.name == claim.tier, func.substr(Replica.key, 1, len(p)) == p)
        .limit(1)
    ).first()
    if key is not None:
        raise PrefixInUse(what, f"{key[0]}@{key[1]}", f"its object {key[2]!r} on tier {claim.tier}")


#: PostgreSQL: claims take this transaction-scoped advisory lock, so the overlap checks and the insert of
#: one claim see every other claim (SQLite's BEGIN IMMEDIATE already runs one writer at a time)
_CLAIM_LOCK = zlib.crc32(b"tiering:registration-claims")


def _take_ownership(app: App, claim: _Claim, content: str) -> RegisterResult | None:
    """Commit the ``registering`` row of ``claim`` naming its token, or take over a row whose owner is
    gone. Returns the result when the same content is registered already; raises DatasetExists,
    RegistrationInProgress or PrefixInUse."""
    now = app.now()
    lease = dt.timedelta(seconds=app.config.transfer.lease_seconds)
    stale: tuple[str, str] | None = None
    try:
        with app.catalog.session() as s:
            if app.catalog.dialect == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CLAIM_LOCK})
            tier_row = _tier_row(s, app, claim.tier)
            existing = s.scalars(
                select(Dataset).where(Dataset.name == claim.name, Dataset.version == claim.version)
            ).first()
            if existing is not None and existing.state != _REGISTERING:
                if existing.content_digest == content:
                    return RegisterResult(claim.label, existing.home_tier.name, existing.member_count,
                                          existing.size_bytes, content, existing.adopted, already_registered=True)
                raise DatasetExists(claim.label)
            _refuse_conflicts(s, app, claim)
            values: dict[str, Any] = {
                "kind": claim.kind, "owner": claim.owner, "tags": claim.tags, "home_tier_id": tier_row.id,
                "adopted": claim.adopt, "location_prefix": claim.prefix if claim.adopt else "",
                "created_at": now, "home_since": now,
                "registration_owner": claim.token, "registration_lease_until": now + lease,
            }
            if existing is None:
                s.add(Dataset(name=claim.name, version=claim.version, state=_REGISTERING, **values))
                s.flush()
                return None
            if not existing.adopted:  # a crashed upload's objects; an adopted prefix holds the user's own
                stale = (existing.home_tier.name, dataset_prefix(existing.kind, claim.name, claim.version))
            previous = existing.registration_owner
            taken = s.execute(
                update(Dataset)
                .where(Dataset.id == existing.id, Dataset.state == _REGISTERING,
                       Dataset.registration_owner.is_(None) if previous is None
                       else Dataset.registration_owner == previous)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if cast(Any, taken).rowcount != 1:
                raise RegistrationInProgress(claim.label)
    except IntegrityError:  # another registration inserted the row first
        raise RegistrationInProgress(claim.label) from None
    if stale is not None:
        _clear_abandoned_upload(app, *stale)
    return None


def _clear_abandoned_upload(app: App, tier: str, prefix: str) -> None:
    """Remove what a crashed registration left under ``prefix`` (objects no replica points at, unfinished
    uploads). Best effort: what stays is overwritten by this registration or is a stray object."""
    try:
        backend = app.backend(tier)
        with app.catalog.session() as s:
            known = set(s.scalars(
                select(Replica.key).join(Tier, Tier.id == Replica.tier_id)
                .where(Tier.name == tier, func.substr(Replica.key, 1, len(prefix)) == prefix)
            ))
        delete_keys(backend, [i.key for i in backend.list(prefix) if i.key not in known])
        backend.abort_incomplete(prefix)
    except TieringError as exc:
        log.warning("could not clear the abandoned upload under %s on tier %s: %s", prefix, tier, exc)


def _renew_lease(app: App, claim: _Claim, lost: threading.Event, stop: threading.Event) -> None:
    """Extend the claim's lease every third of it until ``stop``; set ``lost`` if the row is not ours."""
    seconds = app.config.transfer.lease_seconds
    while not stop.wait(max(1.0, seconds / 3)):
        try:
            with app.catalog.session() as s:
                renewed = s.execute(
                    update(Dataset)
                    .where(Dataset.name == claim.name, Dataset.version == claim.version,
                           Dataset.registration_owner == claim.token)
                    .values(registration_lease_until=app.now() + dt.timedelta(seconds=seconds))
                )
            if cast(Any, renewed).rowcount != 1:
                lost.set()
                return
        except (TieringError, SQLAlchemyError):
            log.warning("renewing the registration lease of %s failed; will retry", claim.label)


def _finish_registration(
    app: App, claim: _Claim, *, source: str, files: list[_SourceFile], digests: dict[str, Digests],
    content: str, total: int, tree_entries: list[ManifestEntry],
) -> None:
    """One transaction: members, live replicas, the dataset active, an audit entry; only while the row
    is still this registration's (else :class:`_OwnershipLost`)."""
    now = app.now()
    with app.catalog.session() as s:
        row = s.execute(
            select(Dataset.id, Dataset.home_tier_id)
            .where(Dataset.name == claim.name, Dataset.version == claim.version,
                   Dataset.state == _REGISTERING, Dataset.registration_owner == claim.token)
            .with_for_update()
        ).first()
        if row is None:
            raise _OwnershipLost(claim.label)
        dataset_id, home_tier_id = row
        s.execute(insert(Member), [
            {"dataset_id": dataset_id, "path": f.path, "size": f.size, "xxh3": digests[f.path].xxh3,
             "mode": f.mode, "mtime_ns": f.mtime_ns}
            for f in files
        ])
        if tree_entries:
            s.execute(insert(TreeEntry), tree_rows(dataset_id, tree_entries))
        ids = dict(s.execute(select(Member.path, Member.id).where(Member.dataset_id == dataset_id)).all())
        s.execute(
            insert(Replica),
            [
                {"member_id": ids[f.path], "tier_id": home_tier_id,
                 "key": f.key if claim.adopt else claim.prefix + f.path, "state": ReplicaState.LIVE,
                 "verified_at": now, "size": f.size}
                for f in files
            ],
        )
        s.execute(
            update(Dataset).where(Dataset.id == dataset_id).values(
                state="active", member_count=len(files), size_bytes=total, content_digest=content,
                home_since=now, registration_owner=None, registration_lease_until=None,
            )
        )
        s.add(AuditEntry(
            at=now, actor=app.actor, action="adopt" if claim.adopt else "register", dataset_id=dataset_id,
            dataset_label=claim.label, from_tier=None, to_tier=claim.tier, bytes=total, result="ok",
            detail={"members": len(files), "source": _safe_source(source)},
        ))


def _undo_registration(app: App, backend: Backend, claim: _Claim, keys: list[str]) -> None:
    """Remove what a failed registration uploaded, then its row (only while it is still this one's).

    An object that cannot be removed (the tier unreachable) is logged; the keys are deterministic, so
    registering the same name@version again overwrites it."""
    failed = delete_keys(backend, keys) if keys else {}
    if failed:  # usually the error the user sees already (the tier unreachable): not worth a second line
        log.info("%d objects of the failed registration of %s could not be removed, e.g. %s",
                 len(failed), claim.label, next(iter(failed)))
    try:
        with app.catalog.session() as s:
            s.execute(delete(Dataset).where(
                Dataset.name == claim.name, Dataset.version == claim.version, Dataset.state == _REGISTERING,
                Dataset.registration_owner == claim.token,
            ))
    except (TieringError, SQLAlchemyError) as exc:
        log.warning("could not remove the registering row of %s: %s", claim.label, describe_db_error(exc))


def _safe_source(source: str) -> str:
    """A source path or URL without any userinfo, for the audit log."""
    parsed = urlparse(source)
    if parsed.scheme and "@" in parsed.netloc:
        return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[1]).geturl()
    return source


def _tier_for_url(app: App, url: str) -> tuple[str, str]:
    """(tier name, key prefix relative to the tier root) for an s3:// or file:// URL inside a tier."""
    if not url.endswith("/"):
        url += "/"
    for name, tc in app.config.tiers.items():
        base = tc.backend.rstrip("/") + "/"
        if url.startswith(base):
            return name, url[len(base):]
    known = ", ".join(f"{n}={t.backend}" for n, t in app.config.tiers.items())
    raise UsageError(f"{url} is not inside any configured tier ({known}); adopt works in place only")


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
        if ds.state == "registering":
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
        if ds.state == "registering":
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
            _tier_row(s, app, tier)
            stmt = stmt.where(Tier.name == tier)
        rows = s.execute(stmt).all()
        report = VerifyReport(ds.label)
    if progress is not None:
        progress.total_bytes = sum(r[1] for r in rows)
        progress.total_objects = len(rows)

    def check(row: Any) -> tuple[VerifyProblem | None, int]:
        path, size, xxh3, tier_name, key, offset = row
        backend = app.backend(tier_name)
        try:
            stream = backend.open_read(key, offset=offset or 0, length=size if offset is not None else None)
            try:
                digests = hash_stream(stream)
            finally:
                stream.close()
        except TieringError as exc:
            kind = "missing" if exc.reason == "object_not_found" else "error"
            return VerifyProblem(path, tier_name, key, kind, str(exc), exc.reason), 0
        if digests.size != size:
            return VerifyProblem(path, tier_name, key, "size_mismatch", f"{digests.size} != {size} bytes",
                                 "size_mismatch"), digests.size
        if digests.xxh3 != xxh3:
            return VerifyProblem(path, tier_name, key, "checksum_mismatch", f"{digests.xxh3} != {xxh3}",
                                 "checksum_mismatch"), size
        return None, size

    # members packed in a shard are checked by reading the shard once, front to back, tar headers included
    singles = [r for r in rows if r[5] is None]
    shards: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        if r[5] is not None:
            shards.setdefault((r[3], r[4]), []).append(r)

    def check_shard(item: tuple[tuple[str, str], list[Any]]) -> tuple[list[VerifyProblem], int]:
        (tier_name, key), members = item
        by_offset = {offset: (path, size, xxh3) for path, size, xxh3, _t, _k, offset in members}
        try:
            stream = app.backend(tier_name).open_read(key)
        except TieringError as exc:
            kind = "missing" if exc.reason == "object_not_found" else "error"
            return [VerifyProblem(m[0], tier_name, key, kind, str(exc), exc.reason) for m in members], 0
        try:
            found, nbytes = scan_shard(stream, by_offset, on_member=progress.add if progress is not None else None)
        except TieringError as exc:
            return [VerifyProblem("", tier_name, key, "error", str(exc), exc.reason)], 0
        finally:
            stream.close()
        return [VerifyProblem(p.path, tier_name, key, p.problem,
                              p.detail + (f" (member bytes at offset {p.offset})" if p.offset is not None else ""),
                              p.problem)
                for p in found], nbytes

    with ThreadPoolExecutor(max_workers=app.config.transfer.workers) as pool:
        for row, (problem, nbytes) in zip(singles, pool.map(check, singles), strict=True):
            report.replicas_checked += 1
            report.bytes_read += nbytes
            if progress is not None:
                progress.add(row[1], failed=problem is not None)
            if problem is not None:
                report.problems.append(problem)
        for (_where, members), (found, nbytes) in zip(shards.items(), pool.map(check_shard, shards.items()),
                                                      strict=True):
            report.replicas_checked += len(members)
            report.bytes_read += nbytes
            report.problems.extend(found)
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
                .where(Dataset.state != "deleted")
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
            .where(Dataset.state != "deleted").order_by(Dataset.name, Dataset.version)
        )
        if tier is not None:
            _tier_row(s, app, tier)
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
