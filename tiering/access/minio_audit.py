"""The ``minio-audit`` format: MinIO audit log lines, classic and API events (see :mod:`tiering.access.formats`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from tiering.access.events import (
    READ_OP,
    AccessEvent,
    Clock,
    IngestStats,
    json_object,
)

_MINIO_READ_API = "GetObject"
_MINIO_READ_MARK = '"GetObject"'


def iter_minio_audit(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[AccessEvent]:
    clock = Clock()
    for raw in lines:
        line_no += 1
        stats.lines += 1
        line = raw.strip()
        if not line:
            stats.blank += 1
            continue
        if _MINIO_READ_MARK not in line:
            if line[0] == "{" and line[-1] == "}":
                stats.skipped_non_read += 1
            else:
                stats.note_malformed(line_no, "not a JSON object", line)
            continue
        doc = (_minio_classic_head(line) if line[-1] == "}" else None) or json_object(line)
        if isinstance(doc, str):
            stats.note_malformed(line_no, doc, line)
            continue
        outcome = _minio_audit_event(doc, clock)
        if outcome is None:
            stats.skipped_non_read += 1
        elif isinstance(outcome, str):
            stats.note_malformed(line_no, outcome, line)
        else:
            stats.events += 1
            yield outcome


def _minio_classic_head(line: str) -> dict[str, Any] | None:
    """The members of a classic audit entry that a read needs, decoding a fraction of the line; or None.

    Most of a GetObject entry is timings, then request and response headers, after ``statusCode``.
    The text up to ``,"rx":`` (the member after ``statusCode``) closed with ``}}``, or else up to the
    first ``}`` after ``"api":{`` closed with ``}``, decodes to the same ``time`` and ``api`` members as
    the whole line, and it decodes at all only when that ``api`` is a flat member of the top-level
    object: a cut inside a string, or inside a deeper object or list, leaves the text unbalanced. The
    top-level ``accessKey`` comes last; it is taken by position. None (decode the whole line) whenever
    any of this does not hold.
    """
    start = line.find('"api":{')
    if start < 0:
        return None
    close = line.find("}", start)
    stop = line.find(',"rx":', start)
    if stop >= 0 and (close < 0 or stop < close):
        text = line[:stop] + "}}"
    elif close >= 0:
        text = line[: close + 1] + "}"
    else:
        return None
    try:
        head = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(head, dict) or not isinstance(head.get("api"), dict):
        return None
    mark = line.rfind('"accessKey":"')
    if mark < 0:
        return head
    value_start = mark + 13
    value_end = line.find('"', value_start)
    if value_end < 0:
        return None
    tail = line[value_end + 1 :]
    if "\\" in line[value_start:value_end] or not (
        tail == "}" or tail.startswith(',"parentUser":') or tail.startswith(',"error":')
    ):
        return None
    head["accessKey"] = line[value_start:value_end]
    return head


def _minio_audit_event(doc: dict[str, Any], clock: Clock) -> AccessEvent | str | None:
    """The read in one audit entry, None for a non-read, or the reason it is malformed."""
    api = doc.get("api")
    if isinstance(api, dict):
        name = api.get("name")
        bucket = api.get("bucket")
        key = api.get("object")
        status = api.get("statusCode")
        principal = doc.get("accessKey")
    else:
        name = doc.get("name")
        bucket = doc.get("bucket")
        key = doc.get("object")
        origin = doc.get("origin")
        if origin is not None and origin != "client":
            return None
        call = doc.get("callInfo")
        if not isinstance(call, dict):
            call = {}
        status = call.get("httpStatusCode", call.get("statusCode"))
        principal = call.get("accessKey")
    if not isinstance(name, str):
        return "no API name (expected api.name or name)"
    if name != _MINIO_READ_API:
        return None
    if not isinstance(status, int):
        return "no HTTP status code"
    if status >= 400:
        return None
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        return "GetObject without bucket or object"
    stamp = doc.get("time")
    if not isinstance(stamp, str):
        return "no time"
    try:
        at = clock.iso(stamp)
    except ValueError as exc:
        return f"bad time: {exc}"
    return AccessEvent(
        bucket=bucket,
        key=key,
        at=at,
        op=READ_OP,
        source="minio-audit",
        principal=principal if isinstance(principal, str) and principal else None,
    )
