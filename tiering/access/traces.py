"""Access traces for ``tiering simulate``: readers for four formats into one columnar :class:`Trace`.

Formats (:data:`TRACE_FORMATS`):

``csv``
    A header line naming at least ``time,key,size,op`` (any order; an optional ``reader`` column). ``time`` is
    Unix seconds or RFC 3339 with an offset; ``op`` is ``read``, ``write`` or ``delete``; ``size`` is the
    dataset's bytes on a write and the bytes read on a read.
``jsonl``
    One JSON object per line with the same fields.
``s3-access-log``, ``minio-audit``
    Server logs. Which lines are reads, and each read's key, time and requester, come from
    :mod:`tiering.access.formats` (the product's own definition of a read); those parsers report reads only,
    so writes and deletes (``REST.PUT.OBJECT`` / ``PutObject``, ``REST.DELETE.OBJECT`` / ``DeleteObject``) and
    the byte counts (S3: bytes sent and object size; MinIO: ``api.tx`` / ``api.rx``) are read here.

A dataset is a key (csv, jsonl) or ``bucket/key`` cut to its first ``key_depth`` path components (server logs;
0 keeps the whole key). A dataset's size is the largest of its write sizes and the bytes of its reads (a read
of part of a dataset says only that it is at least that big). Events are sorted by time (stable). Malformed
lines raise :class:`TraceError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tiering.access.formats import IngestStats, iter_events
from tiering.errors import UsageError

TRACE_FORMATS: tuple[str, ...] = ("csv", "jsonl", "s3-access-log", "minio-audit")
READ, WRITE, DELETE = 0, 1, 2
_OPS = {"read": READ, "write": WRITE, "delete": DELETE}
_S3_WRITE_OPS = frozenset({"REST.PUT.OBJECT", "REST.POST.UPLOAD", "REST.COPY.OBJECT"})
_S3_DELETE_OPS = frozenset({"REST.DELETE.OBJECT"})
_MINIO_WRITE = frozenset({"PutObject", "CompleteMultipartUpload", "CopyObject"})
_MINIO_DELETE = frozenset({"DeleteObject"})

Raw = tuple[float, str, int, int, str]  # time, dataset key, bytes, op, reader


class TraceError(UsageError):
    """A trace file that cannot be read: names the file, the line and what is wrong."""

    reason = "trace"


@dataclass(slots=True)
class Trace:
    """Events sorted by time, one numpy column each, and the datasets they name.

    ``ds`` indexes ``names`` and ``size``; ``op`` is READ, WRITE or DELETE; ``nbytes`` the bytes of the event;
    ``reader`` indexes the readers seen. ``preexisting[i]`` is True when dataset ``i`` is read before any write
    (it existed when the trace began).
    """

    names: list[str]
    size: npt.NDArray[np.int64]
    preexisting: npt.NDArray[np.bool_]
    t: npt.NDArray[np.float64]
    ds: npt.NDArray[np.int64]
    op: npt.NDArray[np.int8]
    nbytes: npt.NDArray[np.int64]
    reader: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.t)

    def uses(self, session_s: float) -> npt.NDArray[np.bool_]:
        """Which events are uses: every write, and a read unless the same reader read the same dataset less
        than ``session_s`` seconds before (many GETs in one session are one use)."""
        is_read = self.op == READ
        order = np.lexsort((self.t, self.reader, self.ds))
        t, ds, rd, read = self.t[order], self.ds[order], self.reader[order], is_read[order]
        new = np.ones(len(t), dtype=bool)
        same = (ds[1:] == ds[:-1]) & (rd[1:] == rd[:-1]) & read[1:] & read[:-1]
        new[1:] = ~(same & ((t[1:] - t[:-1]) < session_s))
        out = np.empty(len(t), dtype=bool)
        out[order] = new
        return np.asarray((out & is_read) | (self.op == WRITE), dtype=bool)


def _parse_time(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return at.timestamp()


def _row(doc: dict[str, Any]) -> Raw:
    op = _OPS.get(str(doc.get("op", "read")).lower())
    if op is None:
        raise ValueError(f"op {doc.get('op')!r} is not read, write or delete")
    key = doc.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError("no key")
    size = doc.get("size", 0)
    return _parse_time(str(doc["time"])), key, int(size or 0), op, str(doc.get("reader") or "")


def _read_csv(lines: Iterable[str], path: str) -> Iterator[Raw]:
    reader = csv.DictReader(lines)
    missing = {"time", "key", "size", "op"} - set(reader.fieldnames or ())
    if missing:
        raise TraceError(f"{path}: the CSV header lacks {', '.join(sorted(missing))}")
    for n, doc in enumerate(reader, start=2):
        try:
            yield _row(doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise TraceError(f"{path}:{n}: {exc}") from None


def _read_jsonl(lines: Iterable[str], path: str) -> Iterator[Raw]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            yield _row(doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise TraceError(f"{path}:{n}: {exc}") from None


def _dataset_key(bucket: str, key: str, depth: int) -> str:
    if depth > 0:
        key = "/".join(key.split("/")[:depth])
    return f"{bucket}/{key}"


def _after_request_uri(rest: str) -> list[str]:
    """The fields after the quoted request-URI: status, error code, bytes sent, object size, ..."""
    if rest[:1] != '"':
        return rest.split(" ", 1)[-1].split()
    end = rest.find('" ', max(rest.find(" HTTP/"), 0))
    return rest[end + 2 :].split() if end >= 0 else []


def _read_s3_access_log(lines: Iterable[str], path: str, depth: int) -> Iterator[Raw]:
    stats = IngestStats()
    for n, line in enumerate(lines, start=1):
        parts = line.split(" ", 9)
        if len(parts) < 10:
            continue
        op_name = parts[7]
        if op_name in _S3_WRITE_OPS or op_name in _S3_DELETE_OPS:
            fields = _after_request_uri(parts[9])
            status = fields[0] if fields else ""
            if not status.isdecimal() or int(status) >= 400:
                continue
            try:
                at = datetime.strptime(parts[2] + " " + parts[3], "[%d/%b/%Y:%H:%M:%S %z]").timestamp()
            except ValueError as exc:
                raise TraceError(f"{path}:{n}: {exc}") from None
            size = int(fields[3]) if len(fields) > 3 and fields[3].isdecimal() else 0
            op = WRITE if op_name in _S3_WRITE_OPS else DELETE
            yield at, _dataset_key(parts[1], parts[8], depth), size, op, parts[5]
            continue
        for ev in iter_events((line,), "s3-access-log", stats, first_line_no=n):
            fields = _after_request_uri(parts[9])
            sent = int(fields[2]) if len(fields) > 2 and fields[2].isdecimal() else 0
            whole = int(fields[3]) if len(fields) > 3 and fields[3].isdecimal() else 0
            yield ev.at.timestamp(), _dataset_key(ev.bucket, ev.key, depth), max(sent, 0), READ, ev.principal or ""
            if whole > sent:  # the object's full size, known from a partial read: a write of nothing new
                yield ev.at.timestamp(), _dataset_key(ev.bucket, ev.key, depth), whole, -1, ""
    if stats.malformed:
        first = stats.malformed_examples[0]
        raise TraceError(f"{path}:{first.line_no}: {first.reason}")


def _read_minio_audit(lines: Iterable[str], path: str, depth: int) -> Iterator[Raw]:
    stats = IngestStats()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if '"GetObject"' in line:
            for ev in iter_events((line,), "minio-audit", stats, first_line_no=n):
                api = json.loads(line).get("api", {})
                yield (ev.at.timestamp(), _dataset_key(ev.bucket, ev.key, depth), int(api.get("tx", 0) or 0),
                       READ, ev.principal or "")
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise TraceError(f"{path}:{n}: bad JSON: {exc}") from None
        api = doc.get("api") if isinstance(doc, dict) else None
        if not isinstance(api, dict) or api.get("name") not in _MINIO_WRITE | _MINIO_DELETE:
            continue
        if int(api.get("statusCode", 0) or 0) >= 400:
            continue
        try:
            at = _parse_time(str(doc["time"]))
        except (KeyError, ValueError) as exc:
            raise TraceError(f"{path}:{n}: bad time: {exc}") from None
        op = WRITE if api["name"] in _MINIO_WRITE else DELETE
        key = _dataset_key(str(api.get("bucket", "")), str(api.get("object", "")), depth)
        yield at, key, int(api.get("rx", 0) or 0), op, str(doc.get("accessKey") or "")
    if stats.malformed:
        first = stats.malformed_examples[0]
        raise TraceError(f"{path}:{first.line_no}: {first.reason}")


def guess_format(path: Path) -> str:
    """The format a file's name suggests: ``.csv``, ``.jsonl``, ``*minio*``, else the S3 access log."""
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if "minio" in name:
        return "minio-audit"
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    return "s3-access-log"


def read_trace(path: Path, fmt: str | None = None, *, key_depth: int = 0) -> Trace:
    """Read ``path`` in ``fmt`` (guessed from the name if None) into a :class:`Trace`."""
    fmt = fmt or guess_format(path)
    if fmt not in TRACE_FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; valid formats: {', '.join(TRACE_FORMATS)}")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return trace_from_lines(fh, fmt, source=str(path), key_depth=key_depth)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None


def trace_from_lines(lines: Iterable[str], fmt: str, *, source: str = "<trace>", key_depth: int = 0) -> Trace:
    """A :class:`Trace` from the lines of a trace in ``fmt``."""
    if fmt == "csv":
        rows: Iterator[Raw] = _read_csv(lines, source)
    elif fmt == "jsonl":
        rows = _read_jsonl(lines, source)
    elif fmt == "s3-access-log":
        rows = _read_s3_access_log(lines, source, key_depth)
    elif fmt == "minio-audit":
        rows = _read_minio_audit(lines, source, key_depth)
    else:
        raise TraceError(f"unknown trace format {fmt!r}; valid formats: {', '.join(TRACE_FORMATS)}")
    return build_trace(rows)


def build_trace(rows: Iterable[Raw]) -> Trace:
    """A :class:`Trace` from ``(time, key, bytes, op, reader)`` tuples (op -1: a size hint, not an event)."""
    index: dict[str, int] = {}
    readers: dict[str, int] = {}
    t: list[float] = []
    ds: list[int] = []
    op: list[int] = []
    nb: list[int] = []
    rd: list[int] = []
    hint: dict[int, int] = {}
    for at, key, nbytes, code, who in rows:
        i = index.setdefault(key, len(index))
        if code < 0:
            hint[i] = max(hint.get(i, 0), nbytes)
            continue
        t.append(at)
        ds.append(i)
        op.append(code)
        nb.append(nbytes)
        rd.append(readers.setdefault(who, len(readers)))
    n = len(index)
    tt = np.asarray(t, dtype=np.float64)
    order = np.argsort(tt, kind="stable")
    trace = Trace(
        names=list(index),
        size=np.zeros(n, dtype=np.int64),
        preexisting=np.zeros(n, dtype=bool),
        t=tt[order],
        ds=np.asarray(ds, dtype=np.int64)[order],
        op=np.asarray(op, dtype=np.int8)[order],
        nbytes=np.asarray(nb, dtype=np.int64)[order],
        reader=np.asarray(rd, dtype=np.int64)[order],
    )
    np.maximum.at(trace.size, trace.ds, trace.nbytes)
    for i, size in hint.items():
        trace.size[i] = max(trace.size[i], size)
    first = np.full(n, len(trace), dtype=np.int64)
    np.minimum.at(first, trace.ds, np.arange(len(trace)))
    seen = first < len(trace)
    trace.preexisting[seen] = trace.op[first[seen]] != WRITE
    return trace
