"""A simulated 120 days of use, one nightly cycle per day on a fixed clock, shared by the functional
(file tiers, SQLite) and integration (two SeaweedFS servers, PostgreSQL) tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from helpers import FixedClock, check_invariant, make_tree, open_app

from tiering import datasets, registration
from tiering.lifecycle.nightly import load_active_policy, nightly_cycle
from tiering.lifecycle.pins import pin

START = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)


def run_120_days(tmp_path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Returns where every dataset ended, the day of each move, and the invariant report."""
    clock = FixedClock(START)
    app = open_app(data, clock=clock)
    try:
        for i, name in enumerate(("busy", "idle", "revived", "keep", "pinned")):
            make_tree(tmp_path / "src" / name, 6, seed=i, max_size=20_000)
            tags = {"retention": "keep-online"} if name == "keep" else {}
            registration.register(app, str(tmp_path / "src" / name), name=name, version="1", tier="hot", tags=tags)
        pin(app, "pinned", tier="hot", until=START + dt.timedelta(days=100), reason="model fraud@v3 is live")
        policy = load_active_policy(app)
        moves: dict[str, list[tuple[int, str, str]]] = {}
        for day in range(121):
            clock.now = START + dt.timedelta(days=day)
            datasets.resolve(app, "busy")
            if day >= 60:
                datasets.resolve(app, "revived")
            result = nightly_cycle(app, policy=policy, ignore_window=True, run_key=f"nightly:{day}")
            assert result.failed == 0, result.moves
            for m in result.moves:
                moves.setdefault(m["dataset"].split("@")[0], []).append((day, m["from"], m["to"]))
        where = {r.name: r.tier for r in datasets.list_datasets(app)}
        report = check_invariant(app)
        verified = {name: datasets.verify(app, name).ok for name in where}
        return {"where": where, "moves": moves, "invariant": report, "verified": verified}
    finally:
        app.close()


def check_outcome(outcome: dict[str, Any]) -> None:
    where, moves = outcome["where"], outcome["moves"]
    assert where == {"busy": "hot", "idle": "cold", "revived": "hot", "keep": "warm", "pinned": "warm"}, moves
    assert "busy" not in moves
    assert moves["idle"] == [(30, "hot", "warm"), (90, "warm", "cold")]
    # demoted on day 30, read daily from day 60 on, promoted once warm's 30-day residency allows it
    assert [(f, t) for _, f, t in moves["revived"]] == [("hot", "warm"), ("warm", "hot")]
    assert moves["revived"][1][0] >= 64
    assert moves["keep"] == [(30, "hot", "warm")]
    # the pin held it on hot until day 100
    assert moves["pinned"] == [(100, "hot", "warm")]
    assert outcome["invariant"].problems == []
    assert all(outcome["verified"].values())
