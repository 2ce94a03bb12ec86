"""Registration: a source (a local directory or file, or a prefix already on a tier) becomes a dataset.

Scan and hash the source, claim ownership of the destination prefix (so two registrations never write the same
keys), upload (small files preloaded, several at a time), then finish in one transaction, or undo what was
written. ``adopt=True`` takes a prefix already on a tier in place, after checking nothing else owns it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from sqlalchemy import and_, delete, func, insert, literal_column, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from tiering.app import App
from tiering.catalog.db import describe_db_error
from tiering.catalog.models import AuditEntry, Dataset, Member, Replica, Tier, TreeEntry
from tiering.catalog.states import DatasetState, ReplicaState
from tiering.datasets import find_tier
from tiering.errors import (
    CatalogError,
    DatasetExists,
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
    check_members_form_a_tree,
    check_name,
    check_owner,
    check_tags,
    content_digest,
    dataset_prefix,
    manifest_key,
    prefix_ancestors,
)
from tiering.moves.executor import lease_owner_is_dead, new_worker_id
from tiering.storage.base import Backend, delete_keys
from tiering.storage.tree import apply_tree, posix_entries, remove_tree, tree_rows
from tiering.transfer.control import JobControl, end_thread
from tiering.transfer.copier import Copier, CopyItem, Progress
from tiering.transfer.hashing import Digests
from tiering.transfer.sources import Preloaded, SourceFile, hash_all, member_path, scan_local

ProgressFactory = Callable[[str, Progress], Any]

log = logging.getLogger(__name__)


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
            SourceFile(member_path(source, info.key[len(rel_prefix):]), info.size, info.key)
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
        src_backend, files, tree_entries = scan_local(Path(source).expanduser(), follow_links=follow_links)
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
    digests, kept = hash_all(src_backend, files, workers, local=not adopt)
    content = content_digest((f.path, f.size, digests[f.path].xxh3) for f in files)
    total = sum(f.size for f in files)

    done = _take_ownership(app, claim, content)
    if done is not None:
        return done
    uploaded: list[str] = []
    applied: list[ManifestEntry] = []  # directories and links given to a directory tier
    control = JobControl()  # stopped with _OwnershipLost when the lease renewer finds the row taken over
    renewing = threading.Event()
    renewer = threading.Thread(target=_renew_lease, args=(app, claim, control, renewing), daemon=True)
    renewer.start()
    control.add_cleanup(end_thread, renewing, renewer)
    try:
        if not adopt:
            if progress is not None:
                progress.total_bytes, progress.total_objects = total, len(files)
            copy_from = cast(Backend, Preloaded(src_backend, kept)) if kept else src_backend
            copier = Copier(copy_from, dst_backend, workers=workers, verify=app.config.transfer.verify)
            uploaded = [prefix + f.path for f in files]
            items = (
                CopyItem(src_key=f.key, dst_key=prefix + f.path, size=f.size, expected_xxh3=digests[f.path].xxh3)
                for f in files
            )
            failures = [r for r in copier.copy_many(items, progress=progress, stop=control) if not r.ok]
            if control.exception is not None:
                raise control.exception
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
        with contextlib.suppress(TieringError, OSError):  # the error the user sees is the one that stopped it
            remove_tree(dst_backend, prefix, applied)
        if isinstance(exc, SQLAlchemyError):
            raise CatalogError(f"catalog refused registering {label}: {describe_db_error(exc)}") from exc
        raise
    finally:
        control.run_cleanups()
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


#: the longest object key S3 servers take (UTF-8 bytes; AWS, MinIO and SeaweedFS refuse longer ones)
S3_KEY_BYTES_MAX = 1024
#: the longest path a directory tier can open (Linux PATH_MAX, bytes)
FILE_PATH_BYTES_MAX = 4095


def _check_key_lengths(backend: Backend, tier: str, prefix: str, files: list[SourceFile]) -> None:
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
    if row is not None and row[0] == DatasetState.REGISTERING and not _owner_gone(row[1], row[2], app.now()):
        raise RegistrationInProgress(claim.label)
    _refuse_overlaps(s, claim)


def _refuse_overlaps(s: Session, claim: _Claim) -> None:
    """One prefix, one dataset. Moves write every dataset under its standard ``<kind>/<name>/<version>/``
    on whichever tier it goes to, so an adopted prefix may not overlap (contain, or sit inside) the standard
    prefix of any other dataset, on any tier; nor another adopted prefix on the same tier; nor any object
    the catalog holds on that tier. A plain registration's standard prefix may not overlap an adopted one."""
    others = and_(Dataset.state != DatasetState.DELETED,
                  or_(Dataset.name != claim.name, Dataset.version != claim.version))
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
            tier_row = find_tier(s, app, claim.tier)
            existing = s.scalars(
                select(Dataset).where(Dataset.name == claim.name, Dataset.version == claim.version)
            ).first()
            if existing is not None and existing.state != DatasetState.REGISTERING:
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
                s.add(Dataset(name=claim.name, version=claim.version, state=DatasetState.REGISTERING, **values))
                s.flush()
                return None
            if not existing.adopted:  # a crashed upload's objects; an adopted prefix holds the user's own
                stale = (existing.home_tier.name, dataset_prefix(existing.kind, claim.name, claim.version))
            previous = existing.registration_owner
            taken = s.execute(
                update(Dataset)
                .where(Dataset.id == existing.id, Dataset.state == DatasetState.REGISTERING,
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


def _renew_lease(app: App, claim: _Claim, control: JobControl, stop: threading.Event) -> None:
    """Extend the claim's lease every third of it until ``stop``; stops ``control`` with
    :class:`_OwnershipLost` if the row is not ours."""
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
                control.stop(_OwnershipLost(claim.label))
                return
        except (TieringError, SQLAlchemyError):
            log.warning("renewing the registration lease of %s failed; will retry", claim.label)


def _finish_registration(
    app: App, claim: _Claim, *, source: str, files: list[SourceFile], digests: dict[str, Digests],
    content: str, total: int, tree_entries: list[ManifestEntry],
) -> None:
    """One transaction: members, live replicas, the dataset active, an audit entry; only while the row
    is still this registration's (else :class:`_OwnershipLost`)."""
    now = app.now()
    with app.catalog.session() as s:
        row = s.execute(
            select(Dataset.id, Dataset.home_tier_id)
            .where(Dataset.name == claim.name, Dataset.version == claim.version,
                   Dataset.state == DatasetState.REGISTERING, Dataset.registration_owner == claim.token)
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
                state=DatasetState.ACTIVE, member_count=len(files), size_bytes=total, content_digest=content,
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
                Dataset.name == claim.name, Dataset.version == claim.version, Dataset.state == DatasetState.REGISTERING,
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
