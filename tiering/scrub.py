"""Scrub: compare the catalog with what the tiers hold, report every difference, and remove what nobody owns.

What a scrub finds (``Finding.kind``) and what ``fix`` does with it:

======================  ===================================================================  ==============
kind                    what                                                                 with ``fix``
======================  ===================================================================  ==============
``orphan_object``       an object under a dataset layout prefix (``dataset/``, ``model/``)   deleted (1)
                        or an adopted prefix that no replica, running step or registration
                        owns (a ``_tiering/manifest.json`` belongs to its dataset while the
                        dataset has a replica on that tier)
``unfinished_upload``   an S3 multipart upload under those prefixes never completed          aborted (1)
``missing_object``      a trusted (verified or live) replica whose object is not there       reported
``size_mismatch``       a trusted replica whose object has another size                      reported
``checksum_mismatch``   (``deep``) a trusted replica whose bytes hash to another xxh3-128    reported
``stale_registering``   a dataset still ``registering`` after the grace period               reported
``stale_job``           an unfinished move or restore job no live lease drives               reported
``stale_moving``        a dataset ``moving`` with no unfinished move job                     reported
``tier_error``          a tier that could not be listed                                      reported
======================  ===================================================================  ==============

(1) Only when it is older than the grace period (``older_than``, seconds), is not the destination of a step
in ``copying`` whose lease is live, lies under no prefix a registering dataset or an unfinished job towards
that tier writes to, and not inside an adopted prefix (those files were put there by people, not by us).
Ownership is checked again in the catalog just before anything is deleted. A scrub never deletes an object
a replica row names, so it never deletes a copy the catalog trusts.

The comparison is pure (:func:`compare_objects`, :func:`compare_uploads`, :func:`compare_work`: facts and
``now`` in, findings out); :func:`scrub` gathers the facts, reads bytes for ``deep``, and applies fixes.
Times are UTC; sizes are bytes; durations are seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiering.app import App
from tiering.catalog.models import Dataset, Member, MoveJob, MoveStep, Replica, Tier
from tiering.catalog.states import TRUSTED_REPLICA_STATES, UNFINISHED_JOB_STATES, DatasetState, StepState
from tiering.errors import ObjectNotFound, TieringError, UsageError
from tiering.layout import KINDS, MANIFEST_DIR, MANIFEST_NAME, dataset_prefix
from tiering.storage.base import IncompleteUpload, ListsIncompleteUploads, ObjectInfo, delete_keys, find_capability
from tiering.transfer.copier import Progress
from tiering.transfer.hashing import Digests
from tiering.transfer.verify import StoredObject, hash_many

log = logging.getLogger(__name__)

#: objects and uploads younger than this are never removed (seconds): a writer may be about to record them
DEFAULT_OLDER_THAN: Final = 3600.0
_MANIFEST_TAIL: Final = f"{MANIFEST_DIR}/{MANIFEST_NAME}"

ORPHAN_OBJECT: Final = "orphan_object"
UNFINISHED_UPLOAD: Final = "unfinished_upload"
MISSING_OBJECT: Final = "missing_object"
SIZE_MISMATCH: Final = "size_mismatch"
CHECKSUM_MISMATCH: Final = "checksum_mismatch"
STALE_REGISTERING: Final = "stale_registering"
STALE_JOB: Final = "stale_job"
STALE_MOVING: Final = "stale_moving"
TIER_ERROR: Final = "tier_error"


@dataclass
class Finding:
    """One difference between the catalog and a tier. ``fixable``: ``fix`` may remove it (else ``kept`` says
    why not); ``fixed``: it was removed by this scrub."""

    kind: str
    tier: str
    key: str = ""
    dataset: str = ""
    path: str = ""
    detail: str = ""
    fixable: bool = False
    kept: str = ""
    fixed: bool = False
    upload_id: str = ""

    def line(self) -> str:
        where = f"{self.tier}:{self.key}" if self.key else self.tier
        what = f" ({self.dataset}{':' + self.path if self.path else ''})" if self.dataset else ""
        state = " [removed]" if self.fixed else (f" [kept: {self.kept}]" if self.kept else "")
        return f"{self.kind}: {where}{what}{' ' + self.detail if self.detail else ''}{state}"


# ------------------------------------------------------------------------------------------ facts (pure)


@dataclass(frozen=True)
class ReplicaFact:
    """A replica row on the tier scrubbed: its key, state, the member's bytes and digest."""

    key: str
    state: str
    size: int
    xxh3: str
    offset: int | None
    dataset: str
    path: str

    @property
    def trusted(self) -> bool:
        return self.state in TRUSTED_REPLICA_STATES


@dataclass(frozen=True)
class PrefixFact:
    """A dataset's prefix on the tier scrubbed (its layout prefix, or the prefix it was adopted at)."""

    prefix: str
    dataset: str
    replicas_here: bool = False  # the dataset has a replica on this tier: its manifest belongs to it
    registering: bool = False  # a registration writes here and has not recorded its replicas yet
    adopted: bool = False
    busy: bool = False  # an unfinished move or restore job writes towards this tier


@dataclass
class TierFacts:
    tier: str
    replicas: list[ReplicaFact] = field(default_factory=list)
    prefixes: dict[str, PrefixFact] = field(default_factory=dict)
    #: destination keys of steps in ``copying`` whose lease is live: a running job may be writing them
    live_step_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DatasetFact:
    label: str
    state: str
    created_at: dt.datetime
    has_unfinished_move: bool


@dataclass(frozen=True)
class JobFact:
    id: int
    dataset: str
    purpose: str
    state: str
    dst_tier: str
    updated_at: dt.datetime
    live_leases: int


def _owning_prefix(key: str, prefixes: Mapping[str, PrefixFact]) -> PrefixFact | None:
    """The longest known prefix ``key`` lies under (prefixes end in ``/``, or are ``""``)."""
    cut = len(key)
    while cut > 0:
        cut = key.rfind("/", 0, cut)
        if cut < 0:
            break
        found = prefixes.get(key[:cut + 1])
        if found is not None:
            return found
    return prefixes.get("")


_UNITS: Final = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``"3600"``, ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` -> seconds. Raises ``UsageError``."""
    value = text.strip().lower()
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = value[len(number):]
    try:
        seconds = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise UsageError(f"invalid duration {text!r}: expected e.g. 0, 90s, 30m, 1h or 2d") from None
    if seconds < 0:
        raise UsageError(f"invalid duration {text!r}: must not be negative")
    return seconds


def _old_enough(when: dt.datetime | None, now: dt.datetime, older_than: float) -> bool:
    if when is None:
        return older_than <= 0
    return (now - when).total_seconds() >= older_than


def compare_objects(
    facts: TierFacts, objects: Iterable[ObjectInfo], *, now: dt.datetime, older_than: float,
) -> list[Finding]:
    """Orphan objects, and trusted replicas whose object is missing or has another size.

    ``objects`` must hold every object under the prefixes scrubbed and every trusted replica's key.
    """
    findings: list[Finding] = []
    owned = {r.key for r in facts.replicas}
    present: dict[str, int] = {}
    for info in objects:
        present[info.key] = info.size
        if info.key in owned or info.key in facts.live_step_keys:
            continue
        if info.key == _MANIFEST_TAIL or info.key.endswith("/" + _MANIFEST_TAIL):
            pf = facts.prefixes.get(info.key[:-len(_MANIFEST_TAIL)])
            if pf is not None and (pf.replicas_here or pf.registering):
                continue
        pf = _owning_prefix(info.key, facts.prefixes)
        if pf is not None and pf.registering:
            continue  # reported once as stale_registering when it lasts; the same register finishes it
        kept = ""
        if pf is not None and pf.adopted:
            kept = f"inside the prefix {pf.dataset} was adopted at: put there by people, not by tiering"
        elif pf is not None and pf.busy:
            kept = f"a job of {pf.dataset} towards this tier is unfinished"
        elif not _old_enough(info.modified, now, older_than):
            kept = f"younger than {older_than:g} s"
        findings.append(Finding(
            ORPHAN_OBJECT, facts.tier, info.key, dataset=pf.dataset if pf else "",
            detail=f"{info.size} bytes, no replica owns it", fixable=not kept, kept=kept,
        ))
    for r in facts.replicas:
        if not r.trusted:
            continue
        size = present.get(r.key)
        if size is None:
            findings.append(Finding(MISSING_OBJECT, facts.tier, r.key, r.dataset, r.path,
                                    f"{r.state} replica of {r.size} bytes has no object"))
        elif r.offset is not None and r.offset + r.size > size:
            findings.append(Finding(SIZE_MISMATCH, facts.tier, r.key, r.dataset, r.path,
                                    f"shard of {size} bytes ends before the member's {r.size} bytes at "
                                    f"offset {r.offset}"))
        elif r.offset is None and size != r.size:
            findings.append(Finding(SIZE_MISMATCH, facts.tier, r.key, r.dataset, r.path,
                                    f"{size} bytes, the catalog says {r.size}"))
    return findings


def compare_uploads(
    facts: TierFacts, uploads: Iterable[IncompleteUpload], *, now: dt.datetime, older_than: float,
) -> list[Finding]:
    """Unfinished uploads; removable when older than ``older_than`` and no live step writes their key."""
    findings: list[Finding] = []
    for u in uploads:
        pf = _owning_prefix(u.key, facts.prefixes)
        kept = ""
        if u.key in facts.live_step_keys:
            kept = "a step with a live lease is writing it"
        elif pf is not None and pf.registering:
            kept = f"{pf.dataset} is being registered"
        elif not _old_enough(u.initiated, now, older_than):
            kept = f"younger than {older_than:g} s"
        began = u.initiated.isoformat(timespec="seconds") if u.initiated else "at an unknown time"
        findings.append(Finding(
            UNFINISHED_UPLOAD, facts.tier, u.key, dataset=pf.dataset if pf else "",
            detail=f"multipart upload begun {began}", fixable=not kept, kept=kept, upload_id=u.upload_id,
        ))
    return findings


def compare_work(
    datasets: Iterable[DatasetFact], jobs: Iterable[JobFact], *, now: dt.datetime, older_than: float,
) -> list[Finding]:
    """Registrations left half done, jobs no worker drives, datasets stuck ``moving`` (all report-only)."""
    findings: list[Finding] = []
    for d in datasets:
        if d.state == DatasetState.REGISTERING and _old_enough(d.created_at, now, older_than):
            findings.append(Finding(
                STALE_REGISTERING, "", dataset=d.label,
                detail=f"registering since {d.created_at.isoformat(timespec='seconds')}: run the same "
                       "`tiering register` again to finish it"))
        elif d.state == DatasetState.MOVING and not d.has_unfinished_move:
            findings.append(Finding(STALE_MOVING, "", dataset=d.label,
                                    detail="state moving, but no unfinished move job"))
    for j in jobs:
        if j.live_leases == 0 and _old_enough(j.updated_at, now, older_than):
            how = "`tiering resume`" if j.purpose == "move" else "`tiering restores --dispatch`"
            findings.append(Finding(
                STALE_JOB, j.dst_tier, dataset=j.dataset,
                detail=f"{j.purpose} job {j.id} is {j.state} since {j.updated_at.isoformat(timespec='seconds')} "
                       f"and no worker holds a live lease: {how} finishes it"))
    return findings


# ------------------------------------------------------------------------------------------ the use case


@dataclass
class ScrubReport:
    """What one scrub looked at and found. ``unfixed`` findings make the CLI exit 1."""

    tiers: list[str]
    deep: bool
    fix: bool
    older_than: float
    objects_listed: int = 0
    uploads_listed: int = 0
    replicas_checked: int = 0
    bytes_read: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.findings).items()))

    @property
    def fixed(self) -> int:
        return sum(1 for f in self.findings if f.fixed)

    @property
    def unfixed(self) -> int:
        return len(self.findings) - self.fixed

    @property
    def ok(self) -> bool:
        return self.unfixed == 0

    def summary(self) -> str:
        head = (f"scrub of {', '.join(self.tiers) or 'no tier'}: {self.objects_listed} objects and "
                f"{self.uploads_listed} unfinished uploads listed, {self.replicas_checked} replicas checked"
                + (f", {self.bytes_read} bytes read" if self.deep else ""))
        if not self.findings:
            return head + ": clean"
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts.items())
        return f"{head}: {len(self.findings)} finding(s) ({kinds}); {self.fixed} fixed, {self.unfixed} left"

    def to_json(self) -> dict[str, Any]:
        return {
            "tiers": self.tiers, "deep": self.deep, "fix": self.fix, "older_than_seconds": self.older_than,
            "objects_listed": self.objects_listed, "uploads_listed": self.uploads_listed,
            "replicas_checked": self.replicas_checked, "bytes_read": self.bytes_read,
            "counts": self.counts, "fixed": self.fixed, "unfixed": self.unfixed, "ok": self.ok,
            "findings": [asdict(f) for f in self.findings],
        }


def scrub(
    app: App,
    *,
    tier: str | None = None,
    fix: bool = False,
    deep: bool = False,
    older_than: float = DEFAULT_OLDER_THAN,
    progress: Progress | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> ScrubReport:
    """Compare the catalog with every tier (or ``tier``); with ``fix`` remove orphans and old unfinished uploads.

    ``deep`` reads every trusted replica's bytes and compares their xxh3-128 (``progress`` counts them).
    ``on_phase`` receives one line as each phase starts (for a display on stderr). Raises ``TierNotFound``;
    a tier that cannot be listed is a ``tier_error`` finding, not an exception.
    """
    now = app.now()
    if tier is not None:
        app.config.tier(tier)  # raises TierNotFound naming the configured tiers
    names = [tier] if tier is not None else app.config.tiers_by_rank()
    say = on_phase or (lambda _line: None)
    report = ScrubReport(tiers=list(names), deep=deep, fix=fix, older_than=older_than)
    with app.catalog.session() as s:
        report.findings.extend(compare_work(*_work_facts(s, now), now=now, older_than=older_than))
    for name in names:
        say(f"scrub: listing tier {name}")
        try:
            _scrub_tier(app, name, report, now=now, fix=fix, deep=deep, older_than=older_than,
                        progress=progress, say=say)
        except TieringError as exc:
            report.findings.append(Finding(TIER_ERROR, name, detail=str(exc)))
    return report


def _scrub_tier(
    app: App, name: str, report: ScrubReport, *, now: dt.datetime, fix: bool, deep: bool, older_than: float,
    progress: Progress | None, say: Callable[[str], None],
) -> None:
    backend = app.backend(name)
    with app.catalog.session() as s:
        facts = _tier_facts(s, name, now)
    scanned = _scan_prefixes(facts)
    objects: dict[str, ObjectInfo] = {}
    for prefix in scanned:
        for info in backend.list(prefix):
            objects[info.key] = info
    report.objects_listed += len(objects)
    # a trusted replica outside the prefixes listed (none in the layouts we write) is asked for by name
    for r in facts.replicas:
        if r.trusted and r.key not in objects and not any(r.key.startswith(p) for p in scanned):
            with contextlib.suppress(ObjectNotFound):
                objects[r.key] = backend.head(r.key)
    say(f"scrub: {name}: {len(objects)} objects, {len(facts.replicas)} replicas")
    findings = compare_objects(facts, objects.values(), now=now, older_than=older_than)
    uploads: list[IncompleteUpload] = []
    lister = find_capability(backend, ListsIncompleteUploads)
    if lister is not None:
        for prefix in scanned:
            uploads.extend(lister.list_incomplete(prefix))
        report.uploads_listed += len(uploads)
        findings.extend(compare_uploads(facts, uploads, now=now, older_than=older_than))
    report.replicas_checked += sum(1 for r in facts.replicas if r.trusted)
    if deep and app.config.tier(name).archive != "glacier":  # archived objects cannot be read without a restore
        bad = {(f.key, f.path) for f in findings if f.kind in (MISSING_OBJECT, SIZE_MISMATCH)}
        findings.extend(_deep_check(app, name, [r for r in facts.replicas if r.trusted and (r.key, r.path) not in bad],
                                    report, progress=progress, say=say))
    if fix:
        _apply_fixes(app, name, findings, now=now, say=say)
    report.findings.extend(findings)


def _scan_prefixes(facts: TierFacts) -> list[str]:
    """The layout prefixes of every kind, and each adopted prefix not already under one of them."""
    scanned = [f"{kind}/" for kind in KINDS]
    for pf in sorted(facts.prefixes.values(), key=lambda p: p.prefix):
        if pf.adopted and not any(pf.prefix.startswith(p) for p in scanned):
            scanned.append(pf.prefix)
    if "" in scanned:
        return [""]
    return scanned


def _tier_facts(s: Session, name: str, now: dt.datetime) -> TierFacts:
    tier_id = s.scalars(select(Tier.id).where(Tier.name == name)).one()
    facts = TierFacts(name)
    labels: dict[int, str] = {}
    datasets = s.execute(select(Dataset.id, Dataset.kind, Dataset.name, Dataset.version, Dataset.state,
                                Dataset.location_prefix, Dataset.adopted, Dataset.home_tier_id)).all()
    for ds_id, _kind, ds_name, version, *_rest in datasets:
        labels[ds_id] = f"{ds_name}@{version}"
    for key, state, offset, size, xxh3, ds_id, path in s.execute(
        select(Replica.key, Replica.state, Replica.shard_offset, Member.size, Member.xxh3, Member.dataset_id,
               Member.path)
        .join(Member, Member.id == Replica.member_id)
        .where(Replica.tier_id == tier_id)
    ):
        facts.replicas.append(ReplicaFact(key, state, size, xxh3, offset, labels.get(ds_id, ""), path))
    here = set(s.scalars(select(Member.dataset_id).join(Replica, Replica.member_id == Member.id)
                         .where(Replica.tier_id == tier_id).distinct()))
    busy = set(s.scalars(select(MoveJob.dataset_id).where(
        MoveJob.dst_tier_id == tier_id, MoveJob.state.in_([str(x) for x in UNFINISHED_JOB_STATES]))))
    for ds_id, kind, ds_name, version, state, location, adopted, home in datasets:
        layout = dataset_prefix(kind, ds_name, version)
        fact = PrefixFact(layout, labels[ds_id], replicas_here=ds_id in here, busy=ds_id in busy,
                          registering=state == DatasetState.REGISTERING and home == tier_id)
        facts.prefixes.setdefault(layout, fact)
        if location and home == tier_id:  # an adopted dataset keeps its own prefix on its home tier
            facts.prefixes[location] = dataclasses.replace(fact, prefix=location, adopted=adopted)
    facts.live_step_keys = frozenset(s.scalars(
        select(MoveStep.dst_key).join(MoveJob, MoveJob.id == MoveStep.job_id)
        .where(MoveJob.dst_tier_id == tier_id, MoveStep.state == StepState.COPYING,
               MoveStep.lease_until >= now)))
    return facts


def _work_facts(s: Session, now: dt.datetime) -> tuple[list[DatasetFact], list[JobFact]]:
    unfinished = [str(x) for x in UNFINISHED_JOB_STATES]
    moving = set(s.scalars(select(MoveJob.dataset_id).where(MoveJob.state.in_(unfinished),
                                                             MoveJob.purpose == "move")))
    datasets = [
        DatasetFact(f"{n}@{v}", st, created, ds_id in moving)
        for ds_id, n, v, st, created in s.execute(
            select(Dataset.id, Dataset.name, Dataset.version, Dataset.state, Dataset.created_at)
            .where(Dataset.state.in_([DatasetState.REGISTERING, DatasetState.MOVING])))
    ]
    live = (select(MoveStep.id).where(MoveStep.job_id == MoveJob.id, MoveStep.state == StepState.COPYING,
                                      MoveStep.lease_until >= now).limit(1).exists())
    jobs = [
        JobFact(jid, f"{n}@{v}", purpose, state, tier_name, updated, 1 if has_live else 0)
        for jid, n, v, purpose, state, tier_name, updated, has_live in s.execute(
            select(MoveJob.id, Dataset.name, Dataset.version, MoveJob.purpose, MoveJob.state, Tier.name,
                   MoveJob.updated_at, live)
            .join(Dataset, Dataset.id == MoveJob.dataset_id).join(Tier, Tier.id == MoveJob.dst_tier_id)
            .where(MoveJob.state.in_(unfinished)).order_by(MoveJob.id))
    ]
    return datasets, jobs


def _deep_check(
    app: App, name: str, replicas: Sequence[ReplicaFact], report: ScrubReport, *, progress: Progress | None,
    say: Callable[[str], None],
) -> list[Finding]:
    backend = app.backend(name)
    if progress is not None:
        progress.total_bytes += sum(r.size for r in replicas)
        progress.total_objects += len(replicas)
    say(f"scrub: {name}: reading {len(replicas)} replicas")

    def finding_of(r: ReplicaFact, digests: Digests | TieringError) -> tuple[Finding | None, int]:
        if isinstance(digests, TieringError):
            return Finding(CHECKSUM_MISMATCH, name, r.key, r.dataset, r.path, f"unreadable: {digests}"), 0
        if digests.size != r.size or digests.xxh3 != r.xxh3:
            where = f" at offset {r.offset}" if r.offset is not None else ""
            return Finding(CHECKSUM_MISMATCH, name, r.key, r.dataset, r.path,
                           f"bytes{where} hash to {digests.xxh3} ({digests.size} bytes), the catalog says "
                           f"{r.xxh3} ({r.size} bytes)"), digests.size
        return None, digests.size

    objects = (StoredObject(backend, r.key, r.offset or 0, r.size if r.offset is not None else None)
               for r in replicas)
    found: list[Finding] = []
    for r, digests in zip(replicas, hash_many(objects, workers=max(1, app.config.transfer.workers)), strict=True):
        finding, nbytes = finding_of(r, digests)
        report.bytes_read += nbytes
        if progress is not None:
            progress.add(r.size, failed=finding is not None)
        if finding is not None:
            found.append(finding)
    return found


def _apply_fixes(app: App, name: str, findings: list[Finding], *, now: dt.datetime, say: Callable[[str], None]) -> None:
    """Delete the fixable orphans and abort the fixable uploads, after asking the catalog once more."""
    orphans = [f for f in findings if f.kind == ORPHAN_OBJECT and f.fixable]
    uploads = [f for f in findings if f.kind == UNFINISHED_UPLOAD and f.fixable]
    if not orphans and not uploads:
        return
    say(f"scrub: {name}: removing {len(orphans)} orphan objects, aborting {len(uploads)} uploads")
    with app.catalog.session() as s:
        fresh = _tier_facts(s, name, app.now())
    owned = _owned(fresh, [f.key for f in orphans])
    backend = app.backend(name)
    doomed: list[Finding] = []
    for f in orphans:
        pf = _owning_prefix(f.key, fresh.prefixes)
        if f.key in owned or f.key in fresh.live_step_keys or (pf is not None and (pf.busy or pf.registering)):
            f.fixable, f.kept = False, "owned again when checked before deleting"
            continue
        doomed.append(f)
    failed = delete_keys(backend, (f.key for f in doomed))
    for f in doomed:
        if f.key in failed:
            f.kept = f"delete failed: {failed[f.key]}"
        else:
            f.fixed = True
    lister = find_capability(backend, ListsIncompleteUploads)
    if lister is None:
        return
    for f in uploads:
        if f.key in fresh.live_step_keys:
            f.fixable, f.kept = False, "a step with a live lease is writing it"
            continue
        try:
            lister.abort_upload(f.key, f.upload_id)
            f.fixed = True
        except TieringError as exc:
            f.kept = f"abort failed: {exc}"


def _owned(facts: TierFacts, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` a replica row on the tier names, or a dataset owns as its manifest."""
    owned = {r.key for r in facts.replicas}
    found = {k for k in keys if k in owned}
    for k in keys:
        if k.endswith(_MANIFEST_TAIL):
            pf = facts.prefixes.get(k[:-len(_MANIFEST_TAIL)])
            if pf is not None and (pf.replicas_here or pf.registering):
                found.add(k)
    return found


__all__ = [
    "DEFAULT_OLDER_THAN",
    "DatasetFact",
    "Finding",
    "JobFact",
    "PrefixFact",
    "ReplicaFact",
    "ScrubReport",
    "TierFacts",
    "compare_objects",
    "compare_uploads",
    "compare_work",
    "parse_duration",
    "scrub",
]
