"""``python -m bench.placement [--traces DIR] [--out FILE] [--markdown FILE] [--tune] [--scores]``.

Replays the trace suite of bench/traces (written by ``make_traces`` into ``--traces``, a temporary directory by
default) through :func:`tiering.lifecycle.simulate.run` at 5%, 10% and 20% hot capacity, for ours and every baseline,
and prints trace x capacity with the hot hit ratio by requests of each, the ratios ours / best online
baseline and ours / oracle, and ours' bytes moved over that baseline's. ``--scores`` compares the candidate
scores of :data:`tiering.lifecycle.placement.SCORES`; ``--tune`` searches the knobs on the tuning traces only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.traces.make_traces import SUITE, write_suite
from tiering.access.traces import Trace, read_trace
from tiering.lifecycle.placement import SCORES, Knobs
from tiering.lifecycle.simulate import SimSettings, capacity_bytes, run

CAPACITIES = ("5%", "10%", "20%")
ONLINE = ("lru", "lfu", "s3-it-capped")
OURS = "policy:default"


def trace_set(name: str) -> str:
    return SUITE[name.split(".")[0]][0]


def load_suite(directory: Path | None) -> dict[str, Trace]:
    out = directory or Path(tempfile.mkdtemp(prefix="placement-traces-"))
    files = write_suite(out)
    return {name: read_trace(path) for name, path in files.items()}


def evaluate(trace: Trace, cap: str, *, knobs: Knobs, settings: SimSettings,
             policies: tuple[str, ...] = (OURS, *ONLINE, "s3-it", "oracle")) -> dict[str, dict[str, Any]]:
    hot = capacity_bytes(trace, cap)
    return {p: run(trace, p, hot_bytes=hot, knobs=knobs, settings=settings) for p in policies}


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    best = max(ONLINE, key=lambda p: (runs[p]["hot_hit_requests"], -runs[p]["bytes_moved"]))
    ours = runs[OURS]
    b = runs[best]
    return {
        "best_online": best,
        "vs_best": ours["hot_hit_requests"] / b["hot_hit_requests"] if b["hot_hit_requests"] else float("inf"),
        "vs_oracle": ours["hot_hit_requests"] / runs["oracle"]["hot_hit_requests"]
        if runs["oracle"]["hot_hit_requests"] else float("inf"),
        "moved_vs_best": ours["bytes_moved"] / b["bytes_moved"] if b["bytes_moved"] else float("inf"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| set | trace | hot | ours | lru | lfu | s3-it capped | oracle | ours/best online | ours/oracle "
            "| moved ours/best | ours pingpongs | s3-it peak hot |")
    lines = [head, "|" + "---|" * head.count("|")[:-1] if False else "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        runs = r["runs"]
        s = r["summary"]
        peak = runs["s3-it"]["peak_hot_bytes"] / r["total_bytes"] * 100
        lines.append(
            f"| {r['set']} | {r['trace']} | {r['capacity']} | "
            + " | ".join(f"{runs[p]['hot_hit_requests']:.3f}" for p in (OURS, *ONLINE, "oracle"))
            + f" | {s['vs_best']:.2f}x ({s['best_online']}) | {s['vs_oracle']:.2f}x | {s['moved_vs_best']:.2f}x"
            f" | {runs[OURS]['pingpongs']} | {peak:.0f}% |")
    return "\n".join(lines)


def tune(traces: dict[str, Trace], settings: SimSettings) -> list[dict[str, Any]]:
    """Grid over the knobs on the tuning traces; by the worst ours/best-online, then the mean."""
    tuning = {n: t for n, t in traces.items() if trace_set(n) == "tuning"}
    baselines = {(n, c): evaluate(t, c, knobs=Knobs(), settings=settings, policies=ONLINE)
                 for n, t in tuning.items() for c in CAPACITIES}
    results = []
    grid: list[dict[str, Any]] = []
    for hyst, cost in itertools.product((0.1, 0.5), (0.02, 0.2)):
        grid += [{"score": "lrfu", "half_life_days": h, "hysteresis": hyst, "move_cost_uses_per_gib": cost}
                 for h in (1.0, 3.0, 7.0)]
        grid += [{"score": "gdsf", "gdsf_aging_per_day": a, "hysteresis": hyst, "move_cost_uses_per_gib": cost}
                 for a in (0.2, 1.0, 5.0)]
        grid += [{"score": "recency-size", "hysteresis": hyst, "move_cost_uses_per_gib": cost}]
    for point in grid:
        knobs = Knobs(**point)
        ratios, moved = [], []
        for (n, c), base in baselines.items():
            ours = run(tuning[n], OURS, hot_bytes=capacity_bytes(tuning[n], c), knobs=knobs, settings=settings)
            best = max(base.values(), key=lambda r: r["hot_hit_requests"])
            ratios.append(ours["hot_hit_requests"] / best["hot_hit_requests"])
            moved.append(ours["bytes_moved"] / max(best["bytes_moved"], 1))
        results.append({"knobs": point,
                         "worst": min(ratios), "mean": sum(ratios) / len(ratios), "worst_moved": max(moved)})
        print(json.dumps(results[-1]), flush=True)
    results.sort(key=lambda r: (-r["worst"], -r["mean"]))
    return results


def compare_scores(traces: dict[str, Trace], settings: SimSettings, knobs: Knobs) -> list[dict[str, Any]]:
    """Each candidate score on the tuning traces: mean and worst hot hit ratio relative to the best online."""
    tuning = {n: t for n, t in traces.items() if trace_set(n) == "tuning"}
    out = []
    for score in SCORES:
        k = replace(knobs, score=score)
        ratios = []
        for t in tuning.values():
            for c in CAPACITIES:
                runs = evaluate(t, c, knobs=k, settings=settings, policies=(OURS, *ONLINE))
                best = max(runs[p]["hot_hit_requests"] for p in ONLINE)
                ratios.append(runs[OURS]["hot_hit_requests"] / best)
        out.append({"score": score, "mean_vs_best": sum(ratios) / len(ratios), "worst_vs_best": min(ratios)})
        print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__)
    p.add_argument("--traces", type=Path, default=None, help="where the suite is written (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="write every run as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the table as Markdown here")
    p.add_argument("--tune", action="store_true", help="search the knobs on the tuning traces")
    p.add_argument("--scores", action="store_true", help="compare the candidate scores on the tuning traces")
    p.add_argument("--only", default=None, help="comma-separated trace names to run")
    p.add_argument("--promotion-interval", type=float, default=SimSettings().promotion_interval_s,
                   help="seconds between short passes of ours (0: nightly only)")
    args = p.parse_args(argv)
    settings = SimSettings(promotion_interval_s=args.promotion_interval or None)
    traces = load_suite(args.traces)
    if args.only:
        keep = set(args.only.split(","))
        traces = {n: t for n, t in traces.items() if n in keep}
    if args.tune:
        best = tune(traces, settings)
        print(json.dumps(best[:5], indent=1))
        return 0
    if args.scores:
        compare_scores(traces, settings, Knobs())
        return 0
    rows = []
    started = time.monotonic()
    for name, trace in sorted(traces.items(), key=lambda kv: (trace_set(kv[0]) != "tuning", kv[0])):
        for cap in CAPACITIES:
            runs = evaluate(trace, cap, knobs=Knobs(), settings=settings)
            rows.append({"set": trace_set(name), "trace": name, "capacity": cap, "runs": runs,
                         "summary": summarise(runs), "total_bytes": int(trace.size.sum())})
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(f"\n{text}\n\nknobs: {json.dumps(asdict(Knobs()))}\n{time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.out:
        args.out.write_text(json.dumps({"knobs": asdict(Knobs()), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
