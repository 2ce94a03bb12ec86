"""What a plan says: its moves, the outcome for each dataset, and each tier's projected usage.

Also the few formatting helpers every sentence of a plan uses (dates, percents, day counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


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
            "eligible_at": iso_utc(self.eligible_at), "eligible_if_unread": self.eligible_if_unread,
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


def iso_utc(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def when_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def percent_text(fraction: float, *, distinct_from: float | None = None) -> str:
    """``0.913`` -> ``"91%"``; one decimal when whole percents would hide the difference to a threshold."""
    whole = f"{fraction * 100:.0f}%"
    if distinct_from is not None and whole == f"{distinct_from * 100:.0f}%" and fraction != distinct_from:
        return f"{fraction * 100:.1f}%"
    return whole


def days_text(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")
