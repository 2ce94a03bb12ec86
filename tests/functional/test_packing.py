"""Packing small members into tar shards on an archive tier, and reading them back, over file and memory tiers.

Every test reads bytes back: from the tar (with Python's tarfile, as any tar tool would), with ranged reads
at the offsets the catalog records, and through ``check_invariant``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import check_invariant, make_tree, open_app, read_all, workspace_config
from sqlalchemy import select

from tiering import datasets, registration
from tiering.app import App
from tiering.catalog.models import Member, MoveStep, Replica, Tier
from tiering.errors import CorruptedCopy
from tiering.layout import manifest_key
from tiering.storage import FaultyBackend
from tiering.storage.base import Backend, ReadStream
from tiering.transfer.packing import SHARD_DIR, TAR_END, layout_shard, plan_shards, tar_header

PACKED_COLD = {"archive": "packed", "pack_threshold": "40KB", "shard_size": "200KB"}


def packed_config(tmp_path: Path, **cold: Any) -> dict[str, Any]:
    data = workspace_config(tmp_path)
    data["tiers"]["cold"].update({**PACKED_COLD, **cold})
    return data


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = open_app(packed_config(tmp_path))
    yield a
    a.close()


def cold_replicas(app: App) -> dict[str, tuple[str, int | None]]:
    """member path -> (key, shard_offset) of its cold replica."""
    with app.catalog.session() as s:
        rows = s.execute(
            select(Member.path, Replica.key, Replica.shard_offset)
            .join(Replica, Replica.member_id == Member.id).join(Tier, Tier.id == Replica.tier_id)
            .where(Tier.name == "cold")
        ).all()
    return {p: (k, o) for p, k, o in rows}


def test_small_members_go_into_tar_shards_and_large_ones_stay_single_objects(app: App, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 30, seed=1)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    assert datasets.move(app, "d@1", to="cold").state == "done"

    cold = app.backend("cold")
    keys = sorted(i.key for i in cold.list("dataset/d/1/"))
    shards = [k for k in keys if f"/{SHARD_DIR}/" in k]
    singles = [k for k in keys if k not in shards and "/_tiering/" not in k]
    large = sorted(p for p, b in files.items() if len(b) >= 40_000)
    assert singles == [f"dataset/d/1/{p}" for p in large]
    assert shards == [f"dataset/d/1/_shards/shard-{i:05d}.tar" for i in range(len(shards))]
    assert 1 < len(shards) < len(files) - len(large)
    assert all(cold.head(k).size <= 200_000 for k in shards)

    # any tar tool unpacks a shard to the original paths and bytes
    unpacked: dict[str, bytes] = {}
    for key in shards:
        with tarfile.open(fileobj=io.BytesIO(read_all(cold, key))) as tar:
            for info in tar.getmembers():
                extracted = tar.extractfile(info)
                assert extracted is not None
                unpacked[info.name] = extracted.read()
    assert unpacked == {p: b for p, b in files.items() if p not in large}

    # the catalog and the manifest say where each member's bytes start; a ranged read returns exactly them
    replicas = cold_replicas(app)
    manifest = json.loads(read_all(cold, manifest_key("dataset/d/1/")))
    by_path = {m["path"]: m for m in manifest["members"]}
    for path, data in files.items():
        key, offset = replicas[path]
        if path in large:
            assert (key, offset) == (f"dataset/d/1/{path}", None)
            assert "shard" not in by_path[path]
        else:
            assert offset is not None
            assert read_all(cold, key, offset=offset, length=len(data)) == data
            assert ("dataset/d/1/" + by_path[path]["shard"], by_path[path]["offset"]) == (key, offset)
    assert datasets.verify(app, "d@1").ok
    assert check_invariant(app).problems == []


def test_the_shard_plan_is_deterministic_and_keeps_to_the_threshold_and_shard_size() -> None:
    members = [(f"x/{i:03d}.bin", (i * 7919) % 50_000) for i in range(200)]
    plan = plan_shards(members, threshold=40_000, shard_size=200_000)
    assert plan == plan_shards(list(reversed(members)), threshold=40_000, shard_size=200_000)
    packed = [e for shard in plan for e in shard.entries]
    assert sorted(e.path for e in packed) == sorted(p for p, s in members if s < 40_000)
    assert [e.path for e in packed] == sorted(e.path for e in packed)
    for shard in plan:
        assert shard.size <= 200_000 or len(shard.entries) == 1
        assert shard.size == shard.entries[-1].end + TAR_END
        assert shard == layout_shard(shard.name, [(e.path, e.size) for e in shard.entries])
    # a member whose path could collide with a shard's key turns packing off for that dataset
    assert plan_shards([*members, ("_shards/shard-00000.tar", 10)], threshold=40_000, shard_size=200_000) == []


def test_moving_out_of_a_packed_tier_unpacks_every_member_to_its_path_and_removes_the_shards(
    app: App, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "src", 20, seed=2)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    assert datasets.move(app, "d@1", to="cold").state == "done"
    assert datasets.move(app, "d@1", to="warm").state == "done"
    warm = app.backend("warm")
    for rel, data in files.items():
        assert read_all(warm, f"dataset/d/1/{rel}") == data
    assert [i.key for i in app.backend("cold").list("dataset/")] == []
    assert check_invariant(app).problems == []


class RecordingBackend(FaultyBackend):
    """Counts calls (as FaultyBackend does) and remembers every ranged read: (key, offset, length)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.reads: list[tuple[str, int, int | None]] = []

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        self.reads.append((key, offset, length))
        return super().open_read(key, offset=offset, length=length)


def test_ten_thousand_files_of_4_kib_go_cold_as_a_handful_of_shards_and_one_member_reads_back_alone(
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    recorders: dict[str, RecordingBackend] = {}

    def record(tier: str, backend: Backend) -> Backend:
        recorders[tier] = RecordingBackend(backend)
        return recorders[tier]

    tiers = {
        "hot": {"rank": 0, "backend": f"memory://{run}-hot"},
        "cold": {"rank": 2, "backend": f"memory://{run}-cold", "archive": "packed", "shard_size": "8MiB"},
    }
    app = open_app(workspace_config(tmp_path, tiers=tiers), backend_wrapper=record)
    try:
        hot = app.backend("hot")
        files = {f"train/{i // 1000:02d}/{i:05d}.jpg": os.urandom(4096) for i in range(10_000)}
        for path, data in files.items():
            hot.put(f"incoming/{path}", io.BytesIO(data), size=len(data))
        registration.register(app, f"memory://{run}-hot/incoming/", name="many", version="1", adopt=True)
        assert datasets.move(app, "many@1", to="cold").state == "done"

        cold_keys = [i.key for i in app.backend("cold").list("") if "/_tiering/" not in i.key]
        # 10,000 x (512-byte tar header + 4 KiB) = 43.9 MiB, in shards of at most 8 MiB: 6 objects
        assert len(cold_keys) == 6
        assert all(f"/{SHARD_DIR}/" in k for k in cold_keys)
        assert cold_keys == sorted(cold_keys)

        path = "train/07/07321.jpg"
        key, offset = cold_replicas(app)[path]
        recorders["cold"].reads.clear()
        out = io.BytesIO()
        assert datasets.read_member(app, "many@1", path, out) == 4096
        assert out.getvalue() == files[path]
        assert recorders["cold"].reads == [(key, offset, 4096)]  # one ranged read, not the shard
    finally:
        app.close()


def test_a_shard_corrupted_on_write_is_caught_by_its_read_back_and_the_source_stays(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 12, seed=3, min_size=100, max_size=30_000)

    def corrupt_cold(tier: str, backend: Backend) -> Backend:
        return FaultyBackend(backend, corrupt_writes=True) if tier == "cold" else backend

    app = open_app(packed_config(tmp_path), backend_wrapper=corrupt_cold)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        outcome = datasets.move(app, "d@1", to="cold")
        assert outcome.state == "failed"
        assert "checksum_mismatch" in (outcome.error or "")
        assert "of d@1" in (outcome.error or "")  # the failing member is named with its dataset
        assert [i.key for i in app.backend("cold").list("")] == []
        for rel, data in files.items():
            assert read_all(app.backend("hot"), f"dataset/d/1/{rel}") == data
        assert datasets.resolve(app, "d").tier == "hot"
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_a_shard_upload_that_fails_once_is_retried_to_the_same_key(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 10, seed=4, min_size=100, max_size=30_000)

    def flaky_cold(tier: str, backend: Backend) -> Backend:
        return FaultyBackend(backend, fail_puts_after_bytes=5_000, fail_times=1) if tier == "cold" else backend

    app = open_app(packed_config(tmp_path), backend_wrapper=flaky_cold)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        assert datasets.move(app, "d@1", to="cold").state == "done"
        with app.catalog.session() as s:
            attempts = dict(s.execute(select(MoveStep.dst_key, MoveStep.attempts)).all())
        first_shard = "dataset/d/1/_shards/shard-00000.tar"
        assert attempts[first_shard] == 2
        assert {k: a for k, a in attempts.items() if k != first_shard} == dict.fromkeys(
            [k for k in attempts if k != first_shard], 1)
        replicas = cold_replicas(app)
        for rel, data in files.items():
            key, offset = replicas[rel]
            assert read_all(app.backend("cold"), key, offset=offset or 0,
                            length=len(data) if offset is not None else None) == data
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_a_member_corrupted_inside_its_shard_is_reported_with_the_dataset_and_path(
    app: App, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "src", 10, seed=5, min_size=100, max_size=30_000)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    assert datasets.move(app, "d@1", to="cold").state == "done"
    victim = sorted(files)[3]
    key, offset = cold_replicas(app)[victim]
    assert offset is not None
    shard_file = tmp_path / "tiers/cold" / key
    raw = bytearray(shard_file.read_bytes())
    raw[offset + 1] ^= 0xFF
    shard_file.write_bytes(bytes(raw))

    report = datasets.verify(app, "d@1")
    assert [(p.problem, p.path, p.tier) for p in report.problems] == [("checksum_mismatch", victim, "cold")]
    with pytest.raises(CorruptedCopy, match=f"member {victim} of d@1"):
        datasets.read_member(app, "d@1", victim, io.BytesIO())
    # the other members of the same shard still read back fine
    other = sorted(files)[4]
    out = io.BytesIO()
    datasets.read_member(app, "d@1", other, out)
    assert out.getvalue() == files[other]


def test_verify_reports_shard_entries_that_would_unpack_outside_the_target_or_under_another_name(
    app: App, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "src", 10, seed=6, min_size=100, max_size=30_000)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    assert datasets.move(app, "d@1", to="cold").state == "done"
    replicas = cold_replicas(app)
    escaping, renamed = sorted(files)[1], sorted(files)[2]
    key, offset = replicas[escaping]
    _, renamed_offset = replicas[renamed]
    assert offset is not None and renamed_offset is not None
    shard_file = tmp_path / "tiers/cold" / key
    raw = bytearray(shard_file.read_bytes())
    for at, name, path in ((offset, "../../escaped.bin", escaping), (renamed_offset, "renamed.bin", renamed)):
        header = tar_header(name, len(files[path]))
        assert len(header) == 512 and len(tar_header(path, len(files[path]))) == 512
        raw[at - 512:at] = header
    link = tarfile.TarInfo("evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    raw[-TAR_END:] = link.tobuf(format=tarfile.USTAR_FORMAT) + bytes(TAR_END)  # an extra entry before the end
    shard_file.write_bytes(bytes(raw))

    report = datasets.verify(app, "d@1")
    found = sorted((p.problem, p.path) for p in report.problems)
    assert found == sorted([
        ("unsafe_tar_entry", escaping), ("tar_name_mismatch", escaping), ("tar_name_mismatch", renamed),
        ("unsafe_tar_entry", "evil"),
    ])
    assert all(p.key == key and p.tier == "cold" for p in report.problems)
    # the members' own bytes are intact: each still reads back verified
    out = io.BytesIO()
    datasets.read_member(app, "d@1", escaping, out)
    assert out.getvalue() == files[escaping]


def test_verify_of_a_packed_tier_reads_each_shard_once_and_counts_every_member(app: App, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 30, seed=7)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    assert datasets.move(app, "d@1", to="cold").state == "done"
    report = datasets.verify(app, "d@1")
    assert report.ok and report.replicas_checked == len(files)
    assert report.bytes_read == sum(len(b) for b in files.values())
