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
from tiering.backends.base import Backend
from tiering.catalog.models import Dataset, Member, Replica, Tier
from tiering.catalog.states import TRUSTED_REPLICA_STATES
from tiering.catalog.usage import count_tier_usage, tier_usage
from tiering.config import Config, config_from_dict
from tiering.hashing import hash_stream
from tiering.layout import MANIFEST_DIR


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


def run_cli(config: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIERING_CRASH_AT"}
    if crash_at:
        env["TIERING_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "tiering", "--config", str(config), *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


def read_all(backend: Backend, key: str, *, offset: int = 0, length: int | None = None) -> bytes:
    """The bytes of ``key`` (or of a range of it), read through the backend."""
    stream = backend.open_read(key, offset=offset, length=length)
    try:
        return stream.read()
    finally:
        stream.close()
