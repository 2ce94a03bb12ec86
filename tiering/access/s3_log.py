"""The ``s3-access-log`` format: Amazon S3 server access log records (see :mod:`tiering.access.formats`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from urllib.parse import unquote, unquote_plus

from tiering.access.events import (
    READ_OP,
    AccessEvent,
    Clock,
    IngestStats,
    ObjectRead,
)

_S3_LOG_READ_OPS = frozenset({"REST.GET.OBJECT", "WEBSITE.GET.OBJECT"})


def _decode_s3_log_key(raw: str) -> str:
    return unquote_plus(unquote(raw))


def iter_s3_access_log(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[AccessEvent]:
    for bucket, key, at, principal in s3_access_log_reads(lines, stats, line_no):
        yield AccessEvent(bucket, key, at, READ_OP, "s3-access-log", principal=principal)


def s3_access_log_reads(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[ObjectRead]:
    """The s3-access-log parser; ``line_no`` is the number of the line before the first of ``lines``."""
    clf = Clock().clf
    read_ops = _S3_LOG_READ_OPS
    for raw in lines:
        line_no += 1
        stats.lines += 1
        line = raw.strip()
        if not line:
            stats.blank += 1
            continue
        parts = line.split(" ", 9)
        if len(parts) != 10 or parts[2][:1] != "[" or parts[3][-1:] != "]":
            stats.note_malformed(line_no, "not an S3 server access log record", line)
            continue
        operation = parts[7]
        if operation not in read_ops:
            if "." in operation:
                stats.skipped_non_read += 1
            else:
                stats.note_malformed(line_no, f"bad operation field {operation[:40]!r}", line)
            continue
        rest = parts[9]
        # The first candidate of _s3_log_status, inline: a quoted request-URI whose first " HTTP/" is
        # followed by the closing quote, a space and the status. Anything else takes the full search.
        status = None
        mark = rest.find(" HTTP/") if rest[:1] == '"' else -1
        if mark > 0:
            end = rest.find('"', mark) + 1
            if end and rest[end : end + 1] == " ":
                digits = rest[end + 1 : end + 4]
                if digits.isdecimal() and len(digits) == 3 and rest[end + 4 : end + 5] in (" ", ""):
                    status = int(digits)
        if status is None:
            status = _s3_log_status(rest)
            if status is None:
                stats.note_malformed(line_no, "no HTTP status after the request-URI", line)
                continue
        if status >= 400:
            stats.skipped_non_read += 1
            continue
        key = parts[8]
        if key == "-" or not key:
            stats.note_malformed(line_no, "object read without a key", line)
            continue
        if "%" in key or "+" in key:
            key = _decode_s3_log_key(key)
        try:
            at = clf(parts[2], parts[3])
        except ValueError as exc:
            stats.note_malformed(line_no, f"bad time: {exc}", line)
            continue
        requester = parts[5]
        stats.events += 1
        yield parts[1], key, at, None if requester == "-" else requester


def _s3_log_status(rest: str) -> int | None:
    """The HTTP status that follows the request-URI at the start of ``rest``, or None."""
    if rest[:1] != '"':
        start = rest.find(" ") + 1
        return _status_at(rest, start) if start else None
    # The request-URI is client-controlled and may hold `" 200 ` itself, and so may the quoted referrer
    # and user agent after the status: trust first a closing quote right after the protocol version.
    mark = rest.find(" HTTP/")
    while mark != -1:
        end = rest.find('"', mark)
        if end == -1:
            break
        status = _status_at(rest, end + 2) if rest[end + 1 : end + 2] == " " else None
        if status is not None:
            return status
        mark = rest.find(" HTTP/", mark + 1)
    end = rest.find('" ', 1)
    while end != -1:
        status = _status_at(rest, end + 2)
        if status is not None:
            return status
        end = rest.find('" ', end + 1)
    return None


def _status_at(text: str, start: int) -> int | None:
    digits = text[start : start + 3]
    after = text[start + 3 : start + 4]
    if len(digits) == 3 and digits.isdecimal() and after in (" ", ""):
        return int(digits)
    return None
