"""Pure planning: which datasets move where in this run, and why every other one stays.

:func:`plan_moves` takes facts and returns a :class:`Plan`. It reads no database, no clock and no file, and
its answer depends only on its arguments (iteration order of ``datasets`` included only through ties that
are broken by dataset id): the same facts give the same plan. All datetimes are timezone-aware; sizes are
bytes; day counts are whole days (``(now - t).days``), as cloud lifecycle rules count them.

How a plan is made, in this order:

1. **Each dataset once.** A dataset that is ``busy`` (an unfinished move or restore) is never planned. One on
   an archive tier is never moved out: leaving the archive is a restore (``tiering restore``), not a policy
   move. Otherwise the rules whose ``from`` is its home tier are tried in file order; the first whose
   ``when`` holds and none of whose ``unless`` blocks holds is *the* rule for it (later rules are not tried,
   even if the first one is then blocked). A matched move is blocked by:

   * **minimum residency** of the home tier: nothing leaves a tier before ``home_since + min_residency_days``;
   * **pins**: a pin is a floor: while active (``now < until``) the dataset may not go to a tier colder
     (higher rank) than the pin's tier. Pins do not promote: a dataset below its pin is reported, not moved.

2. **Watermark relief**, hottest tier first. A tier that has watermarks in the policy and a capacity in its
   facts, and whose projected usage is above ``high_watermark * capacity``, demotes datasets until its
   projected usage is below ``low_watermark * capacity``: first the datasets a demotion rule already selected
   (coldest first), then the coldest of the rest (lowest heat, then oldest last read, never-read first, then
   id) to the next colder tier. Residency and pins apply. A relief move only needs room under the
   destination's capacity: a colder tier pushed above its own high mark is relieved in turn, later in the
   loop.

3. **Rule demotions**, coldest first (lowest heat, oldest last read, id).

4. **Rule promotions**, hottest first (highest heat, latest read, id). A promotion never takes its destination
   above the destination's high watermark.

Every move needs room under the destination's capacity. A tier relieved in step 2 accepts moves in steps 3
and 4 only up to its *low* mark, so the plan does not refill what it just emptied.

**Budget** (``max_bytes``, ``max_datasets``) caps the whole plan and is spent in the order above: watermark
relief, then demotions, then promotions. A move that does not fit goes to :attr:`Plan.skipped_for_budget`;
later, smaller moves may still fit. The **window** is only reported (:attr:`Plan.window_open`): the planner
plans at any hour and the executor decides whether to run.

Scale: one pass over the datasets, rules evaluated per dataset, one sort per phase over its candidates.
Decisions for the datasets that simply stay (no rule matched, archived) are not built during planning; they
are derived on demand from the retained facts when :attr:`Plan.decisions` is read (``tiering why``). The
sentences of the other decisions, and the moves the budget skipped (with their reasons), are likewise
written when read: a run over 10^6 datasets can skip hundreds of thousands of moves.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, overload

from tiering.config import format_size
from tiering.errors import TierNotFound
from tiering.lifecycle.context import Limit, PlanContext, Relief
from tiering.lifecycle.criteria import CompiledRule, Subject, check_policy_against_tiers, compile_criteria
from tiering.lifecycle.explain import (
    Decisions,
    Plan,
    blocked_decision,
    budget_decision,
    busy_decision,
    limit_decision,
    move_reason,
)
from tiering.lifecycle.inputs import DatasetFacts, TierFacts, require_aware
from tiering.lifecycle.model import Policy
from tiering.lifecycle.outcomes import WATERMARK_RULE, Decision, Move, MoveCause, Outcome, TierProjection, percent_text

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparisonT


def _last_read_order(facts: DatasetFacts) -> float:
    """Seconds since the epoch of the last read; never read sorts as the oldest."""
    return -math.inf if facts.last_access_at is None else facts.last_access_at.timestamp()


class _Deferred:
    """A decision made while planning; its sentence is written only if someone reads it.

    ``build(*args)`` writes it. A plain slots class: a large plan records hundreds of thousands of them.
    """

    __slots__ = ("outcome", "_build", "_args")

    def __init__(self, outcome: Outcome, build: Callable[..., Decision], *args: Any) -> None:
        self.outcome = outcome
        self._build = build
        self._args = args

    def build(self) -> Decision:
        return self._build(*self._args)


@dataclass(frozen=True, slots=True)
class _Budget:
    """The run's budget and what a skipped move needs to write its sentences later."""

    context: PlanContext
    max_bytes: int | None
    max_datasets: int | None


class _BudgetSkip:
    """A move the budget did not admit: an entry of :attr:`Plan.skipped_for_budget` and the dataset's
    recorded decision (:attr:`Outcome.BUDGET`) at once. Its :class:`Move`, reason and sentence are written
    only when read; a plain slots class, because a large run skips hundreds of thousands of moves."""

    __slots__ = ("facts", "to_tier", "compiled", "relief_text", "cause", "spent_bytes", "planned", "budget")
    outcome = Outcome.BUDGET

    def __init__(self, facts: DatasetFacts, to_tier: str, compiled: CompiledRule | None, relief_text: str | None,
                 cause: MoveCause, spent_bytes: int, planned: int, budget: _Budget) -> None:
        self.facts = facts
        self.to_tier = to_tier
        self.compiled = compiled
        self.relief_text = relief_text
        self.cause = cause
        #: what the plan had admitted when this move came: bytes and moves
        self.spent_bytes = spent_bytes
        self.planned = planned
        self.budget = budget

    def move(self) -> Move:
        facts, compiled = self.facts, self.compiled
        return Move(facts.id, facts.label, facts.home_tier, self.to_tier, facts.size_bytes,
                    WATERMARK_RULE if compiled is None else compiled.name,
                    move_reason(self.budget.context, facts, compiled, self.relief_text), self.cause)

    def build(self) -> Decision:
        budget = self.budget
        return budget_decision(self.move(), self.spent_bytes, self.planned, budget.max_bytes, budget.max_datasets)


#: what planning records for a dataset that stays
Recorded = _Deferred | _BudgetSkip


class _SkippedMoves(Sequence[Move]):
    """:attr:`Plan.skipped_for_budget`: a sequence of :class:`Move` built on access (a large run can skip
    hundreds of thousands of moves; their reasons are written only when read). Compares equal to any
    sequence of the same moves."""

    __slots__ = ("_skipped",)

    def __init__(self, skipped: Sequence[_BudgetSkip]) -> None:
        self._skipped = skipped

    @overload
    def __getitem__(self, index: int) -> Move: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Move, ...]: ...

    def __getitem__(self, index: int | slice) -> Move | tuple[Move, ...]:
        if isinstance(index, slice):
            return tuple(skip.move() for skip in self._skipped[index])
        return self._skipped[index].move()

    def __len__(self) -> int:
        return len(self._skipped)

    def __iter__(self) -> Iterator[Move]:
        return (skip.move() for skip in self._skipped)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SkippedMoves({list(self)!r})"


class _Planner:
    """The mutable state of one planning run; :func:`plan_moves` is its only user."""

    def __init__(self, policy: Policy, tiers: Sequence[TierFacts], now: datetime) -> None:
        self.policy = policy
        self.now = now
        self.tiers = {t.name: t for t in tiers}
        self.order = [t.name for t in tiers]
        self.notes: list[str] = []
        self.projected = {t.name: t.used_bytes for t in tiers}
        self.bytes_in = dict.fromkeys(self.order, 0)
        self.bytes_out = dict.fromkeys(self.order, 0)
        self.moves_in = dict.fromkeys(self.order, 0)
        self.moves_out = dict.fromkeys(self.order, 0)
        self.high_bytes: dict[str, float] = {}
        self.low_bytes: dict[str, float] = {}
        for tier in tiers:
            knobs = policy.tier(tier.name)
            if knobs.high_watermark is None or knobs.low_watermark is None:
                continue
            if not tier.capacity_bytes:
                self.notes.append(f"tier {tier.name} has watermarks in the policy but no capacity in its "
                                  "facts: its watermarks are ignored")
                continue
            self.high_bytes[tier.name] = knobs.high_watermark * tier.capacity_bytes
            self.low_bytes[tier.name] = knobs.low_watermark * tier.capacity_bytes
        rules_by_tier: dict[str, list[CompiledRule]] = {}
        for rule in policy.rules:
            from_rank, to_rank = self.tiers[rule.move.from_tier].rank, self.tiers[rule.move.to_tier].rank
            rules_by_tier.setdefault(rule.move.from_tier, []).append(CompiledRule(
                rule, to_rank, to_rank > from_rank, compile_criteria(rule.when),
                tuple(compile_criteria(block) for block in rule.unless),
            ))
        residency_cutoff = {
            name: now - timedelta(days=policy.tier(name).min_residency_days)
            if policy.tier(name).min_residency_days > 0 else None
            for name in self.order
        }
        self.facts_by_id: dict[int, DatasetFacts] = {}
        self.relief: dict[str, Relief] = {}
        self.context = PlanContext(
            policy=policy, now=now, tiers=self.tiers,
            next_colder={name: (self.order[i + 1] if i + 1 < len(self.order) else None)
                         for i, name in enumerate(self.order)},
            rules_by_tier={name: tuple(rules) for name, rules in rules_by_tier.items()},
            residency_cutoff=residency_cutoff, facts_by_id=self.facts_by_id, relief=self.relief,
        )
        self.by_tier: dict[str, list[DatasetFacts]] = {name: [] for name in self.order}
        #: datasets a rule selected and nothing blocked: id -> the rule
        self.selected: dict[int, CompiledRule] = {}
        self.recorded: dict[int, Recorded] = {}
        self.moves: list[Move] = []
        self.moved: dict[int, Move] = {}
        self.skipped: list[_BudgetSkip] = []
        self.relieved: set[str] = set()
        #: inbound_limit's answers; they change only when a tier is relieved
        self.limits: dict[tuple[str, MoveCause], Limit | None] = {}
        self.spent_bytes = 0
        self.max_bytes = policy.budget.max_bytes
        self.max_datasets = policy.budget.max_datasets
        self.budget = _Budget(self.context, self.max_bytes, self.max_datasets)

    # step 1 ---------------------------------------------------------------------------------------------

    def evaluate(self, datasets: Iterable[DatasetFacts]) -> None:
        now = self.now
        context = self.context
        rules_by_tier = context.rules_by_tier
        facts_by_id = self.facts_by_id
        by_tier = self.by_tier
        recorded = self.recorded
        selected = self.selected
        residency_cutoff = context.residency_cutoff
        for facts in datasets:
            dataset_id = facts.id
            known = len(facts_by_id)
            facts_by_id[dataset_id] = facts
            if len(facts_by_id) == known:
                raise ValueError(f"dataset id {dataset_id} appears twice in the facts ({facts.label})")
            home = facts.home_tier
            try:
                by_tier[home].append(facts)
            except KeyError:
                raise TierNotFound(home, self.order) from None
            if facts.busy:
                recorded[dataset_id] = _Deferred(Outcome.BUSY, busy_decision, facts)
                continue
            rules = rules_by_tier.get(home)  # an archive tier has none (check_policy_against_tiers)
            if rules is None:
                continue
            subject = Subject(facts, now)
            for compiled in rules:
                if compiled.matches(subject):
                    break
            else:
                continue
            if not facts.pins:  # blocker()'s common case inlined: no pin, and out of residency
                cutoff = residency_cutoff[home]
                if cutoff is None or facts.home_since <= cutoff:
                    selected[dataset_id] = compiled
                    continue
            blocker = context.blocker(facts, compiled.to_tier)
            if blocker is None:
                selected[dataset_id] = compiled
            else:
                recorded[dataset_id] = _Deferred(blocker.outcome, blocked_decision, context, facts, compiled, blocker)

    # step 2 ---------------------------------------------------------------------------------------------

    def relieve_watermarks(self) -> None:
        for tier_name in self.order:
            tier = self.tiers[tier_name]
            high = self.high_bytes.get(tier_name)
            low = self.low_bytes.get(tier_name)
            if high is None or low is None or tier.archive:
                continue
            if self.projected[tier_name] > high:
                self.relieve(tier, low)

    def relieve(self, tier: TierFacts, low: float) -> None:
        assert tier.capacity_bytes
        knobs = self.policy.tier(tier.name)
        assert knobs.high_watermark is not None and knobs.low_watermark is not None
        capacity = tier.capacity_bytes
        fraction_before = self.projected[tier.name] / capacity
        usage = percent_text(fraction_before, distinct_from=knobs.high_watermark)
        relief_text = (f"watermark: {tier.name} at {usage} > {percent_text(knobs.high_watermark)}, "
                       f"demote coldest until < {percent_text(knobs.low_watermark)}")
        colder = self.context.next_colder[tier.name]
        # First the datasets a demotion rule selected, then the others that may go one tier colder; each group
        # coldest first: (heat, last read, id), ids are unique so the rest of a candidate is never compared.
        selected_first: list[tuple[float, float, int, DatasetFacts, str, CompiledRule | None]] = []
        then_others: list[tuple[float, float, int, DatasetFacts, str, CompiledRule | None]] = []
        recorded, moved, selected = self.recorded, self.moved, self.selected
        blocker, cutoff = self.context.blocker, self.context.residency_cutoff.get(tier.name)
        for facts in self.by_tier[tier.name]:
            dataset_id = facts.id
            if facts.busy or dataset_id in recorded or dataset_id in moved:
                continue
            last = facts.last_access_at
            last_read = -math.inf if last is None else last.timestamp()  # _last_read_order, inlined
            selected_rule = selected.get(dataset_id)
            if selected_rule is not None:
                if selected_rule.is_demotion:
                    selected_first.append(
                        (facts.heat, last_read, dataset_id, facts, selected_rule.to_tier, selected_rule))
            elif colder is not None and (
                # blocker() is None, its common case inlined: no pin and out of residency
                (not facts.pins and (cutoff is None or facts.home_since <= cutoff))
                or blocker(facts, colder) is None
            ):
                then_others.append((facts.heat, last_read, dataset_id, facts, colder, None))
        # Bytes the budget refused count as relief still owed: the skipped list then holds the moves relief
        # needed, not every dataset of the tier.
        owed_to_budget = 0
        for group in (selected_first, then_others):
            for _, _, _, facts, to_tier, selected_rule in _ascending(group):
                if self.projected[tier.name] - owed_to_budget < low:
                    break
                outcome = self.try_move(facts, to_tier, selected_rule, MoveCause.WATERMARK, relief_text)
                if outcome is Outcome.BUDGET:
                    owed_to_budget += facts.size_bytes
        fraction_after = self.projected[tier.name] / capacity
        reached = self.projected[tier.name] < low
        self.relieved.add(tier.name)
        self.limits.clear()
        self.relief[tier.name] = Relief(fraction_before, fraction_after)
        if not reached:
            self.notes.append(
                f"tier {tier.name} is at {percent_text(fraction_after)} after watermark relief, not under its "
                f"low mark {percent_text(knobs.low_watermark)}: too few eligible datasets (pins, residency), "
                "or the budget or a colder tier's capacity ran out"
            )

    # steps 3 and 4 --------------------------------------------------------------------------------------

    def apply_rule_moves(self) -> None:
        # sorted on (heat, last read, id): ids are unique, so facts and rules are never compared
        demotions: list[tuple[float, float, int, DatasetFacts, CompiledRule]] = []
        promotions: list[tuple[float, float, int, DatasetFacts, CompiledRule]] = []
        moved, recorded, facts_by_id = self.moved, self.recorded, self.facts_by_id
        for dataset_id, compiled in self.selected.items():
            if dataset_id in moved or dataset_id in recorded:
                continue
            facts = facts_by_id[dataset_id]
            last_read = _last_read_order(facts)
            if compiled.is_demotion:
                demotions.append((facts.heat, last_read, dataset_id, facts, compiled))
            else:
                promotions.append((-facts.heat, -last_read, dataset_id, facts, compiled))
        demotions.sort()
        promotions.sort()
        for _, _, _, facts, compiled in demotions:
            self.try_move(facts, compiled.to_tier, compiled, MoveCause.DEMOTION)
        for _, _, _, facts, compiled in promotions:
            self.try_move(facts, compiled.to_tier, compiled, MoveCause.PROMOTION)

    # moving ---------------------------------------------------------------------------------------------

    def inbound_limit(self, to_tier: str, cause: MoveCause) -> Limit | None:
        """The most bytes ``to_tier`` may hold after a move of this cause; None when unlimited."""
        key = (to_tier, cause)
        if key not in self.limits:
            self.limits[key] = self._inbound_limit(to_tier, cause)
        return self.limits[key]

    def _inbound_limit(self, to_tier: str, cause: MoveCause) -> Limit | None:
        capacity = self.tiers[to_tier].capacity_bytes
        if cause is not MoveCause.WATERMARK:
            if to_tier in self.relieved:
                knobs = self.policy.tier(to_tier)
                assert knobs.low_watermark is not None
                return Limit(
                    self.low_bytes[to_tier], Outcome.WATERMARK,
                    f"its low watermark {percent_text(knobs.low_watermark)}, under which this plan relieves it",
                    strict=True,
                )
            if cause is MoveCause.PROMOTION and to_tier in self.high_bytes:
                knobs = self.policy.tier(to_tier)
                assert knobs.high_watermark is not None
                return Limit(self.high_bytes[to_tier], Outcome.WATERMARK,
                              f"its high watermark {percent_text(knobs.high_watermark)}")
        if capacity is None:
            return None
        return Limit(capacity, Outcome.DESTINATION_FULL, f"its capacity {format_size(capacity)}")

    def try_move(self, facts: DatasetFacts, to_tier: str, compiled: CompiledRule | None, cause: MoveCause,
                 relief_text: str | None = None) -> Outcome:
        """Plan the move if the destination has room and the budget allows; else record why not.
        Returns MOVE, or the outcome recorded (WATERMARK, DESTINATION_FULL, BUDGET)."""
        size = facts.size_bytes
        limit = self.inbound_limit(to_tier, cause)
        if limit is not None and limit.refuses(self.projected[to_tier] + size):
            self.recorded[facts.id] = _Deferred(
                limit.outcome, limit_decision, self.context, facts, to_tier, compiled, relief_text, cause, limit,
                self.projected[to_tier] + size,
            )
            return limit.outcome
        over_datasets = self.max_datasets is not None and len(self.moves) + 1 > self.max_datasets
        over_bytes = self.max_bytes is not None and self.spent_bytes + size > self.max_bytes
        if over_datasets or over_bytes:
            self.recorded[facts.id] = skip = _BudgetSkip(
                facts, to_tier, compiled, relief_text, cause, self.spent_bytes, len(self.moves), self.budget,
            )
            self.skipped.append(skip)
            return Outcome.BUDGET
        move = Move(facts.id, facts.label, facts.home_tier, to_tier, size,
                    WATERMARK_RULE if compiled is None else compiled.name,
                    move_reason(self.context, facts, compiled, relief_text), cause)
        self.moves.append(move)
        self.moved[facts.id] = move
        self.spent_bytes += size
        self.projected[facts.home_tier] -= size
        self.projected[to_tier] += size
        self.bytes_out[facts.home_tier] += size
        self.bytes_in[to_tier] += size
        self.moves_out[facts.home_tier] += 1
        self.moves_in[to_tier] += 1
        return Outcome.MOVE

    # result ---------------------------------------------------------------------------------------------

    def result(self, window_timezone: tzinfo) -> Plan:
        projections = []
        for name in self.order:
            tier = self.tiers[name]
            knobs = self.policy.tier(name)
            projections.append(TierProjection(
                name=name, rank=tier.rank, archive=tier.archive, capacity_bytes=tier.capacity_bytes,
                used_bytes_before=tier.used_bytes, used_bytes_after=self.projected[name],
                bytes_in=self.bytes_in[name], bytes_out=self.bytes_out[name],
                moves_in=self.moves_in[name], moves_out=self.moves_out[name],
                high_watermark=knobs.high_watermark, low_watermark=knobs.low_watermark,
            ))
        counts = dict.fromkeys(Outcome, 0)
        counts[Outcome.MOVE] = len(self.moves)
        for deferred in self.recorded.values():
            counts[deferred.outcome] += 1
        counts[Outcome.ARCHIVED] = sum(
            1 for name in self.order if self.tiers[name].archive
            for facts in self.by_tier[name] if not facts.busy
        )
        counts[Outcome.NO_RULE] = len(self.facts_by_id) - sum(counts.values())
        window = self.policy.budget.window
        window_open = window is None or window.contains(self.now.astimezone(window_timezone).time())
        return Plan(
            now=self.now, policy_source=self.policy.source, moves=tuple(self.moves),
            skipped_for_budget=_SkippedMoves(self.skipped), tiers=tuple(projections),
            max_bytes=self.max_bytes, max_datasets=self.max_datasets,
            window=None if window is None else str(window), window_open=window_open,
            decisions=Decisions(self.recorded, self.moved, self.context),
            outcome_counts=counts, notes=tuple(self.notes),
        )


def _ascending(items: list[SupportsRichComparisonT]) -> Iterator[SupportsRichComparisonT]:
    """The items of ``items`` (which this reorders) in ascending order, computed as they are taken.

    A heap while the consumer takes few (relief usually needs the coldest few of a large tier); once it has
    taken an eighth, the rest is sorted, which is cheaper than popping most of a heap. Items must be totally
    ordered and unequal (here: no NaN heat, unique dataset ids).
    """
    heapq.heapify(items)
    for _ in range(len(items) // 8):
        yield heapq.heappop(items)
    items.sort()
    yield from items


def plan_moves(
    datasets: Iterable[DatasetFacts],
    tiers: Iterable[TierFacts],
    *,
    policy: Policy,
    now: datetime,
    window_timezone: tzinfo = UTC,
) -> Plan:
    """Plan one policy run (see the module docstring for the order of steps). Pure and deterministic.

    ``now`` must be timezone-aware; ``window_timezone`` is the clock the policy's window is written in
    (the scheduler's timezone). Raises :class:`~tiering.errors.PolicyError` when a rule or tier entry names
    an unknown tier or leaves an archive tier, :class:`~tiering.errors.TierNotFound` when a dataset or pin
    names an unknown tier, and ``ValueError`` for inconsistent facts (duplicate ids or tier ranks, a naive
    ``now``, a ``reads`` window the policy needs but the facts lack).
    """
    require_aware(now, "now")
    tier_list = sorted(tiers, key=lambda t: t.rank)
    names, ranks = {t.name for t in tier_list}, {t.rank for t in tier_list}
    if len(names) != len(tier_list) or len(ranks) != len(tier_list):
        raise ValueError("tier names and ranks must be unique: " +
                         ", ".join(f"{t.name}={t.rank}" for t in tier_list))
    check_policy_against_tiers(policy, tier_list)
    planner = _Planner(policy, tier_list, now)
    planner.evaluate(datasets)
    planner.relieve_watermarks()
    planner.apply_rule_moves()
    return planner.result(window_timezone)
