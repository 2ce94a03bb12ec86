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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from fnmatch import fnmatchcase
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol, overload

from tiering.config import format_size
from tiering.errors import PolicyError, TierNotFound
from tiering.lifecycle.model import Comparison, Criteria, Policy, Rule

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparisonT

# --- inputs ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pin:
    """Keep a dataset on ``tier`` or a hotter one while ``now < until`` (``until=None``: no end date)."""

    tier: str
    until: datetime | None
    reason: str = ""

    def is_active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class DatasetFacts:
    """What the planner knows of one dataset version. Datetimes are timezone-aware (UTC)."""

    id: int
    name: str
    version: str
    kind: str
    owner: str
    home_tier: str
    size_bytes: int
    created_at: datetime
    #: when the dataset arrived on its current home tier (starts the minimum residency)
    home_since: datetime
    tags: Mapping[str, str] = field(default_factory=dict)
    last_access_at: datetime | None = None
    #: window length in days -> reads in that window; must hold every window of ``Policy.read_windows()``
    reads: Mapping[int, int] = field(default_factory=dict)
    #: exponentially decayed read count (see :func:`heat`)
    heat: float = 0.0
    pins: Sequence[Pin] = ()
    #: an unfinished move or restore exists: never planned
    busy: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class _DatasetFactsLayout:
    """The slots of :class:`DatasetFacts` without its frozen ``__setattr__``; see :func:`dataset_facts`."""

    __slots__ = DatasetFacts.__slots__


def dataset_facts(
    id: int, name: str, version: str, kind: str, owner: str, home_tier: str, size_bytes: int,
    created_at: datetime, home_since: datetime, tags: Mapping[str, str], last_access_at: datetime | None,
    reads: Mapping[int, int], heat: float, pins: Sequence[Pin], busy: bool,
) -> DatasetFacts:
    """``DatasetFacts(...)`` with every field given, in field order, for building a million of them.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``: ~2 µs per instance
    here, seconds per million. This fills an object of the same layout with plain slot stores and then
    makes it a ``DatasetFacts``; the result is the same frozen, equal-comparing instance.
    """
    facts: Any = _DatasetFactsLayout.__new__(_DatasetFactsLayout)
    facts.id = id
    facts.name = name
    facts.version = version
    facts.kind = kind
    facts.owner = owner
    facts.home_tier = home_tier
    facts.size_bytes = size_bytes
    facts.created_at = created_at
    facts.home_since = home_since
    facts.tags = tags
    facts.last_access_at = last_access_at
    facts.reads = reads
    facts.heat = heat
    facts.pins = pins
    facts.busy = busy
    facts.__class__ = DatasetFacts
    built: DatasetFacts = facts
    return built


@dataclass(frozen=True, slots=True)
class TierFacts:
    """A configured tier and its current usage (bytes). ``rank`` 0 is the hottest."""

    name: str
    rank: int
    capacity_bytes: int | None
    used_bytes: int
    #: an archive tier (tape): datasets never leave it by policy
    archive: bool = False


# --- outputs -----------------------------------------------------------------------------------------------


class MoveCause(StrEnum):
    """Why a move is in the plan; also its budget priority (this order)."""

    WATERMARK = "watermark"
    DEMOTION = "demotion"
    PROMOTION = "promotion"


#: ``Move.rule`` of a watermark move that no rule selected
WATERMARK_RULE = "watermark"


@dataclass(frozen=True, slots=True)
class Move:
    """One dataset to move. ``reason`` is a sentence with the numbers that made the decision."""

    dataset_id: int
    label: str
    from_tier: str
    to_tier: str
    size_bytes: int
    #: the rule's name, or :data:`WATERMARK_RULE` for a watermark move no rule selected
    rule: str
    reason: str
    cause: MoveCause

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id, "label": self.label, "from": self.from_tier, "to": self.to_tier,
            "bytes": self.size_bytes, "rule": self.rule, "cause": str(self.cause), "reason": self.reason,
        }


class Outcome(StrEnum):
    """What the plan decided for one dataset."""

    MOVE = "move"
    NO_RULE = "no_rule"
    PINNED = "pinned"
    RESIDENCY = "residency"
    BUDGET = "budget"
    WATERMARK = "watermark"
    DESTINATION_FULL = "destination_full"
    ARCHIVED = "archived"
    BUSY = "busy"


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


@dataclass(frozen=True, slots=True)
class Decision:
    """The plan's answer for one dataset, for ``tiering why``."""

    dataset_id: int
    label: str
    tier: str
    outcome: Outcome
    #: one sentence: the move's reason, or what blocked it, with the numbers seen
    detail: str
    #: the rule that matched (or would have moved it); ``"watermark"`` for relief; None when none
    rule: str | None = None
    #: where the rule or the watermark wanted it
    to_tier: str | None = None
    #: when the blocker lifts (residency end, pin end, or when time-based criteria will hold); None: no date
    eligible_at: datetime | None = None
    #: True when ``eligible_at`` assumes the dataset is not read again until then
    eligible_if_unread: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id, "label": self.label, "tier": self.tier,
            "outcome": str(self.outcome), "detail": self.detail, "rule": self.rule, "to": self.to_tier,
            "eligible_at": _iso(self.eligible_at), "eligible_if_unread": self.eligible_if_unread,
        }


@dataclass(frozen=True, slots=True)
class TierProjection:
    """A tier's usage before and after the plan (bytes), and what the plan moves in and out of it."""

    name: str
    rank: int
    archive: bool
    capacity_bytes: int | None
    used_bytes_before: int
    used_bytes_after: int
    bytes_in: int
    bytes_out: int
    moves_in: int
    moves_out: int
    high_watermark: float | None
    low_watermark: float | None

    @property
    def fraction_before(self) -> float | None:
        return None if not self.capacity_bytes else self.used_bytes_before / self.capacity_bytes

    @property
    def fraction_after(self) -> float | None:
        return None if not self.capacity_bytes else self.used_bytes_after / self.capacity_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "rank": self.rank, "archive": self.archive,
            "capacity_bytes": self.capacity_bytes,
            "used_bytes_before": self.used_bytes_before, "used_bytes_after": self.used_bytes_after,
            "fraction_before": self.fraction_before, "fraction_after": self.fraction_after,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "moves_in": self.moves_in, "moves_out": self.moves_out,
            "high_watermark": self.high_watermark, "low_watermark": self.low_watermark,
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
            "now": _iso(self.now),
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


# --- heat --------------------------------------------------------------------------------------------------


def heat(reads_by_day: Mapping[date, int], now: datetime, half_life_days: float) -> float:
    """Exponentially decayed read count at ``now``.

    A read of day ``d`` (UTC day) weighs ``0.5 ** (age / half_life_days)`` with ``age`` the whole days from
    ``d`` to ``now``'s UTC day (today's reads weigh 1, reads dated after today also weigh 1).
    """
    _require_aware(now, "now")
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be positive, got {half_life_days}")
    today = now.astimezone(UTC).date()
    total = 0.0
    for day, count in reads_by_day.items():
        age_days = max(0, (today - day).days)
        total += count * 0.5 ** (age_days / half_life_days)
    return total


# --- criteria evaluation -----------------------------------------------------------------------------------


class _Subject:
    """A dataset as the criteria see it at ``now``. Made once per dataset and planning run: a plain slots
    class, because a frozen dataclass costs a microsecond more per instance."""

    __slots__ = ("facts", "age_days", "idle_days")

    def __init__(self, facts: DatasetFacts, now: datetime) -> None:
        self.facts = facts
        self.age_days = age_days = (now - facts.created_at).days
        last = facts.last_access_at
        self.idle_days = age_days if last is None else (now - last).days



class _Check(Protocol):
    """One criterion compiled for evaluation."""

    @property
    def criterion(self) -> str: ...

    def holds(self, subject: _Subject) -> bool: ...

    def describe(self, subject: _Subject) -> str: ...

    def observed(self, subject: _Subject) -> str: ...


@dataclass(frozen=True, slots=True)
class _ComparisonCheck:
    """A numeric criterion: ``age_days``, ``idle_days``, ``reads_<N>d``, ``heat``, ``size``."""

    criterion: str
    value_of: Callable[[_Subject], float]
    comparison: Comparison
    show: Callable[[float], str]

    def holds(self, subject: _Subject) -> bool:
        return self.comparison.holds(self.value_of(subject))

    def observed(self, subject: _Subject) -> str:
        return self.show(self.value_of(subject))

    def describe(self, subject: _Subject) -> str:
        value = self.value_of(subject)
        joint = " " if self.comparison.holds(value) else ", not "
        return f"{self.show(value)}{joint}{self.comparison}"


@dataclass(frozen=True, slots=True)
class _MemberCheck:
    """A label that must be one of the allowed values: ``kind``, ``owner``, one key of ``tags``."""

    criterion: str
    value_of: Callable[[_Subject], str | None]
    allowed: tuple[str, ...]
    noun: str

    def holds(self, subject: _Subject) -> bool:
        return self.value_of(subject) in self.allowed

    def observed(self, subject: _Subject) -> str:
        value = self.value_of(subject)
        return f"{self.noun}{'(none)' if value is None else value}"

    def describe(self, subject: _Subject) -> str:
        if self.holds(subject):
            return self.observed(subject)
        wanted = self.allowed[0] if len(self.allowed) == 1 else f"one of {', '.join(self.allowed)}"
        return f"{self.observed(subject)}, not {wanted}"


@dataclass(frozen=True, slots=True)
class _NameGlobCheck:
    """The dataset name (without version) matches one of the globs (``fnmatch``, case-sensitive)."""

    criterion: str
    globs: tuple[str, ...]

    def holds(self, subject: _Subject) -> bool:
        name = subject.facts.name
        return any(fnmatchcase(name, glob) for glob in self.globs)

    def observed(self, subject: _Subject) -> str:
        return f"name {subject.facts.name}"

    def describe(self, subject: _Subject) -> str:
        verb = "matches" if self.holds(subject) else "does not match"
        return f"name {subject.facts.name} {verb} {' or '.join(self.globs)}"


def _reads_of(window_days: int) -> Callable[[_Subject], float]:
    def value_of(subject: _Subject) -> float:
        try:
            return subject.facts.reads[window_days]
        except KeyError:
            raise ValueError(
                f"facts of {subject.facts.label} have no reads for the {window_days}-day window; "
                "gather every window of Policy.read_windows()"
            ) from None

    return value_of


def _shown_as(label: str, unit: str = "") -> Callable[[float], str]:
    """How a whole-number criterion value reads in a reason: ``idle 41 days``, ``reads_30d 0``."""

    def show(value: float) -> str:
        if not unit:
            return f"{label} {value:.0f}"
        return f"{label} {value:.0f} {unit if value != 1 else unit.removesuffix('s')}"

    return show


# attribute getters run in C: each criterion test is evaluated for every dataset of its tier
_age_days: Callable[[_Subject], float] = attrgetter("age_days")
_idle_days: Callable[[_Subject], float] = attrgetter("idle_days")
_heat_of: Callable[[_Subject], float] = attrgetter("facts.heat")
_size_of: Callable[[_Subject], float] = attrgetter("facts.size_bytes")
_kind_of: Callable[[_Subject], str | None] = attrgetter("facts.kind")
_owner_of: Callable[[_Subject], str | None] = attrgetter("facts.owner")


def _tag_of(key: str) -> Callable[[_Subject], str | None]:
    def value_of(subject: _Subject) -> str | None:
        return subject.facts.tags.get(key)

    return value_of


def _compile_criteria(criteria: Criteria) -> tuple[_Check, ...]:
    """Checks in a fixed order (time, reads, heat, size, then labels), so reasons read the same every run."""
    checks: list[_Check] = []
    if criteria.age_days is not None:
        checks.append(_ComparisonCheck("age_days", _age_days, criteria.age_days, _shown_as("age", "days")))
    if criteria.idle_days is not None:
        checks.append(
            _ComparisonCheck("idle_days", _idle_days, criteria.idle_days, _shown_as("idle", "days"))
        )
    for window_days in sorted(criteria.reads):
        label = f"reads_{window_days}d"
        checks.append(_ComparisonCheck(label, _reads_of(window_days), criteria.reads[window_days],
                                       _shown_as(label)))
    if criteria.heat is not None:
        checks.append(_ComparisonCheck("heat", _heat_of, criteria.heat, lambda v: f"heat {v:.2f}"))
    if criteria.size is not None:
        checks.append(_ComparisonCheck("size", _size_of, criteria.size, lambda v: f"size {format_size(v)}"))
    if criteria.kind is not None:
        checks.append(_MemberCheck("kind", _kind_of, (criteria.kind,), "kind "))
    if criteria.owner is not None:
        checks.append(_MemberCheck("owner", _owner_of, tuple(criteria.owner), "owner "))
    if criteria.name is not None:
        checks.append(_NameGlobCheck("name", tuple(criteria.name)))
    for key, values in (criteria.tags or {}).items():
        checks.append(_MemberCheck(f"tags.{key}", _tag_of(key), values, f"tag {key}="))
    return tuple(checks)


def _test_of(check: _Check) -> Callable[[_Subject], bool]:
    """``check.holds`` as one call: what ``_CompiledRule.matches`` runs for each dataset."""
    if isinstance(check, _ComparisonCheck):
        value_of, compare, threshold = check.value_of, check.comparison.function, check.comparison.threshold

        def compares(subject: _Subject) -> bool:
            return compare(value_of(subject), threshold)

        return compares
    if isinstance(check, _MemberCheck):
        label_of, allowed = check.value_of, check.allowed

        def is_one_of(subject: _Subject) -> bool:
            return label_of(subject) in allowed

        return is_one_of
    return check.holds


def _matcher(when: Sequence[Callable[[_Subject], bool]],
             unless: Sequence[Sequence[Callable[[_Subject], bool]]]) -> Callable[[_Subject], bool]:
    """One predicate for a rule: each ``when`` test in order, then each ``unless`` block; it runs for every
    dataset on the rule's tier, so the usual shapes (one or two criteria, no ``unless``) get no loop."""
    if not unless and len(when) == 1:
        return when[0]
    if not unless and len(when) == 2:
        first, second = when

        def both(subject: _Subject) -> bool:
            return first(subject) and second(subject)

        return both

    def matches(subject: _Subject) -> bool:
        for test in when:
            if not test(subject):
                return False
        for block in unless:
            for test in block:
                if not test(subject):
                    break
            else:
                return False
        return True

    return matches


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    to_rank: int
    is_demotion: bool
    when: tuple[_Check, ...]
    unless: tuple[tuple[_Check, ...], ...]
    #: the rule's name and destination (read for every candidate of a large plan)
    name: str = field(init=False)
    to_tier: str = field(init=False)
    #: ``matches(subject)``: every ``when`` criterion holds and no ``unless`` block holds entirely
    matches: Callable[[_Subject], bool] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.rule.name)
        object.__setattr__(self, "to_tier", self.rule.move.to_tier)
        object.__setattr__(self, "matches", _matcher(
            tuple(_test_of(check) for check in self.when),
            tuple(tuple(_test_of(check) for check in block) for block in self.unless),
        ))

    def reason(self, subject: _Subject) -> str:
        """The ``when`` criteria with the values seen: ``idle 41 days >= 14 and reads_30d 0 < 3``."""
        return " and ".join(check.describe(subject) for check in self.when)

    def why_not(self, subject: _Subject) -> str | None:
        """None when the rule matches; else the first failed criterion, or the ``unless`` block that held."""
        for check in self.when:
            if not check.holds(subject):
                return check.describe(subject)
        for block in self.unless:
            if all(check.holds(subject) for check in block):
                return "unless " + " and ".join(check.describe(subject) for check in block)
        return None


# --- policy against tiers ----------------------------------------------------------------------------------


def check_policy_against_tiers(policy: Policy, tiers: Iterable[TierFacts]) -> None:
    """Raise :class:`~tiering.errors.PolicyError` when the policy names a tier that is not configured, or has
    a rule that moves datasets out of an archive tier (that is a restore, never a policy move)."""
    by_name = {tier.name: tier for tier in tiers}
    known = ", ".join(sorted(by_name, key=lambda n: by_name[n].rank))
    for tier_name in policy.tiers:
        if tier_name not in by_name:
            raise PolicyError(f"expected a configured tier ({known}), got {tier_name!r}",
                              file=policy.source, field=f"tiers.{tier_name}")
    for rule in policy.rules:
        for field_name, tier_name in (("move.from", rule.move.from_tier), ("move.to", rule.move.to_tier)):
            if tier_name not in by_name:
                raise PolicyError(f"expected a configured tier ({known}), got {tier_name!r}",
                                  file=policy.source, rule=rule.name, field=field_name)
        if by_name[rule.move.from_tier].archive:
            raise PolicyError(
                f"expected a non-archive tier, got archive tier {rule.move.from_tier!r}: datasets leave "
                "the archive only by `tiering restore`, never by policy",
                file=policy.source, rule=rule.name, field="move.from",
            )


# --- the planner -------------------------------------------------------------------------------------------


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _percent(fraction: float, *, distinct_from: float | None = None) -> str:
    """``0.913`` -> ``"91%"``; one decimal when whole percents would hide the difference to a threshold."""
    whole = f"{fraction * 100:.0f}%"
    if distinct_from is not None and whole == f"{distinct_from * 100:.0f}%" and fraction != distinct_from:
        return f"{fraction * 100:.1f}%"
    return whole


def _last_read_order(facts: DatasetFacts) -> float:
    """Seconds since the epoch of the last read; never read sorts as the oldest."""
    return -math.inf if facts.last_access_at is None else facts.last_access_at.timestamp()


def _days_text(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")


@dataclass(frozen=True, slots=True)
class _Blocker:
    """Why a dataset may not leave its tier for a given destination now. Text is written only when read."""

    outcome: Outcome
    home_tier: str
    home_since: datetime
    residency_days: float
    #: set when minimum residency blocks: the moment it ends
    residency_ends: datetime | None
    #: set when a pin blocks
    pin: Pin | None

    @property
    def eligible_at(self) -> datetime | None:
        """When nothing blocks any more; None when a pin has no end date."""
        if self.pin is not None and self.pin.until is None:
            return None
        ends = [d for d in (self.residency_ends, self.pin.until if self.pin else None) if d is not None]
        return max(ends) if ends else None

    @property
    def text(self) -> str:
        texts: list[str] = []
        if self.residency_ends is not None:
            texts.append(f"it arrived on {self.home_tier} {_when(self.home_since)} and min_residency_days "
                         f"{self.residency_days:g} keeps it there until {_when(self.residency_ends)}")
        if self.pin is not None:
            until = "with no end date" if self.pin.until is None else f"until {_when(self.pin.until)}"
            why = f" ({self.pin.reason})" if self.pin.reason else ""
            texts.append(f"it is pinned to {self.pin.tier} or hotter {until}{why}")
        return " and ".join(texts)


@dataclass(slots=True)
class _Relief:
    """What watermark relief did on one tier."""

    fraction_before: float
    fraction_after: float


@dataclass(frozen=True)
class _PlanContext:
    """What is kept to derive decisions and explanations after planning."""

    policy: Policy
    now: datetime
    tiers: Mapping[str, TierFacts]
    next_colder: Mapping[str, str | None]
    rules_by_tier: Mapping[str, tuple[_CompiledRule, ...]]
    #: per tier, ``now - min_residency_days``: a dataset that arrived after it may not leave yet
    residency_cutoff: Mapping[str, datetime | None]
    facts_by_id: Mapping[int, DatasetFacts]
    relief: Mapping[str, _Relief]

    def blocker(self, facts: DatasetFacts, to_tier: str) -> _Blocker | None:
        """Residency of the home tier, or an active pin above ``to_tier``; None when free to move there."""
        cutoff = self.residency_cutoff.get(facts.home_tier)
        resident = cutoff is not None and facts.home_since > cutoff
        if not resident and not facts.pins:
            return None
        pin = self.floor_pin(facts)
        if pin is not None and self.tiers[to_tier].rank <= self.tiers[pin.tier].rank:
            pin = None
        if not resident and pin is None:
            return None
        days = self.tier_policy_days(facts.home_tier)
        ends = facts.home_since + timedelta(days=days) if resident else None
        outcome = Outcome.PINNED if pin is not None else Outcome.RESIDENCY
        return _Blocker(outcome, facts.home_tier, facts.home_since, days, ends, pin)

    def tier_policy_days(self, tier: str) -> float:
        return self.policy.tier(tier).min_residency_days

    def floor_pin(self, facts: DatasetFacts) -> Pin | None:
        """The active pin with the hottest tier (the binding floor), or None."""
        floor: Pin | None = None
        for pin in facts.pins:
            if not pin.is_active(self.now):
                continue
            if pin.tier not in self.tiers:
                raise TierNotFound(pin.tier, list(self.tiers))
            if floor is None or self.tiers[pin.tier].rank < self.tiers[floor.tier].rank:
                floor = pin
        return floor


@dataclass(frozen=True, slots=True)
class _Limit:
    """How full a destination may get: at most ``bytes``, or below it when ``strict``."""

    bytes: float
    outcome: Outcome
    text: str
    strict: bool = False

    def refuses(self, bytes_after: int) -> bool:
        return bytes_after >= self.bytes if self.strict else bytes_after > self.bytes


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

    context: _PlanContext
    max_bytes: int | None
    max_datasets: int | None


class _BudgetSkip:
    """A move the budget did not admit: an entry of :attr:`Plan.skipped_for_budget` and the dataset's
    recorded decision (:attr:`Outcome.BUDGET`) at once. Its :class:`Move`, reason and sentence are written
    only when read; a plain slots class, because a large run skips hundreds of thousands of moves."""

    __slots__ = ("facts", "to_tier", "compiled", "relief_text", "cause", "spent_bytes", "planned", "budget")
    outcome = Outcome.BUDGET

    def __init__(self, facts: DatasetFacts, to_tier: str, compiled: _CompiledRule | None, relief_text: str | None,
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
                    _move_reason(self.budget.context, facts, compiled, self.relief_text), self.cause)

    def build(self) -> Decision:
        budget = self.budget
        return _budget_decision(self.move(), self.spent_bytes, self.planned, budget.max_bytes, budget.max_datasets)


#: what planning records for a dataset that stays: ``.outcome`` now, ``.build()`` the decision when read
_Recorded = _Deferred | _BudgetSkip


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


def _move_reason(context: _PlanContext, facts: DatasetFacts, compiled: _CompiledRule | None,
                 relief_text: str | None) -> str:
    rule_reason = "" if compiled is None else compiled.reason(_Subject(facts, context.now))
    if relief_text is None:
        return rule_reason
    return relief_text if compiled is None else f"{relief_text}; rule {compiled.name}: {rule_reason}"


def _busy_decision(facts: DatasetFacts) -> Decision:
    return Decision(facts.id, facts.label, facts.home_tier, Outcome.BUSY,
                    "it has an unfinished move or restore; it is planned again once that is done")


def _blocked_decision(context: _PlanContext, facts: DatasetFacts, compiled: _CompiledRule,
                      blocker: _Blocker) -> Decision:
    reason = compiled.reason(_Subject(facts, context.now))
    return Decision(facts.id, facts.label, facts.home_tier, blocker.outcome,
                    f"rule {compiled.name} wants {facts.home_tier} -> {compiled.to_tier} ({reason}), "
                    f"but {blocker.text}",
                    compiled.name, compiled.to_tier, blocker.eligible_at)


def _limit_decision(context: _PlanContext, facts: DatasetFacts, to_tier: str, compiled: _CompiledRule | None,
                    relief_text: str | None, cause: MoveCause, limit: _Limit, bytes_after: int) -> Decision:
    capacity = context.tiers[to_tier].capacity_bytes
    used = f" ({_percent(bytes_after / capacity)} used)" if capacity else ""
    reason = _move_reason(context, facts, compiled, relief_text)
    return Decision(facts.id, facts.label, facts.home_tier, limit.outcome,
                    f"{cause} {facts.home_tier} -> {to_tier} ({reason}) would take {to_tier} to "
                    f"{format_size(bytes_after)}{used}, past {limit.text}",
                    WATERMARK_RULE if compiled is None else compiled.name, to_tier)


def _budget_decision(move: Move, spent_bytes: int, planned: int, max_bytes: int | None,
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
        rules_by_tier: dict[str, list[_CompiledRule]] = {}
        for rule in policy.rules:
            from_rank, to_rank = self.tiers[rule.move.from_tier].rank, self.tiers[rule.move.to_tier].rank
            rules_by_tier.setdefault(rule.move.from_tier, []).append(_CompiledRule(
                rule, to_rank, to_rank > from_rank, _compile_criteria(rule.when),
                tuple(_compile_criteria(block) for block in rule.unless),
            ))
        residency_cutoff = {
            name: now - timedelta(days=policy.tier(name).min_residency_days)
            if policy.tier(name).min_residency_days > 0 else None
            for name in self.order
        }
        self.facts_by_id: dict[int, DatasetFacts] = {}
        self.relief: dict[str, _Relief] = {}
        self.context = _PlanContext(
            policy=policy, now=now, tiers=self.tiers,
            next_colder={name: (self.order[i + 1] if i + 1 < len(self.order) else None)
                         for i, name in enumerate(self.order)},
            rules_by_tier={name: tuple(rules) for name, rules in rules_by_tier.items()},
            residency_cutoff=residency_cutoff, facts_by_id=self.facts_by_id, relief=self.relief,
        )
        self.by_tier: dict[str, list[DatasetFacts]] = {name: [] for name in self.order}
        #: datasets a rule selected and nothing blocked: id -> the rule
        self.selected: dict[int, _CompiledRule] = {}
        self.recorded: dict[int, _Recorded] = {}
        self.moves: list[Move] = []
        self.moved: dict[int, Move] = {}
        self.skipped: list[_BudgetSkip] = []
        self.relieved: set[str] = set()
        #: inbound_limit's answers; they change only when a tier is relieved
        self.limits: dict[tuple[str, MoveCause], _Limit | None] = {}
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
                recorded[dataset_id] = _Deferred(Outcome.BUSY, _busy_decision, facts)
                continue
            rules = rules_by_tier.get(home)  # an archive tier has none (check_policy_against_tiers)
            if rules is None:
                continue
            subject = _Subject(facts, now)
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
                recorded[dataset_id] = _Deferred(blocker.outcome, _blocked_decision, context, facts, compiled, blocker)

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
        usage = _percent(fraction_before, distinct_from=knobs.high_watermark)
        relief_text = (f"watermark: {tier.name} at {usage} > {_percent(knobs.high_watermark)}, "
                       f"demote coldest until < {_percent(knobs.low_watermark)}")
        colder = self.context.next_colder[tier.name]
        # First the datasets a demotion rule selected, then the others that may go one tier colder; each group
        # coldest first: (heat, last read, id), ids are unique so the rest of a candidate is never compared.
        selected_first: list[tuple[float, float, int, DatasetFacts, str, _CompiledRule | None]] = []
        then_others: list[tuple[float, float, int, DatasetFacts, str, _CompiledRule | None]] = []
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
        self.relief[tier.name] = _Relief(fraction_before, fraction_after)
        if not reached:
            self.notes.append(
                f"tier {tier.name} is at {_percent(fraction_after)} after watermark relief, not under its "
                f"low mark {_percent(knobs.low_watermark)}: too few eligible datasets (pins, residency), "
                "or the budget or a colder tier's capacity ran out"
            )

    # steps 3 and 4 --------------------------------------------------------------------------------------

    def apply_rule_moves(self) -> None:
        # sorted on (heat, last read, id): ids are unique, so facts and rules are never compared
        demotions: list[tuple[float, float, int, DatasetFacts, _CompiledRule]] = []
        promotions: list[tuple[float, float, int, DatasetFacts, _CompiledRule]] = []
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

    def inbound_limit(self, to_tier: str, cause: MoveCause) -> _Limit | None:
        """The most bytes ``to_tier`` may hold after a move of this cause; None when unlimited."""
        key = (to_tier, cause)
        if key not in self.limits:
            self.limits[key] = self._inbound_limit(to_tier, cause)
        return self.limits[key]

    def _inbound_limit(self, to_tier: str, cause: MoveCause) -> _Limit | None:
        capacity = self.tiers[to_tier].capacity_bytes
        if cause is not MoveCause.WATERMARK:
            if to_tier in self.relieved:
                knobs = self.policy.tier(to_tier)
                assert knobs.low_watermark is not None
                return _Limit(
                    self.low_bytes[to_tier], Outcome.WATERMARK,
                    f"its low watermark {_percent(knobs.low_watermark)}, under which this plan relieves it",
                    strict=True,
                )
            if cause is MoveCause.PROMOTION and to_tier in self.high_bytes:
                knobs = self.policy.tier(to_tier)
                assert knobs.high_watermark is not None
                return _Limit(self.high_bytes[to_tier], Outcome.WATERMARK,
                              f"its high watermark {_percent(knobs.high_watermark)}")
        if capacity is None:
            return None
        return _Limit(capacity, Outcome.DESTINATION_FULL, f"its capacity {format_size(capacity)}")

    def try_move(self, facts: DatasetFacts, to_tier: str, compiled: _CompiledRule | None, cause: MoveCause,
                 relief_text: str | None = None) -> Outcome:
        """Plan the move if the destination has room and the budget allows; else record why not.
        Returns MOVE, or the outcome recorded (WATERMARK, DESTINATION_FULL, BUDGET)."""
        size = facts.size_bytes
        limit = self.inbound_limit(to_tier, cause)
        if limit is not None and limit.refuses(self.projected[to_tier] + size):
            self.recorded[facts.id] = _Deferred(
                limit.outcome, _limit_decision, self.context, facts, to_tier, compiled, relief_text, cause, limit,
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
                    _move_reason(self.context, facts, compiled, relief_text), cause)
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
    _require_aware(now, "now")
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


# --- decisions and explanations ----------------------------------------------------------------------------


class Decisions(Mapping[int, Decision]):
    """Every dataset's :class:`Decision`, by dataset id.

    Decisions are written when read: planning a million datasets does not build a million sentences.
    Those of datasets that simply stay (no rule matched, on an archive tier) are derived from the facts.
    """

    def __init__(
        self, recorded: Mapping[int, _Recorded], moved: Mapping[int, Move], context: _PlanContext
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


def _observed_values(rules: Sequence[_CompiledRule], subject: _Subject) -> str:
    seen: dict[str, str] = {}
    for compiled in rules:
        for check in (*compiled.when, *(c for block in compiled.unless for c in block)):
            seen.setdefault(check.criterion, check.observed(subject))
    return ", ".join(seen.values())


def _time_eligibility(compiled: _CompiledRule, subject: _Subject) -> tuple[datetime, bool] | None:
    """When a rule that fails only on ``age_days``/``idle_days`` lower bounds will match, if nothing else
    changes; and whether that assumes no new reads. None when no such date exists."""
    facts = subject.facts
    dates: list[datetime] = []
    if_unread = False
    for check in compiled.when:
        if check.holds(subject):
            continue
        if not isinstance(check, _ComparisonCheck) or check.criterion not in ("age_days", "idle_days"):
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


def _derive_decision(context: _PlanContext, facts: DatasetFacts) -> Decision:
    """The decision for a dataset planning did not record: it is archived, or no rule matched."""
    tier = context.tiers[facts.home_tier]
    if tier.archive:
        return Decision(facts.id, facts.label, tier.name, Outcome.ARCHIVED,
                        f"{tier.name} is an archive tier: datasets leave it only by `tiering restore "
                        f"{facts.name}@{facts.version} --to TIER`, never by policy")
    rules = context.rules_by_tier.get(tier.name, ())
    subject = _Subject(facts, context.now)
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
                       f"{_percent(relief.fraction_after)} before reaching it (colder datasets went first)")
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
        return f"next eligible: {_when(decision.eligible_at)}{suffix}"
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
    subject = _Subject(facts, now)
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
        f"facts at {_when(now)}:",
        f"  on {facts.home_tier} since {_when(facts.home_since)} ({(now - facts.home_since).days} days); "
        f"registered {_when(facts.created_at)} ({subject.age_days} days ago); "
        f"size {format_size(facts.size_bytes)}",
    ]
    last_read = "never read" if facts.last_access_at is None else f"last read {_when(facts.last_access_at)}"
    reads = ", ".join(f"{days}d {facts.reads[days]}" for days in sorted(facts.reads)) or "none counted"
    lines.append(f"  {last_read} ({_shown_as('idle', 'days')(subject.idle_days)}); reads {reads}; "
                 f"heat {facts.heat:.2f} "
                 f"(half-life {_days_text(context.policy.heat_half_life_days)})")
    if facts.tags:
        lines.append("  tags: " + ", ".join(f"{k}={v}" for k, v in sorted(facts.tags.items())))
    for pin in facts.pins:
        until = "no end date" if pin.until is None else _when(pin.until)
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
            marks = (f" (high {_percent(projection.high_watermark)}, "
                     f"low {_percent(projection.low_watermark)})")
        capacity = format_size(projection.capacity_bytes)
        lines.append(f"tier {tier.name}: {_percent(before)} of {capacity} used, "
                     f"{_percent(after)} after this plan{marks}")
    else:
        lines.append(f"tier {tier.name}: {format_size(projection.used_bytes_before)} used, no capacity set")
    if plan.window is not None:
        lines.append(f"window {plan.window}: {'open' if plan.window_open else 'closed'} at planning time")
    return "\n".join(lines)
