"""The shared parts of the access-log parsers (:mod:`tiering.access.formats` says what each format is):
a read event, the counters of a run, and timestamp parsing with per-run caches."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tiering.errors import UsageError

#: names accepted by :func:`~tiering.access.formats.parse_lines` and :func:`~tiering.access.formats.iter_events`
FORMATS: tuple[str, ...] = ("s3-event", "minio-audit", "s3-access-log", "jsonl")

#: how many malformed lines :class:`IngestStats` keeps as examples; the count covers all of them
MAX_MALFORMED_EXAMPLES = 20

#: characters of a malformed line kept in its example
EXCERPT_CHARS = 160

#: the operation of every read event
READ_OP = "GET"
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


class Clock:
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
            return parse_clf(stamp, offset)
        minute = stamp[:19] if offset == "+0000]" else stamp[:19] + offset
        start = self._clf_minutes.get(minute)
        if start is None:
            start = parse_clf(stamp[:19] + "00", offset)
            self._remember(self._clf_minutes, minute, start)
        return start + step

    @staticmethod
    def _remember(cache: dict[str, datetime], key: str, at: datetime) -> None:
        if len(cache) >= _TIME_CACHE_LIMIT:
            cache.clear()
        cache[key] = at


def parse_clf(stamp: str, offset: str) -> datetime:
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


def json_object(text: str) -> dict[str, Any] | str:
    """The JSON object in ``text``, or the reason it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return f"bad JSON: {str(exc)[:80]}"
    return doc if isinstance(doc, dict) else "not a JSON object"
