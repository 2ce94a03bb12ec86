"""Facts for the planner, gathered with a few set-based queries (never one query per dataset).

Three queries whatever the catalog size: datasets with their home tier; reads per window and decayed heat
aggregated in SQL over ``access_daily``; active pins and busy datasets. Rows stream in chunks so 10^6
datasets do not build intermediate ORM objects.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence

from sqlalchemy import Float, case, cast, func, literal, select
from sqlalchemy.orm import Session

from tiering.catalog.models import AccessDaily, Dataset, Member, MoveJob, Pin, Replica, RestoreRequest, Tier
from tiering.catalog.states import TRUSTED_REPLICA_STATES, UNFINISHED_JOB_STATES, ReplicaState
from tiering.policy.planner import DatasetFacts, TierFacts
from tiering.policy.planner import Pin as PinFact

#: reads older than this many half-lives weigh < 0.1% in the heat; they are not summed
HEAT_HORIZON_HALF_LIVES = 10
#: never look further back than this (days), whatever the half-life
MAX_HEAT_HORIZON_DAYS = 400


def heat_weights(today: dt.date, half_life_days: float) -> list[tuple[dt.date, float]]:
    """(day, weight) for every day inside the heat horizon; same weights as ``policy.planner.heat``."""
    horizon = min(MAX_HEAT_HORIZON_DAYS, math.ceil(half_life_days * HEAT_HORIZON_HALF_LIVES))
    return [(today - dt.timedelta(days=age), 0.5 ** (age / half_life_days)) for age in range(horizon + 1)]


def gather_dataset_facts(
    session: Session,
    *,
    now: dt.datetime,
    half_life_days: float,
    windows: Iterable[int],
    dataset_ids: Sequence[int] | None = None,
) -> list[DatasetFacts]:
    """Facts of every active dataset (or those in ``dataset_ids``) at ``now`` (UTC)."""
    today = now.astimezone(dt.UTC).date()
    windows = sorted(set(windows) | {1, 7, 30, 90})
    weights = heat_weights(today, half_life_days)
    oldest = min(today - dt.timedelta(days=max(windows) - 1), weights[-1][0])

    # a read on day d is inside an N-day window when d > today - N (today counts as day 1)
    window_cols = [
        func.sum(case((AccessDaily.day > today - dt.timedelta(days=n), AccessDaily.reads), else_=0)).label(f"r{n}")
        for n in windows
    ]
    weight_expr = case(
        *[(AccessDaily.day == day, literal(w, Float)) for day, w in weights],
        else_=literal(0.0, Float),
    )
    # reads dated after today (clock skew in a log) weigh 1, like the planner's heat()
    weight_expr = case((AccessDaily.day > today, literal(1.0, Float)), else_=weight_expr)
    reads_stmt = (
        select(AccessDaily.dataset_id, *window_cols, func.sum(cast(AccessDaily.reads, Float) * weight_expr))
        .where(AccessDaily.day >= oldest)
        .group_by(AccessDaily.dataset_id)
    )
    if dataset_ids is not None:
        reads_stmt = reads_stmt.where(AccessDaily.dataset_id.in_(dataset_ids))
    reads: dict[int, tuple[dict[int, int], float]] = {}
    for row in session.execute(reads_stmt):
        counts = {n: int(row[i + 1] or 0) for i, n in enumerate(windows)}
        reads[row[0]] = (counts, float(row[-1] or 0.0))

    pins: dict[int, list[PinFact]] = {}
    pin_stmt = select(Pin.dataset_id, Tier.name, Pin.until, Pin.reason).join(Tier, Tier.id == Pin.tier_id).where(
        Pin.until > now
    )
    for ds_id, tier, until, reason in session.execute(pin_stmt):
        pins.setdefault(ds_id, []).append(PinFact(tier=tier, until=until, reason=reason))

    busy = set(
        session.scalars(
            select(MoveJob.dataset_id).where(MoveJob.state.in_([str(s) for s in UNFINISHED_JOB_STATES]))
        )
    )
    busy |= set(
        session.scalars(select(RestoreRequest.dataset_id).where(RestoreRequest.state.in_(["queued", "running"])))
    )

    ds_stmt = (
        select(
            Dataset.id, Dataset.name, Dataset.version, Dataset.kind, Dataset.owner, Tier.name, Dataset.size_bytes,
            Dataset.created_at, Dataset.home_since, Dataset.tags, Dataset.last_access_at, Dataset.state,
        )
        .join(Tier, Tier.id == Dataset.home_tier_id)
        .where(Dataset.state.in_(["active", "moving"]))
        .order_by(Dataset.id)
        .execution_options(yield_per=20_000)
    )
    if dataset_ids is not None:
        ds_stmt = ds_stmt.where(Dataset.id.in_(dataset_ids))
    empty: dict[int, int] = {n: 0 for n in windows}
    out: list[DatasetFacts] = []
    for ds_id, name, version, kind, owner, tier, size, created, since, tags, last, state in session.execute(ds_stmt):
        counts, heat = reads.get(ds_id, (empty, 0.0))
        out.append(
            DatasetFacts(
                id=ds_id, name=name, version=version, kind=kind, owner=owner, home_tier=tier, size_bytes=size,
                created_at=created, home_since=since, tags=tags or {}, last_access_at=last, reads=counts,
                heat=heat, pins=tuple(pins.get(ds_id, ())), busy=ds_id in busy or state == "moving",
            )
        )
    return out


def gather_tier_facts(session: Session, tiers: Iterable[tuple[str, int, int | None, bool]]) -> list[TierFacts]:
    """Usage per tier from replica sizes; ``tiers`` are (name, rank, capacity_bytes, archive) from the config.

    A tier's usage counts every copy on it (live, verified, and copies being written), because that is what
    fills the hardware.
    """
    used = dict(
        session.execute(
            select(Tier.name, func.coalesce(func.sum(Member.size), 0))
            .join(Replica, Replica.tier_id == Tier.id)
            .join(Member, Member.id == Replica.member_id)
            .where(Replica.state.in_([str(s) for s in (*TRUSTED_REPLICA_STATES, ReplicaState.COPYING)]))
            .group_by(Tier.name)
        ).all()
    )
    return [
        TierFacts(name=name, rank=rank, capacity_bytes=capacity, used_bytes=int(used.get(name, 0)), archive=archive)
        for name, rank, capacity, archive in tiers
    ]


__all__ = ["gather_dataset_facts", "gather_tier_facts", "heat_weights"]
