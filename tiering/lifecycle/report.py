"""The lifecycle report (``tiering report``): per tier its datasets, bytes, capacity and cost, and a heat
histogram."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from tiering.app import App
from tiering.catalog.models import Dataset
from tiering.catalog.states import DatasetState
from tiering.lifecycle.facts import gather_dataset_facts
from tiering.lifecycle.model import Policy

HEAT_BUCKETS = (0.0, 0.5, 2.0, 8.0, 32.0, float("inf"))


def report(app: App, *, policy: Policy, now: dt.datetime | None = None) -> dict[str, Any]:
    """Per tier: datasets, bytes, capacity used, cost per month; a heat histogram of datasets per tier."""
    from tiering.datasets import tier_usage

    at = now or app.now()
    usage = tier_usage(app)
    with app.catalog.session() as s:
        facts = gather_dataset_facts(s, now=at, half_life_days=policy.heat_half_life_days, windows=(30,))
        total_datasets = s.scalar(select(func.count(Dataset.id)).where(Dataset.state != DatasetState.DELETED)) or 0
    bounds = list(zip(HEAT_BUCKETS, HEAT_BUCKETS[1:], strict=False))
    labels = [f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}" for lo, hi in bounds]
    histogram: dict[str, dict[str, int]] = {u.name: dict.fromkeys(labels, 0) for u in usage}
    for f in facts:
        for label, lo, hi in zip(labels, HEAT_BUCKETS, HEAT_BUCKETS[1:], strict=False):
            if lo <= f.heat < hi:
                histogram.setdefault(f.home_tier, dict.fromkeys(labels, 0))[label] += 1
                break
    tiers = [
        {"name": u.name, "rank": u.rank, "datasets": u.datasets, "used_bytes": u.used_bytes,
         "capacity_bytes": u.capacity_bytes,
         "used_pct": round(100 * u.used_bytes / u.capacity_bytes, 2) if u.capacity_bytes else None,
         "cost_per_month": round(u.cost_per_month, 2), "heat_histogram": histogram.get(u.name, {})}
        for u in usage
    ]
    return {
        "at": at.isoformat(), "datasets": total_datasets,
        "cost_per_month": round(sum(u.cost_per_month for u in usage), 2),
        "heat_half_life_days": policy.heat_half_life_days, "tiers": tiers,
    }
