"""The scheduler's runs and their keys, on a fixed clock: a manual or skipped run never costs a night its run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FixedClock, make_tree, open_app, workspace_config
from sqlalchemy import select

from tiering import datasets, registration
from tiering.app import App
from tiering.catalog.models import PolicyRun
from tiering.scheduler import Scheduler

WINDOWED = """
heat_half_life_days: 7
rules:
  - name: everything-down
    move: {from: hot, to: warm}
    when: {age_days: ">= 0"}
budget: {window: "02:00-06:00"}
"""


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime(2026, 3, 11, 1, 0, tzinfo=dt.UTC))


@pytest.fixture
def app(tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    data = workspace_config(tmp_path)
    data["schedule"] = {"timezone": "UTC", "nightly": "0 2 * * *"}
    a = open_app(data, clock=clock)
    make_tree(tmp_path / "src", 3)
    registration.register(a, str(tmp_path / "src"), name="d", version="1", tier="hot")
    yield a
    a.close()


def runs(app: App) -> list[tuple[str | None, str]]:
    with app.catalog.session() as s:
        return [(r.run_key, r.state) for r in s.scalars(select(PolicyRun).order_by(PolicyRun.id))]


def asked_keys(app: App) -> list[str]:
    """The key each run was started with (a skipped run gives its key back but records it)."""
    with app.catalog.session() as s:
        return [r.summary.get("run_key", r.run_key) for r in s.scalars(select(PolicyRun).order_by(PolicyRun.id))]


def test_a_manual_run_outside_the_window_does_not_take_the_nights_key_and_the_night_still_runs(
    app: App, clock: FixedClock, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(WINDOWED)
    said: list[str] = []
    scheduler = Scheduler(app, policy_path=str(policy), run_now=True, echo=said.append)

    scheduler.manual_run()  # `tiering scheduler --now` at 01:00, before the window opens
    assert runs(app) == [(None, "skipped")]
    assert asked_keys(app)[0].startswith("manual:2026-03-11T01:00")

    clock.now = dt.datetime(2026, 3, 11, 2, 0, tzinfo=dt.UTC)
    scheduler.nightly()
    assert runs(app)[-1] == ("nightly:2026-03-11", "done"), said
    assert datasets.resolve(app, "d", record=False).tier == "warm"


def test_a_nightly_run_skipped_outside_the_window_leaves_its_key_for_the_run_inside_it(
    app: App, clock: FixedClock, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(WINDOWED)
    said: list[str] = []
    scheduler = Scheduler(app, policy_path=str(policy), echo=said.append)

    scheduler.nightly()  # fired at 01:00 (a cron set before the window): nothing may move
    assert runs(app) == [(None, "skipped")]
    assert datasets.resolve(app, "d", record=False).tier == "hot"

    clock.now = dt.datetime(2026, 3, 11, 2, 30, tzinfo=dt.UTC)
    scheduler.nightly()
    assert runs(app) == [(None, "skipped"), ("nightly:2026-03-11", "done")], said
    scheduler.nightly()  # the night's run happened: a second firing does nothing
    assert len(runs(app)) == 2
    assert datasets.resolve(app, "d", record=False).tier == "warm"
