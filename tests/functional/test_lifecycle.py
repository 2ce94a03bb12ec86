"""The lifecycle on file tiers and SQLite: 120 simulated days, pins, policy runs, why, plan, report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from helpers import FixedClock, make_tree, open_app, workspace_config
from lifecycle_scenario import check_outcome, run_120_days

from tiering import datasets, registration
from tiering.lifecycle.nightly import load_active_policy, make_plan, nightly_cycle, why
from tiering.lifecycle.pins import pin
from tiering.lifecycle.report import report


def test_120_simulated_days_move_each_dataset_where_its_use_says(tmp_path: Path) -> None:
    check_outcome(run_120_days(tmp_path, workspace_config(tmp_path)))


def test_why_names_the_pin_and_the_date_it_ends(tmp_path: Path) -> None:
    clock = FixedClock(dt.datetime(2026, 1, 1, 3, tzinfo=dt.UTC))
    app = open_app(workspace_config(tmp_path), clock=clock)
    try:
        make_tree(tmp_path / "src", 3)
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        pin(app, "d", tier="hot", until=dt.datetime(2026, 6, 1, tzinfo=dt.UTC), reason="model fraud@v3 is live")
        policy = load_active_policy(app)
        text, decision = why(app, "d", policy=policy, now=dt.datetime(2026, 3, 1, 3, tzinfo=dt.UTC))
        assert "pin" in text and "2026-06-01" in text and "model fraud@v3 is live" in text
        assert decision["outcome"] != "move"
        plan = make_plan(app, policy=policy, now=dt.datetime(2026, 7, 1, 3, tzinfo=dt.UTC))
        assert [(m.label, m.to_tier, m.rule) for m in plan.moves] == [("d@1", "warm", "demote-idle")]
    finally:
        app.close()


def test_a_run_key_runs_once_and_a_closed_window_moves_nothing(tmp_path: Path) -> None:
    clock = FixedClock(dt.datetime(2026, 1, 1, 3, tzinfo=dt.UTC))
    app = open_app(workspace_config(tmp_path), clock=clock)
    try:
        make_tree(tmp_path / "src", 3)
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        policy = load_active_policy(app)
        clock.now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)  # noon: outside 02:00-06:00
        closed = nightly_cycle(app, policy=policy, now=clock.now, run_key="nightly:2026-03-01")
        assert closed.state == "skipped" and closed.planned == 1 and closed.done == 0
        assert datasets.resolve(app, "d", record=False).tier == "hot"
        # the skipped run gave its key back: the night's run inside the window still happens, once
        done = nightly_cycle(app, policy=policy, now=clock.now, run_key="nightly:2026-03-01", ignore_window=True)
        assert (done.state, done.done) == ("done", 1)
        assert datasets.resolve(app, "d", record=False).tier == "warm"
        again = nightly_cycle(app, policy=policy, now=clock.now, run_key="nightly:2026-03-01", ignore_window=True)
        assert again.state == "skipped" and again.run_id is None and "already" in again.note
        r = report(app, policy=policy)
        assert [(t["name"], t["datasets"]) for t in r["tiers"]] == [("hot", 0), ("warm", 1), ("cold", 0)]
    finally:
        app.close()
