"""Write the placement trace suite: seeded, so every run writes the same files.

``python -m bench.traces.make_traces OUTDIR`` writes ``<name>.csv`` (``time,key,size,op,reader``) for every trace
of :data:`SUITE`, and two renderings of ``heldout-mix`` as server logs (``heldout-mix.s3.log``, an S3 server
access log, and ``heldout-mix.minio.jsonl``, a MinIO audit log). bench/traces/README.md explains each pattern.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

DAY = 86_400
HOUR = 3_600
KB, MB, GB = 10**3, 10**6, 10**9
START = 1_700_006_400  # 2023-11-15T00:00:00Z

Event = tuple[int, str, int, str, str]  # time, key, size, op, reader


@dataclass
class Builder:
    """Events of one trace; datasets keep one size; helpers for the patterns."""

    rng: random.Random
    days: int
    events: list[Event] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)

    def size(self, median: float, sigma: float = 1.5, lo: int = 4 * KB, hi: int = 400 * GB) -> int:
        return int(min(max(self.rng.lognormvariate(0, sigma) * median, lo), hi))

    def dataset(self, key: str, size: int, *, written_at: int | None) -> str:
        self.sizes[key] = size
        if written_at is not None:
            self.events.append((written_at, key, size, "write", "ingest"))
        return key

    def read(self, at: int, key: str, reader: str, fraction: float = 1.0) -> None:
        if 0 <= at < START + self.days * DAY:
            self.events.append((at, key, max(1, int(self.sizes[key] * fraction)), "read", reader))

    def when(self, day: float) -> int:
        return START + int(day * DAY)


def zipf_pick(rng: random.Random, n: int, alpha: float) -> int:
    """An index in 0..n-1 with probability ~ 1 / (i + 1) ** alpha."""
    weights = getattr(zipf_pick, "_cache", {}).get((n, alpha))
    if weights is None:
        total, weights = 0.0, []
        for i in range(n):
            total += 1.0 / (i + 1) ** alpha
            weights.append(total)
        zipf_pick._cache = {**getattr(zipf_pick, "_cache", {}), (n, alpha): weights}  # type: ignore[attr-defined]
    x = rng.random() * weights[-1]
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if weights[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def training(b: Builder, *, catalog: int = 300, jobs_per_day: float = 3.0, alpha: float = 1.0) -> None:
    """Training jobs: a job picks a dataset (Zipf), reads it a few epochs a day for days, then stops."""
    keys = [b.dataset(f"train/ds{i:04d}", b.size(20 * GB, 1.8, lo=50 * MB), written_at=None) for i in range(catalog)]
    b.rng.shuffle(keys)
    for day in range(b.days):
        for j in range(_poisson(b.rng, jobs_per_day)):
            key = keys[zipf_pick(b.rng, catalog, alpha)]
            length = b.rng.randint(2, 10)
            epochs = b.rng.randint(2, 6)
            start = b.when(day + b.rng.random())
            for d in range(length):
                for e in range(epochs):
                    b.read(start + d * DAY + e * (20 * HOUR // epochs), key, f"job-{day}-{j}")


def fresh(b: Builder, *, per_day: float = 8.0) -> None:
    """Read-after-write: new data lands every day and is read most in its first days, then rarely."""
    n = 0
    for day in range(b.days):
        for _ in range(_poisson(b.rng, per_day)):
            at = b.when(day + b.rng.random())
            key = b.dataset(f"fresh/d{n:05d}", b.size(2 * GB, 1.6, lo=1 * MB), written_at=at)
            n += 1
            reads = b.rng.randint(2, 12)
            for _ in range(reads):
                lag = b.rng.expovariate(1 / (1.5 * DAY))
                b.read(at + 60 + int(lag), key, f"etl-{b.rng.randint(0, 5)}")


def serving(b: Builder, *, models: int = 40, servers: int = 4) -> None:
    """Models served every day: each live model is loaded by a few servers daily; models retire and new ones ship."""
    live: list[str] = []
    n = 0
    for day in range(b.days):
        if day == 0 or b.rng.random() < 0.15:
            for _ in range(1 if day else models // 2):
                live.append(b.dataset(f"models/m{n:04d}", b.size(1 * GB, 1.2, lo=10 * MB),
                                      written_at=b.when(day + b.rng.random() * 0.5)))
                n += 1
            if len(live) > models:
                live.pop(b.rng.randrange(len(live)))
        for key in live:
            for s in range(b.rng.randint(1, servers)):
                b.read(b.when(day + 0.5 + b.rng.random() * 0.5), key, f"server-{s}")


def retraining(b: Builder, *, sets: int = 60, period: int = 7) -> None:
    """Periodic retraining: each feature set is re-read for a day every ``period`` days (its own phase)."""
    keys = [b.dataset(f"features/f{i:03d}", b.size(8 * GB, 1.5, lo=20 * MB), written_at=None) for i in range(sets)]
    phase = {k: b.rng.randrange(period) for k in keys}
    for day in range(b.days):
        for key in keys:
            if (day + phase[key]) % period == 0:
                for e in range(b.rng.randint(2, 4)):
                    b.read(b.when(day + 0.1 + 0.2 * e), key, f"retrain-{key}")


def scans(b: Builder, *, catalog: int = 2000, per_day: float = 60.0) -> None:
    """Scans and one-off reads: audits and exploration touch a random old dataset once, over a large catalog."""
    keys = [b.dataset(f"lake/t{i:05d}", b.size(500 * MB, 2.0), written_at=None) for i in range(catalog)]
    for day in range(b.days):
        for _ in range(_poisson(b.rng, per_day)):
            b.read(b.when(day + b.rng.random()), keys[b.rng.randrange(catalog)], f"adhoc-{b.rng.randint(0, 30)}",
                   fraction=b.rng.choice((1.0, 0.1, 0.01)))
        if day % 30 == 29:  # a monthly full scan
            for i, key in enumerate(keys[: catalog // 4]):
                b.read(b.when(day + 0.2) + i, key, "monthly-scan")


def restore_burst(b: Builder, *, archive: int = 600, burst_day: int | None = None) -> None:
    """A burst of restores: an old project's datasets, idle for months, are all read again for a week."""
    keys = [b.dataset(f"old/p{i:04d}", b.size(5 * GB, 1.5, lo=10 * MB), written_at=None) for i in range(archive)]
    day0 = burst_day if burst_day is not None else int(b.days * 0.8)
    chosen = b.rng.sample(keys, archive // 5)
    for key in chosen:
        first = b.when(day0 + b.rng.random() * 2)
        for r in range(b.rng.randint(1, 6)):
            b.read(first + r * b.rng.randint(HOUR, 2 * DAY), key, f"revival-{b.rng.randint(0, 3)}")
    for _ in range(b.days * 3):  # a trickle of reads elsewhere, so the rest of the archive is not empty time
        b.read(b.when(b.rng.random() * b.days), keys[b.rng.randrange(archive)], "trickle")


def zipf_mix(b: Builder, *, catalog: int = 3000, per_day: float = 250.0, alpha: float = 0.9) -> None:
    """Heavy-tailed popularity (Zipf) and sizes from KB to hundreds of GB, popularity drifting over time."""
    keys = [b.dataset(f"mix/k{i:05d}", b.size(300 * MB, 2.6), written_at=None) for i in range(catalog)]
    order = keys[:]
    for day in range(b.days):
        if day % 14 == 0:  # popularity drifts: a tenth of the ranks swap every two weeks
            for _ in range(catalog // 10):
                i, j = b.rng.randrange(catalog), b.rng.randrange(catalog)
                order[i], order[j] = order[j], order[i]
        for _ in range(_poisson(b.rng, per_day)):
            key = order[zipf_pick(b.rng, catalog, alpha)]
            b.read(b.when(day + b.rng.random()), key, f"user-{b.rng.randint(0, 50)}")


def _poisson(rng: random.Random, lam: float) -> int:
    n, t = 0, rng.expovariate(1.0)
    while t < lam:
        n += 1
        t += rng.expovariate(1.0)
    return n


Pattern = Callable[[Builder], None]


def _compose(*parts: Pattern) -> Pattern:
    def build(b: Builder) -> None:
        for part in parts:
            part(b)
    return build


#: name -> (set, seed, days, pattern); tuning traces only ever tune the knobs, held-out ones only report
SUITE: dict[str, tuple[str, int, int, Pattern]] = {
    "tune-training": ("tuning", 11, 90, lambda b: training(b)),
    "tune-fresh": ("tuning", 12, 90, lambda b: _compose(fresh, lambda x: training(x, catalog=100))(b)),
    "tune-serving": ("tuning", 13, 90, lambda b: _compose(serving, lambda x: scans(x, catalog=800, per_day=20))(b)),
    "tune-mix": ("tuning", 14, 120, lambda b: _compose(
        lambda x: zipf_mix(x, catalog=2000, per_day=150), lambda x: training(x, catalog=150, jobs_per_day=1.5),
        lambda x: fresh(x, per_day=3), lambda x: restore_burst(x, archive=300))(b)),
    "heldout-retraining": ("heldout", 21, 90, lambda b: _compose(
        retraining, lambda x: scans(x, catalog=1500, per_day=40))(b)),
    "heldout-scans": ("heldout", 22, 90, lambda b: _compose(
        lambda x: scans(x, per_day=120), lambda x: serving(x, models=20))(b)),
    "heldout-restore": ("heldout", 23, 120, lambda b: _compose(
        lambda x: restore_burst(x, archive=1000), lambda x: training(x, catalog=200, jobs_per_day=2),
        lambda x: fresh(x, per_day=4))(b)),
    "heldout-mix": ("heldout", 24, 120, lambda b: _compose(
        lambda x: zipf_mix(x, catalog=2600, per_day=300, alpha=1.1), lambda x: serving(x, models=25),
        lambda x: training(x, catalog=250, jobs_per_day=2, alpha=1.2), lambda x: fresh(x, per_day=5),
        lambda x: retraining(x, sets=30, period=14))(b)),
}


def build(name: str) -> list[Event]:
    """The events of trace ``name``, sorted by time."""
    _, seed, days, pattern = SUITE[name]
    b = Builder(random.Random(seed), days)
    pattern(b)
    return sorted(b.events)


def write_csv(events: list[Event], path: Path) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(("time", "key", "size", "op", "reader"))
        out.writerows(events)


def write_s3_access_log(events: list[Event], path: Path, bucket: str = "ml-data") -> None:
    with path.open("w") as fh:
        for n, (at, key, size, op, reader) in enumerate(events):
            stamp = datetime.fromtimestamp(at, UTC).strftime("[%d/%b/%Y:%H:%M:%S +0000]")
            operation = {"read": "REST.GET.OBJECT", "write": "REST.PUT.OBJECT", "delete": "REST.DELETE.OBJECT"}[op]
            verb = {"read": "GET", "write": "PUT", "delete": "DELETE"}[op]
            sent = size if op == "read" else "-"
            fh.write(f"79a5 {bucket} {stamp} 10.0.0.1 arn:aws:iam::1:user/{reader} REQ{n:08d} {operation} {key} "
                     f'"{verb} /{bucket}/{key} HTTP/1.1" 200 - {sent} {size} 12 10 "-" "trainer/1.0" - '
                     f"hostid SigV4 ECDHE-RSA-AES128-GCM-SHA256 AuthHeader s3.local TLSv1.2 - -\n")


def write_minio_audit(events: list[Event], path: Path, bucket: str = "ml-data") -> None:
    with path.open("w") as fh:
        for at, key, size, op, reader in events:
            name = {"read": "GetObject", "write": "PutObject", "delete": "DeleteObject"}[op]
            api = {"name": name, "bucket": bucket, "object": key, "status": "OK", "statusCode": 200,
                   "rx": size if op == "write" else 0, "tx": size if op == "read" else 0}
            doc = {"version": "1", "deploymentid": "d1",
                   "time": datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
                   "api": api, "remotehost": "10.0.0.1", "accessKey": reader}
            fh.write(json.dumps(doc, separators=(",", ":")) + "\n")


def write_suite(out: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the suite (or ``names``) into ``out``; the written files by trace name."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name in names or list(SUITE):
        events = build(name)
        files[name] = out / f"{name}.csv"
        write_csv(events, files[name])
        if name == "heldout-mix":
            files["heldout-mix.s3"] = out / "heldout-mix.s3.log"
            write_s3_access_log(events, files["heldout-mix.s3"])
            files["heldout-mix.minio"] = out / "heldout-mix.minio.jsonl"
            write_minio_audit(events, files["heldout-mix.minio"])
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    args = p.parse_args()
    for name, path in write_suite(args.out).items():
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
