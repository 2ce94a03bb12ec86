"""Leader fencing: the epoch a leader takes office with, and the check that refuses a deposed leader's work.

A lock (:mod:`tiering.catalog.locks`) says who should lead; it can be lost without its holder noticing at once (its
connection killed, a network partition). So each leader takes office by raising the role's epoch in the
catalog, and every piece of work it creates is written only if that epoch is still the current one, checked
in the same transaction as the write. On PostgreSQL the check takes a share lock on the epoch row, so a new
leader's ``take_office`` waits for a write already checked to commit, and every write checked after it sees
the new epoch: a deposed leader's later writes are refused whatever it believes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiering.catalog.models import LeaderEpoch
from tiering.errors import NotLeader


@dataclass(frozen=True)
class LeaderFence:
    """The fencing token of one term in office: ``role`` (e.g. ``scheduler``) at ``epoch``."""

    role: str
    epoch: int


def take_office(s: Session, role: str, *, holder: str, now: dt.datetime) -> LeaderFence:
    """Raise ``role``'s epoch by one (the first leader gets 1) and return the new term's fence."""
    row = s.get(LeaderEpoch, role, with_for_update=True)
    if row is None:
        row = LeaderEpoch(name=role, epoch=0, holder=holder, taken_at=now)
        s.add(row)
    row.epoch += 1
    row.holder = holder
    row.taken_at = now
    s.flush()
    return LeaderFence(role, row.epoch)


def check_fence(s: Session, fence: LeaderFence | None) -> None:
    """Raise :class:`NotLeader` unless ``fence`` is the current epoch of its role (None: no fence, no check).

    Call it in the transaction that writes the leader's work: the row stays share-locked until it ends.
    """
    if fence is None:
        return
    current = s.scalar(
        select(LeaderEpoch.epoch).where(LeaderEpoch.name == fence.role).with_for_update(read=True)
    )
    if current != fence.epoch:
        raise NotLeader(fence.role, fence.epoch, current)
