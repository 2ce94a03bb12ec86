"""Planner properties over random facts and policies (hypothesis), and a simulated month with a fixed clock."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiering.lifecycle.explain import Plan
from tiering.lifecycle.inputs import DatasetFacts, Pin, TierFacts, heat
from tiering.lifecycle.model import Policy, parse_policy
from tiering.lifecycle.planner import plan_moves

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
GiB = 2**30
RANK = {"hot": 0, "warm": 1, "cold": 2}

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def comparison(draw: st.DrawFn, operators: tuple[str, ...], low: int, high: int) -> str:
    return f"{draw(st.sampled_from(operators))} {draw(st.integers(low, high))}"


@st.composite
def policy_data(draw: st.DrawFn, *, with_budget: bool = True) -> dict[str, Any]:
    """A random policy as a file would hold it: rules among hot, warm and cold (never out of cold),
    watermarks, residency and budget."""
    rules: list[dict[str, Any]] = []
    moves = [("hot", "warm"), ("hot", "cold"), ("warm", "cold"), ("warm", "hot")]
    for index in range(draw(st.integers(0, 4))):
        source, target = draw(st.sampled_from(moves))
        when: dict[str, Any] = {}
        for criterion in draw(st.sets(st.sampled_from(["idle_days", "reads_7d", "heat", "size", "age_days"]),
                                      min_size=1, max_size=3)):
            if criterion == "size":
                when["size"] = f"{draw(st.sampled_from(['>=', '<']))} {draw(st.integers(1, 30))}GiB"
            elif criterion == "heat":
                when["heat"] = comparison(draw, (">=", "<"), 0, 10)
            else:
                when[criterion] = comparison(draw, (">=", "<", "==", ">"), 0, 60)
        rule: dict[str, Any] = {"name": f"rule-{index}", "move": {"from": source, "to": target}, "when": when}
        if draw(st.booleans()):
            rule["unless"] = {"tags": {"keep": "yes"}}
        rules.append(rule)
    tiers: dict[str, Any] = {}
    for name in ("hot", "warm"):
        knobs: dict[str, Any] = {"min_residency_days": draw(st.integers(0, 10))}
        if draw(st.booleans()):
            low = draw(st.integers(10, 80))
            knobs["low_watermark"] = low / 100
            knobs["high_watermark"] = draw(st.integers(low + 1, 100)) / 100
        tiers[name] = knobs
    budget: dict[str, Any] = {}
    if with_budget:
        if draw(st.booleans()):
            budget["max_datasets"] = draw(st.integers(0, 10))
        if draw(st.booleans()):
            budget["max_bytes"] = f"{draw(st.integers(0, 100))}GiB"
    return {"rules": rules, "tiers": tiers, "budget": budget}


def policies(*, with_budget: bool = True) -> st.SearchStrategy[Policy]:
    return policy_data(with_budget=with_budget).map(lambda data: parse_policy(data, source="random.yaml"))


@st.composite
def one_dataset(draw: st.DrawFn, dataset_id: int, *, tiers: tuple[str, ...] = ("hot", "warm", "cold"),
                pins: bool = True, busy: bool = True) -> DatasetFacts:
    age = draw(st.integers(0, 400))
    idle = draw(st.one_of(st.none(), st.integers(0, age)))
    reads_7d = draw(st.integers(0, 20))
    pin_list: list[Pin] = []
    if pins and draw(st.integers(0, 3)) == 0:
        until = draw(st.one_of(st.none(), st.integers(-5, 30).map(lambda d: NOW + timedelta(days=d))))
        pin_list.append(Pin(draw(st.sampled_from(["hot", "warm"])), until, "test"))
    return DatasetFacts(
        id=dataset_id, name=f"ds{dataset_id}", version="1", kind=draw(st.sampled_from(["dataset", "model"])),
        owner="alice", home_tier=draw(st.sampled_from(tiers)), size_bytes=draw(st.integers(1, 30)) * GiB,
        created_at=NOW - timedelta(days=age), home_since=NOW - timedelta(days=draw(st.integers(0, age))),
        tags={"keep": "yes"} if draw(st.booleans()) else {},
        last_access_at=None if idle is None else NOW - timedelta(days=idle),
        reads={1: min(reads_7d, 3), 7: reads_7d, 30: reads_7d + 2, 90: reads_7d + 5},
        heat=draw(st.floats(0, 10, allow_nan=False)), pins=pin_list,
        busy=busy and draw(st.integers(0, 9)) == 0,
    )


@st.composite
def datasets(draw: st.DrawFn, /, **kwargs: Any) -> list[DatasetFacts]:
    count = draw(st.integers(0, 25))
    return [draw(one_dataset(i, **kwargs)) for i in range(1, count + 1)]


def tier_facts(facts: list[DatasetFacts], *, hot_capacity: int, warm_capacity: int | None) -> list[TierFacts]:
    used: dict[str, int] = defaultdict(int)
    for f in facts:
        used[f.home_tier] += f.size_bytes
    return [TierFacts("hot", 0, hot_capacity, used["hot"]), TierFacts("warm", 1, warm_capacity, used["warm"]),
            TierFacts("cold", 2, None, used["cold"], archive=True)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[DatasetFacts], list[TierFacts], Policy]:
    facts = draw(datasets())
    hot_capacity = draw(st.integers(10, 500)) * GiB
    warm_capacity = draw(st.one_of(st.none(), st.integers(10, 1000).map(lambda n: n * GiB)))
    return facts, tier_facts(facts, hot_capacity=hot_capacity, warm_capacity=warm_capacity), draw(policies())


def run(scenario: tuple[list[DatasetFacts], list[TierFacts], Policy]) -> Plan:
    facts, tiers, policy = scenario
    return plan_moves(facts, tiers, policy=policy, now=NOW)


@PROPERTY_SETTINGS
@given(scenarios())
def test_a_pinned_dataset_never_moves_below_its_pin(
    scenario: tuple[list[DatasetFacts], list[TierFacts], Policy],
) -> None:
    plan = run(scenario)
    by_id = {f.id: f for f in scenario[0]}
    for move in plan.moves:
        for pin in by_id[move.dataset_id].pins:
            if pin.is_active(NOW):
                assert RANK[move.to_tier] <= RANK[pin.tier], (move, pin)


@PROPERTY_SETTINGS
@given(scenarios())
def test_nothing_moves_twice_busy_never_moves_and_cold_is_never_left(
    scenario: tuple[list[DatasetFacts], list[TierFacts], Policy],
) -> None:
    plan = run(scenario)
    by_id = {f.id: f for f in scenario[0]}
    planned_or_skipped = [m.dataset_id for m in (*plan.moves, *plan.skipped_for_budget)]
    assert len(planned_or_skipped) == len(set(planned_or_skipped))
    for move in plan.moves:
        facts = by_id[move.dataset_id]
        assert not facts.busy
        assert move.from_tier == facts.home_tier != "cold"
        assert move.to_tier != move.from_tier
    assert sum(plan.outcome_counts.values()) == len(scenario[0])


@PROPERTY_SETTINGS
@given(scenarios())
def test_budgets_and_capacities_are_never_exceeded(
    scenario: tuple[list[DatasetFacts], list[TierFacts], Policy],
) -> None:
    plan = run(scenario)
    budget = scenario[2].budget
    if budget.max_datasets is not None:
        assert len(plan.moves) <= budget.max_datasets
    if budget.max_bytes is not None:
        assert plan.total_bytes <= budget.max_bytes
    for tier in plan.tiers:
        if tier.capacity_bytes is not None and tier.bytes_in:
            assert tier.used_bytes_after <= max(tier.capacity_bytes, tier.used_bytes_before)
        assert tier.used_bytes_after == tier.used_bytes_before + tier.bytes_in - tier.bytes_out


@PROPERTY_SETTINGS
@given(
    facts=datasets(tiers=("hot", "warm"), pins=False, busy=False),
    rules_and_more=policy_data(with_budget=False),
    high_percent=st.integers(50, 95),
    low_gap=st.integers(1, 40),
)
def test_after_watermark_relief_hot_is_under_its_low_mark_when_enough_can_move(
    facts: list[DatasetFacts], rules_and_more: dict[str, Any], high_percent: int, low_gap: int,
) -> None:
    # Nothing pinned, busy or resident and no budget: every hot dataset may move, so enough can.
    high, low = high_percent / 100, max(1, high_percent - low_gap) / 100
    the_policy = parse_policy({"rules": rules_and_more["rules"],
                               "tiers": {"hot": {"high_watermark": high, "low_watermark": low}}}, source="wm.yaml")
    hot_used = sum(f.size_bytes for f in facts if f.home_tier == "hot")
    hot_capacity = max(1, int(hot_used / (high + 0.01)))  # hot starts above its high mark
    plan = plan_moves(facts, tier_facts(facts, hot_capacity=hot_capacity, warm_capacity=None),
                      policy=the_policy, now=NOW)
    if hot_used > high * hot_capacity:
        assert plan.tier("hot").used_bytes_after < low * hot_capacity, plan.notes


# --- a simulated month -----------------------------------------------------------------------------------


def reads_history(seed: int, count: int, days: int) -> list[list[int]]:
    """Reads per dataset per day: bursts and lulls, so rules keep flipping without residency."""
    rng = random.Random(seed)
    history = []
    for _ in range(count):
        busy_chance = rng.random()
        history.append([rng.randint(1, 6) if rng.random() < busy_chance else 0 for _ in range(days)])
    return history


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    count=st.integers(1, 15),
    promote_at=st.integers(1, 10),
    demote_below=st.integers(1, 12),
    hot_residency=st.integers(2, 7),
    warm_residency=st.integers(2, 7),
    watermarks=st.booleans(),
)
def test_with_min_residency_nothing_ping_pongs_over_a_simulated_month(
    seed: int, count: int, promote_at: int, demote_below: int, hot_residency: int, warm_residency: int,
    watermarks: bool,
) -> None:
    # Thresholds may overlap (demote below 12, promote at 1): without residency this flips daily.
    hot_knobs: dict[str, Any] = {"min_residency_days": hot_residency}
    if watermarks:
        hot_knobs |= {"high_watermark": 0.6, "low_watermark": 0.4}
    the_policy = parse_policy({
        "heat_half_life_days": 3,
        "tiers": {"hot": hot_knobs, "warm": {"min_residency_days": warm_residency}},
        "rules": [
            {"name": "demote", "move": {"from": "hot", "to": "warm"}, "when": {"reads_7d": f"< {demote_below}"}},
            {"name": "promote", "move": {"from": "warm", "to": "hot"}, "when": {"reads_7d": f">= {promote_at}"}},
        ],
    }, source="month.yaml")
    days = 30
    history = reads_history(seed, count, days + 7)
    start = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    home = {i: ("hot" if i % 2 else "warm") for i in range(count)}
    home_since = {i: start - timedelta(days=60) for i in range(count)}
    moves_by_dataset: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    for day in range(days):
        now = start + timedelta(days=day)
        facts = []
        for i in range(count):
            # history[i][k] is the reads of day (start - 7 days + k); today's reads are not in yet
            past = history[i][: day + 7]
            per_day = {(now - timedelta(days=len(past) - k)).date(): n for k, n in enumerate(past) if n}
            last_day = max(per_day, default=None)
            facts.append(DatasetFacts(
                id=i, name=f"ds{i}", version="1", kind="dataset", owner="o", home_tier=home[i],
                size_bytes=10 * GiB, created_at=start - timedelta(days=90), home_since=home_since[i],
                last_access_at=None if last_day is None else _noon(last_day),
                reads={7: sum(past[-7:])}, heat=heat(per_day, now, 3),
            ))
        hot_used = sum(f.size_bytes for f in facts if f.home_tier == "hot")
        warm_used = sum(f.size_bytes for f in facts if f.home_tier == "warm")
        tiers = [TierFacts("hot", 0, count * 10 * GiB, hot_used), TierFacts("warm", 1, None, warm_used),
                 TierFacts("cold", 2, None, 0, archive=True)]
        plan = plan_moves(facts, tiers, policy=the_policy, now=now)
        for move in plan.moves:  # apply the plan as the executor would, at once
            moves_by_dataset[move.dataset_id].append((day, move.from_tier, move.to_tier))
            home[move.dataset_id] = move.to_tier
            home_since[move.dataset_id] = now
    residency = {"hot": hot_residency, "warm": warm_residency}
    for dataset_id, moves in moves_by_dataset.items():
        for (day1, _, arrived_on), (day2, left, _) in zip(moves, moves[1:], strict=False):
            assert left == arrived_on
            assert day2 - day1 >= residency[arrived_on], (dataset_id, moves)
            assert day2 - day1 > 1, f"ds{dataset_id} ping-ponged on consecutive days: {moves}"


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
