"""`tiering scrub` over directory tiers with a SQLite catalog: orphans left by a move whose destination died,
planted orphans, a replica whose object was deleted, and --fix removing only what no dataset owns.

Every test reads the datasets' bytes back and hashes them after a fix.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from helpers import make_tree, open_app, read_all, run_cli, workspace_config, write_config
from sqlalchemy import select, update

from tiering import datasets, registration
from tiering.app import App
from tiering.catalog.models import Dataset, MoveJob
from tiering.errors import BackendError, Unreachable
from tiering.lifecycle import load_policy
from tiering.lifecycle.nightly import nightly_cycle
from tiering.scrub import scrub
from tiering.storage import FaultyBackend
from tiering.storage.base import Backend, ObjectInfo, ReadStream
from tiering.transfer.hashing import xxh3_bytes


class DyingBackend(FaultyBackend):
    """A tier whose endpoint dies after ``puts`` successful writes: every later call raises ``Unreachable``."""

    def __init__(self, inner: Backend, puts: int) -> None:
        super().__init__(inner)
        self.left = puts

    def _check(self, key: str) -> None:
        if self.left <= 0:
            raise Unreachable("connection refused (injected)", backend=self.url, key=key)

    def put(self, key: str, body: BinaryIO | ReadStream, **kwargs: Any) -> bool:
        self._check(key)
        self.left -= 1
        return super().put(key, body, **kwargs)

    def delete(self, key: str) -> None:
        self._check(key)
        super().delete(key)

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        self._check(keys[0] if keys else "")
        return super().delete_many(keys)

    def abort_incomplete(self, prefix: str = "") -> int:
        self._check(prefix)
        return super().abort_incomplete(prefix)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._check(prefix)
        return super().list(prefix)


def assert_readable(app: App, label: str, files: dict[str, bytes]) -> None:
    """Every member of ``label`` reads back, verified, with the bytes registered."""
    for path, data in files.items():
        out = io.BytesIO()
        datasets.read_member(app, label, path, out)
        assert xxh3_bytes(out.getvalue()) == xxh3_bytes(data), path


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Any]:
    return workspace_config(tmp_path)


def test_a_move_whose_destination_died_leaves_orphans_that_scrub_reports_and_fix_removes(
    tmp_path: Path, workspace: dict[str, Any]
) -> None:
    d_files = make_tree(tmp_path / "d", 12, seed=1, min_size=1000)
    e_files = make_tree(tmp_path / "e", 5, seed=2, min_size=1000)
    app = open_app(workspace)
    registration.register(app, str(tmp_path / "d"), name="d", version="1", tier="hot")
    registration.register(app, str(tmp_path / "e"), name="e", version="1", tier="warm")
    app.close()

    def dying_warm(tier: str, backend: Backend) -> Backend:
        return DyingBackend(backend, puts=4) if tier == "warm" else backend

    app = open_app(workspace, backend_wrapper=dying_warm)
    assert datasets.move(app, "d@1", to="warm").state == "failed"
    app.close()

    app = open_app(workspace)  # the endpoint is back, the process restarted
    try:
        assert datasets.resume(app) == []
        warm = app.backend("warm")
        left = sorted(i.key for i in warm.list("dataset/d/1/"))
        assert left, "the failed move left objects on the destination"
        # plant an orphan, and remove a replica's object
        warm.put("dataset/ghost/7/lost.bin", io.BytesIO(b"x" * 100), size=100)
        gone = sorted(e_files)[0]
        warm.delete(f"dataset/e/1/{gone}")

        report = scrub(app)
        orphans = sorted(f.key for f in report.findings if f.kind == "orphan_object")
        assert orphans == sorted([*left, "dataset/ghost/7/lost.bin"])
        missing = [(f.tier, f.dataset, f.path) for f in report.findings if f.kind == "missing_object"]
        assert missing == [("warm", "e@1", gone)]
        assert report.counts == {"missing_object": 1, "orphan_object": len(left) + 1}
        assert not report.ok

        # objects written moments ago are left alone by default: a writer may be about to record them
        careful = scrub(app, fix=True)
        assert careful.fixed == 0
        assert {f.kept for f in careful.findings if f.kind == "orphan_object"} == {"younger than 3600 s"}

        fixed = scrub(app, fix=True, older_than=0)
        assert sorted(f.key for f in fixed.findings if f.fixed) == orphans
        assert [f.kind for f in fixed.findings if not f.fixed] == ["missing_object"]
        assert sorted(i.key for i in warm.list("dataset/d/")) == []
        assert list(warm.list("dataset/ghost/")) == []
        # every dataset's bytes still read back; e's manifest and other members stayed
        assert_readable(app, "d@1", d_files)
        assert_readable(app, "e@1", {p: b for p, b in e_files.items() if p != gone})
        assert read_all(warm, "dataset/e/1/_tiering/manifest.json")

        after = scrub(app)
        assert after.counts == {"missing_object": 1}
    finally:
        app.close()


def test_the_scrub_command_prints_one_line_per_finding_and_a_summary_and_exits_1_until_clean(
    tmp_path: Path, workspace: dict[str, Any]
) -> None:
    files = make_tree(tmp_path / "d", 4, seed=3, min_size=10)
    config = write_config(tmp_path, workspace)
    app = open_app(workspace)
    try:
        registration.register(app, str(tmp_path / "d"), name="d", version="1", tier="hot")
        app.backend("hot").put("model/old/2/w.bin", io.BytesIO(b"w" * 10), size=10)
    finally:
        app.close()

    clean_warm = run_cli(config, "scrub", "--tier", "warm")
    assert clean_warm.returncode == 0, clean_warm.stderr
    assert clean_warm.stdout.strip().endswith(": clean")

    found = run_cli(config, "scrub", "--json")
    assert found.returncode == 1, found.stderr
    doc = json.loads(found.stdout)
    assert doc["counts"] == {"orphan_object": 1}
    assert doc["findings"][0]["key"] == "model/old/2/w.bin" and doc["findings"][0]["tier"] == "hot"

    fixed = run_cli(config, "scrub", "--fix", "--older-than", "0")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    lines = fixed.stdout.strip().splitlines()
    assert lines[0].strip().startswith("orphan_object: hot:model/old/2/w.bin") and "[removed]" in lines[0]
    assert "1 fixed, 0 left" in lines[-1]
    assert run_cli(config, "scrub").returncode == 0

    bad = run_cli(config, "scrub", "--older-than", "soon")
    assert bad.returncode == 2 and "invalid duration" in bad.stderr
    app = open_app(workspace)
    try:
        assert_readable(app, "d@1", files)
    finally:
        app.close()


def test_a_deep_scrub_finds_a_replica_whose_bytes_changed_and_fix_never_touches_it(
    tmp_path: Path, workspace: dict[str, Any]
) -> None:
    files = make_tree(tmp_path / "d", 6, seed=4, min_size=100)
    app = open_app(workspace)
    try:
        registration.register(app, str(tmp_path / "d"), name="d", version="1", tier="hot")
        victim = sorted(files)[2]
        path = tmp_path / "tiers/hot/dataset/d/1" / victim
        raw = bytearray(path.read_bytes())
        raw[0] ^= 0xFF
        path.write_bytes(bytes(raw))

        assert scrub(app).ok  # same size: only reading the bytes tells
        deep = scrub(app, deep=True, fix=True, older_than=0)
        assert [(f.kind, f.path, f.fixed) for f in deep.findings] == [("checksum_mismatch", victim, False)]
        assert deep.bytes_read == sum(len(b) for b in files.values())
        assert path.read_bytes() == bytes(raw)  # reported, never deleted
    finally:
        app.close()


def test_stale_registrations_and_jobs_no_lease_drives_are_reported(tmp_path: Path, workspace: dict[str, Any]) -> None:
    make_tree(tmp_path / "d", 3, seed=5)
    app = open_app(workspace)
    try:
        registration.register(app, str(tmp_path / "d"), name="d", version="1", tier="hot")
        registration.register(app, str(tmp_path / "d"), name="r", version="1", tier="hot")
        job_id = datasets.Executor(app).create_job(_dataset_id(app, "d"), "warm")
        long_ago = app.now() - dt.timedelta(hours=3)
        with app.catalog.session() as s:
            s.execute(update(MoveJob).where(MoveJob.id == job_id).values(updated_at=long_ago))
            s.execute(update(Dataset).where(Dataset.name == "r").values(state="registering", created_at=long_ago))
        report = scrub(app, tier="hot")
        kinds = {(f.kind, f.dataset) for f in report.findings}
        assert kinds == {("stale_job", "d@1"), ("stale_registering", "r@1")}
        stale = next(f for f in report.findings if f.kind == "stale_job")
        assert f"move job {job_id} is planned" in stale.detail and "tiering resume" in stale.detail
        # objects of a registering dataset are its own, not orphans
        assert not [f for f in report.findings if f.kind == "orphan_object"]
    finally:
        app.close()


def test_the_nightly_run_records_the_scrub_findings_in_its_summary(tmp_path: Path, workspace: dict[str, Any]) -> None:
    app = open_app(workspace)
    try:
        app.backend("warm").put("dataset/ghost/1/a.bin", io.BytesIO(b"a"), size=1)
        policy = load_policy(Path(__file__).parents[2] / "policies/default.yaml")
        result = nightly_cycle(app, policy=policy, ignore_window=True)
        from tiering.catalog.models import PolicyRun

        with app.catalog.session() as s:
            run = s.get_one(PolicyRun, result.run_id)
            summary = run.summary
        assert summary["scrub"]["counts"] == {"orphan_object": 1}
        assert summary["scrub"]["unfixed"] == 1
        assert app.backend("warm").head("dataset/ghost/1/a.bin").size == 1  # report mode: nothing removed
    finally:
        app.close()


def _dataset_id(app: App, name: str) -> int:
    with app.catalog.session() as s:
        return int(s.scalars(select(Dataset.id).where(Dataset.name == name)).one())
