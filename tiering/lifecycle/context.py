"""What one planning run keeps after it is done, to write its decisions and explanations when read:
the compiled rules, the residency cutoffs, the facts by id, and what blocks a dataset from leaving its tier."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from tiering.errors import TierNotFound
from tiering.lifecycle.criteria import CompiledRule
from tiering.lifecycle.inputs import DatasetFacts, Pin, TierFacts
from tiering.lifecycle.model import Policy
from tiering.lifecycle.outcomes import Decision, Outcome, when_text


@dataclass(frozen=True, slots=True)
class Blocker:
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
            texts.append(f"it arrived on {self.home_tier} {when_text(self.home_since)} and min_residency_days "
                         f"{self.residency_days:g} keeps it there until {when_text(self.residency_ends)}")
        if self.pin is not None:
            until = "with no end date" if self.pin.until is None else f"until {when_text(self.pin.until)}"
            why = f" ({self.pin.reason})" if self.pin.reason else ""
            texts.append(f"it is pinned to {self.pin.tier} or hotter {until}{why}")
        return " and ".join(texts)


@dataclass(slots=True)
class Relief:
    """What watermark relief did on one tier."""

    fraction_before: float
    fraction_after: float


@dataclass(frozen=True)
class PlanContext:
    """What is kept to derive decisions and explanations after planning."""

    policy: Policy
    now: datetime
    tiers: Mapping[str, TierFacts]
    next_colder: Mapping[str, str | None]
    rules_by_tier: Mapping[str, tuple[CompiledRule, ...]]
    #: per tier, ``now - min_residency_days``: a dataset that arrived after it may not leave yet
    residency_cutoff: Mapping[str, datetime | None]
    facts_by_id: Mapping[int, DatasetFacts]
    relief: Mapping[str, Relief]

    def blocker(self, facts: DatasetFacts, to_tier: str) -> Blocker | None:
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
        return Blocker(outcome, facts.home_tier, facts.home_since, days, ends, pin)

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
class Limit:
    """How full a destination may get: at most ``bytes``, or below it when ``strict``."""

    bytes: float
    outcome: Outcome
    text: str
    strict: bool = False

    def refuses(self, bytes_after: int) -> bool:
        return bytes_after >= self.bytes if self.strict else bytes_after > self.bytes


class Recorded(Protocol):
    """What planning records for a dataset that stays: ``.outcome`` now, ``.build()`` the decision when read."""

    @property
    def outcome(self) -> Outcome: ...

    def build(self) -> Decision: ...
