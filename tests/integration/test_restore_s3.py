"""Restores on real servers: a packed cold tier on SeaweedFS restored to a hot tier on a second SeaweedFS,
and the Glacier protocol (RestoreObject, x-amz-restore) against moto's server, the only local server that
speaks it. Bytes are read back after the restore, also with a plain boto3 client, and the expiry sweep
removes the staged copy while the archive copy stays."""

from __future__ import annotations

import datetime as dt
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import FixedClock, check_invariant, make_tree, open_app, workspace_config
from servers import MotoServer, SeaweedServer

from tiering import datasets, registration
from tiering.app import App
from tiering.errors import DatasetArchived
from tiering.restore.dispatch import dispatch_restores
from tiering.restore.requests import list_restores, request_restore
from tiering.restore.sweep import sweep_expired
from tiering.storage import FaultyBackend
from tiering.storage.base import Backend, ReadStream


class Recorder(FaultyBackend):
    """Counts calls and remembers ranged reads and archive restore requests."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.reads: list[tuple[str, int, int | None]] = []
        self.restores: list[tuple[str, int, str]] = []

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        self.reads.append((key, offset, length))
        return super().open_read(key, offset=offset, length=length)

    def request_restore(self, key: str, *, days: int, retrieval_tier: str = "Standard") -> None:
        self.restores.append((key, days, retrieval_tier))
        self.inner.request_restore(key, days=days, retrieval_tier=retrieval_tier)  # type: ignore[attr-defined]


@pytest.fixture
def recorders() -> dict[str, Recorder]:
    return {}


def recording(recorders: dict[str, Recorder]) -> Any:
    def wrap(tier: str, backend: Backend) -> Backend:
        recorders[tier] = Recorder(backend)
        return recorders[tier]

    return wrap


def source_tree(tmp_path: Path) -> dict[str, bytes]:
    files = make_tree(tmp_path / "src", 40, seed=31, min_size=100, max_size=60_000)
    files["weights/big.bin"] = os.urandom(3 * 2**20 + 11)  # above pack_threshold: stays a single object
    (tmp_path / "src/weights").mkdir(exist_ok=True)
    (tmp_path / "src/weights/big.bin").write_bytes(files["weights/big.bin"])
    return files


def read_back(client: Any, bucket: str, key: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture
def hot_bucket(seaweed2: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = seaweed2.make_bucket(f"hot-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("HOT_ACCESS_KEY_ID", seaweed2.access_key)
    monkeypatch.setenv("HOT_SECRET_ACCESS_KEY", seaweed2.secret_key)
    yield name
    seaweed2.remove_bucket(name)


def test_a_packed_seaweedfs_archive_restores_to_a_second_seaweedfs_and_expires(
    tmp_path: Path, bucket: Any, hot_bucket: str, seaweed2: SeaweedServer, monkeypatch: pytest.MonkeyPatch,
    recorders: dict[str, Recorder],
) -> None:
    monkeypatch.setenv("COLD_ACCESS_KEY_ID", bucket.server.access_key)
    monkeypatch.setenv("COLD_SECRET_ACCESS_KEY", bucket.server.secret_key)
    tiers = {
        "hot": {"rank": 0, "backend": f"s3://{hot_bucket}/nvme", "endpoint": seaweed2.endpoint,
                "credentials": {"env": "HOT"}},
        "cold": {"rank": 2, "backend": f"s3://{bucket.name}/tape", "endpoint": bucket.endpoint,
                 "credentials": {"env": "COLD"}, "archive": "packed", "pack_threshold": "64KB",
                 "shard_size": "1MiB"},
    }
    clock = FixedClock(dt.datetime.now(dt.UTC))
    files = source_tree(tmp_path)
    app: App = open_app(workspace_config(tmp_path, tiers=tiers), clock=clock, backend_wrapper=recording(recorders))
    try:
        registration.register(app, str(tmp_path / "src"), name="imagenet-mini", version="2024-01", tier="hot")
        assert datasets.move(app, "imagenet-mini@2024-01", to="cold").state == "done"
        cold_client = bucket.server.client()
        cold_keys = sorted(o["Key"] for o in cold_client.list_objects_v2(Bucket=bucket.name)["Contents"])
        prefix = "tape/dataset/imagenet-mini/2024-01/"
        shards = [k for k in cold_keys if k.startswith(prefix + "_shards/")]
        assert 1 < len(shards) < 10
        assert prefix + "weights/big.bin" in cold_keys
        assert len(cold_keys) == len(shards) + 2  # the shards, the large member, the manifest

        # one member read alone from its shard with a ranged GET, verified
        recorders["cold"].reads.clear()
        out = io.BytesIO()
        datasets.read_member(app, "imagenet-mini@2024-01", "f0002.bin", out)
        assert out.getvalue() == files["f0002.bin"]
        [(key, offset, length)] = recorders["cold"].reads
        assert key.startswith("dataset/imagenet-mini/2024-01/_shards/") and offset > 0
        assert length == len(files["f0002.bin"])

        with pytest.raises(DatasetArchived, match="tiering restore imagenet-mini@2024-01"):
            datasets.resolve(app, "imagenet-mini")
        request_restore(app, "imagenet-mini@2024-01", to="hot", days=7)
        assert [g.state for g in dispatch_restores(app).groups] == ["ready"]

        where = datasets.resolve(app, "imagenet-mini")
        assert (where.tier, where.url) == ("hot", f"s3://{hot_bucket}/nvme/dataset/imagenet-mini/2024-01/")
        hot_client = seaweed2.client()
        for rel, payload in files.items():  # a plain S3 client reads the original paths
            assert read_back(hot_client, hot_bucket, f"nvme/dataset/imagenet-mini/2024-01/{rel}") == payload
        assert check_invariant(app).problems == []

        clock.advance(days=8)
        assert sweep_expired(app).removed[0]["replicas"] == len(files)
        assert hot_client.list_objects_v2(Bucket=hot_bucket).get("Contents") is None
        assert sorted(o["Key"] for o in cold_client.list_objects_v2(Bucket=bucket.name)["Contents"]) == cold_keys
        assert [r.state for r in list_restores(app, include_finished=True)] == ["expired"]
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_a_glacier_archive_on_moto_is_restored_with_restore_object_then_read(
    tmp_path: Path, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, recorders: dict[str, Recorder]
) -> None:
    cold_bucket = moto_server.make_bucket(f"tape-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("COLD_ACCESS_KEY_ID", moto_server.access_key)
    monkeypatch.setenv("COLD_SECRET_ACCESS_KEY", moto_server.secret_key)
    tiers = {
        "hot": {"rank": 0, "backend": (tmp_path / "hot").as_uri()},
        "cold": {"rank": 2, "backend": f"s3://{cold_bucket}/tape", "endpoint": moto_server.endpoint,
                 "credentials": {"env": "COLD"}, "archive": "glacier", "pack_threshold": "64KB",
                 "shard_size": "1MiB"},
    }
    clock = FixedClock(dt.datetime.now(dt.UTC))
    files = source_tree(tmp_path)
    app: App = open_app(workspace_config(tmp_path, tiers=tiers), clock=clock, backend_wrapper=recording(recorders))
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        assert datasets.move(app, "d@1", to="cold").state == "done"
        client = moto_server.client()
        objects = [o["Key"] for o in client.list_objects_v2(Bucket=cold_bucket)["Contents"]
                   if "/_tiering/" not in o["Key"]]
        assert any("/_shards/" in k for k in objects) and len(objects) < 10
        for key in objects:
            assert client.head_object(Bucket=cold_bucket, Key=key)["StorageClass"] == "GLACIER"
        with pytest.raises(ClientError, match="InvalidObjectState"):
            client.get_object(Bucket=cold_bucket, Key=objects[0])
        # our readers say what to do instead of failing with InvalidObjectState
        with pytest.raises(DatasetArchived, match="tiering restore d@1"):
            datasets.read_member(app, "d@1", "f0002.bin", io.BytesIO())

        request_restore(app, "d@1", to="hot", days=3, priority="high")
        report = dispatch_restores(app, poll_seconds=0.2, max_wait_seconds=30)
        assert [g.state for g in report.groups] == ["ready"], report
        asked = recorders["cold"].restores
        assert sorted(k for k, _, _ in asked) == sorted(k.removeprefix("tape/") for k in objects)
        assert {t for _, _, t in asked} == {"Expedited"}
        for key in objects:
            assert 'ongoing-request="false"' in client.head_object(Bucket=cold_bucket, Key=key)["Restore"]
        for rel, payload in files.items():
            assert (tmp_path / "hot/dataset/d/1" / rel).read_bytes() == payload
        assert datasets.resolve(app, "d@1").tier == "hot"

        # asking again for a restored dataset copies nothing and asks the archive nothing
        request_restore(app, "d@1", to="hot", days=5)
        assert dispatch_restores(app).groups == []
        assert len(recorders["cold"].restores) == len(objects)
        assert check_invariant(app).problems == []

        clock.advance(days=6)
        sweep_expired(app)
        assert [p for p in (tmp_path / "hot").rglob("*") if p.is_file()] == []
        assert sorted(o["Key"] for o in client.list_objects_v2(Bucket=cold_bucket)["Contents"]
                      if "/_tiering/" not in o["Key"]) == sorted(objects)
    finally:
        app.close()


def test_packing_restore_and_sweep_work_the_same_on_a_postgres_catalog(tmp_path: Path, postgres_url: str) -> None:
    data = workspace_config(tmp_path, catalog=postgres_url)
    data["tiers"]["cold"].update({"archive": "packed", "pack_threshold": "40KB", "shard_size": "200KB"})
    clock = FixedClock(dt.datetime.now(dt.UTC))
    files = make_tree(tmp_path / "src", 30, seed=33, max_size=60_000)
    app: App = open_app(data, clock=clock)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        assert datasets.move(app, "d@1", to="cold").state == "done"
        assert any("/_shards/" in i.key for i in app.backend("cold").list(""))
        for days in (2, 4, 3):
            request_restore(app, "d@1", to="hot", days=days)
        assert [g.state for g in dispatch_restores(app).groups] == ["ready"]
        for rel, payload in files.items():
            assert (tmp_path / "tiers/hot/dataset/d/1" / rel).read_bytes() == payload
        assert check_invariant(app).problems == []
        clock.advance(days=5)
        assert sweep_expired(app).removed[0]["replicas"] == len(files)
        assert [r.state for r in list_restores(app, include_finished=True)] == ["expired"] * 3
        assert check_invariant(app).problems == []
    finally:
        app.close()
