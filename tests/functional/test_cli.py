"""The CLI as a user meets it: one clear line and an exit code for bad input, and nothing changed."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from helpers import make_tree, workspace_config, write_config
from servers import SeaweedServer

from tiering.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ws(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    config = write_config(tmp_path, workspace_config(tmp_path))
    code, _, err = run(capsys, "--config", str(config), "init")
    assert code == 0, err
    make_tree(tmp_path / "src", 5, seed=3)
    return config


def dataset_count(capsys: pytest.CaptureFixture[str], config: Path) -> int:
    code, out, _ = run(capsys, "--config", str(config), "ls", "--json")
    assert code == 0
    return len(json.loads(out))


def test_init_writes_a_starter_config_and_the_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiering.yaml"
    code, out, _ = run(capsys, "--config", str(config), "init")
    assert code == 0
    assert "wrote" in out and "ready" in out
    data = yaml.safe_load(config.read_text())
    assert set(data["tiers"]) == {"hot", "warm", "cold"}
    code, out, _ = run(capsys, "--config", str(config), "tiers", "--json")
    assert code == 0
    assert [t["name"] for t in json.loads(out)] == ["hot", "warm", "cold"]


def test_register_ls_show_resolve_move_verify_through_the_cli(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ("--config", str(ws))
    code, out, err = run(capsys, *c, "register", str(tmp_path / "src"), "--name", "imagenet-mini",
                         "--version", "2024-01", "--tier", "hot", "--tag", "team=vision", "--json")
    assert code == 0, err
    assert json.loads(out)["members"] == 5
    code, out, _ = run(capsys, *c, "resolve", "imagenet-mini", "--json")
    assert json.loads(out)["tier"] == "hot"
    code, out, err = run(capsys, *c, "move", "imagenet-mini@2024-01", "--to", "warm", "--no-progress")
    assert code == 0, err
    assert out.startswith("moved imagenet-mini@2024-01: hot -> warm, 5 files")
    code, out, _ = run(capsys, *c, "show", "imagenet-mini", "--json")
    detail = json.loads(out)
    assert detail["dataset"]["tier"] == "warm"
    assert detail["replicas"] == {"warm": {"live": 5}}
    assert detail["reads_30d"] == 1
    assert [h["action"] for h in detail["history"]] == ["register", "move"]
    code, out, _ = run(capsys, *c, "verify", "imagenet-mini", "--no-progress")
    assert code == 0 and "OK" in out
    code, out, _ = run(capsys, *c, "ls", "--tier", "warm")
    assert "imagenet-mini@2024-01" in out and "team=vision" in out


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["move", "imagenet-mini", "--to", "lukewarm"], 3,
         "unknown tier 'lukewarm'; configured tiers: hot, warm, cold"),
        (["register", "{tmp}/nope", "--name", "x", "--version", "1"], 3, "path not found"),
        (["register", "{tmp}/src", "--name", "a/b", "--version", "1"], 2, "invalid name 'a/b'"),
        (["register", "{tmp}/src", "--name", "x", "--version", ".."], 2, "invalid version '..'"),
        (["register", "{tmp}/src", "--name", "x", "--version", "1", "--tier", "tepid"], 3, "unknown tier 'tepid'"),
        (["register", "{tmp}/src", "--name", "x", "--version", "1", "--tag", "novalue"], 2, "--tag expects KEY=VALUE"),
        (["show", "ghost@1"], 3, "dataset 'ghost@1' is not in the catalog"),
        (["resolve", "ghost"], 3, "dataset 'ghost' is not in the catalog"),
    ],
)
def test_bad_input_gets_one_line_and_an_exit_code_and_changes_nothing(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, needle: str
) -> None:
    got, _out, err = run(capsys, "--config", str(ws), *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert got == code
    assert needle in _one_line_error(err)
    assert dataset_count(capsys, ws) == 0
    assert not any((tmp_path / "tiers").rglob("*.bin"))


def test_a_version_that_exists_with_other_content_is_refused(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ("--config", str(ws))
    assert run(capsys, *c, "register", str(tmp_path / "src"), "--name", "x", "--version", "1")[0] == 0
    (tmp_path / "src" / "f0000.bin").write_bytes(b"new content")
    code, _, err = run(capsys, *c, "register", str(tmp_path / "src"), "--name", "x", "--version", "1")
    assert code == 4
    assert "x@1 is already registered with different content" in _one_line_error(err)
    code, out, _ = run(capsys, *c, "show", "x@1", "--json")
    assert json.loads(out)["dataset"]["members"] == 5


def test_a_config_with_a_wrong_type_names_the_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = workspace_config(tmp_path)
    data["transfer"]["workers"] = "many"
    config = write_config(tmp_path, data)
    code, _, err = run(capsys, "--config", str(config), "ls")
    assert code == 2
    assert f"{config}: transfer.workers:" in _one_line_error(err)
    assert "'many'" in err


def test_a_missing_config_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--config", str(tmp_path / "none.yaml"), "ls")
    assert code == 2
    assert "tiering init" in _one_line_error(err)


def _s3_config(tmp_path: Path, endpoint: str, env_prefix: str) -> Path:
    data = workspace_config(tmp_path, tiers={
        "hot": {"rank": 0, "backend": f"s3://b-{uuid.uuid4().hex[:8]}/p", "endpoint": endpoint,
                "credentials": {"env": env_prefix}},
        "warm": {"rank": 1, "backend": (tmp_path / "warm").as_uri()},
    }, transfer={"retries": 0})
    return write_config(tmp_path, data)


def test_an_unreachable_endpoint_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOWN_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("DOWN_SECRET_ACCESS_KEY", "s")
    config = _s3_config(tmp_path, "http://127.0.0.1:9", "DOWN")
    make_tree(tmp_path / "src", 2)
    assert run(capsys, "--config", str(config), "migrate")[0] == 0
    code, _, err = run(capsys, "--config", str(config), "register", str(tmp_path / "src"), "--name", "x",
                       "--version", "1")
    assert code == 6
    assert "127.0.0.1:9" in _one_line_error(err)


def test_wrong_credentials_are_reported_without_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, seaweed_auth: SeaweedServer
) -> None:
    secret = "wrong-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("BAD_ACCESS_KEY_ID", "not-a-user")
    monkeypatch.setenv("BAD_SECRET_ACCESS_KEY", secret)
    config = _s3_config(tmp_path, seaweed_auth.endpoint, "BAD")
    make_tree(tmp_path / "src", 2)
    assert run(capsys, "--config", str(config), "migrate")[0] == 0
    code, out, err = run(capsys, "--config", str(config), "-vv", "register", str(tmp_path / "src"), "--name", "x",
                         "--version", "1")
    assert code == 6
    assert "denied" in err.lower()
    assert secret not in err + out
    code, out, _ = run(capsys, "--config", str(config), "ls", "--json")
    assert json.loads(out) == []


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "register", "--help")
    assert code == 0
    assert "--adopt" in out and "Examples" in out
    code, out, _ = run(capsys, "--help")
    assert "tiering demo" in out




def test_tiering_debug_adds_a_traceback_and_keeps_the_errors_exit_code(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERING_DEBUG", "1")
    code, _, err = run(capsys, "--config", str(ws), "show", "ghost@1")
    assert code == 3
    assert "Traceback" in err
    assert "dataset 'ghost@1' is not in the catalog" in err.splitlines()[-1]
def _corrupt_first_member(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    code, _, err = run(capsys, "--config", str(config), "register", str(tmp_path / "src"), "--name", "d",
                       "--version", "1", "--tier", "hot")
    assert code == 0, err
    victim = sorted(p.relative_to(tmp_path / "src").as_posix() for p in (tmp_path / "src").rglob("*") if p.is_file())[0]
    stored = tmp_path / "tiers/hot/dataset/d/1" / victim
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    stored.write_bytes(bytes(raw))
    return victim


def run_bytes(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI in a child process, its stdout kept as bytes."""
    return subprocess.run([sys.executable, "-m", "tiering", "--config", str(config), *args],
                          capture_output=True, timeout=120, check=False)


def test_show_member_of_a_corrupt_member_leaves_no_file_and_writes_nothing_to_stdout(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = _corrupt_first_member(tmp_path, ws, capsys)
    dest = tmp_path / "out" / "member.bin"
    dest.parent.mkdir()
    code, _, err = run(capsys, "--config", str(ws), "show", "member", "d@1", victim, "--out", str(dest))
    assert code == 7 and "checksum mismatch" in err
    assert list(dest.parent.iterdir()) == []  # neither the file nor a partial one

    piped = run_bytes(ws, "show", "member", "d@1", victim, "--out", "-")
    assert piped.returncode == 7 and b"checksum mismatch" in piped.stderr
    assert piped.stdout == b""  # no unverified byte reached stdout


def test_show_member_to_stdout_streams_verified_bytes_and_refuses_a_member_over_the_memory_bound(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiering import datasets
    from tiering.app import App
    from tiering.config import load_config
    from tiering.errors import UsageError

    code, _, err = run(capsys, "--config", str(ws), "register", str(tmp_path / "src"), "--name", "d",
                       "--version", "1", "--tier", "hot")
    assert code == 0, err
    piped = run_bytes(ws, "show", "member", "d@1", "f0000.bin", "--out", "-")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (tmp_path / "src/f0000.bin").read_bytes()
    size = (tmp_path / "src/f0000.bin").stat().st_size
    with App.open(load_config(ws)) as app:
        sink = bytearray()

        class Sink:
            def write(self, data: bytes) -> int:
                sink.extend(data)
                return len(data)

        with pytest.raises(UsageError, match="give --out FILE"):
            datasets.read_member(app, "d@1", "f0000.bin", Sink(), verify_first=True, max_buffer=size - 1)
        assert sink == bytearray()
        dest = tmp_path / "kept.bin"
        assert datasets.save_member(app, "d@1", "f0000.bin", dest) == size
        assert dest.read_bytes() == (tmp_path / "src/f0000.bin").read_bytes()
