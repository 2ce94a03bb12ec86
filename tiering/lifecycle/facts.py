"""Facts for the planner, gathered with a few set-based queries (never one query per dataset).

A few queries whatever the catalog size: datasets; reads per window and decayed heat aggregated in SQL over
``access_daily``; active pins and busy datasets; tier usage from the catalog's counters. Dataset rows come
in chunks as the driver returns them (no ORM objects, no per-value type processing), so 10^6 datasets cost
little more than the facts themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Executable, Float, Text, case, cast, func, literal, select
from sqlalchemy.orm import Session

from tiering.catalog.models import AccessDaily, Dataset, MoveJob, Pin, RestoreRequest, Tier, UTCDateTime
from tiering.catalog.states import PLANNED_DATASET_STATES, UNFINISHED_JOB_STATES, DatasetState
from tiering.catalog.usage import tier_usage
from tiering.lifecycle.inputs import DatasetFacts, TierFacts, dataset_facts
from tiering.lifecycle.inputs import Pin as PinFact

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
    """Facts of every active dataset (or those in ``dataset_ids``) at ``now`` (UTC), in id order.

    Facts with equal tags share one ``tags`` mapping, and those never read one ``reads`` mapping: treat
    them as read-only, as the frozen facts suggest.
    """
    today = now.astimezone(dt.UTC).date()
    windows = sorted(set(windows) | {1, 7, 30, 90})
    conn = session.connection()
    reads = _reads(conn, today=today, half_life_days=half_life_days, windows=windows, dataset_ids=dataset_ids)
    pins: dict[int, list[PinFact]] = {}
    for ds_id, tier, until, reason in conn.execute(
        select(Pin.dataset_id, Tier.name, Pin.until, Pin.reason).join(Tier, Tier.id == Pin.tier_id)
        .where(Pin.until > now)
    ):
        pins.setdefault(ds_id, []).append(PinFact(tier=tier, until=until, reason=reason))
    pins_of = {ds_id: tuple(found) for ds_id, found in pins.items()}
    busy = set(
        conn.scalars(select(MoveJob.dataset_id).where(MoveJob.state.in_([str(s) for s in UNFINISHED_JOB_STATES])))
    )
    busy |= set(conn.scalars(select(RestoreRequest.dataset_id).where(RestoreRequest.state.in_(["queued", "running"]))))
    tier_names: dict[int, str] = dict(conn.execute(select(Tier.id, Tier.name)).all())

    ds_stmt = (
        select(
            Dataset.id, Dataset.name, Dataset.version, Dataset.kind, Dataset.owner, Dataset.home_tier_id,
            Dataset.size_bytes, Dataset.created_at, Dataset.home_since, cast(Dataset.tags, Text),
            Dataset.last_access_at, Dataset.state,
        )
        .where(Dataset.state.in_(PLANNED_DATASET_STATES))
        .order_by(Dataset.id)
    )
    if dataset_ids is not None:
        ds_stmt = ds_stmt.where(Dataset.id.in_(dataset_ids))
    # Values as the driver returns them: times are made aware UTC datetimes by ``utc`` (None: they already
    # are), the JSON of tags is parsed once per distinct text.
    utc = _utc_reader(conn)
    tags_by_text: dict[str | None, dict[str, str]] = {}
    never_read: tuple[dict[int, int], float] = ({n: 0 for n in windows}, 0.0)
    out: list[DatasetFacts] = []
    append = out.append
    for rows in _driver_rows(conn, ds_stmt):
        for ds_id, name, version, kind, owner, tier_id, size, created, since, tags_text, last, state in rows:
            tags = tags_by_text.get(tags_text)
            if tags is None:
                tags = tags_by_text[tags_text] = (json.loads(tags_text) if tags_text else None) or {}
            if utc is not None:
                created, since = utc(created), utc(since)
                if last is not None:
                    last = utc(last)
            counts, heat = reads.get(ds_id, never_read)
            append(dataset_facts(
                ds_id, name, version, kind, owner, tier_names[tier_id], size, created, since, tags, last, counts,
                heat, pins_of.get(ds_id, ()), ds_id in busy or state == DatasetState.MOVING,
            ))
    return out


#: rows converted to Python objects at a time
ROWS_PER_FETCH = 20_000


def _driver_rows(conn: Connection, stmt: Executable) -> Iterator[Sequence[Any]]:
    """The rows of ``stmt`` in chunks, as the DBAPI cursor returns them: plain tuples, none of SQLAlchemy's
    per-row and per-value work (measured in bench/).

    The result is not streamed from the server (PostgreSQL sends it whole, which measured faster than a
    server-side cursor in bench/), and SQLAlchemy's default fetch strategy
    reads nothing ahead, so the cursor's rows are all the rows.
    """
    result = conn.execute(stmt)
    try:
        cursor = result.cursor
        while rows := cursor.fetchmany(ROWS_PER_FETCH):
            yield rows
    finally:
        result.close()


def _reads(
    conn: Connection, *, today: dt.date, half_life_days: float, windows: Sequence[int],
    dataset_ids: Sequence[int] | None,
) -> dict[int, tuple[dict[int, int], float]]:
    """dataset id -> (reads per window, decayed heat), aggregated in SQL over ``access_daily``."""
    weights = heat_weights(today, half_life_days)
    oldest = min(today - dt.timedelta(days=max(windows) - 1), weights[-1][0])
    # a read on day d is inside an N-day window when d > today - N (today counts as day 1)
    window_cols = [
        func.sum(case((AccessDaily.day > today - dt.timedelta(days=n), AccessDaily.reads), else_=0)).label(f"r{n}")
        for n in windows
    ]
    # reads dated after today (clock skew in a log) weigh 1, like the planner's heat()
    weight_expr = case((AccessDaily.day > today, literal(1.0, Float)), else_=_weight_of_day(weights))
    reads_stmt = (
        select(AccessDaily.dataset_id, *window_cols, func.sum(cast(AccessDaily.reads, Float) * weight_expr))
        .where(AccessDaily.day >= oldest)
        .group_by(AccessDaily.dataset_id)
    )
    if dataset_ids is not None:
        reads_stmt = reads_stmt.where(AccessDaily.dataset_id.in_(dataset_ids))
    reads: dict[int, tuple[dict[int, int], float]] = {}
    last = len(windows) + 1
    # datasets with the same counts share one mapping
    counts_of: dict[tuple[int, ...], dict[int, int]] = {}
    for rows in _driver_rows(conn, reads_stmt):
        for row in rows:
            key = row[1:last]
            counts = counts_of.get(key)
            if counts is None:
                counts = counts_of[key] = dict(zip(windows, map(int, key), strict=True))
            reads[row[0]] = (counts, float(row[last] or 0.0))
    return reads


def _weight_of_day(weights: Sequence[tuple[dt.date, float]]) -> Any:
    """The weight of ``access_daily.day``: ``weights`` (newest day first, consecutive days) as nested CASEs that
    halve the days left at each level, so a row costs ~log2(len) comparisons instead of up to len; a day
    outside ``weights`` weighs 0.0."""
    if len(weights) == 1:
        day, weight = weights[0]
        return case((AccessDaily.day == day, literal(weight, Float)), else_=literal(0.0, Float))
    middle = len(weights) // 2
    return case((AccessDaily.day > weights[middle][0], _weight_of_day(weights[:middle])),
                else_=_weight_of_day(weights[middle:]))


def _utc_reader(conn: Connection) -> Callable[[Any], dt.datetime] | None:
    """A function from a driver's ``UTCDateTime`` value to the aware UTC datetime the ORM would return; None
    when the driver returns exactly that already.

    PostgreSQL: the catalog's sessions run in UTC (see ``create_catalog_engine``) and psycopg then returns
    datetimes in ``datetime.UTC``. SQLite: the value is the text SQLAlchemy wrote, ``YYYY-MM-DD
    HH:MM:SS.ffffff`` in UTC, parsed by ``fromisoformat`` (an order of magnitude faster than the type's regex).
    Anything else takes the type's own result processor, so the answer is the ORM's in every case.
    """
    dialect = conn.dialect
    type_processor = UTCDateTime().result_processor(dialect, None)

    def as_the_orm_would(value: Any) -> dt.datetime:
        converted = type_processor(value) if type_processor is not None else value
        assert isinstance(converted, dt.datetime)
        return converted

    if dialect.name == "sqlite":
        parse = dt.datetime.fromisoformat

        def utc_from_text(value: Any) -> dt.datetime:
            if isinstance(value, str) and len(value) == 26 and value[10] == " " and value[19] == ".":
                try:
                    return parse(value + "+00:00")
                except ValueError:
                    pass
            return as_the_orm_would(value)

        return utc_from_text
    if dialect.name == "postgresql" and conn.exec_driver_sql("SHOW TIME ZONE").scalar() == "UTC":
        return None
    return as_the_orm_would


def gather_tier_facts(session: Session, tiers: Iterable[tuple[str, int, int | None, bool]]) -> list[TierFacts]:
    """Usage per tier; ``tiers`` are (name, rank, capacity_bytes, archive) from the config.

    A tier's usage counts every copy on it (live, verified, and copies being written), because that is what
    fills the hardware. It is read from the counters the catalog keeps (:mod:`tiering.catalog.usage`), not
    summed over every replica.
    """
    ids = dict(session.execute(select(Tier.name, Tier.id)).all())
    used = tier_usage(session)
    return [
        TierFacts(name=name, rank=rank, capacity_bytes=capacity, used_bytes=used.get(ids.get(name, -1), 0),
                  archive=archive)
        for name, rank, capacity, archive in tiers
    ]


__all__ = ["gather_dataset_facts", "gather_tier_facts", "heat_weights"]
