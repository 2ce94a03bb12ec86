"""Rule matching: a policy's criteria compiled into checks, evaluated against a dataset at ``now``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from operator import attrgetter
from typing import Protocol

from tiering.config import format_size
from tiering.errors import PolicyError
from tiering.lifecycle.inputs import DatasetFacts, TierFacts
from tiering.lifecycle.model import Comparison, Criteria, Policy, Rule


class Subject:
    """A dataset as the criteria see it at ``now``. Made once per dataset and planning run: a plain slots
    class, because a frozen dataclass is slower to build (measured in bench/)."""

    __slots__ = ("facts", "age_days", "idle_days")

    def __init__(self, facts: DatasetFacts, now: datetime) -> None:
        self.facts = facts
        self.age_days = age_days = (now - facts.created_at).days
        last = facts.last_access_at
        self.idle_days = age_days if last is None else (now - last).days


class Check(Protocol):
    """One criterion compiled for evaluation."""

    @property
    def criterion(self) -> str: ...

    def holds(self, subject: Subject) -> bool: ...

    def describe(self, subject: Subject) -> str: ...

    def observed(self, subject: Subject) -> str: ...


@dataclass(frozen=True, slots=True)
class ComparisonCheck:
    """A numeric criterion: ``age_days``, ``idle_days``, ``reads_<N>d``, ``heat``, ``size``."""

    criterion: str
    value_of: Callable[[Subject], float]
    comparison: Comparison
    show: Callable[[float], str]

    def holds(self, subject: Subject) -> bool:
        return self.comparison.holds(self.value_of(subject))

    def observed(self, subject: Subject) -> str:
        return self.show(self.value_of(subject))

    def describe(self, subject: Subject) -> str:
        value = self.value_of(subject)
        joint = " " if self.comparison.holds(value) else ", not "
        return f"{self.show(value)}{joint}{self.comparison}"


@dataclass(frozen=True, slots=True)
class _MemberCheck:
    """A label that must be one of the allowed values: ``kind``, ``owner``, one key of ``tags``."""

    criterion: str
    value_of: Callable[[Subject], str | None]
    allowed: tuple[str, ...]
    noun: str

    def holds(self, subject: Subject) -> bool:
        return self.value_of(subject) in self.allowed

    def observed(self, subject: Subject) -> str:
        value = self.value_of(subject)
        return f"{self.noun}{'(none)' if value is None else value}"

    def describe(self, subject: Subject) -> str:
        if self.holds(subject):
            return self.observed(subject)
        wanted = self.allowed[0] if len(self.allowed) == 1 else f"one of {', '.join(self.allowed)}"
        return f"{self.observed(subject)}, not {wanted}"


@dataclass(frozen=True, slots=True)
class _NameGlobCheck:
    """The dataset name (without version) matches one of the globs (``fnmatch``, case-sensitive)."""

    criterion: str
    globs: tuple[str, ...]

    def holds(self, subject: Subject) -> bool:
        name = subject.facts.name
        return any(fnmatchcase(name, glob) for glob in self.globs)

    def observed(self, subject: Subject) -> str:
        return f"name {subject.facts.name}"

    def describe(self, subject: Subject) -> str:
        verb = "matches" if self.holds(subject) else "does not match"
        return f"name {subject.facts.name} {verb} {' or '.join(self.globs)}"


def _reads_of(window_days: int) -> Callable[[Subject], float]:
    def value_of(subject: Subject) -> float:
        try:
            return subject.facts.reads[window_days]
        except KeyError:
            raise ValueError(
                f"facts of {subject.facts.label} have no reads for the {window_days}-day window; "
                "gather every window of Policy.read_windows()"
            ) from None

    return value_of


def shown_as(label: str, unit: str = "") -> Callable[[float], str]:
    """How a whole-number criterion value reads in a reason: ``idle 41 days``, ``reads_30d 0``."""

    def show(value: float) -> str:
        if not unit:
            return f"{label} {value:.0f}"
        return f"{label} {value:.0f} {unit if value != 1 else unit.removesuffix('s')}"

    return show


# attribute getters run in C: each criterion test is evaluated for every dataset of its tier
_age_days: Callable[[Subject], float] = attrgetter("age_days")
_idle_days: Callable[[Subject], float] = attrgetter("idle_days")
_heat_of: Callable[[Subject], float] = attrgetter("facts.heat")
_size_of: Callable[[Subject], float] = attrgetter("facts.size_bytes")
_kind_of: Callable[[Subject], str | None] = attrgetter("facts.kind")
_owner_of: Callable[[Subject], str | None] = attrgetter("facts.owner")


def _tag_of(key: str) -> Callable[[Subject], str | None]:
    def value_of(subject: Subject) -> str | None:
        return subject.facts.tags.get(key)

    return value_of


def compile_criteria(criteria: Criteria) -> tuple[Check, ...]:
    """Checks in a fixed order (time, reads, heat, size, then labels), so reasons read the same every run."""
    checks: list[Check] = []
    if criteria.age_days is not None:
        checks.append(ComparisonCheck("age_days", _age_days, criteria.age_days, shown_as("age", "days")))
    if criteria.idle_days is not None:
        checks.append(
            ComparisonCheck("idle_days", _idle_days, criteria.idle_days, shown_as("idle", "days"))
        )
    for window_days in sorted(criteria.reads):
        label = f"reads_{window_days}d"
        checks.append(ComparisonCheck(label, _reads_of(window_days), criteria.reads[window_days],
                                       shown_as(label)))
    if criteria.heat is not None:
        checks.append(ComparisonCheck("heat", _heat_of, criteria.heat, lambda v: f"heat {v:.2f}"))
    if criteria.size is not None:
        checks.append(ComparisonCheck("size", _size_of, criteria.size, lambda v: f"size {format_size(v)}"))
    if criteria.kind is not None:
        checks.append(_MemberCheck("kind", _kind_of, (criteria.kind,), "kind "))
    if criteria.owner is not None:
        checks.append(_MemberCheck("owner", _owner_of, tuple(criteria.owner), "owner "))
    if criteria.name is not None:
        checks.append(_NameGlobCheck("name", tuple(criteria.name)))
    for key, values in (criteria.tags or {}).items():
        checks.append(_MemberCheck(f"tags.{key}", _tag_of(key), values, f"tag {key}="))
    return tuple(checks)


def _test_of(check: Check) -> Callable[[Subject], bool]:
    """``check.holds`` as one call: what ``CompiledRule.matches`` runs for each dataset."""
    if isinstance(check, ComparisonCheck):
        value_of, compare, threshold = check.value_of, check.comparison.function, check.comparison.threshold

        def compares(subject: Subject) -> bool:
            return compare(value_of(subject), threshold)

        return compares
    if isinstance(check, _MemberCheck):
        label_of, allowed = check.value_of, check.allowed

        def is_one_of(subject: Subject) -> bool:
            return label_of(subject) in allowed

        return is_one_of
    return check.holds


def _matcher(when: Sequence[Callable[[Subject], bool]],
             unless: Sequence[Sequence[Callable[[Subject], bool]]]) -> Callable[[Subject], bool]:
    """One predicate for a rule: each ``when`` test in order, then each ``unless`` block; it runs for every
    dataset on the rule's tier, so the usual shapes (one or two criteria, no ``unless``) get no loop."""
    if not unless and len(when) == 1:
        return when[0]
    if not unless and len(when) == 2:
        first, second = when

        def both(subject: Subject) -> bool:
            return first(subject) and second(subject)

        return both

    def matches(subject: Subject) -> bool:
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
class CompiledRule:
    rule: Rule
    to_rank: int
    is_demotion: bool
    when: tuple[Check, ...]
    unless: tuple[tuple[Check, ...], ...]
    #: the rule's name and destination (read for every candidate of a large plan)
    name: str = field(init=False)
    to_tier: str = field(init=False)
    #: ``matches(subject)``: every ``when`` criterion holds and no ``unless`` block holds entirely
    matches: Callable[[Subject], bool] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.rule.name)
        object.__setattr__(self, "to_tier", self.rule.move.to_tier)
        object.__setattr__(self, "matches", _matcher(
            tuple(_test_of(check) for check in self.when),
            tuple(tuple(_test_of(check) for check in block) for block in self.unless),
        ))

    def reason(self, subject: Subject) -> str:
        """The ``when`` criteria with the values seen: ``idle 41 days >= 14 and reads_30d 0 < 3``."""
        return " and ".join(check.describe(subject) for check in self.when)

    def why_not(self, subject: Subject) -> str | None:
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
