"""Measuring, aggregating and printing: one timed command, medians over repetitions, the ratio table.

A run of a tool is a child process timed from start to exit (what a user waits for, start-up included).
Its CPU seconds come from ``wait4`` (the child and every descendant it waited for); the servers' CPU
seconds are the difference of ``/proc/<pid>/stat`` before and after.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class Shape:
    """``count`` files of ``size`` bytes each."""

    count: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.count}x{format_bytes(self.size)}"

    @property
    def total(self) -> int:
        return self.count * self.size


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


SIZES: dict[str, list[Shape]] = {
    "full": [Shape(1, GiB), Shape(1000, MiB), Shape(5000, 16 * 1024)],
    "quick": [Shape(1, 128 * MiB), Shape(200, MiB), Shape(1000, 16 * 1024)],
    "tiny": [Shape(1, 6 * MiB), Shape(8, 256 * 1024), Shape(20, 4096)],
}


@dataclass
class Sample:
    seconds: float
    client_cpu: float
    server_cpu: float
    ok: bool = True
    detail: str = ""
    #: what the tool itself reported (ours: the seconds inside the command, without start-up)
    inner_seconds: float | None = None


@dataclass
class Row:
    workload: str
    shape: str
    tool: str
    bytes: int
    objects: int
    samples: list[Sample] = field(default_factory=list)
    note: str = ""
    is_ours: bool = False
    skipped: str = ""

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def median_seconds(self) -> float | None:
        good = self.good
        return statistics.median(s.seconds for s in good) if good else None

    def median(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.good if getattr(s, attr) is not None]
        return statistics.median(values) if values else None

    @property
    def mb_per_s(self) -> float | None:
        sec = self.median_seconds
        return self.bytes / sec / 1e6 if sec else None

    @property
    def objects_per_s(self) -> float | None:
        sec = self.median_seconds
        return self.objects / sec if sec else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(median_seconds=self.median_seconds, mb_per_s=self.mb_per_s, objects_per_s=self.objects_per_s,
                   median_client_cpu=self.median("client_cpu"), median_server_cpu=self.median("server_cpu"),
                   median_inner_seconds=self.median("inner_seconds"))
        return out


class ServerCPU:
    """CPU seconds spent by a set of server processes between two readings."""

    def __init__(self, readers: Sequence[Callable[[], float]]) -> None:
        self._readers = readers

    def now(self) -> float:
        return sum(r() for r in self._readers)

    def settle(self, *, window: float = 0.25, busy: float = 0.05, limit: float = 10.0) -> None:
        """Wait (at most ``limit`` s) until the servers spend under ``busy`` of a core over ``window`` s, so a
        run is not charged for work the previous one left behind (Go's GC, volume bookkeeping)."""
        deadline = time.monotonic() + limit
        before = self.now()
        while time.monotonic() < deadline:
            time.sleep(window)
            after = self.now()
            if after - before < busy * window:
                return
            before = after


def run_timed(
    argv: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    servers: ServerCPU | None = None,
    timeout: float = 1800,
) -> tuple[Sample, str, str]:
    """Run a command (``str``: through ``bash -o pipefail -c``) and measure it. Returns (sample, out, err)."""
    if isinstance(argv, str):
        argv = ["bash", "-o", "pipefail", "-c", argv]
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-out-{os.getpid()}-{random.getrandbits(32):08x}"
    # every run starts alike: the previous run's dirty pages written out, the servers idle
    os.sync()
    if servers:
        servers.settle()
    server_before = servers.now() if servers else 0.0
    started = time.monotonic()
    with open(out_path, "wb") as out, open(str(out_path) + ".err", "wb") as err:
        proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    server_cpu = (servers.now() - server_before) if servers else 0.0
    stdout = out_path.read_text(errors="replace")
    stderr = Path(str(out_path) + ".err").read_text(errors="replace")
    out_path.unlink(missing_ok=True)
    Path(str(out_path) + ".err").unlink(missing_ok=True)
    ok = proc.returncode == 0
    detail = "" if ok else f"exit {proc.returncode}: {(stderr or stdout).strip()[-400:]}"
    return Sample(seconds, usage.ru_utime + usage.ru_stime, server_cpu, ok, detail), stdout, stderr


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    if not items:
        return []
    k = by % len(items)
    return list(items[k:]) + list(items[:k])


# -- data -----------------------------------------------------------------------------------------

_BLOCK = 32 * MiB


def _block(seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(rng.randbytes(4 * MiB) for _ in range(_BLOCK // (4 * MiB)))


def make_files(root: Path, shape: Shape, *, seed: int) -> list[Path]:
    """Write ``shape`` as files under ``root`` (100 per directory), incompressible, the same for a seed."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    if shape.size >= _BLOCK:
        for i in range(shape.count):
            path = root / f"part-{i:05d}.bin"
            with open(path, "wb") as fh:
                left, n = shape.size, 0
                while left > 0:
                    chunk = _block(seed * 1_000_003 + i * 4099 + n)[:left]
                    fh.write(chunk)
                    left -= len(chunk)
                    n += 1
            paths.append(path)
        return paths
    block = _block(seed)
    rng = random.Random(seed + 1)
    for i in range(shape.count):
        path = root / f"d{i // 100:03d}" / f"f{i:05d}.bin"
        path.parent.mkdir(exist_ok=True)
        start = rng.randrange(0, _BLOCK - shape.size + 1)
        # the index up front makes every file distinct even where two slices overlap
        data = i.to_bytes(8, "big") + block[start + 8:start + shape.size] if shape.size > 8 else block[:shape.size]
        path.write_bytes(data)
        paths.append(path)
    return paths


# -- the table ------------------------------------------------------------------------------------


def ratios(rows: Sequence[Row]) -> dict[tuple[str, str], float]:
    """Best peer MB/s per (workload, shape)."""
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.is_ours or r.mb_per_s is None:
            continue
        key = (r.workload, r.shape)
        best[key] = max(best.get(key, 0.0), r.mb_per_s)
    return best


def format_table(rows: Sequence[Row]) -> str:
    best = ratios(rows)
    header = ["workload", "shape", "tool", "MB/s", "obj/s", "median s", "client CPU s", "server CPU s",
              "vs best peer", "runs ok"]
    lines = [header]
    for r in rows:
        if r.skipped:
            lines.append([r.workload, r.shape, r.tool, "-", "-", "-", "-", "-", "skipped", r.skipped[:60]])
            continue
        mb, ops, sec = r.mb_per_s, r.objects_per_s, r.median_seconds
        peer = best.get((r.workload, r.shape))
        ratio = f"{mb / peer:.2f}x" if (mb and peer) else "-"
        lines.append([
            r.workload, r.shape, r.tool + (" *" if r.is_ours else ""),
            f"{mb:.1f}" if mb else "-", _ops(ops), f"{sec:.2f}" if sec else "-",
            _fmt(r.median("client_cpu")), _fmt(r.median("server_cpu")), ratio,
            f"{len(r.good)}/{len(r.samples)}",
        ])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = []
    for n, line in enumerate(lines):
        text.append("  ".join(str(c).ljust(widths[i]) if i < 3 else str(c).rjust(widths[i])
                              for i, c in enumerate(line)))
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def format_markdown(rows: Sequence[Row]) -> str:
    best = ratios(rows)
    out = ["| workload | shape | tool | MB/s | objects/s | client CPU s | server CPU s | vs best peer |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.skipped:
            out.append(f"| {r.workload} | {r.shape} | {r.tool} | - | - | - | - | skipped: {r.skipped[:50]} |")
            continue
        mb, ops = r.mb_per_s, r.objects_per_s
        peer = best.get((r.workload, r.shape))
        ratio = f"{mb / peer:.2f}x" if (mb and peer) else "-"
        name = f"**{r.tool}**" if r.is_ours else r.tool
        out.append(f"| {r.workload} | {r.shape} | {name} | {mb:.1f} | {_ops(ops)} | {_fmt(r.median('client_cpu'))} | "
                   f"{_fmt(r.median('server_cpu'))} | {ratio} |" if mb and ops else
                   f"| {r.workload} | {r.shape} | {name} | - | - | - | - | failed |")
    return "\n".join(out)


def _ops(v: float | None) -> str:
    if not v:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def _fmt(v: float | None) -> str:
    return f"{v:.1f}" if v is not None else "-"
