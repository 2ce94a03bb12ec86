"""Reads from real-format logs and webhook bodies land in the catalog's daily roll-up, once per dataset-day."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import open_app, workspace_config
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import tiering.access.ingest
from tiering.access.formats import parse_lines
from tiering.access.ingest import ingest_access
from tiering.access.record import record_reads
from tiering.access.webhook import make_server
from tiering.app import App
from tiering.catalog.models import AccessDaily, Dataset, Tier

DATA = Path(__file__).resolve().parents[1] / "data" / "access"
PREFIX = "hot/dataset/imagenet-mini/2024.1/"
FILES = {
    "s3-access-log": "s3-access.log",
    "minio-audit": "minio-audit.log",
    "s3-event": "s3-events.jsonl",
    "jsonl": "access.jsonl",
}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    tiers = {
        # an S3 hot tier (bucket ml-hot, prefix hot/) as the sample logs name it; ingestion needs no server
        "hot": {"rank": 0, "backend": "s3://ml-hot/hot", "endpoint": "http://127.0.0.1:9"},
        "warm": {"rank": 1, "backend": (tmp_path / "warm").as_uri()},
    }
    a = open_app(workspace_config(tmp_path, tiers=tiers))
    now = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    with a.catalog.session() as s:
        hot = s.scalars(select(Tier).where(Tier.name == "hot")).one()
        s.add(Dataset(name="imagenet-mini", version="2024.1", kind="dataset", owner="", tags={}, home_tier_id=hot.id,
                      state="active", created_at=now, home_since=now, member_count=1, size_bytes=1))
    yield a
    a.close()


def reads_in_catalog(app: App) -> int:
    with app.catalog.session() as s:
        return int(s.scalar(select(func.coalesce(func.sum(AccessDaily.reads), 0))) or 0)


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_each_log_format_counts_only_reads_of_the_dataset(app: App, fmt: str) -> None:
    lines = (DATA / FILES[fmt]).read_text(encoding="utf-8").splitlines()
    events, _ = parse_lines(lines, fmt)
    expected = sum(
        1 for e in events
        if (e.bucket == "ml-hot" and e.key.startswith(PREFIX) and "/_tiering/" not in e.key)
        or e.dataset == "imagenet-mini@2024.1"
    )
    assert expected > 0
    result = ingest_access(app, iter(lines), fmt)
    assert result.counted == expected
    assert result.malformed > 0, "the sample files carry malformed lines on purpose"
    assert result.lines == len(lines)
    assert reads_in_catalog(app) == expected
    with app.catalog.session() as s:
        last = s.scalars(select(Dataset.last_access_at)).one()
    assert last is not None and last.year == 2025


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_a_log_of_several_batches_counts_the_same_and_numbers_lines_from_the_first_line(
    app: App, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = (DATA / FILES[fmt]).read_text(encoding="utf-8").splitlines()
    events, stats = parse_lines(lines, fmt)
    writes: list[int] = []

    def spy_record_reads(session: Session, counts: Mapping[tuple[int, dt.date], int], **kwargs: Any) -> int:
        writes.append(sum(counts.values()))
        return record_reads(session, counts, **kwargs)

    monkeypatch.setattr(tiering.access.ingest, "INGEST_BATCH_LINES", 1)
    monkeypatch.setattr(tiering.access.ingest, "record_reads", spy_record_reads)
    result = ingest_access(app, iter(lines), fmt)
    assert (result.lines, result.events, result.malformed) == (len(lines), stats.events, stats.malformed)
    assert [m["line"] for m in result.malformed_examples] == [m.line_no for m in stats.malformed_examples]
    assert len(writes) > 1, "the sample files hold reads on more than one line"
    assert sum(writes) == result.counted == reads_in_catalog(app)


def test_importing_the_same_log_twice_counts_twice_and_garbage_never_crashes(app: App) -> None:
    lines = (DATA / "s3-access.log").read_text(encoding="utf-8").splitlines()
    first = ingest_access(app, iter(lines), "s3-access-log").counted
    ingest_access(app, iter(lines), "s3-access-log")
    assert reads_in_catalog(app) == 2 * first
    garbage = ["\x00\x01 not a log", "{", "[]", "a b c", "" * 3]
    result = ingest_access(app, iter(garbage), "minio-audit")
    assert result.counted == 0 and result.malformed >= 4
    assert reads_in_catalog(app) == 2 * first


def test_the_event_endpoint_counts_webhook_reads_and_checks_the_token(app: App) -> None:
    server = make_server(app, host="127.0.0.1", port=0, token="t0ken")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        body = (DATA / "s3-event-webhook.json").read_bytes()

        def post(token: str | None) -> tuple[int, dict[str, object]]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn.request("POST", "/v1/events/s3", body=body, headers=headers)
            resp = conn.getresponse()
            out = json.loads(resp.read())
            conn.close()
            return resp.status, out

        status, _ = post("wrong")
        assert status == 401
        assert reads_in_catalog(app) == 0
        status, out = post("t0ken")
        assert status == 200
        assert out["counted"] == 1
        assert reads_in_catalog(app) == 1
    finally:
        server.shutdown()
        server.server_close()


def _check_last_access_moves_forward_only(app: App) -> None:
    """record_reads on three datasets at once: one never read, one read later already, one read earlier."""
    t0 = dt.datetime(2025, 2, 6, 12, tzinfo=dt.UTC)
    with app.catalog.session() as s:
        tier_id = s.scalars(select(Tier.id).where(Tier.name == "hot")).one()
        ids = []
        starting = {"never": None, "later": t0 + dt.timedelta(days=3), "earlier": t0 - dt.timedelta(days=3)}
        for name, last in starting.items():
            ds = Dataset(name=name, version="1", kind="dataset", owner="", tags={}, home_tier_id=tier_id,
                         state="active", created_at=t0, home_since=t0, member_count=1, size_bytes=1,
                         last_access_at=last)
            s.add(ds)
            s.flush()
            ids.append(ds.id)
    with app.catalog.session() as s:
        rows = record_reads(s, {(i, t0.date()): 2 for i in ids}, last_seen={i: t0 for i in ids})
    assert rows == 3
    with app.catalog.session() as s:
        after = dict(s.execute(select(Dataset.name, Dataset.last_access_at).where(Dataset.id.in_(ids))).all())
        reads = s.scalar(select(func.sum(AccessDaily.reads)).where(AccessDaily.dataset_id.in_(ids)))
    assert after == {"never": t0, "later": t0 + dt.timedelta(days=3), "earlier": t0}
    assert reads == 6


def test_recording_reads_moves_last_access_forward_and_never_back(app: App) -> None:
    _check_last_access_moves_forward_only(app)


def test_recording_reads_moves_last_access_forward_and_never_back_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    tiers = {"hot": {"rank": 0, "backend": (tmp_path / "hot").as_uri()}}
    pg_app = open_app(workspace_config(tmp_path, tiers=tiers, catalog=postgres_url))
    try:
        _check_last_access_moves_forward_only(pg_app)
    finally:
        pg_app.close()
