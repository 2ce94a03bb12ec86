"""Catalog-side benchmarks: planning over a large synthetic catalog, and access-log ingestion.

plan: a catalog of N datasets (10 members and 10 live replicas each, reads on ~30% of them over the last
60 days) is written straight through the database driver (the setup is not what is measured), then a
child process runs the product's planning path, ``tiering.lifecycle.nightly.make_plan`` (gather_dataset_facts,
gather_tier_facts, plan_moves) with the shipped default policy. Seconds are measured inside the child
(imports and opening the catalog excluded, reported apart); peak RSS is the child's ``ru_maxrss``.
SQLite, and PostgreSQL in a database of our own (dropped afterwards) when one is reachable.

ingest: ``tiering.access.ingest.ingest_access`` over a generated S3 server access log (GETs of members of
1,000 datasets, plus the lines a real log has: listings, HEADs, PUTs, 404s, keys of no dataset).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

PLAN_SIZES = {"full": [100_000, 1_000_000], "quick": [10_000, 100_000], "tiny": [500]}
INGEST_LINES = {"full": 1_000_000, "quick": 100_000, "tiny": 2_000}
MEMBERS_PER_DATASET = 10
NOW = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)


def _config(catalog: str, root: Path) -> dict[str, Any]:
    return {
        "catalog": catalog,
        "tiers": {
            "hot": {"rank": 0, "backend": (root / "hot").as_uri(), "capacity": "2PiB"},
            "warm": {"rank": 1, "backend": (root / "warm").as_uri(), "capacity": "20PiB"},
            "cold": {"rank": 2, "backend": (root / "cold").as_uri(), "archive": "packed"},
        },
    }


def _open_app(config: dict[str, Any], root: Path, *, create: bool) -> Any:
    from tiering.app import App
    from tiering.config import config_from_dict

    return App.open(config_from_dict(config, base_dir=str(root)), create=create)


def _rows(n: int, tier_ids: dict[str, int], seed: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                                                 list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    rng = random.Random(seed)
    datasets, members, replicas, reads = [], [], [], []
    homes = [tier_ids["hot"]] * 10 + [tier_ids["warm"]] * 7 + [tier_ids["cold"]] * 3
    mid = 0
    today = NOW.date()
    for i in range(1, n + 1):
        created = NOW - dt.timedelta(days=rng.randrange(1, 700), seconds=rng.randrange(86400))
        since = created + (NOW - created) * rng.random() * 0.5
        size = rng.randrange(1, 1 << 34)
        home = rng.choice(homes)
        last = None
        if rng.random() < 0.3:
            days = sorted(rng.sample(range(60), 3))
            for d in days:
                reads.append((i, today - dt.timedelta(days=d), rng.randrange(1, 20)))
            last = NOW - dt.timedelta(days=days[0])
        tags = '{"team": "vision"}' if i % 7 == 0 else "{}"
        datasets.append((i, f"ds{i:07d}", "v1", "dataset", f"team{i % 50}", tags, home, "active", "", False,
                         MEMBERS_PER_DATASET, size, "", created, since, last))
        for j in range(MEMBERS_PER_DATASET):
            mid += 1
            members.append((mid, i, f"part-{j:02d}", size // MEMBERS_PER_DATASET, "0" * 32))
            replicas.append((mid, mid, home, f"dataset/ds{i:07d}/v1/part-{j:02d}", "live", created,
                             size // MEMBERS_PER_DATASET))
    return datasets, members, replicas, reads


DATASET_COLS = ("id", "name", "version", "kind", "owner", "tags", "home_tier_id", "state", "location_prefix",
                "adopted", "member_count", "size_bytes", "content_digest", "created_at", "home_since",
                "last_access_at")
MEMBER_COLS = ("id", "dataset_id", "path", "size", "xxh3")
REPLICA_COLS = ("id", "member_id", "tier_id", "key", "state", "verified_at", "size")
READ_COLS = ("dataset_id", "day", "reads")


def fill_catalog(url: str, root: Path, n: int, *, seed: int = 7) -> float:
    """Create the schema at ``url`` and write ``n`` synthetic datasets; returns seconds spent."""
    started = time.monotonic()
    config = _config(url, root)
    with _open_app(config, root, create=True) as app:
        from sqlalchemy import select

        from tiering.catalog.models import Tier

        with app.catalog.session() as s:
            tier_ids = {t.name: t.id for t in s.scalars(select(Tier))}
    chunk = 50_000
    for start in range(0, n, chunk):
        part = _rows(min(chunk, n - start), tier_ids, seed + start)
        offset_ds, offset_m = start, start * MEMBERS_PER_DATASET
        datasets = [(r[0] + offset_ds, f"ds{r[0] + offset_ds:07d}", *r[2:]) for r in part[0]]
        members = [(r[0] + offset_m, r[1] + offset_ds, *r[2:]) for r in part[1]]
        replicas = [(r[0] + offset_m, r[1] + offset_m, *r[2:]) for r in part[2]]
        reads = [(r[0] + offset_ds, *r[1:]) for r in part[3]]
        _write(url, [("datasets", DATASET_COLS, datasets), ("members", MEMBER_COLS, members),
                     ("replicas", REPLICA_COLS, replicas), ("access_daily", READ_COLS, reads)])
    if url.startswith("postgresql"):
        _pg_analyze(url)
    return time.monotonic() - started


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def _write(url: str, tables: list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]]) -> None:
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            with conn:
                for table, cols, rows in tables:
                    marks = ",".join("?" * len(cols))
                    conn.executemany(f"INSERT INTO {table} ({','.join(cols)}) VALUES ({marks})",
                                     [tuple(_sqlite_value(v) for v in row) for row in rows])
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(_libpq(url)) as pg, pg.cursor() as cur:
        for table, cols, rows in tables:
            with cur.copy(f"COPY {table} ({','.join(cols)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _pg_analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("ANALYZE")


def plan_child(config_path: str) -> None:
    """In a fresh process: plan once and print JSON (seconds split into setup and planning)."""
    t0 = time.monotonic()
    from tiering.app import App
    from tiering.config import load_config
    from tiering.lifecycle.nightly import load_active_policy, make_plan

    app = App.open(load_config(config_path))
    policy = load_active_policy(app)
    t1 = time.monotonic()
    plan = make_plan(app, policy=policy, now=NOW)
    t2 = time.monotonic()
    moves = len(getattr(plan, "moves", ()) or ())
    app.close()
    # VmHWM, not the parent's wait4 ru_maxrss: that one starts from the parent's size at fork
    hwm_kib = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    print(json.dumps({"setup_seconds": t1 - t0, "plan_seconds": t2 - t1, "moves": moves,
                      "peak_rss_mib": hwm_kib / 1024}))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH", "")]))
    return env


def _measure_child(config_path: Path) -> dict[str, Any]:
    """Run the planning child and read its peak RSS from wait4."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.catalog", "plan-child", str(config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_child_env())
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _pid, status, _usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        return {"error": err.decode(errors="replace")[-600:]}
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def run_plan(size_name: str, sizes_arg: str | None, postgres: str, workdir: Path | None) -> dict[str, Any]:
    try:
        from tiering.lifecycle.planner import plan_moves  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"tiering.lifecycle.planner.plan_moves not importable ({exc})",
                "lines": [f"skipped: planner not importable ({exc})"]}
    sizes = [int(x) for x in sizes_arg.split(",") if int(x) > 0] if sizes_arg else PLAN_SIZES[size_name]
    results: list[dict[str, Any]] = []
    lines = []
    root = Path(tempfile.mkdtemp(prefix="tiering-bench-plan-", dir=workdir))
    try:
        for n in sizes:
            for db in ("sqlite", "postgresql"):
                entry: dict[str, Any] = {"datasets": n, "members": n * MEMBERS_PER_DATASET, "db": db}
                url, drop = _catalog_url(db, root, postgres)
                if url is None:
                    entry["skipped"] = drop
                    results.append(entry)
                    lines.append(f"plan {n:>9,} datasets {db:<10}: skipped ({drop})")
                    continue
                try:
                    entry["fill_seconds"] = fill_catalog(url, root, n)
                    config_path = root / f"plan-{db}-{n}.yaml"
                    config_path.write_text(yaml.safe_dump(_config(url, root)))
                    entry.update(_measure_child(config_path))
                finally:
                    if callable(drop):
                        drop()
                results.append(entry)
                if "error" in entry:
                    lines.append(f"plan {n:>9,} datasets {db:<10}: FAILED {entry['error'][-200:]}")
                else:
                    lines.append(
                        f"plan {n:>9,} datasets ({n * MEMBERS_PER_DATASET:,} members) {db:<10}: "
                        f"{entry['plan_seconds']:6.2f} s, peak RSS {entry['peak_rss_mib']:6.0f} MiB, "
                        f"{n / entry['plan_seconds']:,.0f} datasets/s, {entry['moves']} moves "
                        f"(+{entry['setup_seconds']:.1f} s start-up; catalog filled in {entry['fill_seconds']:.0f} s)"
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"results": results, "lines": lines}


def _catalog_url(db: str, root: Path, postgres: str) -> tuple[str | None, Any]:
    if db == "sqlite":
        path = root / f"plan-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)
    if not postgres:
        return None, "no PostgreSQL given"
    try:
        import psycopg
        from psycopg import sql

        name = f"tiering_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgres, connect_timeout=3, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return None, f"PostgreSQL at {postgres} unavailable: {type(exc).__name__}"
    from sqlalchemy.engine import make_url

    url = make_url(postgres).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    return url, drop


# -- ingest ------------------------------------------------------------------------------------------


def make_access_log(path: Path, lines: int, datasets: int, *, seed: int = 11) -> None:
    """An S3 server access log: 80% object GETs of dataset members, the rest other operations and misses."""
    rng = random.Random(seed)
    owner = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with open(path, "w") as fh:
        for i in range(lines):
            when = start + dt.timedelta(seconds=i * 2)
            stamp = when.strftime("%d/%b/%Y:%H:%M:%S +0000")
            ds = rng.randrange(datasets)
            key = f"tiering/dataset/ds{ds:05d}/v1/train/part-{rng.randrange(1000):05d}.bin"
            roll = rng.random()
            if roll < 0.8:
                op, verb, status, size = "REST.GET.OBJECT", "GET", "200", "1048576"
            elif roll < 0.88:
                op, verb, status, size = "REST.HEAD.OBJECT", "HEAD", "200", "-"
            elif roll < 0.93:
                op, verb, status, size = "REST.PUT.OBJECT", "PUT", "200", "-"
            elif roll < 0.97:
                op, verb, status, size = "REST.GET.OBJECT", "GET", "404", "312"
            else:
                op, verb, status, size = "REST.GET.OBJECT", "GET", "200", "4096"
                key = f"scratch/user{rng.randrange(100)}/notes-{i}.txt"
            fh.write(
                f'{owner} ml-hot [{stamp}] 10.0.{i % 256}.{rng.randrange(256)} '
                f'arn:aws:iam::123456789012:user/trainer REQ{i:012X} {op} {key} '
                f'"{verb} /ml-hot/{key} HTTP/1.1" {status} - {size} 1048576 12 11 "-" "aws-cli/2.15.0" - '
                f'hostid{i % 97}= SigV4 ECDHE-RSA-AES128-GCM-SHA256 AuthHeader ml-hot.s3.example TLSv1.2 - -\n'
            )


def run_ingest(size_name: str, lines_arg: int | None, workdir: Path | None) -> dict[str, Any]:
    lines = lines_arg if lines_arg is not None else INGEST_LINES[size_name]
    if lines <= 0:
        return {"skipped": "0 lines", "lines": ["skipped: 0 lines"]}
    root = Path(tempfile.mkdtemp(prefix="tiering-bench-ingest-", dir=workdir))
    try:
        n_datasets = 1000
        url = f"sqlite:///{root / 'ingest.db'}"
        config = {
            "catalog": url,
            "tiers": {"hot": {"rank": 0, "backend": "s3://ml-hot/tiering", "endpoint": "http://127.0.0.1:9"}},
        }
        with _open_app(config, root, create=True) as app:
            from sqlalchemy import select

            from tiering.catalog.models import Tier

            with app.catalog.session() as s:
                tier_id = s.scalars(select(Tier.id)).one()
        rows = [(i + 1, f"ds{i:05d}", "v1", "dataset", "", "{}", tier_id, "active", "", False, 1, 1, "",
                 NOW - dt.timedelta(days=100), NOW - dt.timedelta(days=100), None) for i in range(n_datasets)]
        _write(url, [("datasets", DATASET_COLS, rows)])
        log_path = root / "access.log"
        make_access_log(log_path, lines, n_datasets)
        from tiering.access.ingest import ingest_access

        with _open_app(config, root, create=False) as app, open(log_path) as fh:
            cpu0, t0 = time.process_time(), time.monotonic()
            result = ingest_access(app, fh, "s3-access-log")
            seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
        out = {"lines": lines, "events": result.events, "counted": result.counted, "unmatched": result.unmatched,
               "malformed": result.malformed, "seconds": seconds, "cpu_seconds": cpu,
               "lines_per_s": lines / seconds, "events_per_s": result.events / seconds}
        text = (f"ingest {lines:,} s3-access-log lines: {seconds:.2f} s, {lines / seconds:,.0f} lines/s, "
                f"{result.events / seconds:,.0f} read events/s ({result.events:,} events, {result.counted:,} counted, "
                f"{result.unmatched:,} unmatched, {result.malformed} malformed)")
        return {"result": out, "lines": [text]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "plan-child":
        plan_child(sys.argv[2])
    else:
        print("usage: python -m bench.catalog plan-child CONFIG", file=sys.stderr)
        sys.exit(2)
