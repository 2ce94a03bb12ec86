"""The webhook endpoint under a burst: ``tiering serve`` (a child process, SQLite catalog of 1,000 datasets)
takes S3 event notifications from ``clients`` concurrent senders for ``seconds``.

Each sender posts one event document (a GET of a member of a random dataset) per request, on a new
connection each time, as bucket notification targets do after a pause, with the bearer token. Reported:
requests/s answered 200, answers of any other status, and connection errors (refused, reset, timed out),
which a notifier sees as lost events. The events counted in the catalog afterwards must equal the 200s.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

WEBHOOK_SECONDS = {"full": 20.0, "quick": 10.0, "tiny": 2.0}
CLIENTS = 64
DATASETS = 1000
TOKEN = "bench-webhook-token"


def _event(rng: random.Random) -> bytes:
    ds = rng.randrange(DATASETS)
    key = f"tiering/dataset/ds{ds:05d}/v1/train/part-{rng.randrange(1000):05d}.bin"
    record = {
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "s3:ObjectAccessed:Get",
        "eventTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "userIdentity": {"principalId": "trainer"}, "requestParameters": {"sourceIPAddress": "10.0.0.7"},
        "s3": {"bucket": {"name": "ml-hot"}, "object": {"key": key, "size": 1048576}},
    }
    return json.dumps({"Records": [record]}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed_catalog(config_path: Path, root: Path) -> None:
    from tiering.app import App
    from tiering.catalog.models import Dataset, Tier
    from tiering.config import load_config

    app = App.open(load_config(config_path), create=True)
    try:
        now = dt.datetime.now(dt.UTC)
        with app.catalog.session() as s:
            from sqlalchemy import select

            tier_id = s.scalars(select(Tier.id).where(Tier.name == "hot")).one()
            s.add_all(Dataset(name=f"ds{i:05d}", version="v1", kind="dataset", owner="", tags={},
                              home_tier_id=tier_id, state="active", created_at=now, home_since=now,
                              member_count=1, size_bytes=1) for i in range(DATASETS))
    finally:
        app.close()


def _reads_counted(config_path: Path) -> int:
    from sqlalchemy import func, select

    from tiering.app import App
    from tiering.catalog.models import AccessDaily
    from tiering.config import load_config

    app = App.open(load_config(config_path))
    try:
        with app.catalog.session() as s:
            return int(s.scalar(select(func.coalesce(func.sum(AccessDaily.reads), 0))) or 0)
    finally:
        app.close()


def run_webhook(size_name: str, seconds_arg: float | None, workdir: Path | None,
                clients: int = CLIENTS) -> dict[str, Any]:
    seconds = seconds_arg if seconds_arg is not None else WEBHOOK_SECONDS[size_name]
    if seconds <= 0:
        return {"skipped": "0 seconds", "lines": ["skipped: 0 seconds"]}
    root = Path(tempfile.mkdtemp(prefix="tiering-bench-webhook-", dir=workdir))
    proc: subprocess.Popen[bytes] | None = None
    try:
        config_path = root / "tiering.yaml"
        config_path.write_text(yaml.safe_dump({
            "catalog": f"sqlite:///{root / 'catalog.db'}",
            "tiers": {"hot": {"rank": 0, "backend": "s3://ml-hot/tiering", "endpoint": "http://127.0.0.1:9"}},
        }))
        _seed_catalog(config_path, root)
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tiering", "--config", str(config_path), "serve", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TIERING_WEBHOOK_TOKEN": TOKEN},
        )
        assert proc.stdout is not None
        if b"listening" not in proc.stdout.readline():
            raise RuntimeError(f"tiering serve did not start: {proc.stderr.read().decode() if proc.stderr else ''}")

        counts = {"ok": 0, "status": 0, "connection": 0}
        examples: dict[str, str] = {}
        lock = threading.Lock()
        start = threading.Event()
        deadline = [0.0]

        def sender(seed: int) -> None:
            rng = random.Random(seed)
            start.wait()
            while time.monotonic() < deadline[0]:
                body = _event(rng)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    conn.request("POST", "/v1/events/s3", body=body, headers={
                        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
                    resp = conn.getresponse()
                    resp.read()
                    kind = "ok" if resp.status == 200 else "status"
                    detail = f"HTTP {resp.status}"
                except (OSError, http.client.HTTPException) as exc:
                    kind, detail = "connection", f"{type(exc).__name__}: {exc}"
                finally:
                    conn.close()
                with lock:
                    counts[kind] += 1
                    examples.setdefault(kind, detail)

        threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        deadline[0] = t0 + seconds
        start.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        proc.terminate()
        proc.wait(timeout=30)
        counted = _reads_counted(config_path)
        total = sum(counts.values())
        out = {"clients": clients, "seconds": elapsed, "requests": total, "ok": counts["ok"],
               "error_status": counts["status"], "connection_errors": counts["connection"],
               "ok_per_s": counts["ok"] / elapsed, "reads_counted": counted,
               "error_examples": {k: v for k, v in examples.items() if k != "ok"}}
        text = (f"webhook, {clients} concurrent senders, {elapsed:.1f} s: {counts['ok'] / elapsed:,.0f} requests/s "
                f"answered 200 ({counts['ok']:,}), {counts['status']} other statuses, "
                f"{counts['connection']} connection errors; {counted:,} reads counted")
        lines = [text] + [f"  first {k} error: {v}" for k, v in out["error_examples"].items()]
        return {"result": out, "lines": lines}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
