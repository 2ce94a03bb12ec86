"""What the planner is given: facts about datasets and tiers, pins, and the heat of a read history.

Pure data; :mod:`tiering.lifecycle.facts` gathers them from the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any


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

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which adds up over a
    million instances (measured in bench/). This fills an object of the same layout with plain slot stores
    and then makes it a ``DatasetFacts``; the result is the same frozen, equal-comparing instance.
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


def heat(reads_by_day: Mapping[date, int], now: datetime, half_life_days: float) -> float:
    """Exponentially decayed read count at ``now``.

    A read of day ``d`` (UTC day) weighs ``0.5 ** (age / half_life_days)`` with ``age`` the whole days from
    ``d`` to ``now``'s UTC day (today's reads weigh 1, reads dated after today also weigh 1).
    """
    require_aware(now, "now")
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be positive, got {half_life_days}")
    today = now.astimezone(UTC).date()
    total = 0.0
    for day, count in reads_by_day.items():
        age_days = max(0, (today - day).days)
        total += count * 0.5 ** (age_days / half_life_days)
    return total


def require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}")
