"""A real `tiering move` process is SIGKILLed at each named step; `tiering resume` then finishes the job.

Afterwards every member's bytes are read back from wherever the catalog says they are and hash to the
catalog digest, no member is missing, and no stray copy or unfinished upload is left on any tier.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import check_invariant, make_tree, open_app, run_cli, workspace_config, write_config

from tiering import datasets, registration
from tiering.faults import CRASH_POINTS

MOVE_CRASH_POINTS = [p for p in CRASH_POINTS if not p.startswith("restore")]


def crash_then_resume(tmp_path: Path, data: dict[str, Any], point: str, *, files: dict[str, bytes]) -> None:
    config = write_config(tmp_path, data)
    app = open_app(data)
    try:
        src = tmp_path / "src"
        for rel, payload in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(payload)
        registration.register(app, str(src), name="d", version="1", tier="hot")
    finally:
        app.close()

    crashed = run_cli(config, "move", "d@1", "--to", "warm", "--no-progress", crash_at=point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    app = open_app(data)
    try:
        # right after the crash, nothing is lost: every member still has a verified copy
        mid = check_invariant(app, allow_stray=True)
        assert mid.problems == [], mid.problems
    finally:
        app.close()

    resumed = run_cli(config, "resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr

    app = open_app(data)
    try:
        assert datasets.resolve(app, "d@1", record=False).tier == "warm"
        report = check_invariant(app)
        assert report.problems == [], report.problems
        assert report.members == len(files)
        warm = app.backend("warm")
        for rel, payload in files.items():
            stream = warm.open_read(f"dataset/d/1/{rel}")
            assert stream.read() == payload
            stream.close()
        assert [i.key for i in app.backend("hot").list("dataset/")] == []
        assert datasets.resume(app) == []
    finally:
        app.close()


def sample_files(tmp_path: Path) -> dict[str, bytes]:
    files = make_tree(tmp_path / "gen", 12, seed=11, max_size=20_000)
    files["big/weights.bin"] = os.urandom(3 * 2**20 + 17)
    return files


@pytest.mark.parametrize("point", MOVE_CRASH_POINTS)
def test_kill_9_at_each_step_of_a_move_then_resume_loses_nothing(tmp_path: Path, point: str) -> None:
    crash_then_resume(tmp_path, workspace_config(tmp_path), point, files=sample_files(tmp_path))
