"""`tiering scrub` against a real SeaweedFS tier: a planted orphan, an unfinished multipart upload and a
replica whose object was deleted are each reported; --fix removes the orphan and the upload, and every
dataset's bytes still read back with their digests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import make_tree, open_app, run_cli, workspace_config, write_config
from servers import SeaweedServer, free_ports

from tiering import datasets, registration
from tiering.transfer.hashing import xxh3_bytes


def test_scrub_reports_and_fixes_an_orphan_and_an_unfinished_upload_on_seaweed(
    tmp_path: Path, bucket: object, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = bucket.name  # type: ignore[attr-defined]
    monkeypatch.setenv("HOT_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("HOT_SECRET_ACCESS_KEY", seaweed.secret_key)
    tiers = {
        "hot": {"rank": 0, "backend": f"s3://{name}/nvme", "endpoint": seaweed.endpoint,
                "credentials": {"env": "HOT"}},
        "cold": {"rank": 1, "backend": (tmp_path / "cold").as_uri()},
    }
    data = workspace_config(tmp_path, tiers=tiers)
    config = write_config(tmp_path, data)
    d_files = make_tree(tmp_path / "d", 8, seed=11, min_size=100)
    e_files = make_tree(tmp_path / "e", 4, seed=12, min_size=100)
    app = open_app(data)
    try:
        registration.register(app, str(tmp_path / "d"), name="d", version="1", tier="hot")
        registration.register(app, str(tmp_path / "e"), name="e", version="1", tier="hot")
    finally:
        app.close()

    client = seaweed.client()
    client.put_object(Bucket=name, Key="nvme/dataset/ghost/3/orphan.bin", Body=b"o" * 1000)
    upload = client.create_multipart_upload(Bucket=name, Key="nvme/dataset/d/1/big.bin")["UploadId"]
    client.upload_part(Bucket=name, Key="nvme/dataset/d/1/big.bin", UploadId=upload, PartNumber=1,
                       Body=b"p" * (5 * 2**20))
    gone = sorted(e_files)[1]
    client.delete_object(Bucket=name, Key=f"nvme/dataset/e/1/{gone}")

    found = run_cli(config, "scrub", "--json")
    assert found.returncode == 1, found.stderr
    doc = json.loads(found.stdout)
    by_kind = {(f["kind"], f["key"]) for f in doc["findings"]}
    assert by_kind == {
        ("orphan_object", "dataset/ghost/3/orphan.bin"),
        ("unfinished_upload", "dataset/d/1/big.bin"),
        ("missing_object", f"dataset/e/1/{gone}"),
    }

    fixed = run_cli(config, "scrub", "--fix", "--older-than", "0", "--json")
    assert fixed.returncode == 1, fixed.stderr  # the missing object cannot be fixed by removing anything
    doc = json.loads(fixed.stdout)
    assert sorted(f["kind"] for f in doc["findings"] if f["fixed"]) == ["orphan_object", "unfinished_upload"]
    assert doc["counts"]["missing_object"] == 1 and doc["unfixed"] == 1
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="nvme/dataset/ghost/").get("Contents", [])]
    assert keys == []
    assert client.list_multipart_uploads(Bucket=name, Prefix="nvme/").get("Uploads", []) == []

    app = open_app(data)
    try:
        for label, files in (("d@1", d_files), ("e@1", {p: b for p, b in e_files.items() if p != gone})):
            for path, payload in files.items():
                out = io.BytesIO()
                datasets.read_member(app, label, path, out)
                assert xxh3_bytes(out.getvalue()) == xxh3_bytes(payload)
        body = client.get_object(Bucket=name, Key="nvme/dataset/e/1/_tiering/manifest.json")["Body"].read()
        assert json.loads(body)["name"] == "e"
    finally:
        app.close()


def test_verify_with_the_endpoint_down_prints_one_line_per_cause_with_a_count(
    tmp_path: Path, bucket: object, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = bucket.name  # type: ignore[attr-defined]
    monkeypatch.setenv("HOT_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("HOT_SECRET_ACCESS_KEY", seaweed.secret_key)
    hot = {"rank": 0, "backend": f"s3://{name}/nvme", "endpoint": seaweed.endpoint, "credentials": {"env": "HOT"}}
    data = workspace_config(tmp_path, tiers={"hot": hot, "cold": {"rank": 1, "backend": (tmp_path / "c").as_uri()}},
                            transfer={"retries": 0})
    make_tree(tmp_path / "d", 40, seed=13, max_size=2000)
    app = open_app(data)
    try:
        registration.register(app, str(tmp_path / "d"), name="d", version="1", tier="hot")
    finally:
        app.close()
    hot["endpoint"] = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    config = write_config(tmp_path, data)
    # the catalog refuses a tier that points elsewhere until told the data is there
    accepted = run_cli(config, "tiers", "--accept-change", "hot")
    assert accepted.returncode == 0, accepted.stderr

    out = run_cli(config, "verify", "d@1")
    assert out.returncode == 7, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    assert lines[0].startswith("d@1: 40 copies checked") and "40 PROBLEM(S)" in lines[0]
    assert lines[1].strip().startswith("error (unreachable) on hot: 40 copies, first hot:dataset/d/1/")
    doc = json.loads(run_cli(config, "verify", "d@1", "--json").stdout)
    assert len(doc["problems"]) == 40 and {p["reason"] for p in doc["problems"]} == {"unreachable"}
