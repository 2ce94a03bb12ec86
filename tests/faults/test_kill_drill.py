"""The SIGKILL drill: real `tiering move` processes between two SeaweedFS tiers, over a PostgreSQL catalog,
killed at seeded random moments and at every named crash point; `tiering resume` finishes each job.

After every kill, and again after every recovery, the invariant of DESIGN.md section 5 is checked from the
outside (plain SQL on the catalog, boto3 on both buckets, xxh3-128 of every byte). Moves alternate between
hot -> warm and warm -> hot, so each server is source and destination in turn.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    SeaweedTiers,
    check_invariant_over_s3,
    open_app,
    run_cli,
    start_cli,
    workspace_config,
    write_config,
)
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from tiering import registration
from tiering.catalog.models import Dataset, MoveJob, Tier
from tiering.faults import CRASH_POINTS
from tiering.transfer.hashing import xxh3_bytes

pytestmark = pytest.mark.slow

SEED = 20240613
#: kills at a random moment; with one kill at each named point this makes the drill's >= 20 kill points
TIMED_KILLS = 14
MIN_KILLS_REACHED = 20
#: timed kills added when some planned ones came after their move had ended
EXTRA_TIMED_KILLS = 8
MiB = 2**20
#: part size and threshold at the S3 minimum, so a few 5-12 MiB members take multipart uploads
TRANSFER = {"workers": 8, "part_size": "5MiB", "multipart_threshold": "5MiB"}
MOVE_CRASH_POINTS = [p for p in CRASH_POINTS if not p.startswith("restore")]


def drill_datasets(rng: random.Random) -> dict[str, dict[str, bytes]]:
    """Three shapes: many small files, a few multipart-sized ones, and a deep tree (label -> path -> bytes)."""
    small = {f"shard-{i % 4}/rec{i:04d}.json": rng.randbytes(rng.randint(0, 6_000)) for i in range(60)}
    weights = {
        "model.safetensors": rng.randbytes(11 * MiB + 3),
        "tokenizer.json": rng.randbytes(20_000),
        "ema/model.safetensors": rng.randbytes(5 * MiB),
    }
    nested = {
        f"{'/'.join(f'd{j}' for j in range(depth))}/f{i}.bin": rng.randbytes(rng.randint(1, 60_000))
        for i in range(24) for depth in [1 + i % 6]
    }
    nested["a/b/c/d/e/big.bin"] = rng.randbytes(5 * MiB + 777)
    return {"many-small@1": small, "weights@2": weights, "deep-tree@3": nested}


@dataclass
class Kill:
    """One kill: at a named crash point (``crash_at``), or ``fraction`` of the way through a move job's run."""

    crash_at: str | None = None
    fraction: float = 0.0

    def describe(self) -> str:
        return self.crash_at or f"{self.fraction:.0%} into the job"


def kill_plan(rng: random.Random, datasets: dict[str, dict[str, bytes]]) -> list[Kill]:
    """Every named point once (a random n-th hit where a point is hit once per member), plus timed kills."""
    fewest = min(len(files) for files in datasets.values())
    kills = [
        Kill(f"{p}:{rng.randint(1, fewest)}" if p in ("after_copy", "during_copy") else p) for p in MOVE_CRASH_POINTS
    ]
    kills += [Kill(fraction=rng.random()) for _ in range(TIMED_KILLS)]
    rng.shuffle(kills)
    return kills


class CatalogView:
    """What the drill asks the catalog between kills, with plain SQL."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)

    def homes(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {
                f"{name}@{version}": tier
                for name, version, tier in conn.execute(
                    select(Dataset.name, Dataset.version, Tier.name).join(Tier, Tier.id == Dataset.home_tier_id)
                )
            }

    def last_job(self, label: str) -> tuple[int, str] | None:
        """(id, state) of the newest move job of ``label``."""
        name, version = label.split("@")
        with self.engine.connect() as conn:
            row = conn.execute(
                select(MoveJob.id, MoveJob.state).join(Dataset, Dataset.id == MoveJob.dataset_id)
                .where(Dataset.name == name, Dataset.version == version).order_by(MoveJob.id.desc()).limit(1)
            ).first()
        return None if row is None else (row[0], row[1])


@dataclass
class KillResult:
    killed: bool  # killed while it ran (not after it ended by itself)
    job_seconds: float | None  # how long its job ran, when it ended by itself
    stderr: str


def run_until_killed(
    config: Path, catalog: CatalogView, label: str, dst: str, kill: Kill, *, job_seconds: float
) -> KillResult:
    """Start `tiering move` and kill it as planned: a named point kills itself; a timed kill waits until the
    process has written its job (a process killed while it starts up has done nothing worth testing), then
    ``kill.fraction`` of ``job_seconds``, the time a whole job of this dataset takes."""
    before = catalog.last_job(label)
    proc = start_cli(config, "move", label, "--to", dst, "--no-progress", crash_at=kill.crash_at)
    job_started: float | None = None
    try:
        if kill.crash_at is None:
            while proc.poll() is None and job_started is None:
                if catalog.last_job(label) != before:
                    job_started = time.monotonic()
                else:
                    time.sleep(0.02)
            if job_started is not None:
                try:
                    proc.wait(timeout=kill.fraction * job_seconds)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"move {label} -> {dst} ({kill.describe()}) exited {proc.returncode}: {err}")
    killed = proc.returncode == -signal.SIGKILL
    ran = time.monotonic() - job_started if job_started is not None and not killed else None
    return KillResult(killed, ran, err)


def test_moves_killed_at_random_moments_and_at_every_named_step_lose_no_byte_and_leave_nothing_behind(
    tmp_path: Path, seaweed_tiers: SeaweedTiers, postgres_url: str
) -> None:
    rng = random.Random(SEED)
    data: dict[str, Any] = workspace_config(tmp_path, tiers=seaweed_tiers.config, catalog=postgres_url,
                                            transfer=TRANSFER)
    config = write_config(tmp_path, data)
    datasets = drill_datasets(rng)
    # two on hot, one on warm: each kill moves one dataset across, alternately hot -> warm and warm -> hot,
    # so both sides always hold one to move
    start_tier = {"many-small@1": "hot", "weights@2": "warm", "deep-tree@3": "hot"}
    app = open_app(data)
    try:
        for label, files in datasets.items():
            root = tmp_path / "src" / label
            for rel, payload in files.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(payload)
            name, version = label.split("@")
            registration.register(app, str(root), name=name, version=version, tier=start_tier[label])
    finally:
        app.close()
    views = seaweed_tiers.views
    assert check_invariant_over_s3(postgres_url, views, after_crash=False, expected=datasets) == []

    started = time.monotonic()
    catalog = CatalogView(postgres_url)
    reached: list[str] = []
    missed: list[str] = []
    caught: Counter[str] = Counter()  # the state the killed job was left in
    left_uploads = 0  # unfinished multipart uploads found right after the kills (recovery must abort them)
    directions: Counter[tuple[str, str]] = Counter()
    # how long a whole job of each dataset runs, learnt from timed kills that came too late
    job_seconds: dict[str, float] = dict.fromkeys(datasets, 1.0)
    plan = kill_plan(rng, datasets)
    i = 0
    while i < len(plan) or (len(reached) < MIN_KILLS_REACHED and i < len(plan) + EXTRA_TIMED_KILLS):
        kill = plan[i] if i < len(plan) else Kill(fraction=rng.random())
        src, dst = ("hot", "warm") if i % 2 == 0 else ("warm", "hot")
        label = rng.choice(sorted(lb for lb, tier in catalog.homes().items() if tier == src))
        where = f"kill {i} ({kill.describe()}) of move {label} {src} -> {dst}"
        i += 1

        result = run_until_killed(config, catalog, label, dst, kill, job_seconds=job_seconds[label])
        if kill.crash_at is not None:
            assert result.killed, f"{where}: the named point was not reached: {result.stderr}"
        if result.killed:
            reached.append(kill.describe())
            job = catalog.last_job(label)
            caught[job[1] if job else "no job"] += 1
        else:
            missed.append(kill.describe())
            job_seconds[label] = result.job_seconds or job_seconds[label]
        problems = check_invariant_over_s3(postgres_url, views, after_crash=True, expected=datasets)
        assert problems == [], f"right after {where}: {problems}"
        left_uploads += sum(len(v.client.list_multipart_uploads(Bucket=v.bucket).get("Uploads") or ())
                            for v in views.values())

        resumed = run_cli(config, "resume", "--no-progress")
        assert resumed.returncode == 0, f"resume after {where}: {resumed.stderr}"
        if catalog.homes()[label] != dst:  # killed before its job was written: move again
            again = run_cli(config, "move", label, "--to", dst, "--no-progress")
            assert again.returncode == 0, f"move again after {where}: {again.stderr}"
        assert catalog.homes()[label] == dst, where
        directions[(src, dst)] += 1
        problems = check_invariant_over_s3(postgres_url, views, after_crash=False, expected=datasets)
        assert problems == [], f"after recovery from {where}: {problems}"

    print(f"\nkill drill: {len(reached)} kill points reached ({sum(k[0].isalpha() for k in reached)} named), "
          f"jobs left {dict(caught)}, {left_uploads} unfinished uploads left; {len(missed)} moves ended before their "
          "kill; "
          f"{time.monotonic() - started:.0f} s; {dict(directions)}")
    assert len(reached) >= MIN_KILLS_REACHED, (reached, missed)
    assert directions[("hot", "warm")] >= 10 and directions[("warm", "hot")] >= 10
    # every dataset read back whole from its home tier, byte for byte
    homes = catalog.homes()
    for label, files in datasets.items():
        name, version = label.split("@")
        view = views[homes[label]]
        for rel, payload in files.items():
            key = f"{view.prefix}dataset/{name}/{version}/{rel}"
            assert view.client.get_object(Bucket=view.bucket, Key=key)["Body"].read() == payload, key


def test_the_outside_check_finds_a_corrupt_replica_a_stray_object_a_stale_manifest_and_an_unfinished_upload(
    tmp_path: Path, seaweed_tiers: SeaweedTiers, postgres_url: str
) -> None:
    data: dict[str, Any] = workspace_config(tmp_path, tiers=seaweed_tiers.config, catalog=postgres_url,
                                            transfer=TRANSFER)
    files = {"a.bin": b"a" * 1000, "sub/b.bin": b"b" * 2000}
    app = open_app(data)
    try:
        for rel, payload in files.items():
            (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "src" / rel).write_bytes(payload)
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    finally:
        app.close()
    hot, warm = seaweed_tiers.views["hot"], seaweed_tiers.views["warm"]
    expected = {"d@1": files}
    assert check_invariant_over_s3(postgres_url, seaweed_tiers.views, after_crash=False, expected=expected) == []

    hot.client.put_object(Bucket=hot.bucket, Key=f"{hot.prefix}dataset/d/1/sub/b.bin", Body=b"B" * 2000)
    warm.client.put_object(Bucket=warm.bucket, Key=f"{warm.prefix}dataset/d/1/a.bin", Body=b"a" * 1000)
    warm.client.put_object(Bucket=warm.bucket, Key=f"{warm.prefix}dataset/d/1/_tiering/manifest.json", Body=b"{}")
    warm.client.create_multipart_upload(Bucket=warm.bucket, Key=f"{warm.prefix}dataset/d/1/big.bin")

    after_crash = check_invariant_over_s3(postgres_url, seaweed_tiers.views, after_crash=True, expected=expected)
    assert after_crash == [
        "d@1:sub/b.bin: live replica hot:dataset/d/1/sub/b.bin is "
        f"{(xxh3_bytes(b'B' * 2000), 2000)}, catalog says {xxh3_bytes(files['sub/b.bin'])}",
        "d@1:sub/b.bin: no replica hashes to the catalog digest",
    ]
    problems = check_invariant_over_s3(postgres_url, seaweed_tiers.views, after_crash=False, expected=expected)
    assert problems[2:] == [
        f"stray object on warm: {warm.prefix}dataset/d/1/_tiering/manifest.json",
        f"stray object on warm: {warm.prefix}dataset/d/1/a.bin",
        f"unfinished multipart upload on warm: {warm.prefix}dataset/d/1/big.bin",
    ]
