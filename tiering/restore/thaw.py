"""The archive protocol: asking a ``glacier`` tier to make a dataset's objects readable, and waiting.

Each object needed (shard objects, not members) is asked for with ``RestoreObject`` (retrieval tier from
the request's priority: high=Expedited, normal=Standard, low=Bulk), and ``head`` is polled until it is
readable (``sleep`` and clock injectable, bounded by ``max_wait_seconds``; a dispatch that runs out of
time leaves the request running and the next dispatch carries on). A restore already under way is
joined, not repeated.
"""

from __future__ import annotations

import logging
from typing import Final

from sqlalchemy import select

from tiering.app import App
from tiering.catalog.models import Dataset, Member, Replica
from tiering.catalog.states import (
    TRUSTED_REPLICA_STATES,
)
from tiering.errors import (
    ConfigError,
    PermanentBackendError,
)
from tiering.restore.requests import (
    Monotonic,
    Sleep,
)
from tiering.storage.base import Archive, find_capability

log = logging.getLogger(__name__)

#: Glacier retrieval tier asked for, by priority value
RETRIEVAL_TIERS: Final = {0: "Expedited", 1: "Standard", 2: "Bulk"}
#: days an archive keeps its temporary readable copy of an object we restore (we copy it at once)
GLACIER_RESTORE_DAYS: Final = 2


def thaw_archive(
    app: App,
    dataset_id: int,
    source: str,
    priority: int,
    *,
    sleep: Sleep,
    monotonic: Monotonic,
    poll_seconds: float,
    max_wait_seconds: float,
) -> bool:
    """For a ``glacier`` source tier: ask the archive for every object the dataset needs (shards and single
    objects, each once) and poll until all are readable. True when they are (or the tier is no archive);
    False when ``max_wait_seconds`` ran out first. Raises ``BackendError``, ``ConfigError``."""
    if app.config.tier(source).archive != "glacier":
        return True
    with app.catalog.session() as s:
        keys = list(s.scalars(
            select(Replica.key).join(Member, Member.id == Replica.member_id)
            .where(Member.dataset_id == dataset_id, Replica.tier_id == select(Dataset.home_tier_id)
                   .where(Dataset.id == dataset_id).scalar_subquery(),
                   Replica.state.in_([str(x) for x in TRUSTED_REPLICA_STATES]))
            .distinct().order_by(Replica.key)
        ))
    backend = app.backend(source)
    archive = find_capability(backend, Archive)
    waiting: list[str] = []
    for key in keys:
        info = backend.head(key)
        if not info.archived:
            continue
        if not info.restore_in_progress:
            if archive is None:
                raise ConfigError(f"tier {source!r} has archive: glacier but its backend cannot restore objects")
            try:
                archive.request_restore(key, days=GLACIER_RESTORE_DAYS,
                                        retrieval_tier=RETRIEVAL_TIERS.get(priority, "Standard"))
            except PermanentBackendError:
                # InvalidObjectState: it left the archive class meanwhile and reads as it is
                if backend.head(key).archived:
                    raise
                continue
        waiting.append(key)
    deadline = monotonic() + max_wait_seconds
    while waiting:
        waiting = [k for k in waiting if backend.head(k).archived]
        if not waiting:
            break
        left = deadline - monotonic()
        if left <= 0:
            log.info("restore of dataset %s: %d archive object(s) not readable yet", dataset_id, len(waiting))
            return False
        sleep(min(poll_seconds, left))
    return True


