"""A registered directory's tree beyond its bytes, over directory tiers: symbolic links (kept inside, refused
when they lead outside), FIFOs and sockets (refused by name), file modes and times and empty directories
(recorded, and given back wherever the dataset lands in a directory or is written out by the CLI)."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FixedClock, make_tree, open_app, workspace_config, write_config
from posix_tree_helpers import T0, check_tree, files_on, make_source

from tiering import datasets, registration
from tiering.app import App
from tiering.cli import main
from tiering.errors import UsageError
from tiering.layout import ManifestEntry, ManifestMember, build_manifest, manifest_contents, parse_manifest
from tiering.restore.dispatch import dispatch_restores
from tiering.restore.requests import request_restore
from tiering.restore.sweep import sweep_expired

PACKED_COLD = {"archive": "packed", "pack_threshold": "40KB", "shard_size": "200KB"}
PREFIX = "dataset/d/1/"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    config = write_config(tmp_path, workspace_config(tmp_path))
    assert run(capsys, "--config", str(config), "init")[0] == 0
    return config


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    data = workspace_config(tmp_path)
    data["tiers"]["cold"].update(PACKED_COLD)
    a = open_app(data, clock=FixedClock())
    yield a
    a.close()


# ------------------------------------------------------------------------------------------ refusals


def test_a_link_to_etc_passwd_inside_a_registered_directory_is_refused_by_name_and_nothing_is_uploaded(
    cli_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path / "src", 3, seed=1)
    (tmp_path / "src/passwd").symlink_to("/etc/passwd")
    code, _, err = run(capsys, "--config", str(cli_config), "register", str(tmp_path / "src"),
                       "--name", "d", "--version", "1", "--no-progress")
    assert code == 2
    assert f"{tmp_path / 'src/passwd'} is a symbolic link to /etc/passwd" in err
    assert "--follow-links" in err and "Traceback" not in err
    assert files_on(tmp_path / "tiers") == []
    code, out, _ = run(capsys, "--config", str(cli_config), "ls", "--json")
    assert json.loads(out) == []


def test_a_link_that_escapes_through_another_link_is_refused(
    cli_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path / "src", 2, seed=1)
    (tmp_path / "src/here").symlink_to(".")
    (tmp_path / "src/up").symlink_to("here/..")  # stays inside on paper, leads to the parent once resolved
    code, _, err = run(capsys, "--config", str(cli_config), "register", str(tmp_path / "src"),
                       "--name", "d", "--version", "1", "--no-progress")
    assert code == 2
    assert f"{tmp_path / 'src/up'} is a symbolic link to here/.." in err
    assert files_on(tmp_path / "tiers") == []


def test_with_follow_links_a_link_outside_is_registered_as_the_bytes_it_points_to(
    cli_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path / "src", 2, seed=1)
    (tmp_path / "outside.bin").write_bytes(b"shared labels\n")
    (tmp_path / "src/labels.txt").symlink_to(tmp_path / "outside.bin")
    code, _, err = run(capsys, "--config", str(cli_config), "register", str(tmp_path / "src"),
                       "--name", "d", "--version", "1", "--follow-links", "--no-progress")
    assert code == 0, err
    stored = tmp_path / "tiers/hot" / PREFIX / "labels.txt"
    assert not stored.is_symlink() and stored.read_bytes() == b"shared labels\n"


def test_a_fifo_or_a_socket_in_a_registered_directory_is_refused_by_name_not_skipped(
    cli_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path / "src", 2, seed=1)
    os.mkfifo(tmp_path / "src/queue")
    code, _, err = run(capsys, "--config", str(cli_config), "register", str(tmp_path / "src"),
                       "--name", "d", "--version", "1", "--no-progress")
    assert code == 2
    assert f"{tmp_path / 'src/queue'} is a FIFO" in err
    os.unlink(tmp_path / "src/queue")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "src/agent.sock"))
        code, _, err = run(capsys, "--config", str(cli_config), "register", str(tmp_path / "src"),
                           "--name", "d", "--version", "1", "--follow-links", "--no-progress")
    finally:
        sock.close()
    assert code == 2
    assert f"{tmp_path / 'src/agent.sock'} is a socket" in err
    assert files_on(tmp_path / "tiers") == []


# ------------------------------------------------------------------------------------------ the round trip


def test_modes_times_links_and_empty_directories_survive_hot_warm_cold_packed_and_a_restore(
    app: App, tmp_path: Path
) -> None:
    want = make_source(tmp_path / "src")
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    hot, warm, cold = (tmp_path / "tiers" / t / PREFIX for t in ("hot", "warm", "cold"))
    check_tree(hot, want)

    assert datasets.move(app, "d@1", to="warm").state == "done"
    check_tree(warm, want)
    assert not (tmp_path / "tiers/hot/dataset").exists()  # links and empty directories went with the files

    assert datasets.move(app, "d@1", to="cold").state == "done"
    assert not (tmp_path / "tiers/warm/dataset").exists()
    assert not (cold / "latest").is_symlink()  # an archive tier holds shards, not the tree
    members, entries = manifest_contents(parse_manifest((cold / "_tiering/manifest.json").read_bytes()))
    assert {m.path: (m.mode, m.mtime_ns) for m in members} == {
        rel: (want["modes"][rel], want["mtimes"][rel]) for rel in want["files"]}
    assert {e.path: e.target for e in entries if e.kind == "link"} == {
        "latest": want["first"], "tools": "bin", "secret/abs-link": "../bin/run.sh"}
    assert {"empty", "empty/deeper"} <= {e.path for e in entries if e.kind == "dir"}
    shards = sorted((cold / "_shards").iterdir())
    assert shards
    for shard in shards:  # any tar tool unpacks the members with their modes and times
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                assert (info.mode, info.mtime) == (want["modes"][info.name], want["mtimes"][info.name] // 10**9)

    request_restore(app, "d@1", to="hot", days=3)
    assert [g.state for g in dispatch_restores(app).groups] == ["ready"]
    check_tree(hot, want)
    hot_manifest = parse_manifest((hot / "_tiering/manifest.json").read_bytes())
    assert {lk["path"] for lk in hot_manifest["links"]} == {"latest", "tools", "secret/abs-link"}
    clock = app.clock
    assert isinstance(clock, FixedClock)
    clock.advance(days=4)
    assert sweep_expired(app).removed  # the expired staged copy goes with its links and directories
    assert not (tmp_path / "tiers/hot/dataset").exists()

    assert datasets.move(app, "d@1", to="warm").state == "done"
    check_tree(warm, want)
    assert datasets.verify(app, "d@1").ok


def test_show_member_out_writes_the_file_with_its_recorded_mode_and_mtime(
    cli_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    want = make_source(tmp_path / "src")
    c = ("--config", str(cli_config))
    assert run(capsys, *c, "register", str(tmp_path / "src"), "--name", "d", "--version", "1", "--no-progress")[0] == 0
    for rel in ("bin/run.sh", "secret/key.pem"):
        out = tmp_path / rel.replace("/", "-")
        code, _, err = run(capsys, *c, "show", "member", "d@1", rel, "--out", str(out))
        assert code == 0, err
        assert out.read_bytes() == want["files"][rel]
        assert stat.S_IMODE(out.stat().st_mode) == want["modes"][rel]
        assert out.stat().st_mtime_ns == want["mtimes"][rel]
    code, _, err = run(capsys, *c, "show", "member", "d@1", "tools", "--out", str(tmp_path / "x"))
    assert code == 2 and "d@1:tools is a symbolic link to bin" in err


def test_a_restored_link_that_would_lead_outside_the_tier_is_refused_and_not_left_behind(
    app: App, tmp_path: Path
) -> None:
    from tiering.errors import PermanentBackendError
    from tiering.storage.base import PosixEntry
    from tiering.storage.file import FileBackend

    backend = FileBackend(tmp_path / "tier")
    backend.put(PREFIX + "a.txt", io.BytesIO(b"a"))
    for target in ("../../../../etc/passwd", "/etc/passwd"):
        with pytest.raises(PermanentBackendError, match="link target"):
            backend.apply_tree(PREFIX, [PosixEntry("evil", "link", target=target)])
        assert not (tmp_path / "tier" / PREFIX / "evil").is_symlink()


# ------------------------------------------------------------------------------------------ the manifest


def test_a_manifest_written_before_modes_dirs_and_links_still_parses() -> None:
    old = json.dumps({
        "format": 1, "name": "d", "version": "1", "kind": "dataset", "owner": "", "tags": {}, "tier": "hot",
        "written_at": "2026-01-01T00:00:00+00:00", "member_count": 1, "size_bytes": 3, "content_xxh3_128": "x",
        "members": [{"path": "a.txt", "size": 3, "xxh3_128": "abc"}],
    }).encode()
    members, entries = manifest_contents(parse_manifest(old))
    assert members == [ManifestMember("a.txt", 3, "abc")]
    assert entries == []


def test_a_manifest_carries_modes_times_directories_and_links_and_reads_them_back() -> None:
    import datetime as dt

    data = build_manifest(
        name="d", version="1", kind="dataset", owner="", tags={}, tier="hot",
        written_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        members=[ManifestMember("bin/run.sh", 3, "abc", mode=0o755, mtime_ns=T0)],
        entries=[ManifestEntry("empty", "dir", None, 0o700, T0), ManifestEntry("run", "link", "bin/run.sh")],
    )
    doc = parse_manifest(data)
    assert doc["members"][0]["mode"] == "0755"
    assert doc["dirs"] == [{"path": "empty", "mode": "0700", "mtime_ns": T0}]
    assert doc["links"] == [{"path": "run", "target": "bin/run.sh"}]
    members, entries = manifest_contents(doc)
    assert members[0].mode == 0o755 and members[0].mtime_ns == T0
    assert entries == [ManifestEntry("empty", "dir", None, 0o700, T0), ManifestEntry("run", "link", "bin/run.sh")]


def test_registering_a_directory_holding_only_a_link_outside_names_the_link(app: App, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/data").symlink_to(tmp_path)
    with pytest.raises(UsageError, match="is a symbolic link to"):
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
