"""Decisions and explanations: the :class:`Plan` a run returns, every dataset's :class:`Decision` written
when read, and the text of ``tiering why``."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tiering.config import format_size
from tiering.errors import TierNotFound
from tiering.lifecycle.context import Blocker, Limit, PlanContext, Recorded
from tiering.lifecycle.criteria import ComparisonCheck, CompiledRule, Subject, shown_as
from tiering.lifecycle.inputs import DatasetFacts
from tiering.lifecycle.outcomes import (
    WATERMARK_RULE,
    Decision,
    Move,
    MoveCause,
    Outcome,
    TierProjection,
    days_text,
    iso_utc,
    percent_text,
    when_text,
)

_OUTCOME_HEADLINE = {
    Outcome.NO_RULE: "no rule matched",
    Outcome.PINNED: "blocked by a pin",
    Outcome.RESIDENCY: "blocked by minimum residency",
    Outcome.BUDGET: "skipped: the run's budget is spent",
    Outcome.WATERMARK: "blocked by the destination's watermark",
    Outcome.DESTINATION_FULL: "blocked: the destination is full",
    Outcome.ARCHIVED: "on an archive tier, never left automatically",
    Outcome.BUSY: "a move or restore of it is unfinished",
}


@dataclass(frozen=True)
class Plan:
    """What a policy run wants to do. Pure data; :meth:`to_json` gives plain dicts."""

    now: datetime
    policy_source: str
    #: in budget priority order: watermark relief, demotions, promotions
    moves: tuple[Move, ...]
    #: moves the budget did not admit, in the same order (built when read: a large run skips many)
    skipped_for_budget: Sequence[Move]
    #: every tier, hottest first
    tiers: tuple[TierProjection, ...]
    max_bytes: int | None
    max_datasets: int | None
    #: the policy's daily window (``"02:00-06:00"``), None when it sets none
    window: str | None
    #: whether ``now`` falls in the window (True when there is none)
    window_open: bool
    #: every dataset's decision, derived on first read for those that stay where they are
    decisions: Decisions
    outcome_counts: Mapping[Outcome, int]
    #: plan-wide remarks (watermarks ignored, relief incomplete, ...)
    notes: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        return sum(m.size_bytes for m in self.moves)

    def tier(self, name: str) -> TierProjection:
        for projection in self.tiers:
            if projection.name == name:
                return projection
        raise TierNotFound(name, [t.name for t in self.tiers])

    def to_json(self) -> dict[str, Any]:
        """Plain dicts, lists, numbers and strings (``json.dumps``-able). Datetimes are ISO 8601 UTC."""
        return {
            "now": iso_utc(self.now),
            "policy": self.policy_source,
            "window": {"spec": self.window, "open": self.window_open},
            "budget": {
                "max_bytes": self.max_bytes, "max_datasets": self.max_datasets,
                "planned_bytes": self.total_bytes, "planned_datasets": len(self.moves),
            },
            "moves": [m.to_json() for m in self.moves],
            "skipped_for_budget": [m.to_json() for m in self.skipped_for_budget],
            "tiers": [t.to_json() for t in self.tiers],
            "outcomes": {str(k): v for k, v in self.outcome_counts.items() if v},
            "blocked": [d.to_json() for d in self.decisions.recorded()],
            "notes": list(self.notes),
        }


def move_reason(context: PlanContext, facts: DatasetFacts, compiled: CompiledRule | None,
                 relief_text: str | None) -> str:
    rule_reason = "" if compiled is None else compiled.reason(Subject(facts, context.now))
    if relief_text is None:
        return rule_reason
    return relief_text if compiled is None else f"{relief_text}; rule {compiled.name}: {rule_reason}"


def busy_decision(facts: DatasetFacts) -> Decision:
    return Decision(facts.id, facts.label, facts.home_tier, Outcome.BUSY,
                    "it has an unfinished move or restore; it is planned again once that is done")


def blocked_decision(context: PlanContext, facts: DatasetFacts, compiled: CompiledRule,
                      blocker: Blocker) -> Decision:
    reason = compiled.reason(Subject(facts, context.now))
    return Decision(facts.id, facts.label, facts.home_tier, blocker.outcome,
                    f"rule {compiled.name} wants {facts.home_tier} -> {compiled.to_tier} ({reason}), "
                    f"but {blocker.text}",
                    compiled.name, compiled.to_tier, blocker.eligible_at)


def limit_decision(context: PlanContext, facts: DatasetFacts, to_tier: str, compiled: CompiledRule | None,
                    relief_text: str | None, cause: MoveCause, limit: Limit, bytes_after: int) -> Decision:
    capacity = context.tiers[to_tier].capacity_bytes
    used = f" ({percent_text(bytes_after / capacity)} used)" if capacity else ""
    reason = move_reason(context, facts, compiled, relief_text)
    return Decision(facts.id, facts.label, facts.home_tier, limit.outcome,
                    f"{cause} {facts.home_tier} -> {to_tier} ({reason}) would take {to_tier} to "
                    f"{format_size(bytes_after)}{used}, past {limit.text}",
                    WATERMARK_RULE if compiled is None else compiled.name, to_tier)


def budget_decision(move: Move, spent_bytes: int, planned: int, max_bytes: int | None,
                     max_datasets: int | None) -> Decision:
    if max_datasets is not None and planned + 1 > max_datasets:
        spent = f"{planned} of {max_datasets} datasets already planned"
    else:
        spent = (f"{format_size(spent_bytes)} of {format_size(max_bytes or 0)} already planned, "
                 f"{format_size(move.size_bytes)} more does not fit")
    return Decision(move.dataset_id, move.label, move.from_tier, Outcome.BUDGET,
                    f"{move.cause} {move.from_tier} -> {move.to_tier} ({move.reason}) does not fit this "
                    f"run's budget ({spent}); it is planned again next run",
                    move.rule, move.to_tier)


class Decisions(Mapping[int, Decision]):
    """Every dataset's :class:`Decision`, by dataset id.

    Decisions are written when read: planning a million datasets does not build a million sentences.
    Those of datasets that simply stay (no rule matched, on an archive tier) are derived from the facts.
    """

    def __init__(
        self, recorded: Mapping[int, Recorded], moved: Mapping[int, Move], context: PlanContext
    ) -> None:
        self._recorded = recorded
        self._moved = moved
        self._context = context

    def __getitem__(self, dataset_id: int) -> Decision:
        deferred = self._recorded.get(dataset_id)
        if deferred is not None:
            return deferred.build()
        move = self._moved.get(dataset_id)
        if move is not None:
            detail = move.reason if move.cause is MoveCause.WATERMARK else f"rule {move.rule}: {move.reason}"
            return Decision(move.dataset_id, move.label, move.from_tier, Outcome.MOVE, detail,
                            move.rule, move.to_tier)
        return _derive_decision(self._context, self._context.facts_by_id[dataset_id])

    def __iter__(self) -> Iterator[int]:
        return iter(self._context.facts_by_id)

    def __len__(self) -> int:
        return len(self._context.facts_by_id)

    def move_of(self, dataset_id: int) -> Move | None:
        """The planned move of this dataset, if any."""
        return self._moved.get(dataset_id)

    def recorded(self) -> Iterator[Decision]:
        """The decisions made while planning for datasets that stay: blocked, skipped for budget, busy."""
        return (deferred.build() for deferred in self._recorded.values())


def _observed_values(rules: Sequence[CompiledRule], subject: Subject) -> str:
    seen: dict[str, str] = {}
    for compiled in rules:
        for check in (*compiled.when, *(c for block in compiled.unless for c in block)):
            seen.setdefault(check.criterion, check.observed(subject))
    return ", ".join(seen.values())


def _time_eligibility(compiled: CompiledRule, subject: Subject) -> tuple[datetime, bool] | None:
    """When a rule that fails only on ``age_days``/``idle_days`` lower bounds will match, if nothing else
    changes; and whether that assumes no new reads. None when no such date exists."""
    facts = subject.facts
    dates: list[datetime] = []
    if_unread = False
    for check in compiled.when:
        if check.holds(subject):
            continue
        if not isinstance(check, ComparisonCheck) or check.criterion not in ("age_days", "idle_days"):
            return None
        comparison = check.comparison
        if comparison.op == ">=":
            days = math.ceil(comparison.threshold)
        elif comparison.op == ">":
            days = math.floor(comparison.threshold) + 1
        else:
            return None
        if check.criterion == "age_days":
            dates.append(facts.created_at + timedelta(days=days))
        else:
            if_unread = True
            dates.append((facts.last_access_at or facts.created_at) + timedelta(days=days))
    if not dates:
        return None
    return max(dates), if_unread


def _derive_decision(context: PlanContext, facts: DatasetFacts) -> Decision:
    """The decision for a dataset planning did not record: it is archived, or no rule matched."""
    tier = context.tiers[facts.home_tier]
    if tier.archive:
        return Decision(facts.id, facts.label, tier.name, Outcome.ARCHIVED,
                        f"{tier.name} is an archive tier: datasets leave it only by `tiering restore "
                        f"{facts.name}@{facts.version} --to TIER`, never by policy")
    rules = context.rules_by_tier.get(tier.name, ())
    subject = Subject(facts, context.now)
    if rules:
        detail = f"no rule for {tier.name} matched ({_observed_values(rules, subject)})"
    else:
        detail = f"no rule moves datasets out of {tier.name}"
    eligible: tuple[datetime, bool] | None = None
    for compiled in rules:
        if compiled.unless and any(all(c.holds(subject) for c in block) for block in compiled.unless):
            continue
        when = _time_eligibility(compiled, subject)
        if when is None:
            continue
        blocker = context.blocker(facts, compiled.to_tier)
        if blocker is not None:
            if blocker.eligible_at is None:
                continue
            when = (max(when[0], blocker.eligible_at), when[1])
        if eligible is None or when[0] < eligible[0]:
            eligible = when
    relief = context.relief.get(tier.name)
    if relief is not None:
        colder = context.next_colder[tier.name]
        blocker = context.blocker(facts, colder) if colder is not None else None
        if blocker is not None:
            detail += f"; {tier.name} was over its high watermark, but {blocker.text}"
        else:
            detail += (f"; {tier.name} was over its high watermark and relief stopped at "
                       f"{percent_text(relief.fraction_after)} before reaching it (colder datasets went first)")
    return Decision(facts.id, facts.label, tier.name, Outcome.NO_RULE, detail,
                    eligible_at=eligible[0] if eligible else None,
                    eligible_if_unread=eligible[1] if eligible else False)


def _next_eligible_line(decision: Decision) -> str:
    if decision.outcome is Outcome.MOVE:
        return "next eligible: now (in this plan)"
    if decision.outcome is Outcome.ARCHIVED:
        return "next eligible: never automatically; restore it instead"
    if decision.outcome is Outcome.BUSY:
        return "next eligible: once its unfinished move or restore is done"
    if decision.outcome is Outcome.BUDGET:
        return "next eligible: the next run (budget)"
    if decision.eligible_at is not None:
        suffix = ", if it is not read again" if decision.eligible_if_unread else ""
        return f"next eligible: {when_text(decision.eligible_at)}{suffix}"
    if decision.outcome is Outcome.PINNED:
        return "next eligible: when the pin is removed (it has no end date)"
    if decision.outcome in (Outcome.WATERMARK, Outcome.DESTINATION_FULL):
        return "next eligible: when the destination has room"
    return "next eligible: no date (it depends on future reads)"


def explain(plan: Plan, dataset_id: int) -> str:
    """The multi-line text ``tiering why`` prints for one dataset: the decision and its next eligible date,
    the facts seen, each rule of its tier and how it fared, and its tier's usage. Raises ``KeyError`` for an
    id that was not in the plan's facts."""
    context = plan.decisions._context
    facts = context.facts_by_id[dataset_id]
    decision = plan.decisions[dataset_id]
    now = context.now
    subject = Subject(facts, now)
    if decision.outcome is Outcome.MOVE:
        move = plan.decisions.move_of(dataset_id)
        assert move is not None
        headline = f"moves {facts.home_tier} -> {decision.to_tier} ({move.cause})"
    else:
        headline = f"stays on {facts.home_tier}: {_OUTCOME_HEADLINE[decision.outcome]}"
    lines = [
        f"{facts.label} ({facts.kind}, owner {facts.owner}): {headline}",
        f"  {decision.detail}",
        f"  {_next_eligible_line(decision)}",
        f"facts at {when_text(now)}:",
        f"  on {facts.home_tier} since {when_text(facts.home_since)} ({(now - facts.home_since).days} days); "
        f"registered {when_text(facts.created_at)} ({subject.age_days} days ago); "
        f"size {format_size(facts.size_bytes)}",
    ]
    last_read = "never read" if facts.last_access_at is None else f"last read {when_text(facts.last_access_at)}"
    reads = ", ".join(f"{days}d {facts.reads[days]}" for days in sorted(facts.reads)) or "none counted"
    lines.append(f"  {last_read} ({shown_as('idle', 'days')(subject.idle_days)}); reads {reads}; "
                 f"heat {facts.heat:.2f} "
                 f"(half-life {days_text(context.policy.heat_half_life_days)})")
    if facts.tags:
        lines.append("  tags: " + ", ".join(f"{k}={v}" for k, v in sorted(facts.tags.items())))
    for pin in facts.pins:
        until = "no end date" if pin.until is None else when_text(pin.until)
        state = "" if pin.is_active(now) else " (expired)"
        why = f" ({pin.reason})" if pin.reason else ""
        lines.append(f"  pin: {pin.tier} or hotter until {until}{why}{state}")
    tier = context.tiers[facts.home_tier]
    rules = context.rules_by_tier.get(facts.home_tier, ())
    if tier.archive:
        lines.append(f"rules: none apply to {tier.name} (archive tier)")
    elif not rules:
        lines.append(f"rules: none move datasets out of {tier.name}")
    else:
        residency = context.tier_policy_days(tier.name)
        extra = f"; min_residency_days {residency:g}" if residency else ""
        lines.append(f"rules from {tier.name}, in file order (the first that matches wins{extra}):")
        matched = False
        for compiled in rules:
            arrow = f"  {compiled.name} -> {compiled.to_tier}: "
            if matched:
                lines.append(arrow + "not tried, an earlier rule matched")
                continue
            miss = compiled.why_not(subject)
            if miss is None:
                matched = True
                lines.append(arrow + f"matches: {compiled.reason(subject)}")
            else:
                lines.append(arrow + f"no: {miss}")
    projection = plan.tier(tier.name)
    if projection.capacity_bytes:
        before, after = projection.fraction_before, projection.fraction_after
        assert before is not None and after is not None
        marks = ""
        if projection.high_watermark is not None and projection.low_watermark is not None:
            marks = (f" (high {percent_text(projection.high_watermark)}, "
                     f"low {percent_text(projection.low_watermark)})")
        capacity = format_size(projection.capacity_bytes)
        lines.append(f"tier {tier.name}: {percent_text(before)} of {capacity} used, "
                     f"{percent_text(after)} after this plan{marks}")
    else:
        lines.append(f"tier {tier.name}: {format_size(projection.used_bytes_before)} used, no capacity set")
    if plan.window is not None:
        lines.append(f"window {plan.window}: {'open' if plan.window_open else 'closed'} at planning time")
    return "\n".join(lines)
