"""Access ingestion: reads in an access log or a bucket-notification body, counted into the catalog's daily
roll-up (``tiering access import`` and the HTTP event endpoint)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select

from tiering.access.formats import (
    OBJECT_READ_FORMATS,
    IngestStats,
    iter_events,
    iter_object_reads,
    parse_s3_event_document,
)
from tiering.access.keys import DatasetPrefixIndex, ReadCounter
from tiering.access.record import record_reads
from tiering.app import App
from tiering.catalog.models import Dataset, Tier
from tiering.catalog.queries import find_dataset
from tiering.catalog.states import DatasetState
from tiering.errors import TieringError
from tiering.layout import dataset_prefix

INGEST_BATCH_LINES = 250_000


@dataclass
class IngestResult:
    lines: int = 0
    events: int = 0
    counted: int = 0
    unmatched: int = 0
    skipped_non_read: int = 0
    malformed: int = 0
    malformed_examples: list[dict[str, Any]] = field(default_factory=list)
    datasets: int = 0
    seconds: float = 0.0


def prefix_index(app: App) -> DatasetPrefixIndex[int]:
    """(bucket, key prefix) -> dataset id for every dataset on an S3 tier (where access logs come from)."""
    index: DatasetPrefixIndex[int] = DatasetPrefixIndex()
    s3_tiers = {}
    for name, tc in app.config.tiers.items():
        if tc.scheme == "s3":
            u = urlparse(tc.backend)
            s3_tiers[name] = (u.netloc, u.path.strip("/"))
    if not s3_tiers:
        return index
    with app.catalog.session() as s:
        rows = s.execute(
            select(Dataset.id, Dataset.kind, Dataset.name, Dataset.version, Dataset.location_prefix, Tier.name)
            .join(Tier, Tier.id == Dataset.home_tier_id)
            .where(Dataset.state != DatasetState.DELETED)
        ).all()
    for ds_id, kind, name, version, location, tier in rows:
        # a dataset read on any S3 tier counts (a staged restore copy, the home copy, a stale client)
        for tier_name, (bucket, tier_prefix) in s3_tiers.items():
            rel = location if (location and tier_name == tier) else dataset_prefix(kind, name, version)
            full = f"{tier_prefix}/{rel}" if tier_prefix else rel
            index.add(bucket, full, ds_id)
    return index


def own_principals(app: App) -> set[str]:
    """Access key ids tiering itself uses on its S3 tiers: its own GETs (copies, verification) are not reads."""
    keys: set[str] = set()
    for name, tc in app.config.tiers.items():
        if tc.credentials is None:
            continue
        try:
            keys.add(tc.credentials.resolve(name).access_key_id)
        except TieringError:
            continue  # credentials not available to this process: nothing to filter by
    return keys


def _label_resolver(app: App) -> Any:
    cache: dict[str, int | None] = {}

    def resolve(label: str) -> int | None:
        if label not in cache:
            try:
                with app.catalog.session() as s:
                    cache[label] = find_dataset(s, label).id
            except TieringError:
                cache[label] = None
        return cache[label]

    return resolve


def ingest_access(app: App, lines: Iterable[str], fmt: str) -> IngestResult:
    """Count the reads in ``lines`` (a log in format ``fmt``) into the catalog's daily roll-up.

    Malformed lines are counted and reported, never fatal. Reads are written once per dataset-day, in
    transactions of up to ``INGEST_BATCH_LINES`` lines: each batch is applied whole or not at all.
    Raises :class:`~tiering.access.formats.UnknownAccessFormat` before reading a line if ``fmt`` is not a format.
    """
    started = dt.datetime.now(dt.UTC)
    stats = IngestStats()
    counter: ReadCounter[int] = ReadCounter(
        prefix_index(app), resolve_label=_label_resolver(app), ignore_principals=own_principals(app)
    )
    result = IngestResult()
    touched: set[int] = set()

    def flush() -> None:
        batch = counter.drain()
        if batch.counts:
            with app.catalog.session() as s:
                record_reads(s, batch.counts, last_seen=batch.last_seen)
            touched.update(ds for ds, _ in batch.counts)

    remaining = iter(lines)
    while True:
        lines_before = stats.lines
        batch_lines = islice(remaining, INGEST_BATCH_LINES)
        if fmt in OBJECT_READ_FORMATS:  # same counts as the general path, without an AccessEvent per read
            counter.add_object_reads(iter_object_reads(batch_lines, fmt, stats, first_line_no=lines_before + 1))
        else:
            counter.add_all(iter_events(batch_lines, fmt, stats, first_line_no=lines_before + 1))
        flush()
        if stats.lines - lines_before < INGEST_BATCH_LINES:
            break  # the log ended inside this batch
    result.lines, result.events = stats.lines, stats.events
    result.skipped_non_read, result.malformed = stats.skipped_non_read, stats.malformed
    result.malformed_examples = [
        {"line": m.line_no, "reason": m.reason, "excerpt": m.excerpt} for m in stats.malformed_examples
    ]
    result.counted, result.unmatched = counter.counted, counter.unmatched
    result.datasets = len(touched)
    result.seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
    return result


def ingest_s3_event_document(
    app: App, body: bytes | str, *, index: DatasetPrefixIndex[int] | None = None
) -> IngestResult:
    """One S3 / MinIO bucket-notification webhook body (``{"Records": [...]}``) into the roll-up."""
    events, stats = parse_s3_event_document(body)
    counter: ReadCounter[int] = ReadCounter(index or prefix_index(app), ignore_principals=own_principals(app))
    counter.add_all(events)
    batch = counter.drain()
    if batch.counts:
        with app.catalog.session() as s:
            record_reads(s, batch.counts, last_seen=batch.last_seen)
    return IngestResult(lines=stats.lines, events=stats.events, counted=counter.counted, unmatched=counter.unmatched,
                        skipped_non_read=stats.skipped_non_read, malformed=stats.malformed,
                        datasets=len({ds for ds, _ in batch.counts}))
