"""Scheduler processes against one PostgreSQL catalog: one leader, one run per night, clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_tree, open_app, workspace_config, write_config
from sqlalchemy import select

from tiering import jobs
from tiering.catalog.models import PolicyRun

EVERYTHING_DOWN = """
heat_half_life_days: 7
rules:
  - name: everything-down
    move: {from: hot, to: warm}
    when: {age_days: ">= 0"}
"""


def start_scheduler(config: Path, policy: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tiering", "--config", str(config), "scheduler", "--policy", str(policy), "--now",
         "--standby-poll", "0.5"],
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"),  # noqa: SIM115 - closed with the process
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError("condition not reached in time")


def test_two_schedulers_on_one_postgres_catalog_run_the_night_exactly_once(
    tmp_path: Path, postgres_url: str
) -> None:
    data = workspace_config(tmp_path, catalog=postgres_url)
    data["schedule"] = {"timezone": "UTC", "nightly": "0 2 * * *"}
    config = write_config(tmp_path, data)
    policy = tmp_path / "policy.yaml"
    policy.write_text(EVERYTHING_DOWN)
    app = open_app(data)
    make_tree(tmp_path / "src", 4)
    jobs.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")

    def runs() -> list[PolicyRun]:
        with app.catalog.session() as s:
            return list(s.scalars(select(PolicyRun)))

    procs = [start_scheduler(config, policy, tmp_path / f"s{i}.log") for i in range(2)]
    try:
        wait_for(lambda: any(r.state == "done" for r in runs()))
        time.sleep(2)  # the standby polls every 0.5 s: give it time to (wrongly) run too
        assert len(runs()) == 1
        logs = [(tmp_path / f"s{i}.log").read_text() for i in range(2)]
        leaders = [i for i, text in enumerate(logs) if "leader:" in text]
        assert len(leaders) == 1, logs
        standby = 1 - leaders[0]
        assert "standby" in logs[standby]
        assert jobs.resolve(app, "d", record=False).tier == "warm"

        # the leader stops cleanly; the standby takes over but the night's run key is taken
        procs[leaders[0]].send_signal(signal.SIGTERM)
        assert procs[leaders[0]].wait(timeout=30) == 0
        wait_for(lambda: "leader:" in (tmp_path / f"s{standby}.log").read_text(), timeout=30)
        time.sleep(2)
        assert len(runs()) == 1
        procs[standby].send_signal(signal.SIGTERM)
        assert procs[standby].wait(timeout=30) == 0
        assert "already happened" in (tmp_path / f"s{standby}.log").read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        app.close()


def test_a_bad_policy_file_stops_apply_with_one_clear_line_and_runs_nothing(tmp_path: Path) -> None:
    data = workspace_config(tmp_path)
    config = write_config(tmp_path, data)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: r1\n    move: {from: hot, to: warm}\n    when: {idle_days: 'about 14'}\n")
    app = open_app(data)
    try:
        proc = subprocess.run([sys.executable, "-m", "tiering", "--config", str(config), "apply", "--policy", str(bad)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 9
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and "r1" in lines[0] and "idle_days" in lines[0]
        with app.catalog.session() as s:
            assert list(s.scalars(select(PolicyRun))) == []
    finally:
        app.close()


pytestmark = pytest.mark.slow
