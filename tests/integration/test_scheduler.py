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
from sqlalchemy import select, text

from tiering import datasets, registration
from tiering.catalog.leader import LeaderFence
from tiering.catalog.models import LeaderEpoch, PolicyRun
from tiering.errors import NotLeader
from tiering.lifecycle.nightly import load_active_policy, nightly_cycle
from tiering.moves.executor import Executor

EVERYTHING_DOWN = """
heat_half_life_days: 7
rules:
  - name: everything-down
    move: {from: hot, to: warm}
    when: {age_days: ">= 0"}
"""


def start_scheduler(config: Path, policy: Path, log: Path, *, now: bool = True) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tiering", "--config", str(config), "scheduler", "--policy", str(policy),
         *(["--now"] if now else []), "--standby-poll", "0.5"],
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
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")

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
        assert datasets.resolve(app, "d", record=False).tier == "warm"

        # the leader stops cleanly; the standby takes over but the night's run key is taken
        procs[leaders[0]].send_signal(signal.SIGTERM)
        assert procs[leaders[0]].wait(timeout=30) == 0
        wait_for(lambda: "leader:" in (tmp_path / f"s{standby}.log").read_text(), timeout=30)
        time.sleep(2)
        assert len(runs()) == 1
        procs[standby].send_signal(signal.SIGTERM)
        assert procs[standby].wait(timeout=30) == 0
        assert "not run again on taking over" in (tmp_path / f"s{standby}.log").read_text()
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


def test_a_leader_whose_lock_connection_is_killed_steps_down_in_seconds_and_its_old_epoch_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    data = workspace_config(tmp_path, catalog=postgres_url)
    data["schedule"] = {"timezone": "UTC", "nightly": "0 2 * * *"}
    config = write_config(tmp_path, data)
    policy = tmp_path / "policy.yaml"
    policy.write_text(EVERYTHING_DOWN)
    app = open_app(data)
    make_tree(tmp_path / "src", 4)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    logs = [tmp_path / f"s{i}.log" for i in range(2)]
    procs = [start_scheduler(config, policy, log, now=False) for log in logs]
    try:
        wait_for(lambda: sum("leader: epoch 1;" in log.read_text() for log in logs) == 1, timeout=60)
        old = next(i for i, log in enumerate(logs) if "leader: epoch 1;" in log.read_text())
        new = 1 - old
        wait_for(lambda: "standby" in logs[new].read_text(), timeout=30)
        with app.catalog.engine.connect() as conn:
            [lock_pid] = conn.execute(text(
                "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
            )).scalars().all()
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": lock_pid}).scalar()
        killed = time.monotonic()
        # the old leader notices within seconds, stops leading and waits on standby; the other takes office
        wait_for(lambda: "lost the leader lock (epoch 1)" in logs[old].read_text(), timeout=15)
        assert time.monotonic() - killed < 10
        wait_for(lambda: "leader: epoch 2;" in logs[new].read_text(), timeout=30)
        wait_for(lambda: "standby" in logs[old].read_text().split("lost the leader lock")[-1], timeout=30)
        assert procs[old].poll() is None  # still running, as a standby
        with app.catalog.session() as s:
            assert s.get_one(LeaderEpoch, "scheduler").epoch == 2

        # whatever the deposed leader still tries under epoch 1, the catalog refuses and writes nothing
        stale = LeaderFence("scheduler", 1)
        with app.catalog.session() as s:
            ds_id = datasets.find_dataset(s, "d").id
        with pytest.raises(NotLeader, match="epoch 1 is no longer current"):
            Executor(app).create_job(ds_id, "warm", fence=stale)
        with pytest.raises(NotLeader):
            nightly_cycle(app, policy=load_active_policy(app, str(policy)), run_key="nightly:stale", fence=stale,
                          ignore_window=True)
        with app.catalog.session() as s:
            assert list(s.scalars(select(PolicyRun))) == []
        assert datasets.resolve(app, "d", record=False).tier == "hot"
        # the current epoch is accepted
        Executor(app).create_job(ds_id, "warm", fence=LeaderFence("scheduler", 2))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        app.close()


pytestmark = pytest.mark.slow
