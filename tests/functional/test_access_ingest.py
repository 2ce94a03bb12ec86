"""Reads from real-format logs and webhook bodies land in the catalog's daily roll-up, once per dataset-day."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import open_app, workspace_config
from sqlalchemy import func, select

from tiering.access_formats import parse_lines
from tiering.app import App
from tiering.catalog.models import AccessDaily, Dataset, Tier
from tiering.lifecycle import ingest_access
from tiering.server import make_server

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
