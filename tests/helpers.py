"""Test helpers: workspaces, synthetic trees, and the invariant of the move protocol read back from bytes."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from tiering.app import App
from tiering.catalog.models import Dataset, Member, Replica, Tier
from tiering.catalog.states import TRUSTED_REPLICA_STATES
from tiering.catalog.usage import count_tier_usage, tier_usage
from tiering.config import Config, config_from_dict
from tiering.layout import MANIFEST_DIR
from tiering.storage.base import Backend
from tiering.transfer.hashing import hash_stream, xxh3_bytes


def make_tree(
    root: Path, files: int = 20, *, seed: int = 0, min_size: int = 0, max_size: int = 50_000
) -> dict[str, bytes]:
    """Random files under ``root`` (some in subdirectories); returns relative path -> bytes."""
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    for i in range(files):
        rel = f"part-{i % 3}/f{i:04d}.bin" if i % 2 else f"f{i:04d}.bin"
        data = rng.randbytes(rng.randint(min_size, max_size))
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[rel] = data
    return out


def workspace_config(
    tmp_path: Path,
    *,
    tiers: dict[str, dict[str, Any]] | None = None,
    catalog: str | None = None,
    transfer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config dict with file tiers hot/warm/cold under ``tmp_path`` unless ``tiers`` is given."""
    if tiers is None:
        tiers = {
            name: {"rank": rank, "backend": (tmp_path / "tiers" / name).as_uri()}
            for rank, name in enumerate(("hot", "warm", "cold"))
        }
    return {
        "catalog": catalog or f"sqlite:///{tmp_path / 'catalog.db'}",
        "tiers": tiers,
        "transfer": {"workers": 4, **(transfer or {})},
        "schedule": {"timezone": "UTC"},
    }


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "tiering.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def open_app(data: dict[str, Any], **kwargs: Any) -> App:
    config: Config = config_from_dict(data, source="test")
    return App.open(config, create=True, **kwargs)


@dataclass
class InvariantReport:
    members: int = 0
    bytes_checked: int = 0
    problems: list[str] = field(default_factory=list)
    stray_objects: list[str] = field(default_factory=list)


def check_invariant(app: App, *, allow_stray: bool = False) -> InvariantReport:
    """See module docstring; with ``allow_stray`` (right after a crash) extra objects and unfinished
    uploads are tolerated and left in place for recovery to find."""
    return _check_invariant(app, allow_stray=allow_stray)


def _check_invariant(app: App, *, allow_stray: bool) -> InvariantReport:
    """Read back every trusted replica: each member must have >= 1 whose bytes hash to the catalog digest,
    every trusted replica must hash right, the home tier must hold a trusted copy, and (unless allowed) no
    object on any tier may exist that the catalog does not know. The catalog's tier usage counters must
    equal the bytes of the replicas."""
    report = InvariantReport()
    known_keys: dict[str, set[str]] = {name: set() for name in app.config.tiers}
    with app.catalog.session() as s:
        datasets = list(s.scalars(select(Dataset)))
        rows = s.execute(
            select(Dataset.id, Dataset.home_tier_id, Member.id, Member.path, Member.size, Member.xxh3)
            .join(Member, Member.dataset_id == Dataset.id)
        ).all()
        replicas = s.execute(
            select(Replica.member_id, Tier.name, Tier.id, Replica.key, Replica.state, Replica.shard_offset)
            .join(Tier, Tier.id == Replica.tier_id)
        ).all()
    by_member: dict[int, list[Any]] = {}
    for r in replicas:
        by_member.setdefault(r[0], []).append(r)
        known_keys[r[1]].add(r[3])
    for ds_id, home_tier_id, mid, path, size, xxh3 in rows:
        report.members += 1
        good = 0
        home_ok = False
        for _mid, tier_name, tier_id, key, state, offset in by_member.get(mid, []):
            if state not in TRUSTED_REPLICA_STATES:
                continue
            backend = app.backend(tier_name)
            try:
                stream = backend.open_read(key, offset=offset or 0, length=size if offset is not None else None)
                digests = hash_stream(stream)
                stream.close()
            except Exception as exc:  # noqa: BLE001 - report, do not stop
                report.problems.append(f"{path} on {tier_name}: trusted replica unreadable: {exc}")
                continue
            report.bytes_checked += digests.size
            if digests.xxh3 != xxh3 or digests.size != size:
                report.problems.append(f"{path} on {tier_name}: trusted replica hashes to {digests.xxh3}")
                continue
            good += 1
            if tier_id == home_tier_id:
                home_ok = True
        if good == 0:
            report.problems.append(f"dataset {ds_id} member {path}: no verified copy")
        if not home_ok:
            report.problems.append(f"dataset {ds_id} member {path}: home tier holds no trusted copy")
    del datasets
    for tier_name in app.config.tiers:
        backend = app.backend(tier_name)
        for info in backend.list(""):
            if f"/{MANIFEST_DIR}/" in info.key or info.key.startswith(".tiering"):
                continue
            if info.key not in known_keys[tier_name]:
                report.stray_objects.append(f"{tier_name}:{info.key}")
        leftover = 0 if allow_stray else backend.abort_incomplete("")
        if leftover:
            report.problems.append(f"{tier_name}: {leftover} unfinished uploads were left behind")
    if not allow_stray and report.stray_objects:
        report.problems.append(f"objects the catalog does not know: {report.stray_objects[:10]}")
    with app.catalog.session() as s:
        counted, recounted = tier_usage(s), count_tier_usage(s)
    if counted != recounted:
        report.problems.append(f"tier usage counters {counted} differ from the replicas' bytes {recounted}")
    return report


class FixedClock:
    """A clock tests advance by hand; never sleeps."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += dt.timedelta(**kwargs)


def _cli_env(crash_at: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TIERING_CRASH_AT"}
    if crash_at:
        env["TIERING_CRASH_AT"] = crash_at
    return env


def run_cli(config: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiering", "--config", str(config), *args],
        env=_cli_env(crash_at), capture_output=True, text=True, timeout=120,
    )


def start_cli(config: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    """``tiering --config CONFIG ARGS...`` started and not waited for (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tiering", "--config", str(config), *args],
        env=_cli_env(crash_at), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def read_all(backend: Backend, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
    """The bytes of ``key`` (or of a range of it), read through the backend."""
    stream = backend.open_read(key, offset=offset, length=length)
    try:
        return stream.read()
    finally:
        stream.close()


@dataclass(frozen=True)
class S3TierView:
    """A tier seen from the outside: a plain boto3 client, its bucket and the tier's key prefix ("" or "p/")."""

    client: Any
    bucket: str
    prefix: str


@dataclass(frozen=True)
class SeaweedTiers:
    """``config``: the ``tiers:`` section of a tiering.yaml; ``views``: each tier seen through plain boto3."""

    config: dict[str, dict[str, Any]]
    views: dict[str, S3TierView]


def check_invariant_over_s3(
    catalog_url: str,
    tiers: dict[str, S3TierView],
    *,
    after_crash: bool,
    expected: dict[str, dict[str, bytes]] | None = None,
) -> list[str]:
    """The move protocol's invariant (DESIGN.md section 5), read back without any of tiering's backends.

    The catalog is read with plain SQL and every object with boto3; returns the problems found (empty: all
    well). Always checked: every member has >= 1 verified/live replica whose bytes hash (xxh3-128) to the
    catalog digest; every verified/live replica's object exists and hashes right; the home tier holds a
    trusted copy; with ``expected`` (label -> path -> bytes) the catalog's members and digests are those of
    the registered bytes. Unless ``after_crash``: no object on a tier outside the catalog's replica keys
    (a dataset's ``_tiering/manifest.json`` is allowed where the dataset has replicas), no replica left in an
    untrusted state, and no unfinished multipart upload.
    """
    from sqlalchemy import create_engine

    problems: list[str] = []
    engine = create_engine(catalog_url)
    try:
        with engine.connect() as conn:
            tier_names = dict(conn.execute(select(Tier.id, Tier.name)).all())
            datasets = {
                ds_id: (f"{name}@{version}", f"{kind}/{name}/{version}/", tier_names[home])
                for ds_id, name, version, kind, home in conn.execute(
                    select(Dataset.id, Dataset.name, Dataset.version, Dataset.kind, Dataset.home_tier_id)
                )
            }
            members = conn.execute(select(Member.id, Member.dataset_id, Member.path, Member.size, Member.xxh3)).all()
            replicas = conn.execute(
                select(Replica.member_id, Replica.tier_id, Replica.key, Replica.state, Replica.shard_offset)
            ).all()
    finally:
        engine.dispose()

    def digest_of(view: S3TierView, key: str) -> tuple[str, int] | str:
        try:
            body = view.client.get_object(Bucket=view.bucket, Key=view.prefix + key)["Body"]
        except view.client.exceptions.NoSuchKey:
            return "missing"
        try:
            d = hash_stream(body)
        finally:
            body.close()
        return d.xxh3, d.size

    trusted = {str(s) for s in TRUSTED_REPLICA_STATES}
    by_member: dict[int, list[Any]] = {}
    known: dict[str, set[str]] = {name: set() for name in tiers}
    tiers_of_dataset: dict[int, set[str]] = {}
    member_dataset = {mid: ds_id for mid, ds_id, *_ in members}
    for r in replicas:
        by_member.setdefault(r.member_id, []).append(r)
        known[tier_names[r.tier_id]].add(r.key)
        tiers_of_dataset.setdefault(member_dataset[r.member_id], set()).add(tier_names[r.tier_id])
        if not after_crash and r.state not in trusted:
            problems.append(f"replica {tier_names[r.tier_id]}:{r.key} left in state {r.state}")
    for mid, ds_id, path, size, xxh3 in members:
        label, _prefix, home = datasets[ds_id]
        good_tiers = []
        for r in by_member.get(mid, []):
            if r.state not in trusted:
                continue
            tier = tier_names[r.tier_id]
            assert r.shard_offset is None, "packed tiers are not part of this check"
            got = digest_of(tiers[tier], r.key)
            if got != (xxh3, size):
                problems.append(f"{label}:{path}: {r.state} replica {tier}:{r.key} is {got}, catalog says {xxh3}")
            else:
                good_tiers.append(tier)
        if not good_tiers:
            problems.append(f"{label}:{path}: no replica hashes to the catalog digest")
        elif home not in good_tiers:
            problems.append(f"{label}:{path}: the home tier {home} holds no verified copy")
    if expected is not None:
        by_label: dict[str, dict[str, str]] = {}
        for _mid, ds_id, path, _size, xxh3 in members:
            by_label.setdefault(datasets[ds_id][0], {})[path] = xxh3
        wanted = {label: {p: xxh3_bytes(b) for p, b in files.items()} for label, files in expected.items()}
        if by_label != wanted:
            problems.append(f"catalog members/digests differ from the registered bytes: {sorted(by_label)}")
    if after_crash:
        return problems
    manifests = {
        tier: {datasets[ds_id][1] + f"{MANIFEST_DIR}/manifest.json" for ds_id, on in tiers_of_dataset.items()
               if tier in on}
        for tier in tiers
    }
    for tier, view in tiers.items():
        paginator = view.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=view.bucket):
            for obj in page.get("Contents") or ():
                key = obj["Key"].removeprefix(view.prefix)
                if not obj["Key"].startswith(view.prefix) or (key not in known[tier] and key not in manifests[tier]):
                    problems.append(f"stray object on {tier}: {obj['Key']}")
        uploads = view.client.list_multipart_uploads(Bucket=view.bucket).get("Uploads") or []
        problems.extend(f"unfinished multipart upload on {tier}: {u['Key']}" for u in uploads)
    return problems
