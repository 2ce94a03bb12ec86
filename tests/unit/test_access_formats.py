"""Access-log parsers: only successful object GETs become events; everything else is counted, never raised.

The sample files in tests/data/access/ follow the real formats: AWS's "Amazon S3 server access log
format" page, MinIO's audit entry (minio/pkg logger/message/audit/entry.go) and API event
(minio/madmin-go event/api.go), and MinIO's bucket notification (cmd/event-notification.go escapes
the key with Go's url.QueryEscape).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiering.access.events import MAX_MALFORMED_EXAMPLES
from tiering.access.events import Clock as _Clock
from tiering.access.events import parse_clf as _parse_clf
from tiering.access.formats import (
    FORMATS,
    AccessEvent,
    IngestStats,
    UnknownAccessFormat,
    iter_events,
    iter_object_reads,
    parse_lines,
    parse_s3_event_document,
)
from tiering.access.minio_audit import _minio_classic_head
from tiering.errors import UsageError

DATA = Path(__file__).resolve().parent.parent / "data" / "access"

K_TAR = "hot/dataset/imagenet-mini/2024.1/train/part-00000.tar"
K_SPACE_UNICODE = "hot/dataset/imagenet-mini/2024.1/train/class 01/img_é.jpeg"
K_PLUS = "hot/model/fraud/v3/weights+final.safetensors"
K_MANIFEST = "hot/dataset/imagenet-mini/2024.1/_tiering/manifest.json"
TRAINER_ARN = "arn:aws:iam::123456789012:user/trainer"


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _parse_file(name: str, fmt: str) -> tuple[list[AccessEvent], IngestStats]:
    with (DATA / name).open(encoding="utf-8") as lines:
        return parse_lines(lines, fmt)


def _malformed_lines(stats: IngestStats) -> list[int]:
    return [example.line_no for example in stats.malformed_examples]


# --- s3-access-log ---------------------------------------------------------------------------------


def test_s3_access_log_counts_every_line_once() -> None:
    _, stats = _parse_file("s3-access.log", "s3-access-log")
    assert (stats.lines, stats.events, stats.skipped_non_read, stats.malformed, stats.blank) == (
        17,
        4,
        8,
        4,
        1,
    )
    assert stats.lines == stats.events + stats.skipped_non_read + stats.malformed + stats.blank


def test_s3_access_log_yields_get_and_ranged_get_with_decoded_keys_and_utc_times() -> None:
    events, _ = _parse_file("s3-access.log", "s3-access-log")
    assert events == [
        AccessEvent("ml-hot", K_TAR, _utc(2025, 2, 6, 0, 1, 2), "GET", "s3-access-log", principal=TRAINER_ARN),
        AccessEvent(
            "ml-hot",
            K_SPACE_UNICODE,
            _utc(2025, 2, 6, 0, 1, 3),
            "GET",
            "s3-access-log",
            principal=TRAINER_ARN,
        ),
        AccessEvent("ml-hot", K_PLUS, _utc(2025, 2, 6, 23, 59, 59), "GET", "s3-access-log", principal=TRAINER_ARN),
        # WEBSITE.GET.OBJECT answered 304, logged at +0200: 01:30 local is 23:30 UTC the day before
        AccessEvent("ml-hot", K_MANIFEST, _utc(2025, 2, 6, 23, 30, 0), "GET", "s3-access-log", principal=TRAINER_ARN),
    ]


def test_s3_access_log_reports_malformed_lines_with_numbers_and_reasons() -> None:
    _, stats = _parse_file("s3-access.log", "s3-access-log")
    assert _malformed_lines(stats) == [13, 14, 15, 17]
    reasons = [example.reason for example in stats.malformed_examples]
    assert reasons[0] == "object read without a key"
    assert reasons[1].startswith("bad time")
    assert reasons[2] == reasons[3] == "not an S3 server access log record"
    assert stats.malformed_examples[3].excerpt == "this is not an access log line"


def test_s3_access_log_takes_the_status_after_the_protocol_not_one_injected_in_the_uri() -> None:
    line = (DATA / "s3-access.log").read_text(encoding="utf-8").splitlines()[10]
    assert '?a=" 200 HTTP/1.1" 403 AccessDenied' in line
    events, stats = parse_lines([line], "s3-access-log")
    assert events == []
    assert stats.skipped_non_read == 1


def test_s3_access_log_decodes_a_double_encoded_percent_sign() -> None:
    owner = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    line = (
        f"{owner} b [06/Feb/2025:00:00:01 +0000] 192.0.2.3 - REQ1 REST.GET.OBJECT "
        'hot/dataset/d/1/100%2525.csv "GET /b/hot/dataset/d/1/100%25.csv HTTP/1.1" '
        '200 - 5 5 1 1 "-" "curl/8" -'
    )
    events, _ = parse_lines([line], "s3-access-log")
    assert [e.key for e in events] == ["hot/dataset/d/1/100%.csv"]
    assert events[0].principal is None


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clf_outcome(parse: Callable[[str, str], datetime], stamp: str, offset: str) -> datetime | str:
    try:
        return parse(stamp, offset)
    except ValueError as exc:
        return f"ValueError: {exc}"


def test_s3_access_log_time_cache_gives_what_the_uncached_parser_gives_on_odd_stamps() -> None:
    pairs = [
        ("[06/Feb/2025:00:01:02", "+0000]"),
        ("[06/Feb/2025:00:01:59", "+0000]"),
        ("[06/Feb/2025:00:01:00", "+0000]"),  # same minute again: from the cache
        ("[06/Feb/2025:00:01:07", "+0200]"),  # same minute text, another offset
        ("[06/Feb/2025:00:01:07", "-0130]"),
        ("[06/Feb/2025:00:01:60", "+0000]"),  # leap second: not a second of the minute
        ("[06/Feb/2025:00:01: 7", "+0000]"),  # int() takes these, the cache does not: same answer
        ("[06/Feb/2025:00:01:+7", "+0000]"),
        ("[06/Feb/2025:00:01x07", "+0000]"),  # the separator before the seconds is not checked
        ("[06/Feb/2025:00:01:077", "+0000]"),
        ("[06/Feb/2025:00:01:7", "+0000]"),
        ("[30/Feb/2025:00:01:07", "+0000]"),
        ("[06/Foo/2025:00:01:07", "+0000]"),
        ("[01/Jan/0001:00:00:30", "+0100]"),  # before year 1 in UTC
        ("[31/Dec/9999:23:59:30", "-0001]"),  # after year 9999 in UTC
        ("[31/Dec/9999:23:58:59", "-0001]"),
        ("[06/Feb/2025:00:01:07", "+2400]"),
    ]
    clock = _Clock()
    for stamp, offset in pairs:
        assert _clf_outcome(clock.clf, stamp, offset) == _clf_outcome(_parse_clf, stamp, offset), (stamp, offset)
    assert _clf_outcome(clock.clf, "[01/Jan/0001:00:00:30", "+0100]") == "ValueError: time out of range"


@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
            st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_s3_access_log_times_are_the_local_time_minus_the_offset_in_utc(stamps: list[tuple[datetime, int]]) -> None:
    clock = _Clock()
    for local, minutes in stamps:
        local = local.replace(microsecond=0)
        sign = "-" if minutes < 0 else "+"
        offset = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}]"
        stamp = f"[{local.day:02d}/{MONTHS[local.month - 1]}/{local.year:04d}:{local:%H:%M:%S}"
        expected = local.replace(tzinfo=UTC) - timedelta(minutes=minutes)
        assert clock.clf(stamp, offset) == expected
        assert clock.clf(stamp, offset).tzinfo is UTC


def test_object_reads_are_the_s3_access_log_events_as_tuples_with_the_same_stats() -> None:
    lines = (DATA / "s3-access.log").read_text(encoding="utf-8").splitlines()
    events_stats, reads_stats = IngestStats(), IngestStats()
    events = list(iter_events(lines, "s3-access-log", events_stats, first_line_no=101))
    reads = list(iter_object_reads(lines, "s3-access-log", reads_stats, first_line_no=101))
    assert reads == [(e.bucket, e.key, e.at, e.principal) for e in events]
    assert all((e.op, e.source, e.dataset) == ("GET", "s3-access-log", None) for e in events)
    assert reads_stats == events_stats
    assert _malformed_lines(reads_stats) == [113, 114, 115, 117]


def test_object_reads_refuse_a_format_with_direct_dataset_reads_at_once() -> None:
    with pytest.raises(UnknownAccessFormat):
        iter_object_reads(["x"], "jsonl", IngestStats())


# --- minio-audit -----------------------------------------------------------------------------------


def test_minio_audit_counts_every_line_once() -> None:
    _, stats = _parse_file("minio-audit.log", "minio-audit")
    assert (stats.lines, stats.events, stats.skipped_non_read, stats.malformed, stats.blank) == (
        16,
        4,
        7,
        4,
        1,
    )


def test_minio_audit_yields_get_object_from_classic_and_new_entries() -> None:
    events, _ = _parse_file("minio-audit.log", "minio-audit")
    assert events == [
        AccessEvent("ml-hot", K_TAR, _utc(2025, 2, 6, 10, 15, 30), "GET", "minio-audit", principal="trainer"),
        AccessEvent("ml-hot", K_SPACE_UNICODE, _utc(2025, 2, 6, 10, 15, 30), "GET", "minio-audit", principal="trainer"),
        # the newer API event: name/bucket/object at the top, status and access key in callInfo
        AccessEvent("ml-hot", K_PLUS, _utc(2025, 2, 6, 23, 30, 0), "GET", "minio-audit", principal="notebook-7"),
        AccessEvent("ml-hot", K_MANIFEST, _utc(2025, 2, 6, 10, 16, 0), "GET", "minio-audit", principal="trainer"),
    ]


def test_minio_audit_reports_truncated_and_incomplete_entries() -> None:
    _, stats = _parse_file("minio-audit.log", "minio-audit")
    assert _malformed_lines(stats) == [11, 12, 13, 15]
    reasons = [example.reason for example in stats.malformed_examples]
    assert reasons[0].startswith("bad JSON")
    assert reasons[1] == "not a JSON object"
    assert reasons[2] == "no HTTP status code"
    assert reasons[3] == "bad time: timestamp has no UTC offset"


def test_minio_audit_shortcut_agrees_with_decoding_the_whole_line() -> None:
    """Every sample entry, re-serialised with spaces (so the shortcut cannot apply), gives the same result."""
    lines = (DATA / "minio-audit.log").read_text(encoding="utf-8").splitlines()
    respaced = []
    for line in lines:
        try:
            respaced.append(json.dumps(json.loads(line), ensure_ascii=False))
        except ValueError:
            respaced.append(line)
    assert _minio_classic_head(lines[0]) is not None
    assert _minio_classic_head(respaced[0]) is None
    events, stats = parse_lines(lines, "minio-audit")
    events_respaced, stats_respaced = parse_lines(respaced, "minio-audit")
    assert events == events_respaced
    assert _malformed_lines(stats) == _malformed_lines(stats_respaced)
    assert (stats.events, stats.skipped_non_read) == (stats_respaced.events, stats_respaced.skipped_non_read)


@pytest.mark.parametrize(
    ("entry", "expected_key", "expected_principal"),
    [
        # a "}" inside the object name: the cut lands inside a string, so the whole line is decoded
        (
            {
                "time": "2025-02-06T10:00:00Z",
                "api": {"name": "GetObject", "bucket": "b", "object": "a}b/c", "statusCode": 200},
                "accessKey": "k1",
            },
            "a}b/c",
            "k1",
        ),
        # quotes and a would-be member inside the object name are escaped, so they cannot cut the line
        (
            {
                "time": "2025-02-06T10:00:00Z",
                "api": {
                    "name": "GetObject",
                    "bucket": "b",
                    "object": 'a,"rx":1}',
                    "statusCode": 200,
                    "rx": 0,
                },
                "accessKey": "k1",
            },
            'a,"rx":1}',
            "k1",
        ),
        # an "api" member nested in another object before the real one: the cut is unbalanced
        (
            {
                "time": "2025-02-06T10:00:00Z",
                "x": {"api": {"name": "GetObject", "bucket": "decoy", "object": "decoy", "rx": 0}},
                "api": {"name": "GetObject", "bucket": "b", "object": "real", "statusCode": 200, "rx": 0},
            },
            "real",
            None,
        ),
        # a query parameter named accessKey and no top-level one: the principal stays unknown
        (
            {
                "time": "2025-02-06T10:00:00Z",
                "api": {"name": "GetObject", "bucket": "b", "object": "o", "statusCode": 200},
                "requestQuery": {"accessKey": "spoofed"},
                "requestHeader": {"Host": "x"},
            },
            "o",
            None,
        ),
        # fields after accessKey that a future MinIO might add: the whole line is decoded
        (
            {
                "time": "2025-02-06T10:00:00Z",
                "api": {"name": "GetObject", "bucket": "b", "object": "o", "statusCode": 206},
                "accessKey": "k2",
                "newField": {"x": 1},
            },
            "o",
            "k2",
        ),
    ],
)
def test_minio_audit_entries_that_defeat_the_shortcut_still_parse_exactly(
    entry: dict[str, object], expected_key: str, expected_principal: str | None
) -> None:
    line = json.dumps(entry, separators=(",", ":"))
    events, stats = parse_lines([line], "minio-audit")
    assert stats.events == 1
    assert (events[0].key, events[0].principal) == (expected_key, expected_principal)


def test_minio_audit_skips_server_internal_get_object() -> None:
    entry = {
        "time": "2025-02-06T10:00:00Z",
        "origin": "ilm",
        "name": "GetObject",
        "bucket": "b",
        "object": "o",
        "callInfo": {"httpStatusCode": 200},
    }
    events, stats = parse_lines([json.dumps(entry)], "minio-audit")
    assert events == []
    assert stats.skipped_non_read == 1


# --- s3-event --------------------------------------------------------------------------------------


def test_s3_event_file_counts_records_not_lines() -> None:
    _, stats = _parse_file("s3-events.jsonl", "s3-event")
    assert (stats.lines, stats.events, stats.skipped_non_read, stats.malformed, stats.blank) == (
        11,
        3,
        4,
        5,
        1,
    )


def test_s3_event_file_yields_get_with_and_without_the_s3_prefix() -> None:
    events, _ = _parse_file("s3-events.jsonl", "s3-event")
    assert events == [
        AccessEvent("ml-hot", K_SPACE_UNICODE, _utc(2025, 2, 6, 10, 15, 30), "GET", "s3-event", principal="trainer"),
        AccessEvent("ml-hot", K_PLUS, _utc(2025, 2, 6, 23, 59, 59), "GET", "s3-event", principal="AWS:AIDAEXAMPLE"),
        AccessEvent("ml-hot", K_TAR, _utc(2025, 2, 6, 11, 0, 0), "GET", "s3-event", principal="trainer"),
    ]


def test_s3_event_file_reports_bad_documents_and_bad_records() -> None:
    _, stats = _parse_file("s3-events.jsonl", "s3-event")
    assert _malformed_lines(stats) == [5, 7, 8, 9, 11]
    reasons = [example.reason for example in stats.malformed_examples]
    assert reasons[0] == "record 2: no s3.bucket.name or s3.object.key"
    assert reasons[1].startswith("bad JSON")
    assert reasons[2] == "no Records"
    assert reasons[3].startswith("record 0: bad eventTime")
    assert reasons[4] == "not a JSON object"


def test_s3_event_webhook_body_spanning_lines_gives_its_read() -> None:
    events, stats = parse_s3_event_document((DATA / "s3-event-webhook.json").read_bytes())
    assert events == [
        AccessEvent("ml-hot", K_SPACE_UNICODE, _utc(2025, 2, 6, 10, 15, 30), "GET", "s3-event", principal="trainer")
    ]
    assert (stats.lines, stats.events, stats.malformed) == (1, 1, 0)


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", "[1, 2]", '{"Records": {}}'])
def test_s3_event_webhook_body_that_is_not_a_notification_is_one_malformed_line(body: str | bytes) -> None:
    events, stats = parse_s3_event_document(body)
    assert events == []
    assert (stats.lines, stats.malformed, len(stats.malformed_examples)) == (1, 1, 1)


def test_s3_event_test_event_is_not_a_read_and_not_an_error() -> None:
    events, stats = parse_s3_event_document('{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}')
    assert events == []
    assert (stats.skipped_non_read, stats.malformed) == (1, 0)


# --- jsonl -----------------------------------------------------------------------------------------


def test_jsonl_counts_every_line_once() -> None:
    _, stats = _parse_file("access.jsonl", "jsonl")
    assert (stats.lines, stats.events, stats.skipped_non_read, stats.malformed, stats.blank) == (
        12,
        3,
        3,
        5,
        1,
    )


def test_jsonl_yields_object_reads_and_direct_dataset_reads() -> None:
    events, _ = _parse_file("access.jsonl", "jsonl")
    assert events == [
        AccessEvent("ml-hot", K_SPACE_UNICODE, _utc(2025, 2, 6, 10, 15, 30), "GET", "jsonl"),
        AccessEvent(
            "",
            "",
            _utc(2025, 2, 6, 11, 0, 0),
            "GET",
            "jsonl",
            dataset="imagenet-mini@2024.1",
            principal="notebook-7",
        ),
        AccessEvent("ml-hot", K_TAR, _utc(2025, 2, 6, 23, 0, 0), "GET", "jsonl"),
    ]


def test_jsonl_reports_unknown_ops_and_incomplete_records() -> None:
    _, stats = _parse_file("access.jsonl", "jsonl")
    assert _malformed_lines(stats) == [6, 7, 8, 9, 10]
    assert [example.reason for example in stats.malformed_examples][:4] == [
        "unknown op 'FETCH'",
        "dataset is not name@version",
        "neither dataset nor bucket and key",
        "bad at: timestamp has no UTC offset",
    ]


# --- shared behaviour ------------------------------------------------------------------------------


def test_formats_lists_the_four_names() -> None:
    assert FORMATS == ("s3-event", "minio-audit", "s3-access-log", "jsonl")


def test_unknown_format_is_a_usage_error_naming_the_valid_ones_raised_before_iteration() -> None:
    with pytest.raises(UnknownAccessFormat) as caught:
        iter_events(["x"], "apache", IngestStats())
    assert isinstance(caught.value, UsageError)
    assert "'apache'" in str(caught.value)
    for name in FORMATS:
        assert name in str(caught.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_examples_stop_at_the_limit_but_the_count_does_not(fmt: str) -> None:
    events, stats = parse_lines(["{garbage"] * (MAX_MALFORMED_EXAMPLES + 5), fmt)
    assert events == []
    assert stats.malformed == MAX_MALFORMED_EXAMPLES + 5
    assert len(stats.malformed_examples) == MAX_MALFORMED_EXAMPLES
    assert stats.malformed_examples[-1].line_no == MAX_MALFORMED_EXAMPLES


@pytest.mark.parametrize("fmt", FORMATS)
def test_hostile_lines_never_raise(fmt: str) -> None:
    unicode_status = (
        "o b [06/Feb/2025:00:00:01 +0000] 192.0.2.3 - R REST.GET.OBJECT k "
        '"GET /b/k HTTP/1.1" \u00b2\u2070\u2070 - 5 5 1 1 "-" "x" -'
    )
    hostile = [
        unicode_status,
        "[" * 100_000,
        "\x00\x01",
        '{"Records":[null, 1, "x", {"eventName": 5}]}',
        " " * 10,
        "[]",
        "{}",
    ]
    events, stats = parse_lines(hostile, fmt)
    assert events == []
    assert stats.lines == len(hostile)


def test_timestamps_out_of_range_are_malformed_not_raised() -> None:
    owner = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    log_line = (
        f"{owner} b [01/Jan/0001:00:00:00 +0100] 192.0.2.3 - REQ1 REST.GET.OBJECT k "
        '"GET /b/k HTTP/1.1" 200 - 5 5 1 1 "-" "curl/8" -'
    )
    _, log_stats = parse_lines([log_line], "s3-access-log")
    jsonl_line = json.dumps({"bucket": "b", "key": "k", "at": "0001-01-01T00:00:00+01:00"})
    _, jsonl_stats = parse_lines([jsonl_line], "jsonl")
    assert [e.reason for e in log_stats.malformed_examples] == ["bad time: time out of range"]
    assert [e.reason for e in jsonl_stats.malformed_examples] == ["bad at: timestamp out of range"]


def test_streaming_updates_stats_as_lines_are_consumed() -> None:
    lines = (DATA / "access.jsonl").read_text(encoding="utf-8").splitlines()
    stats = IngestStats()
    events = iter_events(lines, "jsonl", stats)
    first = next(events)
    assert first.key == K_SPACE_UNICODE
    assert (stats.lines, stats.events) == (1, 1)
    rest = list(events)
    assert len(rest) == 2
    assert stats.lines == 12


def test_times_are_truncated_to_whole_utc_seconds() -> None:
    lines = [
        json.dumps({"bucket": "b", "key": "k", "at": "2025-02-06T10:15:30.999999999Z"}),
        json.dumps({"bucket": "b", "key": "k", "at": "2025-02-06T12:15:30.5+02:00"}),
    ]
    events, _ = parse_lines(lines, "jsonl")
    assert [e.at for e in events] == [_utc(2025, 2, 6, 10, 15, 30)] * 2
    assert all(e.at.tzinfo is UTC for e in events)
