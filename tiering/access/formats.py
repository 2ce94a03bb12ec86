"""Parsers that turn storage-server logs into read events: pure, streaming, and fast.

Only a meaningful read of an object is an access (DESIGN section 2): a successful GET of an object,
ranged or not. HEAD, LIST, PUT, DELETE, anything else, and any request answered with an HTTP status
of 400 or more are *skipped* and counted in :attr:`IngestStats.skipped_non_read`. A line that cannot
be understood never raises: it is counted in :attr:`IngestStats.malformed`, and the first
:data:`MAX_MALFORMED_EXAMPLES` are kept with their line number and a short reason.

Formats (:data:`FORMATS`):

``s3-event``
    S3 / MinIO bucket-notification documents, one JSON document per line (the body MinIO's webhook
    target POSTs, or an S3 notification). ``Records[].eventName`` ``s3:ObjectAccessed:Get`` (or
    ``ObjectAccessed:Get`` without the ``s3:`` prefix) is a read; ``s3:ObjectAccessed:Head`` and the
    other names are not. ``s3.object.key`` is form-URL-encoded (MinIO applies Go's
    ``url.QueryEscape``: a space is ``+``, a slash ``%2F``). One line may hold several records, so for
    this format ``events + skipped_non_read + malformed`` counts records, not lines.
``minio-audit``
    MinIO audit log lines. The classic entry (``{"version":"1","time":..,"api":{"name":"GetObject",
    "bucket":..,"object":..,"statusCode":200},"accessKey":..}``) and the newer API event
    (``{"time":..,"name":"GetObject","bucket":..,"object":..,"origin":"client",
    "callInfo":{"httpStatusCode":200,"accessKey":..}}``). Only ``GetObject`` is a read; an event whose
    ``origin`` is not ``client`` (replication, ILM, healing, ...) is server-internal and skipped.
    Object names are written unescaped.
``s3-access-log``
    Amazon S3 server access log records: space-separated, ``[%d/%b/%Y:%H:%M:%S %z]`` time, quoted
    request-URI, referrer and user agent. ``REST.GET.OBJECT`` and ``WEBSITE.GET.OBJECT`` are reads;
    ``REST.COPY.OBJECT_GET`` (the source side of a server-side copy) is not. AWS writes the key of
    these operations URL-encoded twice (Yelp Engineering, "S3 server access logs at scale", 2025:
    only lifecycle and batch-delete records are encoded once), so it is decoded twice; a key that was
    encoded only once decodes the same way unless it holds a literal ``+``.
``jsonl``
    Our own JSON lines: ``{"bucket":..,"key":..,"at":ISO-8601,"op":"GET"}`` for an object read, or
    ``{"dataset":"name@version","at":..}`` for a direct dataset read. ``op`` defaults to ``GET``;
    ``HEAD``, ``LIST``, ``PUT``, ``POST``, ``COPY`` and ``DELETE`` are skipped, other values are
    malformed. Optional: ``status`` (int; 400 and above is skipped) and ``principal`` (str).

Times are UTC-aware and truncated to whole seconds (a day roll-up needs no more, and whole seconds
let a parser cache what it parsed: per second for ISO 8601, per minute for the access log's time).
A timestamp without a UTC offset is malformed rather than guessed.

To stay cheap on a large import (target: 100,000 lines/s on one core for ``s3-access-log`` and
``minio-audit``), a record is classified as soon as it is recognised: a non-read is counted as
skipped without validating the rest of it, and a ``minio-audit`` line that does not mention
``GetObject`` is only checked to have a JSON object's outline before it is skipped. For the formats
in :data:`OBJECT_READ_FORMATS`, :func:`iter_object_reads` yields the same reads as bare tuples, so an
import does not build an :class:`AccessEvent` per read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote, unquote_plus

from tiering.errors import UsageError

#: names accepted by :func:`parse_lines` and :func:`iter_events`
FORMATS: tuple[str, ...] = ("s3-event", "minio-audit", "s3-access-log", "jsonl")

#: how many malformed lines :class:`IngestStats` keeps as examples; the count covers all of them
MAX_MALFORMED_EXAMPLES = 20

#: characters of a malformed line kept in its example
EXCERPT_CHARS = 160

_READ_OP = "GET"
_S3_EVENT_READ = "ObjectAccessed:Get"
_S3_LOG_READ_OPS = frozenset({"REST.GET.OBJECT", "WEBSITE.GET.OBJECT"})
_MINIO_READ_API = "GetObject"
_MINIO_READ_MARK = '"GetObject"'
_JSONL_NON_READ_OPS = frozenset({"HEAD", "LIST", "PUT", "POST", "COPY", "DELETE"})
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}
#: distinct seconds (ISO) or minutes (CLF) remembered by one parser run before its cache is emptied (memory bound)
_TIME_CACHE_LIMIT = 200_000
#: the seconds field of a CLF time, as written by S3, to its offset from the start of the minute
_SECOND_STEPS = {f"{second:02d}": timedelta(seconds=second) for second in range(60)}


class UnknownAccessFormat(UsageError):
    """The access-log format name is not one of :data:`FORMATS`."""

    reason = "unknown_format"

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        super().__init__(f"unknown access log format {fmt!r}; valid formats: {', '.join(FORMATS)}")


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One meaningful read.

    ``bucket`` and ``key`` name the object read (the key decoded to its real name); both are empty
    for a direct dataset read, which sets ``dataset`` to ``name@version`` instead. ``at`` is UTC-aware,
    whole seconds. ``op`` is ``"GET"``. ``source`` is the format the event came from (a name in
    :data:`FORMATS`). ``principal`` is who read, when the log says (access key, requester ARN or
    canonical id), so the caller can leave out the tiering service's own copies.
    """

    bucket: str
    key: str
    at: datetime
    op: str
    source: str
    dataset: str | None = None
    principal: str | None = None


#: ``(bucket, key, at, principal)`` of a read of an object: an :class:`AccessEvent` with ``op`` ``"GET"``
#: and no ``dataset``, without the cost of building one (see :func:`iter_object_reads`)
ObjectRead = tuple[str, str, datetime, str | None]


@dataclass(frozen=True, slots=True)
class MalformedLine:
    """A line (1-based ``line_no``) that could not be parsed, why, and its first characters."""

    line_no: int
    reason: str
    excerpt: str


@dataclass(slots=True)
class IngestStats:
    """Counters of one ingestion; updated while :func:`iter_events` is consumed.

    For every format but ``s3-event``: ``lines == events + skipped_non_read + malformed + blank``.
    """

    lines: int = 0
    events: int = 0
    skipped_non_read: int = 0
    malformed: int = 0
    blank: int = 0
    malformed_examples: list[MalformedLine] = field(default_factory=list)

    def note_malformed(self, line_no: int, reason: str, line: str) -> None:
        """Count one malformed line or record, keeping it as an example while there is room."""
        self.malformed += 1
        if len(self.malformed_examples) < MAX_MALFORMED_EXAMPLES:
            self.malformed_examples.append(MalformedLine(line_no, reason, line[:EXCERPT_CHARS]))


class _Clock:
    """Timestamp parsing with per-run caches: ISO 8601 by whole second, CLF by whole minute."""

    __slots__ = ("_iso", "_clf_minutes")

    def __init__(self) -> None:
        self._iso: dict[str, datetime] = {}
        self._clf_minutes: dict[str, datetime] = {}

    def iso(self, text: str) -> datetime:
        """Parse ISO 8601 with a UTC offset (``Z`` or ``+hh:mm``) to UTC; raise ValueError otherwise."""
        if len(text) >= 20 and text[-1] == "Z" and text[10] == "T":
            head = text[:19]
            fraction = text[19:-1]
            if not fraction or (fraction[0] == "." and fraction[1:].isdecimal()):
                at = self._iso.get(head)
                if at is None:
                    at = datetime.fromisoformat(head).replace(tzinfo=UTC)
                    self._remember(self._iso, head, at)
                return at
        at = datetime.fromisoformat(text)
        if at.tzinfo is None:
            raise ValueError("timestamp has no UTC offset")
        try:
            return at.astimezone(UTC).replace(microsecond=0)
        except OverflowError:
            raise ValueError("timestamp out of range") from None

    def clf(self, stamp: str, offset: str) -> datetime:
        """Parse the two halves of ``[06/Feb/2019:00:00:38 +0000]`` to UTC; raise ValueError if bad.

        A busy log has a new second on most lines but the same minute for many, so the start of the
        minute is cached and the seconds are added to it. UTC offsets are whole minutes, so every
        second of a minute that converts without error does too, to the same UTC minute.
        """
        step = _SECOND_STEPS.get(stamp[19:])
        if step is None:  # not two ASCII digits 00-59 at the end of a 21-character stamp
            return _parse_clf(stamp, offset)
        minute = stamp[:19] if offset == "+0000]" else stamp[:19] + offset
        start = self._clf_minutes.get(minute)
        if start is None:
            start = _parse_clf(stamp[:19] + "00", offset)
            self._remember(self._clf_minutes, minute, start)
        return start + step

    @staticmethod
    def _remember(cache: dict[str, datetime], key: str, at: datetime) -> None:
        if len(cache) >= _TIME_CACHE_LIMIT:
            cache.clear()
        cache[key] = at


def _parse_clf(stamp: str, offset: str) -> datetime:
    if len(stamp) != 21 or stamp[0] != "[" or len(offset) != 6 or offset[-1] != "]":
        raise ValueError("time is not [dd/Mon/yyyy:HH:MM:SS +zzzz]")
    month = _MONTHS.get(stamp[4:7])
    sign = offset[0]
    digits = offset[1:5]
    if month is None or sign not in "+-" or not digits.isdecimal():
        raise ValueError("time is not [dd/Mon/yyyy:HH:MM:SS +zzzz]")
    local = datetime(int(stamp[8:12]), month, int(stamp[1:3]), int(stamp[13:15]), int(stamp[16:18]), int(stamp[19:21]))
    shift = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    zone = timezone(shift if sign == "+" else -shift)
    try:
        return local.replace(tzinfo=zone).astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


def _json_object(text: str) -> dict[str, Any] | str:
    """The JSON object in ``text``, or the reason it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return f"bad JSON: {str(exc)[:80]}"
    return doc if isinstance(doc, dict) else "not a JSON object"


def _decode_s3_log_key(raw: str) -> str:
    return unquote_plus(unquote(raw))


def _iter_s3_access_log(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[AccessEvent]:
    for bucket, key, at, principal in _s3_access_log_reads(lines, stats, line_no):
        yield AccessEvent(bucket, key, at, _READ_OP, "s3-access-log", principal=principal)


def _s3_access_log_reads(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[ObjectRead]:
    """The s3-access-log parser; ``line_no`` is the number of the line before the first of ``lines``."""
    clf = _Clock().clf
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


def _iter_minio_audit(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[AccessEvent]:
    clock = _Clock()
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
        doc = (_minio_classic_head(line) if line[-1] == "}" else None) or _json_object(line)
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


def _minio_audit_event(doc: dict[str, Any], clock: _Clock) -> AccessEvent | str | None:
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
        op=_READ_OP,
        source="minio-audit",
        principal=principal if isinstance(principal, str) and principal else None,
    )


def _iter_s3_event(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[AccessEvent]:
    clock = _Clock()
    for raw in lines:
        line_no += 1
        stats.lines += 1
        line = raw.strip()
        if not line:
            stats.blank += 1
            continue
        doc = _json_object(line)
        if isinstance(doc, str):
            stats.note_malformed(line_no, doc, line)
            continue
        yield from _s3_event_records(doc, line_no, line, stats, clock)


def _s3_event_records(
    doc: dict[str, Any], line_no: int, line: str, stats: IngestStats, clock: _Clock
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


def _s3_event_record(record: Any, clock: _Clock) -> AccessEvent | str | None:
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
        op=_READ_OP,
        source="s3-event",
        principal=principal if isinstance(principal, str) and principal else None,
    )


def _iter_jsonl(lines: Iterable[str], stats: IngestStats, line_no: int) -> Iterator[AccessEvent]:
    clock = _Clock()
    for raw in lines:
        line_no += 1
        stats.lines += 1
        line = raw.strip()
        if not line:
            stats.blank += 1
            continue
        doc = _json_object(line)
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


def _jsonl_event(doc: dict[str, Any], clock: _Clock) -> AccessEvent | str | None:
    op = doc.get("op", _READ_OP)
    if not isinstance(op, str):
        return "op is not a string"
    op = op.upper()
    if op in _JSONL_NON_READ_OPS:
        return None
    if op != _READ_OP:
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
        return AccessEvent("", "", at, _READ_OP, "jsonl", dataset=dataset, principal=principal or None)
    bucket = doc.get("bucket")
    key = doc.get("key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        return "neither dataset nor bucket and key"
    return AccessEvent(bucket, key, at, _READ_OP, "jsonl", principal=principal or None)


_PARSERS: dict[str, Callable[[Iterable[str], IngestStats, int], Iterator[AccessEvent]]] = {
    "s3-event": _iter_s3_event,
    "minio-audit": _iter_minio_audit,
    "s3-access-log": _iter_s3_access_log,
    "jsonl": _iter_jsonl,
}

_OBJECT_READ_PARSERS: dict[str, Callable[[Iterable[str], IngestStats, int], Iterator[ObjectRead]]] = {
    "s3-access-log": _s3_access_log_reads,
}

#: formats that :func:`iter_object_reads` takes
OBJECT_READ_FORMATS: frozenset[str] = frozenset(_OBJECT_READ_PARSERS)


def iter_events(
    lines: Iterable[str], fmt: str, stats: IngestStats, *, first_line_no: int = 1
) -> Iterator[AccessEvent]:
    """Yield the reads found in ``lines`` (text, with or without line ends), updating ``stats``.

    Streaming: one line is held at a time, and ``stats`` is complete once the iterator is exhausted.
    Line numbers in ``stats.malformed_examples`` are positions in ``lines`` counted from
    ``first_line_no`` (give the number of the first line when ``lines`` is one slice of a longer log).
    Raises :class:`UnknownAccessFormat` at once (not on first ``next``) if ``fmt`` is not in
    :data:`FORMATS`; never raises for the content of a line.
    """
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise UnknownAccessFormat(fmt)
    return parser(lines, stats, first_line_no - 1)


def iter_object_reads(
    lines: Iterable[str], fmt: str, stats: IngestStats, *, first_line_no: int = 1
) -> Iterator[ObjectRead]:
    """The reads of :func:`iter_events` as bare ``(bucket, key, at, principal)`` tuples: the fast path.

    Same lines, same reads in the same order, same ``stats``; only for formats in
    :data:`OBJECT_READ_FORMATS`, whose every read is of an object by a ``GET``. Raises
    :class:`UnknownAccessFormat` at once for any other ``fmt``.
    """
    parser = _OBJECT_READ_PARSERS.get(fmt)
    if parser is None:
        raise UnknownAccessFormat(fmt)
    return parser(lines, stats, first_line_no - 1)


def parse_lines(lines: Iterable[str], fmt: str) -> tuple[list[AccessEvent], IngestStats]:
    """All reads in ``lines`` and the counters of the run; see :func:`iter_events`."""
    stats = IngestStats()
    events = list(iter_events(lines, fmt, stats))
    return events, stats


def parse_s3_event_document(body: str | bytes) -> tuple[list[AccessEvent], IngestStats]:
    """The reads in one bucket-notification document (a webhook request body), and its counters.

    The body may span several lines (pretty-printed JSON). It is line 1 of the stats; a body that is
    not a JSON object is one malformed line, so a server can answer 400 when ``stats.malformed`` is
    set and nothing was read. Never raises for the content of ``body``.
    """
    stats = IngestStats(lines=1)
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            stats.note_malformed(1, f"not UTF-8: {exc.reason}", body[:EXCERPT_CHARS].decode("latin-1"))
            return [], stats
    else:
        text = body
    doc = _json_object(text)
    if isinstance(doc, str):
        stats.note_malformed(1, doc, text.strip())
        return [], stats
    events = list(_s3_event_records(doc, 1, text.strip(), stats, _Clock()))
    return events, stats
