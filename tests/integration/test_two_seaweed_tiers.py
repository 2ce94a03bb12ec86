"""End to end on real servers: two independent SeaweedFS servers as hot and warm, SQLite and PostgreSQL
catalogs, a crash in the middle of a move, and a second client (minio-py) reading what we wrote."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import check_invariant, make_tree, open_app, run_cli, workspace_config, write_config
from servers import SeaweedServer

from tiering import datasets, registration
from tiering.storage import FaultyBackend
from tiering.storage.base import Backend


def _register_and_move_round_trip(tmp_path: Path, data: dict[str, Any]) -> None:
    files = make_tree(tmp_path / "src", 40, seed=21, max_size=200_000)
    files["weights/model.bin"] = os.urandom(12 * 2**20 + 5)  # above the multipart threshold below
    (tmp_path / "src/weights").mkdir(exist_ok=True)
    (tmp_path / "src/weights/model.bin").write_bytes(files["weights/model.bin"])
    app = open_app(data)
    try:
        r = registration.register(app, str(tmp_path / "src"), name="imagenet-mini", version="2024-01", tier="hot",
                          tags={"team": "vision"})
        assert r.members == len(files)
        assert datasets.move(app, "imagenet-mini@2024-01", to="warm").state == "done"
        where = datasets.resolve(app, "imagenet-mini")
        assert (where.tier, where.url) == ("warm", f"s3://{data['tiers']['warm']['backend'][5:]}/dataset/imagenet-mini/2024-01/")
        assert list(app.backend("hot").list("dataset/")) == []
        for rel, payload in files.items():
            stream = app.backend("warm").open_read(f"dataset/imagenet-mini/2024-01/{rel}")
            assert stream.read() == payload
            stream.close()
        assert datasets.move(app, "imagenet-mini", to="hot").state == "done"
        assert datasets.verify(app, "imagenet-mini").ok
        report = check_invariant(app)
        assert report.problems == [] and report.members == len(files)
    finally:
        app.close()


def test_register_and_move_between_two_seaweed_servers_with_sqlite(
    tmp_path: Path, s3_tiers: dict[str, Any]
) -> None:
    data = workspace_config(tmp_path, tiers=s3_tiers, transfer={"multipart_threshold": "8MiB", "part_size": "5MiB"})
    _register_and_move_round_trip(tmp_path, data)


def test_register_and_move_between_two_seaweed_servers_with_postgres(
    tmp_path: Path, s3_tiers: dict[str, Any], postgres_url: str
) -> None:
    data = workspace_config(tmp_path, tiers=s3_tiers, catalog=postgres_url,
                            transfer={"multipart_threshold": "8MiB", "part_size": "5MiB"})
    _register_and_move_round_trip(tmp_path, data)


def test_bytes_corrupted_on_the_way_to_seaweed_are_refused_before_they_are_stored_without_reading_back(
    tmp_path: Path, s3_tiers: dict[str, Any]
) -> None:
    files = make_tree(tmp_path / "src", 5, seed=23, min_size=1000)
    warm: list[FaultyBackend] = []

    def corrupt_warm(tier: str, backend: Backend) -> Backend:
        if tier != "warm":
            return backend
        warm.append(FaultyBackend(backend, corrupt_writes=True))
        return warm[-1]

    app = open_app(workspace_config(tmp_path, tiers=s3_tiers), backend_wrapper=corrupt_warm)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        outcome = datasets.move(app, "d@1", to="warm")
        assert outcome.state == "failed" and "checksum_mismatch" in (outcome.error or "")
        assert "nothing was stored" in (outcome.error or "")  # refused before the write, not found by a re-read
        assert sum(w.calls.get("open_read", 0) for w in warm) == 0  # nothing was read back to find it
        assert [o.key for o in app.backend("warm").list("dataset/")] == []
        for rel, payload in files.items():
            stream = app.backend("hot").open_read(f"dataset/d/1/{rel}")
            assert stream.read() == payload
            stream.close()
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_a_second_client_reads_our_bytes_and_digest_metadata(
    tmp_path: Path, s3_tiers: dict[str, Any], seaweed: SeaweedServer
) -> None:
    from minio import Minio

    files = make_tree(tmp_path / "src", 3, seed=22, min_size=1)
    app = open_app(workspace_config(tmp_path, tiers=s3_tiers))
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    finally:
        app.close()
    bucket, _, prefix = s3_tiers["hot"]["backend"][5:].partition("/")
    client = Minio(seaweed.endpoint.removeprefix("http://"), access_key=seaweed.access_key,
                   secret_key=seaweed.secret_key, secure=False, region="us-east-1")
    from tiering.transfer.hashing import xxh3_bytes

    for rel, payload in files.items():
        obj = f"{prefix}/dataset/d/1/{rel}"
        resp = client.get_object(bucket, obj)
        try:
            assert resp.read() == payload
        finally:
            resp.close()
            resp.release_conn()
        stat = client.stat_object(bucket, obj)
        assert stat.metadata.get("x-amz-meta-xxh3-128") == xxh3_bytes(payload)


@pytest.mark.parametrize("point", ["during_copy", "after_verify", "after_commit", "during_delete"])
def test_kill_9_during_a_move_between_seaweed_servers_then_resume(
    tmp_path: Path, s3_tiers: dict[str, Any], postgres_url: str, point: str
) -> None:
    data = workspace_config(tmp_path, tiers=s3_tiers, catalog=postgres_url,
                            transfer={"multipart_threshold": "5MiB", "part_size": "5MiB"})
    config = write_config(tmp_path, data)
    files = make_tree(tmp_path / "src", 10, seed=23, max_size=50_000)
    big = os.urandom(16 * 2**20)
    (tmp_path / "src/big.bin").write_bytes(big)
    app = open_app(data)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    finally:
        app.close()
    crashed = run_cli(config, "move", "d@1", "--to", "warm", "--no-progress", crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    resumed = run_cli(config, "resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    app = open_app(data)
    try:
        assert datasets.resolve(app, "d", record=False).tier == "warm"
        report = check_invariant(app)
        assert report.problems == [], report.problems
        stream = app.backend("warm").open_read("dataset/d/1/big.bin")
        assert stream.read() == big
        stream.close()
        assert report.members == len(files) + 1
    finally:
        app.close()


def test_120_simulated_days_on_two_seaweed_tiers_and_postgres(
    tmp_path: Path, s3_tiers: dict[str, Any], postgres_url: str
) -> None:
    from lifecycle_scenario import check_outcome, run_120_days

    check_outcome(run_120_days(tmp_path, workspace_config(tmp_path, tiers=s3_tiers, catalog=postgres_url)))


def test_init_creates_missing_buckets_and_tiers_report_usage(
    tmp_path: Path, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uuid

    name = f"fresh-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("HOT_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("HOT_SECRET_ACCESS_KEY", seaweed.secret_key)
    data = workspace_config(tmp_path, tiers={
        "hot": {"rank": 0, "backend": f"s3://{name}/t", "endpoint": seaweed.endpoint, "credentials": {"env": "HOT"},
                "capacity": "1GiB"},
        "warm": {"rank": 1, "backend": (tmp_path / "warm").as_uri()},
    })
    config = write_config(tmp_path, data)
    try:
        proc = run_cli(config, "init")
        assert proc.returncode == 0, proc.stderr
        seaweed.client().head_bucket(Bucket=name)
        make_tree(tmp_path / "src", 3, seed=5, min_size=100)
        assert run_cli(config, "register", str(tmp_path / "src"), "--name", "d", "--version", "1").returncode == 0
        tiers = run_cli(config, "tiers", "--json")
        import json

        hot = json.loads(tiers.stdout)[0]
        assert hot["name"] == "hot" and hot["datasets"] == 1 and hot["used_bytes"] > 300
        assert hot["free_bytes"] == 2**30 - hot["used_bytes"]
    finally:
        seaweed.remove_bucket(name)


def test_modes_times_links_and_empty_directories_survive_a_move_to_seaweed_and_back_to_a_directory_tier(
    tmp_path: Path, s3_tiers: dict[str, Any]
) -> None:
    from posix_tree_helpers import check_tree, make_source

    from tiering.layout import manifest_contents, parse_manifest

    want = make_source(tmp_path / "src")
    tiers = {"hot": {"rank": 0, "backend": (tmp_path / "nvme").as_uri()},  # a directory, then two S3 servers
             "warm": {**s3_tiers["hot"], "rank": 1}, "cold": {**s3_tiers["warm"], "rank": 2}}
    app = open_app(workspace_config(tmp_path, tiers=tiers))
    on_disk = tmp_path / "nvme/dataset/d/1"
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        check_tree(on_disk, want)
        assert datasets.move(app, "d@1", to="warm").state == "done"
        assert not (tmp_path / "nvme/dataset").exists()
        assert datasets.move(app, "d@1", to="cold").state == "done"
        stream = app.backend("cold").open_read("dataset/d/1/_tiering/manifest.json")
        members, entries = manifest_contents(parse_manifest(stream.read()))
        stream.close()
        assert {m.path: (m.mode, m.mtime_ns) for m in members} == {
            rel: (want["modes"][rel], want["mtimes"][rel]) for rel in want["files"]}
        assert {e.path for e in entries if e.kind == "link"} == {"latest", "tools", "secret/abs-link"}
        assert datasets.move(app, "d@1", to="hot").state == "done"
        check_tree(on_disk, want)  # the directory tier has it back as it was registered
        assert datasets.verify(app, "d@1").ok
    finally:
        app.close()
