"""Every exit code the README's CLI reference documents, produced by a real ``tiering`` process.

The README line checked here: "2 bad config or argument, 3 not found, 4 conflict, 5 catalog, 6 storage
backend, 7 copy or verification failure, 8 state, 9 policy, 10 archived (restore first), 75 a move left
unfinished (interrupted, or a source delete refused: `tiering resume` finishes it), 130 interrupted", and
`tiering scrub`'s "Exit 0 clean, 1 findings left unfixed". Exit 8 (a lease lost to another worker, a
leader epoch gone stale) needs two workers racing; tests/functional/test_claims.py and
tests/integration/test_scheduler.py hold it at the API.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import make_tree, run_cli, start_cli, workspace_config, write_config


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Any]:
    d = workspace_config(tmp_path)
    d["tiers"]["cold"].update({"archive": "packed", "pack_threshold": "40KB", "shard_size": "200KB"})
    return d


@pytest.fixture
def ws(tmp_path: Path, data: dict[str, Any]) -> Path:
    config = write_config(tmp_path, data)
    assert run_cli(config, "migrate").returncode == 0
    make_tree(tmp_path / "src", 6, seed=7)
    done = run_cli(config, "register", str(tmp_path / "src"), "--name", "d", "--version", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    return config


def test_a_command_that_succeeds_exits_0(ws: Path) -> None:
    done = run_cli(ws, "ls")
    assert done.returncode == 0, done.stderr
    assert "d@1" in done.stdout


def test_a_bad_argument_and_a_bad_config_exit_2(ws: Path, tmp_path: Path) -> None:
    missing_option = run_cli(ws, "move", "d")
    assert missing_option.returncode == 2
    assert "--to" in missing_option.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("catalog: sqlite:///x.db\ntiers: {hot: {rank: 0, backend: 'file:///tmp/x', colour: red}}\n")
    bad_config = run_cli(bad, "ls")
    assert bad_config.returncode == 2
    assert str(bad) in one_error_line(bad_config.stderr)


def test_a_dataset_that_is_not_registered_exits_3(ws: Path) -> None:
    done = run_cli(ws, "show", "nope@1")
    assert done.returncode == 3
    assert "nope" in one_error_line(done.stderr)


def test_other_content_under_a_registered_version_exits_4(ws: Path, tmp_path: Path) -> None:
    make_tree(tmp_path / "other", 3, seed=8)
    done = run_cli(ws, "register", str(tmp_path / "other"), "--name", "d", "--version", "1", "--no-progress")
    assert done.returncode == 4
    assert "d@1" in one_error_line(done.stderr)


def test_a_catalog_without_its_schema_exits_5(tmp_path: Path, data: dict[str, Any]) -> None:
    config = write_config(tmp_path, data)
    done = run_cli(config, "ls")
    assert done.returncode == 5
    assert "tiering migrate" in one_error_line(done.stderr)


def test_an_unreachable_storage_endpoint_exits_6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOWN_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("DOWN_SECRET_ACCESS_KEY", "s")
    config = write_config(tmp_path, workspace_config(tmp_path, tiers={
        "hot": {"rank": 0, "backend": "s3://down/p", "endpoint": "http://127.0.0.1:9", "credentials": {"env": "DOWN"}},
        "warm": {"rank": 1, "backend": (tmp_path / "warm").as_uri()},
    }, transfer={"retries": 0}))
    assert run_cli(config, "migrate").returncode == 0
    make_tree(tmp_path / "src", 2)
    done = run_cli(config, "register", str(tmp_path / "src"), "--name", "x", "--version", "1", "--no-progress")
    assert done.returncode == 6
    assert "127.0.0.1:9" in one_error_line(done.stderr)


def test_a_corrupted_copy_found_by_verify_exits_7(ws: Path, tmp_path: Path) -> None:
    stored = sorted(p for p in (tmp_path / "tiers" / "hot").rglob("*.bin") if p.stat().st_size > 0)[0]
    body = bytearray(stored.read_bytes())
    body[0] ^= 0xFF
    stored.write_bytes(bytes(body))
    done = run_cli(ws, "verify", "d@1", "--no-progress")
    assert done.returncode == 7
    assert "PROBLEM" in done.stdout


def test_a_policy_out_of_bounds_exits_9(ws: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("heat_half_life_days: 1e308\n")
    done = run_cli(ws, "policy", "check", str(policy))
    assert done.returncode == 9
    assert str(policy) in one_error_line(done.stderr)


def test_reading_an_archived_dataset_exits_10(ws: Path) -> None:
    assert run_cli(ws, "move", "d", "--to", "cold").returncode == 0
    done = run_cli(ws, "resolve", "d")
    assert done.returncode == 10
    assert "tiering restore d@1" in done.stderr


def test_scrub_exits_1_while_findings_are_left_and_0_once_clean(ws: Path, tmp_path: Path) -> None:
    assert run_cli(ws, "scrub").returncode == 0
    stray = next((tmp_path / "tiers" / "hot").rglob("*.bin")).parent / "stray.bin"
    stray.write_bytes(b"owned by no dataset")
    found = run_cli(ws, "scrub")
    assert found.returncode == 1
    assert "stray.bin" in found.stdout
    assert run_cli(ws, "scrub", "--fix", "--older-than", "0").returncode == 0
    assert not stray.exists()
    assert run_cli(ws, "scrub").returncode == 0


def frozen_while(proc: subprocess.Popen[str], started: Callable[[], bool]) -> None:
    """SIGSTOP ``proc`` as soon as ``started()``, so that a signal sent next lands in the middle of its work."""
    deadline = time.monotonic() + 60
    while not started():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the command never started its work"
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)


def test_a_move_interrupted_by_ctrl_c_exits_75_and_resume_finishes_it(tmp_path: Path, data: dict[str, Any]) -> None:
    config = write_config(tmp_path, data)
    assert run_cli(config, "migrate").returncode == 0
    make_tree(tmp_path / "big", 300, seed=9, min_size=100_000, max_size=300_000)
    assert run_cli(config, "register", str(tmp_path / "big"), "--name", "big", "--version", "1").returncode == 0
    warm = tmp_path / "tiers" / "warm"
    move = start_cli(config, "move", "big", "--to", "warm", "--no-progress")
    frozen_while(move, lambda: warm.exists() and any(p.is_file() for p in warm.rglob("*")))
    move.send_signal(signal.SIGINT)
    move.send_signal(signal.SIGCONT)
    _, err = move.communicate(timeout=60)
    assert move.returncode == 75, err
    assert "tiering resume" in err
    resumed = run_cli(config, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "big@1" in resumed.stdout and "done" in resumed.stdout
    assert run_cli(config, "verify", "big", "--tier", "warm", "--no-progress").returncode == 0


def test_ctrl_c_while_a_command_waits_exits_130(ws: Path) -> None:
    # stdin stays open: `access import -` waits in read(2) for its first line
    proc = subprocess.Popen([sys.executable, "-m", "tiering", "--config", str(ws), "access", "import", "-",
                             "--format", "jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def reading_stdin() -> bool:
        fields = Path(f"/proc/{proc.pid}/syscall").read_text().split()
        return len(fields) > 1 and fields[0] in ("0", "63") and fields[1] == "0x0"  # read on fd 0 (x86_64, arm64)

    frozen_while(proc, reading_stdin)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert one_error_line(err) == "aborted"
