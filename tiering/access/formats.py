"""Parsers that turn storage-server logs into read events: pure, streaming, and fast.

Only a meaningful read of an object is an access (DESIGN section 2): a successful GET of an object,
ranged or not. HEAD, LIST, PUT, DELETE, anything else, and any request answered with an HTTP status
of 400 or more are *skipped* and counted in :attr:`IngestStats.skipped_non_read`. A line that cannot
be understood never raises: it is counted in :attr:`IngestStats.malformed`, and the first
:data:`~tiering.access.events.MAX_MALFORMED_EXAMPLES` are kept with their line number and a short reason.

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

To stay cheap on a large import (``s3-access-log`` and ``minio-audit`` have a lines-per-second target
in bench/), a record is classified as soon as it is recognised: a non-read is counted as
skipped without validating the rest of it, and a ``minio-audit`` line that does not mention
``GetObject`` is only checked to have a JSON object's outline before it is skipped. For the formats
in :data:`OBJECT_READ_FORMATS`, :func:`iter_object_reads` yields the same reads as bare tuples, so an
import does not build an :class:`AccessEvent` per read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from tiering.access.events import (
    EXCERPT_CHARS,
    FORMATS,
    AccessEvent,
    Clock,
    IngestStats,
    ObjectRead,
    UnknownAccessFormat,
    json_object,
)
from tiering.access.json_events import iter_jsonl, iter_s3_event, s3_event_records
from tiering.access.minio_audit import iter_minio_audit
from tiering.access.s3_log import iter_s3_access_log, s3_access_log_reads

__all__ = [
    "FORMATS", "OBJECT_READ_FORMATS", "AccessEvent", "IngestStats", "ObjectRead", "UnknownAccessFormat",
    "iter_events", "iter_object_reads", "parse_lines", "parse_s3_event_document",
]


_PARSERS: dict[str, Callable[[Iterable[str], IngestStats, int], Iterator[AccessEvent]]] = {
    "s3-event": iter_s3_event,
    "minio-audit": iter_minio_audit,
    "s3-access-log": iter_s3_access_log,
    "jsonl": iter_jsonl,
}

_OBJECT_READ_PARSERS: dict[str, Callable[[Iterable[str], IngestStats, int], Iterator[ObjectRead]]] = {
    "s3-access-log": s3_access_log_reads,
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
    doc = json_object(text)
    if isinstance(doc, str):
        stats.note_malformed(1, doc, text.strip())
        return [], stats
    events = list(s3_event_records(doc, 1, text.strip(), stats, Clock()))
    return events, stats
