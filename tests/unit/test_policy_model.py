"""Policy files: every shipped file parses; every bad file gets one clear line naming file, rule and field."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from tiering.errors import PolicyError
from tiering.lifecycle.model import Comparison, load_policy, parse_policy, parse_time_window

REPO = Path(__file__).resolve().parents[2]
SHIPPED_POLICIES = sorted((REPO / "policies").rglob("*.yaml"))

GOOD = """\
heat_half_life_days: 7
tiers:
  hot:  {high_watermark: 0.85, low_watermark: 0.70, min_residency_days: 3}
  warm: {min_residency_days: 30}
rules:
  - name: demote-idle
    move: {from: hot, to: warm}
    when: {idle_days: ">= 14", reads_30d: "< 3"}
  - name: archive-stale
    move: {from: warm, to: cold}
    when: {idle_days: ">= 90", size: "> 10GiB"}
    unless: {tags: {retention: keep-online}}
  - name: promote-busy
    move: {from: warm, to: hot}
    when: {reads_7d: ">= 5"}
budget: {max_bytes: 50TiB, max_datasets: 500, window: "02:00-06:00"}
"""


def test_the_repository_ships_a_default_policy_and_examples() -> None:
    names = {p.relative_to(REPO / "policies").as_posix() for p in SHIPPED_POLICIES}
    assert "default.yaml" in names
    assert len([n for n in names if n.startswith("examples/")]) >= 2


@pytest.mark.parametrize("path", SHIPPED_POLICIES, ids=lambda p: p.relative_to(REPO / "policies").as_posix())
def test_every_shipped_policy_file_parses(path: Path) -> None:
    policy = load_policy(path)
    assert policy.source == str(path)
    assert policy.rules, "a shipped policy without rules would move nothing"


def test_the_default_policy_says_what_the_design_promises() -> None:
    policy = load_policy(REPO / "policies" / "default.yaml")
    by_name = {rule.name: rule for rule in policy.rules}
    demote, archive, promote = by_name["demote-idle"], by_name["archive-stale"], by_name["promote-busy"]
    assert (demote.move.from_tier, demote.move.to_tier) == ("hot", "warm")
    assert demote.when.idle_days == Comparison(">=", 30, "30")
    assert (archive.move.from_tier, archive.move.to_tier) == ("warm", "cold")
    assert archive.when.idle_days == Comparison(">=", 90, "90")
    assert archive.unless[0].tags == {"retention": ("keep-online",)}
    assert promote.when.reads[7] == Comparison(">=", 5, "5")
    hot = policy.tier("hot")
    assert hot.high_watermark == 0.85 and hot.low_watermark == 0.70 and hot.min_residency_days > 0
    assert policy.budget.window is not None and str(policy.budget.window) == "02:00-06:00"
    assert policy.read_windows() == {7, 30}


def test_a_good_policy_parses_into_typed_values() -> None:
    policy = parse_policy(GOOD, source="good.yaml")
    archive = policy.rules[1]
    assert archive.when.size == Comparison(">", 10 * 2**30, "10GiB")
    assert policy.budget.max_bytes == 50 * 2**40
    assert policy.budget.max_datasets == 500
    assert policy.tier("cold").min_residency_days == 0  # a tier the policy leaves out has no knobs


def test_a_policy_can_be_given_as_parsed_data() -> None:
    policy = parse_policy({"rules": [{"name": "r", "move": {"from": "hot", "to": "warm"},
                                      "when": {"idle_days": ">= 1"}}]}, source="inline")
    assert policy.rules[0].when.idle_days == Comparison(">=", 1, "1")
    assert policy.source == "inline"


def test_tag_values_may_be_lists_and_unless_may_be_a_list_of_blocks() -> None:
    policy = parse_policy(GOOD.replace(
        "unless: {tags: {retention: keep-online}}",
        "unless: [{tags: {retention: [keep-online, legal-hold], year: 2024}}, {owner: [alice, bob]}]",
    ), source="p.yaml")
    first, second = policy.rules[1].unless
    assert first.tags == {"retention": ("keep-online", "legal-hold"), "year": ("2024",)}
    assert second.owner == ["alice", "bob"]


@pytest.mark.parametrize(
    ("spec", "start", "end", "inside", "outside"),
    [("02:00-06:00", time(2), time(6), time(3, 30), time(6)),
     ("22:00-04:00", time(22), time(4), time(1), time(12))],
)
def test_windows_may_wrap_midnight(spec: str, start: time, end: time, inside: time, outside: time) -> None:
    window = parse_time_window(spec)
    assert (window.start, window.end) == (start, end)
    assert window.contains(inside) and window.contains(start)
    assert not window.contains(outside)


# Each bad policy: (what to change in GOOD, the rule, the field, words the message must contain)
BAD_POLICIES = {
    "unknown criterion": (('idle_days: ">= 14"', 'idle_dayz: ">= 14"'),
                          "demote-idle", "when.idle_dayz", ["unknown criterion 'idle_dayz'", "idle_days"]),
    "bad operator": (('">= 14"', '"=> 14"'), "demote-idle", "when.idle_days", ["expected an operator", "'=> 14'"]),
    "bare number": (('">= 14"', "14"), "demote-idle", "when.idle_days", ["operator", "bare number 14"]),
    "bad reads value": (('"< 3"', '"< few"'), "demote-idle", "when.reads_30d", ["expected a number", "'< few'"]),
    "bad size in a criterion": (('"> 10GiB"', '"> 10 gigs"'), "archive-stale", "when.size",
                                ["expected a size", "'> 10 gigs'"]),
    "bad budget size": (("50TiB", "50TiBs"), "", "budget.max_bytes", ["expected a size", "'50TiBs'"]),
    "duplicate rule name": (("archive-stale", "demote-idle"), "demote-idle", "name",
                            ["unique rule name", "#1 and #2"]),
    "from equals to": (("{from: warm, to: hot}", "{from: warm, to: warm}"), "promote-busy", "move.to",
                       ["other than 'from'", "'warm'"]),
    "unknown top-level key": (("heat_half_life_days", "heat_halflife_days"), "", "heat_halflife_days",
                              ["unknown key 'heat_halflife_days'", "heat_half_life_days"]),
    "unknown rule key": (("    move: {from: hot, to: warm}", "    mvoe: {from: hot, to: warm}"),
                         "demote-idle", "mvoe", ["unknown key 'mvoe'", "did you mean 'move'?"]),
    "unknown tier key": (("min_residency_days: 30", "min_residency: 30"), "", "tiers.warm.min_residency",
                         ["unknown key 'min_residency'", "min_residency_days"]),
    "low watermark not below high": (("0.70", "0.85"), "", "tiers.hot.low_watermark",
                                     ["low_watermark < high_watermark", "0.85"]),
    "watermark above one": (("high_watermark: 0.85", "high_watermark: 1.5"), "", "tiers.hot.high_watermark",
                            ["less than or equal to 1", "1.5"]),
    "one watermark alone": (("low_watermark: 0.70, ", ""), "", "tiers.hot.low_watermark", ["both"]),
    "bad window": (('"02:00-06:00"', '"2am-6am"'), "", "budget.window", ["HH:MM-HH:MM", "'2am-6am'"]),
    "empty window": (('"02:00-06:00"', '"02:00-02:00"'), "", "budget.window", ["start and end differ"]),
    "bad kind": (('reads_7d: ">= 5"', 'reads_7d: ">= 5", kind: modle'), "promote-busy", "when.kind",
                 ["'dataset' or 'model'", "'modle'"]),
    "unknown criterion in unless": (("unless: {tags:", "unless: {tagz:"), "archive-stale", "unless.tagz",
                                    ["unknown criterion 'tagz'"]),
    "criterion in the second unless block": (
        ("unless: {tags: {retention: keep-online}}", "unless: [{owner: bob}, {heat: 3}]"),
        "archive-stale", "unless[1].heat", ["bare number 3"]),
    "empty when": (('when: {reads_7d: ">= 5"}', "when: {}"), "promote-busy", "when", ["mapping of criteria"]),
    "missing move": (("    move: {from: warm, to: hot}\n", ""), "promote-busy", "move", ["missing"]),
    "bad tier name": (("{from: warm, to: hot}", "{from: warm, to: Hot}"), "promote-busy", "move.to",
                      ["tier name", "'Hot'"]),
    "negative residency": (("min_residency_days: 30", "min_residency_days: -3"), "",
                           "tiers.warm.min_residency_days", ["greater than or equal to 0", "-3"]),
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_a_bad_policy_gets_one_clear_line_naming_file_rule_and_field(case: str, tmp_path: Path) -> None:
    (old, new), rule, field, words = BAD_POLICIES[case]
    assert old in GOOD, f"test case {case!r} does not apply"
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    error = caught.value
    message = str(error)
    assert "\n" not in message, message
    assert (error.file, error.rule, error.field) == (str(path), rule, field)
    assert message.startswith(f"{path}: ")
    if rule:
        assert f"rule {rule!r}" in message
    assert f"field {field!r}" in message
    assert "expected" in message or "unknown" in message or "missing" in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert error.exit_code == 9


def test_a_rule_without_a_name_is_named_by_its_position() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy({"rules": [{"move": {"from": "hot", "to": "warm"}, "when": {"idle_days": ">= 1"}}]},
                     source="p.yaml")
    assert (caught.value.rule, caught.value.field) == ("#1", "name")


def test_several_problems_are_reported_one_line_each() -> None:
    text = GOOD.replace('"=> 14"', "").replace('idle_days: ">= 14"', 'idle_dayz: ">= 14"').replace(
        "50TiB", "lots")
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="p.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith("p.yaml: ") for line in lines)
    assert any("'when.idle_dayz'" in line for line in lines)
    assert any("'budget.max_bytes'" in line for line in lines)


def test_a_key_written_twice_is_refused_rather_than_silently_dropped() -> None:
    text = GOOD.replace('reads_30d: "< 3"}', 'reads_30d: "< 3", idle_days: ">= 1"}')
    with pytest.raises(PolicyError, match=r"line 8: .*'idle_days' twice"):
        parse_policy(text, source="p.yaml")


@pytest.mark.parametrize(
    ("text", "words"),
    [("rules: [", "not valid YAML"), ("- a\n- b\n", "mapping at the top level")],
)
def test_files_that_are_not_a_policy_mapping_are_refused(text: str, words: str) -> None:
    with pytest.raises(PolicyError, match=words) as caught:
        parse_policy(text, source="p.yaml")
    assert caught.value.file == "p.yaml"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy file") as caught:
        load_policy(tmp_path / "nope.yaml")
    assert caught.value.file == str(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("written", "value", "holds"),
    [(">= 14", 14, True), ("> 14", 14, False), ("< 3", 2, True), ("<= 3", 4, False), ("== 0", 0, True),
     ("!= 0", 0, False)],
)
def test_comparisons_hold_as_written(written: str, value: float, holds: bool) -> None:
    policy = parse_policy({"rules": [{"name": "r", "move": {"from": "a", "to": "b"},
                                      "when": {"age_days": written}}]})
    comparison = policy.rules[0].when.age_days
    assert comparison is not None
    assert comparison.holds(value) is holds
    assert str(comparison) == written
