"""Access recording: reads counted per dataset per UTC day, written as one upsert per dataset-day.

HEAD and LIST are not reads and never reach this module. Callers aggregate first (a resolve is one read;
an imported log is rolled up by :class:`tiering.access.keys.ReadCounter`), so the catalog sees a handful
of writes however many reads happened.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import bindparam, case, update
from sqlalchemy.orm import Session

from tiering.catalog.db import dialect_insert
from tiering.catalog.models import AccessDaily, Dataset


def record_reads(
    session: Session,
    counts: Mapping[tuple[int, dt.date], int],
    *,
    last_seen: Mapping[int, dt.datetime] | None = None,
) -> int:
    """Add ``counts[(dataset_id, day)]`` reads to the roll-up; move ``last_access_at`` forward. Returns rows."""
    if not counts:
        return 0
    rows = [{"dataset_id": ds, "day": day, "reads": n} for (ds, day), n in counts.items() if n > 0]
    if not rows:
        return 0
    stmt = dialect_insert(session.get_bind().dialect.name, AccessDaily)
    stmt = stmt.on_conflict_do_update(
        index_elements=[AccessDaily.dataset_id, AccessDaily.day],
        set_={"reads": AccessDaily.reads + stmt.excluded.reads},
    )
    for start in range(0, len(rows), 1000):
        session.execute(stmt, rows[start : start + 1000])
    latest: dict[int, dt.datetime] = dict(last_seen or {})
    if not latest:
        for (ds, day), _n in counts.items():
            at = dt.datetime.combine(day, dt.time(), dt.UTC)
            if ds not in latest or at > latest[ds]:
                latest[ds] = at
    # One statement run for every dataset (a driver executemany), not one statement built per dataset.
    # On the Connection: the ORM would take a list of parameter sets for an UPDATE by primary key.
    seen_at = bindparam("seen_at", type_=Dataset.last_access_at.type)
    forward = (
        update(Dataset)
        .where(Dataset.id == bindparam("dataset_id"))
        .values(
            last_access_at=case(
                (Dataset.last_access_at.is_(None), seen_at),
                (Dataset.last_access_at < seen_at, seen_at),
                else_=Dataset.last_access_at,
            )
        )
    )
    session.connection().execute(forward, [{"dataset_id": ds, "seen_at": at} for ds, at in latest.items()])
    return len(rows)


def record_read(session: Session, dataset_id: int, at: dt.datetime) -> None:
    record_reads(session, {(dataset_id, at.astimezone(dt.UTC).date()): 1}, last_seen={dataset_id: at})
