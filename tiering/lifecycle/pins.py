"""Pins: keep a dataset on a tier or a hotter one until a date (``tiering pin/unpin/pins``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select

from tiering.app import App
from tiering.catalog.models import AuditEntry, Dataset, Pin, Tier
from tiering.catalog.queries import find_dataset
from tiering.errors import UsageError


@dataclass
class PinRow:
    dataset: str
    tier: str
    until: str
    reason: str
    actor: str
    #: where the dataset is now; when colder than ``tier`` the pin keeps it from sinking further but does
    #: not bring it up: that is a `tiering move` (or a restore from an archive tier)
    current_tier: str = ""


def pin(app: App, label: str, *, tier: str, until: dt.datetime, reason: str = "") -> PinRow:
    """Keep ``label`` on ``tier`` or hotter until ``until`` (UTC). A new pin on the same tier replaces the old."""
    app.config.tier(tier)
    now = app.now()
    if until <= now:
        raise UsageError(f"--until {until.date()} is in the past")
    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        tier_row = s.scalars(select(Tier).where(Tier.name == tier)).one()
        s.execute(delete(Pin).where(Pin.dataset_id == ds.id, Pin.tier_id == tier_row.id))
        s.add(Pin(dataset_id=ds.id, tier_id=tier_row.id, until=until, reason=reason, actor=app.actor, created_at=now))
        s.add(AuditEntry(at=now, actor=app.actor, action="pin", dataset_id=ds.id, dataset_label=ds.label,
                         to_tier=tier, result="ok", detail={"until": until.isoformat(), "reason": reason}))
        return PinRow(ds.label, tier, until.isoformat(), reason, app.actor, ds.home_tier.name)


def unpin(app: App, label: str, *, tier: str | None = None) -> int:
    """Remove the pins of ``label`` (only the one on ``tier`` when given). Returns how many were removed."""
    now = app.now()
    with app.catalog.session() as s:
        ds = find_dataset(s, label)
        stmt = delete(Pin).where(Pin.dataset_id == ds.id)
        if tier is not None:
            app.config.tier(tier)
            stmt = stmt.where(Pin.tier_id == select(Tier.id).where(Tier.name == tier).scalar_subquery())
        n = int(s.execute(stmt).rowcount)  # type: ignore[attr-defined]
        s.add(AuditEntry(at=now, actor=app.actor, action="unpin", dataset_id=ds.id, dataset_label=ds.label,
                         from_tier=tier, result="ok", detail={"removed": n}))
        return n


def list_pins(app: App) -> list[PinRow]:
    with app.catalog.session() as s:
        rows = s.execute(
            select(Dataset.name, Dataset.version, Tier.name, Pin.until, Pin.reason, Pin.actor)
            .join(Dataset, Dataset.id == Pin.dataset_id).join(Tier, Tier.id == Pin.tier_id)
            .order_by(Dataset.name, Dataset.version)
        ).all()
    return [PinRow(f"{n}@{v}", t, u.isoformat(), r, a) for n, v, t, u, r, a in rows]


def pin_is_above(app: App, row: PinRow) -> bool:
    """True when the dataset sits on a tier colder than its pin."""
    return bool(row.current_tier) and app.config.tier(row.current_tier).rank > app.config.tier(row.tier).rank
