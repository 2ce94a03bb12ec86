"""Policy numbers are bounded: whatever `policy check` accepts, the planner plans without an exception."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config_hardening import BILLION_LAUGHS, run
from test_planner_properties import NOW, datasets, tier_facts

from tiering.errors import PolicyError
from tiering.lifecycle.explain import explain
from tiering.lifecycle.inputs import DatasetFacts
from tiering.lifecycle.model import load_policy, parse_policy
from tiering.lifecycle.planner import plan_moves

GiB = 2**30


def _rule(**when: Any) -> dict[str, Any]:
    return {"name": "demote", "move": {"from": "hot", "to": "warm"}, "when": when}


@pytest.mark.parametrize(("policy", "rule", "field"), [
    ({"heat_half_life_days": 1e308}, "", "heat_half_life_days"),
    ({"heat_half_life_days": float("inf")}, "", "heat_half_life_days"),
    ({"heat_half_life_days": float("nan")}, "", "heat_half_life_days"),
    ({"tiers": {"hot": {"min_residency_days": 1e29}}}, "", "tiers.hot.min_residency_days"),
    ({"tiers": {"hot": {"min_residency_days": float("inf")}}}, "", "tiers.hot.min_residency_days"),
    ({"tiers": {"hot": {"high_watermark": float("nan"), "low_watermark": 0.5}}}, "", "tiers.hot.high_watermark"),
    ({"budget": {"max_bytes": "9" * 25 + "PiB"}}, "", "budget.max_bytes"),
    ({"budget": {"max_bytes": 2**64}}, "", "budget.max_bytes"),
    ({"budget": {"max_datasets": 2**64}}, "", "budget.max_datasets"),
    ({"rules": [_rule(age_days=">= 1e308")]}, "demote", "when.age_days"),
    ({"rules": [_rule(idle_days="> -1e29")]}, "demote", "when.idle_days"),
    ({"rules": [_rule(reads_7d=">= 1e300")]}, "demote", "when.reads_7d"),
    ({"rules": [_rule(heat="< 1e300")]}, "demote", "when.heat"),
    ({"rules": [_rule(reads_99999d=">= 1")]}, "demote", "when"),
])
def test_numbers_beyond_their_bounds_are_refused_naming_file_rule_field_and_expected(
    policy: dict[str, Any], rule: str, field: str
) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(policy, source="p.yaml")
    assert (err.value.file, err.value.rule, err.value.field) == ("p.yaml", rule, field)
    assert "expected" in str(err.value)


def test_the_largest_accepted_numbers_plan_without_an_exception() -> None:
    policy = parse_policy({
        "heat_half_life_days": 36500,
        "tiers": {"hot": {"min_residency_days": 36500}, "warm": {"min_residency_days": 36500}},
        "rules": [_rule(age_days=">= 36500", idle_days="> -36500", heat="< 9e18", reads_36500d=">= 0")],
        "budget": {"max_bytes": 2**63 - 1, "max_datasets": 2**63 - 1},
    }, source="p.yaml")
    old = NOW - timedelta(days=36500)
    facts = [DatasetFacts(
        id=1, name="d", version="1", kind="dataset", owner="a", home_tier="hot", size_bytes=GiB, created_at=old,
        home_since=old, tags={}, last_access_at=None, reads={7: 0, 36500: 0}, heat=0.0, pins=[], busy=False,
    )]
    plan = plan_moves(facts, tier_facts(facts, hot_capacity=GiB, warm_capacity=None), policy=policy, now=NOW)
    assert "demote" in explain(plan, 1)


def test_a_billion_laughs_policy_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS.replace("tiers: *lol9", "description: *lol9"))
    with pytest.raises(PolicyError) as err:
        load_policy(bomb)
    assert err.value.file == str(bomb) and "refused" in str(err.value)
    assert "lol" not in str(err.value)


def test_plan_refuses_a_policy_with_an_overflowing_number_as_a_policy_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "tiering.yaml"
    cfg.write_text(yaml.safe_dump({
        "catalog": f"sqlite:///{tmp_path / 'c.db'}",
        "tiers": {"hot": {"rank": 0, "backend": (tmp_path / "hot").as_uri()},
                  "warm": {"rank": 1, "backend": (tmp_path / "warm").as_uri()}},
    }))
    policy = tmp_path / "p.yaml"
    policy.write_text("heat_half_life_days: 1e308\ntiers:\n  hot: {min_residency_days: 1e29}\n")
    assert run(capsys, "--config", str(cfg), "init")[0] == 0
    for command in (["plan"], ["apply", "--ignore-window"], ["policy", "check"]):
        args = [*command, str(policy)] if command[0] == "policy" else [*command, "--policy", str(policy)]
        code, _, err = run(capsys, "--config", str(cfg), *args)
        assert code == 9, (command, err)
        assert str(policy) in err and "heat_half_life_days" in err and "internal error" not in err


def test_policy_check_refuses_an_unknown_tier_whenever_a_config_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "tiering.yaml"
    cfg.write_text(yaml.safe_dump({
        "catalog": f"sqlite:///{tmp_path / 'c.db'}",
        "tiers": {"hot": {"rank": 0, "backend": (tmp_path / "hot").as_uri()},
                  "warm": {"rank": 1, "backend": (tmp_path / "warm").as_uri()}},
    }))
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [
        {"name": "demote", "move": {"from": "hot", "to": "wram"}, "when": {"idle_days": ">= 3"}}]}))
    code, _, err = run(capsys, "--config", str(cfg), "policy", "check", str(policy))
    assert code == 9
    assert str(policy) in err and "'demote'" in err and "move.to" in err and "'wram'" in err
    code, out, _ = run(capsys, "--config", str(cfg), "policy", "check", "--no-tiers", str(policy))
    assert code == 0 and "OK" in out


# --- any policy that validates can be planned ----------------------------------------------------------------

#: numbers drawn from the whole range, with the edges of the bounds and small ordinary ones drawn often enough
#: that many policies validate
_NUMBERS = st.one_of(
    st.sampled_from([0, 1e-300, 5e-324, 36500, 36499.999, 2**53, 2**63 - 1, 9.2e18]),
    st.sampled_from([0, 1e-300, 5e-324, 36500, 36499.999, 2**53, 2**63 - 1, 9.2e18]),
    st.integers(0, 60),
    st.floats(0, 36500, allow_nan=False),
    st.sampled_from([-1, 36501, 1e29, 1e308, -1e308, 2**63, float("inf"), float("nan")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)


def _number_text(value: float | int) -> str:
    return repr(value) if not isinstance(value, float) or math.isfinite(value) else str(value)


@st.composite
def hostile_policies(draw: st.DrawFn) -> dict[str, Any]:
    """Policies whose every number is drawn from the whole range, valid or not."""
    operators = st.sampled_from([">=", ">", "<=", "<", "==", "!="])
    when: dict[str, Any] = {}
    for criterion in draw(st.sets(st.sampled_from(["age_days", "idle_days", "heat", "reads_7d", "size"]),
                                  min_size=1, max_size=3)):
        number = draw(_NUMBERS)
        if criterion == "size":
            when["size"] = f"{draw(operators)} {abs(number) if isinstance(number, int) else 1}GiB"
        else:
            when[criterion] = f"{draw(operators)} {_number_text(number)}"
    data: dict[str, Any] = {
        "heat_half_life_days": draw(_NUMBERS),
        "tiers": {"hot": {"min_residency_days": draw(_NUMBERS)}},
        "rules": [{"name": "r", "move": {"from": draw(st.sampled_from(["hot", "warm"])), "to": "cold"},
                   "when": when}],
    }
    if draw(st.booleans()):
        data["budget"] = {"max_bytes": draw(_NUMBERS), "max_datasets": draw(_NUMBERS)}
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_policies(), datasets(pins=False, busy=False),
       st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_any_policy_that_validates_plans_and_explains_without_an_exception(
    data: dict[str, Any], facts: list[Any], now: datetime
) -> None:
    try:
        policy = parse_policy(data, source="hostile.yaml")
    except PolicyError:
        return
    tiers = tier_facts(facts, hot_capacity=100 * GiB, warm_capacity=None)
    plan = plan_moves(facts, tiers, policy=policy, now=now)
    for fact in facts:
        assert explain(plan, fact.id)
