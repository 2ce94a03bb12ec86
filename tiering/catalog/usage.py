"""Bytes per tier, read from the counters that triggers on ``replicas`` keep (see ``TierUsageCounter``).

A tier's usage counts every copy on it that fills the hardware: live, verified, and copies being written
(``copying``). Reading it costs a few rows whatever the catalog size; :func:`count_tier_usage` is the same
number counted from the replicas themselves (ten million rows in a large catalog), kept to check the
counters against.
"""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tiering.catalog.models import Member, Replica, TierUsageCounter
from tiering.catalog.states import TRUSTED_REPLICA_STATES, ReplicaState

#: replica states whose bytes count in a tier's usage (the migration's triggers list the same states)
COUNTED_REPLICA_STATES = (*TRUSTED_REPLICA_STATES, ReplicaState.COPYING)


def tier_usage(session: Session) -> dict[int, int]:
    """tier id -> bytes of its counted replicas, from the counters. Tiers with no replica are absent."""
    rows = session.execute(
        select(TierUsageCounter.tier_id, func.sum(TierUsageCounter.used_bytes)).group_by(TierUsageCounter.tier_id)
    )
    return {tier_id: int(used) for tier_id, used in rows if used}


def count_tier_usage(session: Session) -> dict[int, int]:
    """The same as :func:`tier_usage`, counted from every replica and its member (slow on a large catalog)."""
    rows = session.execute(
        select(Replica.tier_id, func.sum(Member.size))
        .join(Member, Member.id == Replica.member_id)
        .where(Replica.state.in_([str(s) for s in COUNTED_REPLICA_STATES]))
        .group_by(Replica.tier_id)
    )
    return {tier_id: int(used) for tier_id, used in rows if used}


def fold_tier_usage(session: Session) -> None:
    """Fold the per-backend counter rows of PostgreSQL into slot 0, so their number stays small.

    Rows a running transaction holds are skipped (``SKIP LOCKED``): folding never waits on a writer, and a
    writer only waits for a fold of its own row to commit. SQLite keeps one row per tier: nothing to do.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(text(
        "WITH gone AS ("
        " DELETE FROM tier_usage WHERE (tier_id, slot) IN ("
        "  SELECT tier_id, slot FROM tier_usage WHERE slot <> 0 FOR UPDATE SKIP LOCKED)"
        " RETURNING tier_id, used_bytes) "
        "INSERT INTO tier_usage (tier_id, slot, used_bytes) "
        "SELECT tier_id, 0, sum(used_bytes) FROM gone GROUP BY tier_id ORDER BY tier_id "
        "ON CONFLICT (tier_id, slot) DO UPDATE SET used_bytes = tier_usage.used_bytes + EXCLUDED.used_bytes"
    ))


__all__ = ["COUNTED_REPLICA_STATES", "count_tier_usage", "fold_tier_usage", "tier_usage"]
