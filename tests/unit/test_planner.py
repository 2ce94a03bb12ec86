"""The planner: table tests of each rule kind, pins, residency, watermarks, budget, archive, busy, `why`."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import FrozenInstanceError, fields, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from tiering.errors import PolicyError, TierNotFound
from tiering.lifecycle.criteria import check_policy_against_tiers
from tiering.lifecycle.explain import Plan, explain
from tiering.lifecycle.inputs import DatasetFacts, Pin, TierFacts, dataset_facts, heat
from tiering.lifecycle.model import Policy, parse_policy
from tiering.lifecycle.outcomes import WATERMARK_RULE, MoveCause, Outcome
from tiering.lifecycle.planner import plan_moves

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
TiB = 2**40
GiB = 2**30


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def tiers(*, hot_capacity: int | None = 100 * TiB, hot_used: int = 10 * TiB, warm_capacity: int | None = None,
          warm_used: int = 0) -> list[TierFacts]:
    return [
        TierFacts("hot", 0, hot_capacity, hot_used),
        TierFacts("warm", 1, warm_capacity, warm_used),
        TierFacts("cold", 2, None, 0, archive=True),
    ]


def dataset(dataset_id: int, *, tier: str = "hot", size: int = 1 * TiB, idle: float | None = 100,
            age: float = 365, since: float = 200, reads: Mapping[int, int] | None = None, heat_value: float = 0.0,
            **overrides: Any) -> DatasetFacts:
    """A dataset read ``idle`` days ago (None: never), registered ``age`` days ago, on ``tier`` since ``since``."""
    facts = DatasetFacts(
        id=dataset_id, name=f"ds{dataset_id}", version="1", kind="dataset", owner="alice", home_tier=tier,
        size_bytes=size, created_at=days_ago(age), home_since=days_ago(since),
        last_access_at=None if idle is None else days_ago(idle),
        reads=dict(reads) if reads is not None else {1: 0, 7: 0, 30: 0, 90: 0}, heat=heat_value,
    )
    return replace(facts, **overrides)


def policy(rules: Sequence[Mapping[str, Any]] = (), **top: Any) -> Policy:
    return parse_policy({"rules": list(rules), **top}, source="test.yaml")


def rule(name: str, source: str, target: str, when: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "move": {"from": source, "to": target}, "when": dict(when), **extra}


DEMOTE_IDLE = rule("demote-idle", "hot", "warm", {"idle_days": ">= 14", "reads_30d": "< 3"})
ARCHIVE_STALE = rule("archive-stale", "warm", "cold", {"idle_days": ">= 90"},
                     unless={"tags": {"retention": "keep-online"}})
PROMOTE_BUSY = rule("promote-busy", "warm", "hot", {"reads_7d": ">= 5"})


def plan(datasets: Sequence[DatasetFacts], the_policy: Policy, tier_facts: Sequence[TierFacts] | None = None,
         now: datetime = NOW) -> Plan:
    return plan_moves(datasets, tier_facts if tier_facts is not None else tiers(), policy=the_policy, now=now)


def moved(the_plan: Plan) -> dict[int, tuple[str, str]]:
    return {m.dataset_id: (m.from_tier, m.to_tier) for m in the_plan.moves}


# --- rules ---------------------------------------------------------------------------------------------------


def test_an_idle_hot_dataset_is_demoted_with_a_reason_that_gives_the_numbers() -> None:
    result = plan([dataset(1, idle=41, reads={30: 0})], policy([DEMOTE_IDLE]))
    (move,) = result.moves
    assert (move.from_tier, move.to_tier, move.rule, move.cause) == ("hot", "warm", "demote-idle", MoveCause.DEMOTION)
    assert move.reason == "idle 41 days >= 14 and reads_30d 0 < 3"
    assert move.label == "ds1@1" and move.size_bytes == 1 * TiB


def test_a_rule_only_looks_at_datasets_on_its_from_tier() -> None:
    result = plan([dataset(1, tier="warm", idle=41, reads={30: 0})], policy([DEMOTE_IDLE]))
    assert result.moves == ()
    assert result.decisions[1].outcome is Outcome.NO_RULE
    assert "no rule moves datasets out of warm" in result.decisions[1].detail


def test_the_first_matching_rule_in_file_order_wins() -> None:
    to_cold = rule("straight-to-cold", "hot", "cold", {"idle_days": ">= 30"})
    result = plan([dataset(1, idle=41, reads={30: 0}), dataset(2, idle=20, reads={30: 0})],
                  policy([to_cold, DEMOTE_IDLE]))
    assert moved(result) == {1: ("hot", "cold"), 2: ("hot", "warm")}


def test_unless_vetoes_a_rule_and_a_later_rule_may_still_match() -> None:
    keep = rule("archive", "warm", "cold", {"idle_days": ">= 90"}, unless={"tags": {"retention": "keep-online"}})
    fallback = rule("archive-big", "warm", "cold", {"size": ">= 1TiB"})
    kept = dataset(1, tier="warm", size=10 * GiB, tags={"retention": "keep-online"})
    kept_but_big = dataset(2, tier="warm", size=2 * TiB, tags={"retention": "keep-online"})
    result = plan([kept, kept_but_big], policy([keep, fallback]))
    assert moved(result) == {2: ("warm", "cold")}
    assert result.moves[0].rule == "archive-big"
    assert "archive -> cold: no: unless tag retention=keep-online" in explain(result, 1)


def test_any_unless_block_that_holds_vetoes_the_rule() -> None:
    guarded = rule("archive", "warm", "cold", {"idle_days": ">= 90"},
                   unless=[{"owner": "legal"}, {"tags": {"retention": ["keep-online", "hold"]}}])
    datasets = [dataset(1, tier="warm", owner="legal"), dataset(2, tier="warm", tags={"retention": "hold"}),
                dataset(3, tier="warm", owner="bob", tags={"retention": "none"})]
    assert moved(plan(datasets, policy([guarded]))) == {3: ("warm", "cold")}


@pytest.mark.parametrize(
    ("criteria", "facts", "matches"),
    [
        ({"age_days": ">= 30"}, {"age": 31}, True),
        ({"age_days": ">= 30"}, {"age": 29.9}, False),
        ({"idle_days": ">= 30"}, {"idle": 30}, True),
        ({"idle_days": ">= 30"}, {"idle": None, "age": 40}, True),  # never read: idle since registration
        ({"idle_days": ">= 30"}, {"idle": None, "age": 10}, False),
        ({"reads_7d": "== 0"}, {"reads": {7: 0}}, True),
        ({"reads_90d": "< 3"}, {"reads": {90: 3}}, False),
        ({"heat": "< 0.5"}, {"heat_value": 0.49}, True),
        ({"heat": "< 0.5"}, {"heat_value": 0.5}, False),
        ({"size": "> 10GiB"}, {"size": 10 * GiB + 1}, True),
        ({"size": "> 10GiB"}, {"size": 10 * GiB}, False),
        ({"kind": "model"}, {"kind": "model"}, True),
        ({"kind": "model"}, {"kind": "dataset"}, False),
        ({"owner": ["alice", "bob"]}, {"owner": "bob"}, True),
        ({"owner": "alice"}, {"owner": "carol"}, False),
        ({"name": "imagenet-*"}, {"name": "imagenet-mini"}, True),
        ({"name": ["coco*", "voc*"]}, {"name": "imagenet-mini"}, False),
        ({"tags": {"team": ["vision", "nlp"]}}, {"tags": {"team": "nlp"}}, True),
        ({"tags": {"team": "vision", "tier": "x"}}, {"tags": {"team": "vision"}}, False),  # every key needed
    ],
)
def test_each_criterion_kind(criteria: dict[str, Any], facts: dict[str, Any], matches: bool) -> None:
    the_policy = policy([rule("r", "hot", "warm", criteria)])
    result = plan([dataset(1, **facts)], the_policy)
    assert (result.moves != ()) is matches
    if not matches:
        assert result.decisions[1].outcome is Outcome.NO_RULE


def test_a_busy_warm_dataset_is_promoted_to_hot() -> None:
    result = plan([dataset(1, tier="warm", idle=0, reads={7: 9}, heat_value=9)], policy([PROMOTE_BUSY]))
    assert moved(result) == {1: ("warm", "hot")}
    assert result.moves[0].cause is MoveCause.PROMOTION
    assert result.moves[0].reason == "reads_7d 9 >= 5"


def test_a_policy_window_the_facts_lack_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no reads for the 30-day window"):
        plan([dataset(1, idle=41, reads={7: 0})], policy([DEMOTE_IDLE]))


# --- what never moves ----------------------------------------------------------------------------------------


def test_a_dataset_on_the_archive_tier_is_never_moved_and_why_says_restore() -> None:
    result = plan([dataset(1, tier="cold", reads={7: 100}, heat_value=50)], policy([PROMOTE_BUSY]))
    assert result.moves == ()
    decision = result.decisions[1]
    assert decision.outcome is Outcome.ARCHIVED
    assert "tiering restore ds1@1" in decision.detail
    assert result.outcome_counts[Outcome.ARCHIVED] == 1
    assert "never automatically" in explain(result, 1)


def test_a_rule_that_leaves_the_archive_tier_is_refused_naming_the_rule_and_field() -> None:
    with pytest.raises(PolicyError) as caught:
        plan([], policy([rule("unarchive", "cold", "warm", {"reads_7d": ">= 1"})]))
    assert (caught.value.rule, caught.value.field) == ("unarchive", "move.from")
    assert "tiering restore" in str(caught.value)


@pytest.mark.parametrize(("field", "the_policy"), [
    ("move.to", policy([rule("typo", "hot", "wram", {"idle_days": ">= 1"})])),
    ("move.from", policy([rule("typo", "hott", "warm", {"idle_days": ">= 1"})])),
])
def test_a_rule_naming_an_unknown_tier_is_refused_naming_the_rule_and_field(field: str, the_policy: Policy) -> None:
    with pytest.raises(PolicyError) as caught:
        check_policy_against_tiers(the_policy, tiers())
    assert (caught.value.file, caught.value.rule, caught.value.field) == ("test.yaml", "typo", field)
    assert "expected a configured tier (hot, warm, cold)" in str(caught.value)


def test_tier_knobs_for_an_unknown_tier_are_refused() -> None:
    with pytest.raises(PolicyError) as caught:
        plan([], policy(tiers={"nvme": {"min_residency_days": 1}}))
    assert caught.value.field == "tiers.nvme"


def test_a_dataset_on_an_unknown_tier_is_an_error() -> None:
    with pytest.raises(TierNotFound):
        plan([dataset(1, tier="ssd")], policy([DEMOTE_IDLE]))


def test_a_busy_dataset_is_never_planned() -> None:
    result = plan([dataset(1, idle=41, reads={30: 0}, busy=True)], policy([DEMOTE_IDLE]))
    assert result.moves == ()
    assert result.decisions[1].outcome is Outcome.BUSY


# --- pins ----------------------------------------------------------------------------------------------------


def test_a_pin_blocks_moves_below_its_tier_and_why_gives_the_date() -> None:
    pin = Pin("hot", NOW + timedelta(days=300), "model fraud@v3 is live")
    result = plan([dataset(1, idle=41, reads={30: 0}, pins=[pin])], policy([DEMOTE_IDLE]))
    assert result.moves == ()
    decision = result.decisions[1]
    assert decision.outcome is Outcome.PINNED
    assert decision.eligible_at == pin.until
    assert "model fraud@v3 is live" in decision.detail
    assert f"next eligible: {pin.until:%Y-%m-%d}" in explain(result, 1)


def test_a_pin_allows_moves_down_to_its_own_tier_and_an_expired_pin_nothing_blocks() -> None:
    to_cold = rule("to-cold", "hot", "cold", {"idle_days": ">= 14"})
    pinned_warm = dataset(1, pins=[Pin("warm", NOW + timedelta(days=5))])
    expired = dataset(2, pins=[Pin("hot", NOW - timedelta(seconds=1))])
    result = plan([pinned_warm, expired], policy([to_cold]))
    assert moved(result) == {2: ("hot", "cold")}
    demote = rule("demote", "hot", "warm", {"idle_days": ">= 14"})
    assert moved(plan([pinned_warm], policy([demote]))) == {1: ("hot", "warm")}


def test_a_pin_without_end_date_blocks_with_no_eligible_date() -> None:
    result = plan([dataset(1, pins=[Pin("hot", None, "forever")])], policy([DEMOTE_IDLE]))
    assert result.decisions[1].outcome is Outcome.PINNED
    assert result.decisions[1].eligible_at is None
    assert "no end date" in explain(result, 1)


def test_the_hottest_active_pin_is_the_floor() -> None:
    pins = [Pin("warm", NOW + timedelta(days=10)), Pin("hot", NOW + timedelta(days=2))]
    result = plan([dataset(1, pins=pins)], policy([DEMOTE_IDLE]))
    assert result.decisions[1].outcome is Outcome.PINNED
    assert result.decisions[1].eligible_at == NOW + timedelta(days=2)


# --- residency -----------------------------------------------------------------------------------------------


def test_min_residency_blocks_any_move_until_the_date_it_reports() -> None:
    the_policy = policy([PROMOTE_BUSY], tiers={"warm": {"min_residency_days": 30}})
    arrived = dataset(1, tier="warm", since=10, reads={7: 9}, heat_value=9)
    result = plan([arrived], the_policy)
    decision = result.decisions[1]
    assert decision.outcome is Outcome.RESIDENCY
    assert decision.eligible_at == arrived.home_since + timedelta(days=30)
    assert "min_residency_days 30" in decision.detail
    assert f"next eligible: {decision.eligible_at:%Y-%m-%d %H:%M} UTC" in explain(result, 1)
    later = plan([arrived], the_policy, now=decision.eligible_at)
    assert moved(later) == {1: ("warm", "hot")}


def test_pin_and_residency_together_report_the_later_date() -> None:
    the_policy = policy([DEMOTE_IDLE], tiers={"hot": {"min_residency_days": 10}})
    facts = dataset(1, since=1, pins=[Pin("hot", NOW + timedelta(days=3))])
    decision = plan([facts], the_policy).decisions[1]
    assert decision.outcome is Outcome.PINNED
    assert decision.eligible_at == facts.home_since + timedelta(days=10)
    assert "min_residency_days 10" in decision.detail and "pinned to hot" in decision.detail


# --- watermarks ----------------------------------------------------------------------------------------------

WATERMARKS = {"hot": {"high_watermark": 0.85, "low_watermark": 0.70}}


def test_a_tier_above_its_high_watermark_demotes_the_coldest_until_under_its_low_mark() -> None:
    datasets = [dataset(i, size=10 * TiB, idle=1, heat_value=float(i), reads={30: 10}) for i in range(1, 10)]
    result = plan(datasets, policy([DEMOTE_IDLE], tiers=WATERMARKS), tiers(hot_used=91 * TiB))
    assert [m.dataset_id for m in result.moves] == [1, 2, 3]  # 91 -> 61 TiB: under 70%
    assert all(m.cause is MoveCause.WATERMARK and m.rule == WATERMARK_RULE for m in result.moves)
    assert result.moves[0].reason == "watermark: hot at 91% > 85%, demote coldest until < 70%"
    hot = result.tier("hot")
    assert hot.used_bytes_after == 61 * TiB and hot.bytes_out == 30 * TiB and hot.moves_out == 3
    assert result.tier("warm").bytes_in == 30 * TiB
    assert "relief stopped at 61%" in result.decisions[4].detail


def test_relief_takes_rule_selected_demotions_first_then_oldest_reads_among_equal_heat() -> None:
    selected = dataset(1, size=10 * TiB, idle=41, heat_value=5.0, reads={30: 0})
    never_read = dataset(2, size=10 * TiB, idle=None, heat_value=0.0, reads={30: 0}, age=5)
    read_long_ago = dataset(3, size=10 * TiB, idle=9, heat_value=0.0, reads={30: 0})
    read_lately = dataset(4, size=10 * TiB, idle=2, heat_value=0.0, reads={30: 0})
    result = plan([read_lately, read_long_ago, never_read, selected],
                  policy([DEMOTE_IDLE], tiers=WATERMARKS), tiers(hot_used=91 * TiB))
    assert [m.dataset_id for m in result.moves] == [1, 2, 3]
    assert result.moves[0].rule == "demote-idle"
    assert result.moves[0].reason.startswith("watermark: hot at 91% > 85%")
    assert result.moves[0].reason.endswith("rule demote-idle: idle 41 days >= 14 and reads_30d 0 < 3")


def test_relief_respects_pins_and_residency() -> None:
    knobs = {"hot": {**WATERMARKS["hot"], "min_residency_days": 7}}
    pinned = dataset(1, size=30 * TiB, pins=[Pin("hot", NOW + timedelta(days=1))])
    fresh = dataset(2, size=30 * TiB, since=1)
    free = dataset(3, size=10 * TiB, heat_value=3.0)
    result = plan([pinned, fresh, free], policy([], tiers=knobs), tiers(hot_used=91 * TiB))
    assert moved(result) == {3: ("hot", "warm")}
    assert any("not under its low mark" in note for note in result.notes)
    assert "pinned to hot" in result.decisions[1].detail


def test_relief_cascades_into_a_colder_tier_that_it_pushes_over_its_own_mark() -> None:
    knobs = {**WATERMARKS, "warm": {"high_watermark": 0.85, "low_watermark": 0.6}}
    datasets = [dataset(1, size=30 * TiB), dataset(2, tier="warm", size=40 * TiB)]
    result = plan(datasets, policy([], tiers=knobs),
                  tiers(hot_used=90 * TiB, warm_capacity=100 * TiB, warm_used=60 * TiB))
    assert moved(result) == {1: ("hot", "warm"), 2: ("warm", "cold")}  # warm: 60 + 30 > 85, then - 40
    assert result.tier("warm").used_bytes_after == 50 * TiB


def test_a_promotion_never_pushes_a_tier_above_its_high_watermark() -> None:
    datasets = [dataset(1, tier="warm", size=10 * TiB, idle=0, reads={7: 9}, heat_value=9.0),
                dataset(2, tier="warm", size=3 * TiB, idle=0, reads={7: 8}, heat_value=8.0)]
    result = plan(datasets, policy([PROMOTE_BUSY], tiers=WATERMARKS), tiers(hot_used=80 * TiB))
    assert moved(result) == {2: ("warm", "hot")}  # 80 + 10 > 85; 80 + 3 fits
    decision = result.decisions[1]
    assert decision.outcome is Outcome.WATERMARK
    assert "past its high watermark 85%" in decision.detail
    assert "next eligible: when the destination has room" in explain(result, 1)


def test_a_relieved_tier_takes_promotions_only_up_to_its_low_mark() -> None:
    datasets = [dataset(1, size=25 * TiB),
                dataset(2, tier="warm", size=10 * TiB, idle=0, reads={7: 9}, heat_value=9.0),
                dataset(3, tier="warm", size=4 * TiB, idle=0, reads={7: 8}, heat_value=8.0)]
    result = plan(datasets, policy([PROMOTE_BUSY], tiers=WATERMARKS), tiers(hot_used=90 * TiB))
    assert moved(result) == {1: ("hot", "warm"), 3: ("warm", "hot")}  # 65 + 10 >= 70; 65 + 4 fits
    assert "low watermark 70%" in result.decisions[2].detail


def test_watermarks_without_a_capacity_are_ignored_with_a_note() -> None:
    result = plan([dataset(1)], policy([], tiers=WATERMARKS), tiers(hot_capacity=None))
    assert result.moves == ()
    assert any("no capacity" in note for note in result.notes)


def test_a_move_never_overfills_its_destination() -> None:
    datasets = [dataset(1, size=6 * TiB, idle=41, reads={30: 0}), dataset(2, size=3 * TiB, idle=40, reads={30: 0})]
    result = plan(datasets, policy([DEMOTE_IDLE]), tiers(warm_capacity=10 * TiB, warm_used=5 * TiB))
    assert moved(result) == {2: ("hot", "warm")}
    assert result.decisions[1].outcome is Outcome.DESTINATION_FULL


# --- budget --------------------------------------------------------------------------------------------------


def test_the_budget_caps_datasets_and_records_the_rest_as_skipped() -> None:
    datasets = [dataset(i, idle=41, reads={30: 0}, heat_value=i / 10) for i in range(1, 6)]
    result = plan(datasets, policy([DEMOTE_IDLE], budget={"max_datasets": 2}))
    assert [m.dataset_id for m in result.moves] == [1, 2]  # coldest first
    assert [m.dataset_id for m in result.skipped_for_budget] == [3, 4, 5]
    assert result.decisions[3].outcome is Outcome.BUDGET
    assert "2 of 2 datasets" in result.decisions[3].detail
    assert result.outcome_counts[Outcome.BUDGET] == 3


def test_the_byte_budget_skips_a_move_that_does_not_fit_but_takes_later_smaller_ones() -> None:
    datasets = [dataset(1, size=3 * TiB, heat_value=0.1, idle=41, reads={30: 0}),
                dataset(2, size=8 * TiB, heat_value=0.2, idle=41, reads={30: 0}),
                dataset(3, size=2 * TiB, heat_value=0.3, idle=41, reads={30: 0})]
    result = plan(datasets, policy([DEMOTE_IDLE], budget={"max_bytes": "6TiB"}))
    assert [m.dataset_id for m in result.moves] == [1, 3]
    assert [m.dataset_id for m in result.skipped_for_budget] == [2]
    assert result.total_bytes == 5 * TiB


def test_the_budget_goes_to_watermark_relief_then_demotions_then_promotions() -> None:
    datasets = [
        dataset(1, tier="warm", size=1 * TiB, idle=0, reads={7: 9, 30: 9}, heat_value=9.0),  # promotion
        dataset(2, tier="warm", size=1 * TiB, idle=100, reads={7: 0, 30: 0}),  # demotion to cold
        dataset(3, size=25 * TiB, idle=1, reads={7: 3, 30: 3}, heat_value=2.0),  # relief only
    ]
    the_policy = policy([ARCHIVE_STALE, PROMOTE_BUSY], tiers=WATERMARKS, budget={"max_datasets": 2})
    result = plan(datasets, the_policy, tiers(hot_used=90 * TiB))
    assert [(m.dataset_id, m.cause) for m in result.moves] == [(3, MoveCause.WATERMARK), (2, MoveCause.DEMOTION)]
    assert [m.dataset_id for m in result.skipped_for_budget] == [1]


def test_the_window_is_reported_in_the_schedulers_timezone_but_planning_goes_on() -> None:
    the_policy = policy([DEMOTE_IDLE], budget={"window": "02:00-06:00"})
    facts = [dataset(1, idle=41, reads={30: 0})]
    assert plan(facts, the_policy).window_open  # 03:00 UTC
    minus_five = timezone(timedelta(hours=-5))
    evening = plan_moves(facts, tiers(), policy=the_policy, now=NOW, window_timezone=minus_five)
    assert not evening.window_open  # 22:00 there
    assert len(evening.moves) == 1 and evening.window == "02:00-06:00"


# --- purity, decisions, explanations -------------------------------------------------------------------------


def test_the_plan_does_not_depend_on_the_order_of_the_facts() -> None:
    rng = random.Random(7)
    datasets = [dataset(i, size=rng.randint(1, 20) * TiB, idle=rng.randint(0, 60), heat_value=rng.random(),
                        reads={7: rng.randint(0, 9), 30: rng.randint(0, 9)}) for i in range(40)]
    the_policy = policy([DEMOTE_IDLE], tiers=WATERMARKS, budget={"max_datasets": 7})
    first = plan(datasets, the_policy, tiers(hot_used=95 * TiB))
    rng.shuffle(datasets)
    second = plan(datasets, the_policy, tiers(hot_used=95 * TiB))
    assert first.moves == second.moves and first.skipped_for_budget == second.skipped_for_budget


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan([], policy(), now=NOW.replace(tzinfo=None))


def test_no_rule_matched_shows_the_values_seen_and_when_time_alone_will_make_it_eligible() -> None:
    result = plan([dataset(1, idle=10, reads={30: 0})], policy([DEMOTE_IDLE]))
    decision = result.decisions[1]
    assert decision.outcome is Outcome.NO_RULE
    assert decision.detail == "no rule for hot matched (idle 10 days, reads_30d 0)"
    assert decision.eligible_at == days_ago(10) + timedelta(days=14)
    assert decision.eligible_if_unread
    assert "if it is not read again" in explain(result, 1)


def test_every_dataset_has_a_decision_and_the_counts_add_up() -> None:
    datasets = [dataset(1, idle=41, reads={30: 0}), dataset(2, idle=1, reads={30: 9}), dataset(3, tier="cold"),
                dataset(4, busy=True)]
    result = plan(datasets, policy([DEMOTE_IDLE]))
    assert set(result.decisions) == {1, 2, 3, 4}
    assert [result.decisions[i].outcome for i in (1, 2, 3, 4)] == [
        Outcome.MOVE, Outcome.NO_RULE, Outcome.ARCHIVED, Outcome.BUSY]
    assert sum(result.outcome_counts.values()) == 4
    with pytest.raises(KeyError):
        result.decisions[99]


def test_explain_prints_the_decision_the_facts_the_rules_and_the_tier() -> None:
    pin = Pin("hot", datetime(2027, 1, 1, tzinfo=UTC), "model fraud@v3 is live")
    facts = dataset(1, idle=41, reads={1: 0, 7: 0, 30: 0, 90: 4}, heat_value=0.42, pins=[pin],
                    tags={"team": "vision"})
    the_policy = policy([DEMOTE_IDLE, rule("later", "hot", "cold", {"idle_days": ">= 1"})],
                        tiers=WATERMARKS, budget={"window": "02:00-06:00"})
    text = explain(plan([facts], the_policy), 1)
    assert text.splitlines()[0] == "ds1@1 (dataset, owner alice): stays on hot: blocked by a pin"
    for expected in [
        "rule demote-idle wants hot -> warm (idle 41 days >= 14 and reads_30d 0 < 3), but it is pinned to hot",
        "next eligible: 2027-01-01 00:00 UTC",
        "reads 1d 0, 7d 0, 30d 0, 90d 4; heat 0.42 (half-life 7 days)",
        "tags: team=vision",
        "pin: hot or hotter until 2027-01-01 00:00 UTC (model fraud@v3 is live)",
        "demote-idle -> warm: matches: idle 41 days >= 14 and reads_30d 0 < 3",
        "later -> cold: not tried, an earlier rule matched",
        "tier hot: 10% of 100.0 TiB used, 10% after this plan (high 85%, low 70%)",
        "window 02:00-06:00: open",
    ]:
        assert expected in text, f"{expected!r} not in:\n{text}"


def test_explain_of_a_move_says_where_and_why() -> None:
    result = plan([dataset(1, idle=41, reads={30: 0})], policy([DEMOTE_IDLE]))
    first_lines = explain(result, 1).splitlines()[:3]
    assert first_lines == [
        "ds1@1 (dataset, owner alice): moves hot -> warm (demotion)",
        "  rule demote-idle: idle 41 days >= 14 and reads_30d 0 < 3",
        "  next eligible: now (in this plan)",
    ]


def test_the_plan_serialises_to_plain_json() -> None:
    datasets = [dataset(1, idle=41, reads={30: 0}), dataset(2, idle=41, reads={30: 0}, pins=[Pin("hot", None)])]
    result = plan(datasets, policy([DEMOTE_IDLE], budget={"max_datasets": 5, "window": "02:00-06:00"}))
    data = json.loads(json.dumps(result.to_json()))
    assert data["moves"] == [{"dataset_id": 1, "label": "ds1@1", "from": "hot", "to": "warm", "bytes": TiB,
                              "rule": "demote-idle", "cause": "demotion",
                              "reason": "idle 41 days >= 14 and reads_30d 0 < 3"}]
    assert data["budget"] == {"max_bytes": None, "max_datasets": 5, "planned_bytes": TiB, "planned_datasets": 1}
    assert data["window"] == {"spec": "02:00-06:00", "open": True}
    assert [t["name"] for t in data["tiers"]] == ["hot", "warm", "cold"]
    assert data["blocked"][0]["outcome"] == "pinned" and data["outcomes"] == {"move": 1, "pinned": 1}
    assert data["now"] == "2026-03-01T03:00:00+00:00"


# --- heat ----------------------------------------------------------------------------------------------------


def test_heat_halves_every_half_life() -> None:
    today = NOW.date()
    assert heat({today: 4}, NOW, 7) == 4
    assert heat({today - timedelta(days=7): 4}, NOW, 7) == pytest.approx(2)
    assert heat({today - timedelta(days=14): 4, today: 1}, NOW, 7) == pytest.approx(2)
    assert heat({date(2030, 1, 1): 3}, NOW, 7) == 3  # a future day is not amplified
    assert heat({}, NOW, 7) == 0
    with pytest.raises(ValueError):
        heat({today: 1}, NOW, 0)


# --- scale ---------------------------------------------------------------------------------------------------


def test_dataset_facts_builds_the_same_frozen_facts_as_the_constructor() -> None:
    made = dataset(7, tags={"team": "vision"}, pins=[Pin("hot", None)], busy=True, heat_value=1.5)
    built = dataset_facts(*(getattr(made, f.name) for f in fields(DatasetFacts)))
    assert type(built) is DatasetFacts and built == made and repr(built) == repr(made)
    with pytest.raises(FrozenInstanceError):
        built.heat = 0.0  # type: ignore[misc]
    assert replace(built, id=8).id == 8 and built.label == "ds7@1"


def test_relief_over_many_candidates_takes_them_coldest_first_whether_heaped_or_sorted() -> None:
    rng = random.Random(4)
    datasets = [dataset(i, size=1 * TiB, idle=rng.choice([None, 3, 9]), heat_value=float(rng.randrange(5)),
                        reads={30: 9}) for i in range(1, 201)]
    # 200 TiB on a 200 TiB hot tier: relief to under 30% moves 141, past the eighth taken from a heap
    knobs = {"hot": {"high_watermark": 0.5, "low_watermark": 0.3}}
    result = plan(datasets, policy([], tiers=knobs), tiers(hot_capacity=200 * TiB, hot_used=200 * TiB,
                                                           warm_capacity=None))
    coldest = sorted(datasets, key=lambda f: (f.heat, -1e18 if f.last_access_at is None
                                              else f.last_access_at.timestamp(), f.id))
    assert [m.dataset_id for m in result.moves] == [f.id for f in coldest[:141]]


def test_moves_skipped_for_budget_are_written_when_read_and_compare_like_a_tuple() -> None:
    datasets = [dataset(i, idle=41, reads={30: 0}, heat_value=float(i)) for i in range(1, 6)]
    result = plan(datasets, policy([DEMOTE_IDLE], budget={"max_datasets": 2}))
    skipped = result.skipped_for_budget
    assert len(skipped) == 3 and [m.dataset_id for m in skipped] == [3, 4, 5]
    assert skipped[0].reason == "idle 41 days >= 14 and reads_30d 0 < 3" and skipped[0].cause is MoveCause.DEMOTION
    assert skipped == tuple(skipped) and tuple(skipped) == skipped and skipped[1:] == tuple(skipped)[1:]
    assert skipped != tuple(skipped)[:2]
    decision = result.decisions[4]
    assert decision.outcome is Outcome.BUDGET and "2 of 2 datasets already planned" in decision.detail
