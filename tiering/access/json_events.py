"""The JSON event formats: ``s3-event`` (bucket notifications) and ``jsonl`` (our own lines); see
:mod:`tiering.access.formats`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import unquote_plus

from tiering.access.events import (
    READ_OP,
    AccessEvent,
    Clock,
    IngestStats,
    json_object,
)

_S3_EVENT_READ = "ObjectAccessed:Get"
_JSONL_NON_READ_OPS = frozenset({"HEAD", "LIST", "PUT", "POST", "COPY", "DELETE"})


def iter_s3_event(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[AccessEvent]:
    clock = Clock()
    for raw in lines:
        line_no += 1
        stats.lines += 1
        line = raw.strip()
        if not line:
            stats.blank += 1
            continue
        doc = json_object(line)
        if isinstance(doc, str):
            stats.note_malformed(line_no, doc, line)
            continue
        yield from s3_event_records(doc, line_no, line, stats, clock)


def s3_event_records(
    doc: dict[str, Any], line_no: int, line: str, stats: IngestStats, clock: Clock
) -> Iterator[AccessEvent]:
    records = doc.get("Records")
    if records is None:
        if doc.get("Event") == "s3:TestEvent":
            stats.skipped_non_read += 1
        else:
            stats.note_malformed(line_no, "no Records", line)
        return
    if not isinstance(records, list):
        stats.note_malformed(line_no, "Records is not a list", line)
        return
    for index, record in enumerate(records):
        outcome = _s3_event_record(record, clock)
        if outcome is None:
            stats.skipped_non_read += 1
        elif isinstance(outcome, str):
            stats.note_malformed(line_no, f"record {index}: {outcome}", line)
        else:
            stats.events += 1
            yield outcome


def _s3_event_record(record: Any, clock: Clock) -> AccessEvent | str | None:
    if not isinstance(record, dict):
        return "not an object"
    name = record.get("eventName")
    if not isinstance(name, str):
        return "no eventName"
    if name.removeprefix("s3:") != _S3_EVENT_READ:
        return None
    try:
        s3 = record["s3"]
        bucket = s3["bucket"]["name"]
        key = s3["object"]["key"]
    except (KeyError, TypeError):
        return "no s3.bucket.name or s3.object.key"
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        return "empty s3.bucket.name or s3.object.key"
    stamp = record.get("eventTime")
    if not isinstance(stamp, str):
        return "no eventTime"
    try:
        at = clock.iso(stamp)
    except ValueError as exc:
        return f"bad eventTime: {exc}"
    identity = record.get("userIdentity")
    principal = identity.get("principalId") if isinstance(identity, dict) else None
    return AccessEvent(
        bucket=bucket,
        key=unquote_plus(key),
        at=at,
        op=READ_OP,
        source="s3-event",
        principal=principal if isinstance(principal, str) and principal else None,
    )


def iter_jsonl(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[AccessEvent]:
    clock = Clock()
    for raw in lines:
        line_no += 1
        stats.lines += 1
        line = raw.strip()
        if not line:
            stats.blank += 1
            continue
        doc = json_object(line)
        if isinstance(doc, str):
            stats.note_malformed(line_no, doc, line)
            continue
        outcome = _jsonl_event(doc, clock)
        if outcome is None:
            stats.skipped_non_read += 1
        elif isinstance(outcome, str):
            stats.note_malformed(line_no, outcome, line)
        else:
            stats.events += 1
            yield outcome


def _jsonl_event(doc: dict[str, Any], clock: Clock) -> AccessEvent | str | None:
    op = doc.get("op", READ_OP)
    if not isinstance(op, str):
        return "op is not a string"
    op = op.upper()
    if op in _JSONL_NON_READ_OPS:
        return None
    if op != READ_OP:
        return f"unknown op {op[:20]!r}"
    status = doc.get("status")
    if status is not None:
        if not isinstance(status, int) or isinstance(status, bool):
            return "status is not an integer"
        if status >= 400:
            return None
    stamp = doc.get("at")
    if not isinstance(stamp, str):
        return "no at"
    try:
        at = clock.iso(stamp)
    except ValueError as exc:
        return f"bad at: {exc}"
    principal = doc.get("principal")
    if principal is not None and not isinstance(principal, str):
        return "principal is not a string"
    dataset = doc.get("dataset")
    if dataset is not None:
        if not isinstance(dataset, str):
            return "dataset is not a string"
        name, sep, version = dataset.partition("@")
        if not (name and sep and version):
            return "dataset is not name@version"
        return AccessEvent("", "", at, READ_OP, "jsonl", dataset=dataset, principal=principal or None)
    bucket = doc.get("bucket")
    key = doc.get("key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        return "neither dataset nor bucket and key"
    return AccessEvent(bucket, key, at, READ_OP, "jsonl", principal=principal or None)
