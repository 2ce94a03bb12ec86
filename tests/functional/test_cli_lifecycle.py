"""The lifecycle commands as a user runs them: policy check, plan, why, pin, apply, report, runs, access import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_tree, workspace_config, write_config
from test_cli import run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    config = write_config(tmp_path, workspace_config(tmp_path))
    assert run(capsys, "--config", str(config), "init")[0] == 0
    make_tree(tmp_path / "src", 3)
    code, _, err = run(capsys, "--config", str(config), "register", str(tmp_path / "src"), "--name", "d",
                       "--version", "1", "--tier", "hot")
    assert code == 0, err
    return config


def test_policy_check_accepts_the_shipped_files_and_names_the_problem_in_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(str(p) for p in (REPO / "policies").rglob("*.yaml"))
    code, out, _ = run(capsys, "policy", "check", *files)
    assert code == 0 and out.count(": OK") == len(files)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: demote\n    move: {from: hot, to: hot}\n    when: {idle_days: '>= 3'}\n")
    code, _, err = run(capsys, "policy", "check", str(bad))
    assert code == 9
    assert str(bad) in err and "demote" in err and "move" in err


def test_plan_why_pin_apply_report_runs(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = ("--config", str(ws))
    code, out, _ = run(capsys, *c, "plan", "--at", "2099-01-01", "--json")
    assert code == 0
    plan = json.loads(out)
    assert [(m["label"], m["to"], m["rule"]) for m in plan["moves"]] == [("d@1", "warm", "demote-idle")]
    code, out, _ = run(capsys, *c, "plan")
    assert "nothing to move" in out  # registered just now: not idle yet

    code, out, err = run(capsys, *c, "pin", "d", "--tier", "hot", "--until", "2100-01-01", "--reason", "live model")
    assert code == 0, err
    assert "pinned d@1 on hot or hotter until 2100-01-01" in out
    code, out, _ = run(capsys, *c, "why", "d", "--at", "2099-01-01")
    assert "pin" in out and "live model" in out
    code, out, _ = run(capsys, *c, "plan", "--at", "2099-01-01", "--json")
    assert json.loads(out)["moves"] == []
    code, out, _ = run(capsys, *c, "pins", "--json")
    assert [p["dataset"] for p in json.loads(out)] == ["d@1"]
    assert run(capsys, *c, "unpin", "d")[1].strip() == "removed 1 pin(s)"

    code, out, err = run(capsys, *c, "apply", "--at", "2099-01-01T03:00:00", "--ignore-window", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["state"], result["done"]) == ("done", 1)
    code, out, _ = run(capsys, *c, "resolve", "d", "--json")
    assert json.loads(out)["tier"] == "warm"
    code, out, _ = run(capsys, *c, "report", "--json")
    tiers = {t["name"]: t for t in json.loads(out)["tiers"]}
    assert tiers["warm"]["datasets"] == 1 and tiers["hot"]["datasets"] == 0
    code, out, _ = run(capsys, *c, "runs", "--json")
    assert [r["state"] for r in json.loads(out)] == ["done"]


def test_access_import_reports_counts_and_malformed_lines(
    ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "reads.jsonl"
    log.write_text('{"dataset": "d@1", "at": "2026-01-05T10:00:00Z"}\n'
                   '{"dataset": "d@1", "at": "2026-01-05T11:00:00Z"}\n'
                   'not json at all\n'
                   '{"dataset": "ghost@1", "at": "2026-01-05T11:00:00Z"}\n')
    code, out, _ = run(capsys, "--config", str(ws), "access", "import", str(log), "--format", "jsonl", "--json")
    assert code == 0
    r = json.loads(out)
    assert (r["lines"], r["counted"], r["unmatched"], r["malformed"]) == (4, 2, 1, 1)
    code, out, _ = run(capsys, "--config", str(ws), "show", "d", "--json")
    assert json.loads(out)["dataset"]["last_access_at"].startswith("2026-01-05T11:00")
