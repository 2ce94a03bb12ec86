"""The replay: trace readers, session uses, and the baselines on tiny traces counted by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# the trace renderers live with the benchmark suite (bench/ is not installed): the tests read it in place
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.traces.make_traces import write_csv, write_minio_audit, write_s3_access_log  # noqa: E402
from tiering.access.traces import TraceError, build_trace, read_trace, trace_from_lines
from tiering.lifecycle.placement import DAY
from tiering.lifecycle.simulate import capacity_bytes, run, simulate

T0 = 1_700_006_400.0  # a midnight, UTC
H = 3600.0


def trace_of(*events: tuple[float, str, int, str, str]) -> object:
    codes = {"read": 0, "write": 1, "delete": 2}
    return build_trace((T0 + at, key, size, codes[op], who) for at, key, size, op, who in events)


def lfu_vs_lru_trace() -> object:
    return trace_of(
        (1 * H, "A", 100, "read", "u"), (5 * H, "A", 100, "read", "u"), (6 * H, "B", 100, "read", "u"),
        (DAY + 1 * H, "B", 100, "read", "u"), (DAY + 2 * H, "A", 100, "read", "u"),
    )


def test_lru_keeps_the_most_recent_dataset_hot_each_night() -> None:
    r = run(lfu_vs_lru_trace(), "lru", hot_bytes=100)  # type: ignore[arg-type]
    assert r["requests"] == 5
    assert r["hot_hit_requests"] == pytest.approx(1 / 5)  # B on day 1
    assert (r["moves"], r["bytes_moved"]) == (3, 300)  # B up; then A up and B down


def test_lfu_keeps_the_most_used_dataset_hot_each_night() -> None:
    r = run(lfu_vs_lru_trace(), "lfu", hot_bytes=100)  # type: ignore[arg-type]
    assert r["hot_hit_requests"] == pytest.approx(1 / 5)  # A on day 1
    assert (r["moves"], r["bytes_moved"]) == (1, 100)  # A up once, then it stays the most used


def test_the_oracle_puts_hot_what_the_next_day_reads_most() -> None:
    tr = trace_of((1 * H, "A", 100, "read", "u"), (2 * H, "B", 100, "read", "u"),
                  (DAY + 1 * H, "B", 100, "read", "x"), (DAY + 2 * H, "B", 100, "read", "y"),
                  (DAY + 3 * H, "A", 100, "read", "u"))
    r = run(tr, "oracle", hot_bytes=100)  # type: ignore[arg-type]
    assert r["hot_hit_requests"] == pytest.approx(2 / 5)


def test_s3_intelligent_tiering_archives_after_90_idle_days_and_a_read_then_restores() -> None:
    tr = trace_of((1 * H, "A", 100, "read", "u"), (100 * DAY + H, "A", 100, "read", "u"))
    r = run(tr, "s3-it", hot_bytes=None)  # type: ignore[arg-type]
    assert r["cold_reads"] == 1
    assert r["moves"] == 5  # up, to warm at 30 days, to archive at 90, recalled, up again
    assert r["peak_hot_bytes"] == 100


def test_a_steady_trace_never_ping_pongs_under_our_policy() -> None:
    events = []
    for day in range(60):
        for k in range(20):
            reads = 1 + k % 4  # the same reads at the same hours every day
            for r in range(reads):
                at = day * DAY + (k * 0.04 + r / reads) * DAY * 0.95
                events.append((at, f"d{k}", 10**9 * (1 + k % 3), "read", f"r{r}"))
    r = run(trace_of(*sorted(events)), "policy:default", hot_bytes=10 * 10**9)  # type: ignore[arg-type]
    assert r["pingpongs"] == 0
    assert r["moves"] <= 20


def test_a_replay_is_deterministic() -> None:
    tr = lfu_vs_lru_trace()
    assert simulate(tr, hot="50%") == simulate(tr, hot="50%")  # type: ignore[arg-type]


def test_capacity_percent_is_of_all_the_datasets_bytes() -> None:
    tr = trace_of((1.0, "A", 300, "write", ""), (2.0, "B", 700, "read", ""))
    assert capacity_bytes(tr, "10%") == 100  # type: ignore[arg-type]


def test_many_reads_in_one_session_are_one_use_and_writes_are_uses() -> None:
    tr = trace_of((0.0, "A", 5, "write", "w"), (60.0, "A", 5, "read", "u"), (120.0, "A", 5, "read", "u"),
                  (130.0, "A", 5, "read", "v"), (2 * H, "A", 5, "read", "u"))
    assert tr.uses(H).tolist() == [True, True, False, True, True]  # type: ignore[attr-defined]


EVENTS = [
    (int(T0) + 10, "data/a", 5000, "write", "alice"),
    (int(T0) + 20, "data/a", 5000, "read", "bob"),
    (int(T0) + 30, "data/b", 700, "read", "bob"),
    (int(T0) + 40, "data/a", 0, "delete", "alice"),
]


def expected(tr: object) -> list[tuple[float, str, int, int]]:
    return [(float(t), tr.names[d], int(b), int(o))  # type: ignore[attr-defined]
            for t, d, b, o in zip(tr.t, tr.ds, tr.nbytes, tr.op, strict=True)]  # type: ignore[attr-defined]


def test_the_csv_reader_takes_unix_seconds_and_rfc3339() -> None:
    lines = ["time,key,size,op", "1700006410,a,5000,write", "2023-11-15T00:00:20Z,a,100,read"]
    tr = trace_from_lines(lines, "csv")
    assert tr.t.tolist() == [T0 + 10, T0 + 20]
    assert tr.size.tolist() == [5000] and tr.op.tolist() == [1, 0]


def test_the_jsonl_reader_reads_the_same_fields() -> None:
    tr = trace_from_lines(['{"time": 1700006410, "key": "a", "size": 9, "op": "write"}'], "jsonl")
    assert tr.names == ["a"] and tr.size.tolist() == [9]


def test_a_bad_line_names_the_file_and_line() -> None:
    with pytest.raises(TraceError, match=r"t\.csv:3: op 'move'"):
        trace_from_lines(["time,key,size,op", "1,a,1,read", "2,a,1,move"], "csv", source="t.csv")


@pytest.mark.parametrize("writer,fmt,suffix", [(write_s3_access_log, "s3-access-log", "s3.log"),
                                               (write_minio_audit, "minio-audit", "minio.jsonl")])
def test_server_log_renderings_read_back_as_the_csv_trace(writer, fmt, suffix, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_csv(EVENTS, tmp_path / "t.csv")
    writer(EVENTS, tmp_path / f"t.{suffix}")
    from_csv = read_trace(tmp_path / "t.csv")
    from_log = read_trace(tmp_path / f"t.{suffix}", fmt)
    assert [(t, k.removeprefix("ml-data/"), b, o) for t, k, b, o in expected(from_log)] == expected(from_csv)
    assert from_log.size.tolist() == from_csv.size.tolist()


def test_the_s3_log_reader_skips_failed_and_non_object_requests() -> None:
    ok = ('o b [15/Nov/2023:00:00:20 +0000] 1.2.3.4 req id REST.GET.OBJECT k "GET /b/k HTTP/1.1" 200 - 10 '
          '50 1 1 "-" "ua" -')
    failed = ok.replace(" 200 - 10", " 404 NoSuchKey 10")
    head = ok.replace("REST.GET.OBJECT", "REST.HEAD.OBJECT")
    tr = trace_from_lines([ok, failed, head], "s3-access-log")
    assert len(tr) == 1 and tr.names == ["b/k"] and tr.size.tolist() == [50]
    assert tr.preexisting.tolist() == [True]
