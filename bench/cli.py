"""``python -m bench {all,copy,register,read,plan,ingest,webhook,hashing} [--quick|--sizes tiny] [--out FILE]``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.core import SIZES, Row, format_markdown, format_table

TRANSFER_WORKLOADS = ("register", "copy", "read")
WORKLOADS = (*TRANSFER_WORKLOADS, "hashing", "plan", "ingest", "webhook")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("workload", choices=("all", *WORKLOADS))
    p.add_argument("--quick", action="store_true", help="small sizes (same as --sizes quick)")
    p.add_argument("--sizes", choices=sorted(SIZES), default=None, help="data sizes (default full)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per tool (median reported; default 3)")
    p.add_argument("--tools", default=None,
                   help="comma-separated tools to run (tiering,rclone,s5cmd,aws-cli,boto3-tm,minio-py)")
    p.add_argument("--shapes", default=None, help="comma-separated shape names to keep, e.g. 1000x1MiB")
    p.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the table as Markdown here")
    p.add_argument("--workdir", type=Path, default=None, help="where servers and data live (default: TMPDIR)")
    p.add_argument("--plan-sizes", default=None, help="datasets for plan, e.g. 100000,1000000")
    p.add_argument("--ingest-lines", type=int, default=None, help="log lines for ingest (0 skips it)")
    p.add_argument("--webhook-seconds", type=float, default=None,
                   help="seconds of webhook load from 64 senders (0 skips it)")
    p.add_argument("--hash-bytes", type=int, default=None, help="bytes for the hashing benchmark")
    p.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
                   help="an admin libpq URL; plan makes its own database there ('' to skip PostgreSQL)")
    p.add_argument("--transfer", action="append", default=[], metavar="KEY=VALUE",
                   help="override a transfer setting of ours (e.g. verify=stream); repeatable")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    size_name = args.sizes or ("quick" if args.quick else "full")
    shapes = SIZES[size_name]
    if args.shapes:
        keep = set(args.shapes.split(","))
        shapes = [s for s in shapes if s.name in keep]
    tools = args.tools.split(",") if args.tools else None
    transfer: dict[str, Any] = {}
    for item in args.transfer:
        key, _, value = item.partition("=")
        transfer[key] = value
    wanted = WORKLOADS if args.workload == "all" else (args.workload,)
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    started = time.monotonic()

    if any(w in TRANSFER_WORKLOADS for w in wanted) or "hashing" in wanted:
        from bench.transfer import environment, run_copy, run_read, run_register

        with environment(args.workdir, transfer) as env:
            if "register" in wanted:
                run_register(env, shapes, args.reps, tools, rows)
            if "copy" in wanted:
                run_copy(env, shapes, args.reps, tools, rows)
            if "read" in wanted:
                read_shapes = [s for s in shapes if s.count > 1] or shapes
                run_read(env, read_shapes, args.reps, tools, rows)
            if "hashing" in wanted:
                from bench.hashing import run_hashing

                extra["hashing"] = run_hashing(env, size_name, args.hash_bytes, args.reps)
    if "plan" in wanted:
        from bench.catalog import run_plan

        extra["plan"] = run_plan(size_name, args.plan_sizes, args.postgres, args.workdir)
    if "ingest" in wanted:
        from bench.catalog import run_ingest

        extra["ingest"] = run_ingest(size_name, args.ingest_lines, args.workdir)
    if "webhook" in wanted:
        from bench.webhook import run_webhook

        extra["webhook"] = run_webhook(size_name, args.webhook_seconds, args.workdir)

    elapsed = time.monotonic() - started
    if rows:
        print()
        print(format_table(rows))
        for r in rows:
            failed = [s.detail for s in r.samples if not s.ok]
            if failed:
                print(f"  {r.workload} {r.shape} {r.tool}: {len(failed)} failed run(s): {failed[0]}")
        notes = sorted({f"{r.tool}: {r.note}" for r in rows if r.note and not r.is_ours})
        if notes:
            print("\npeers as run:\n  " + "\n  ".join(notes))
        skipped = sorted({f"{r.tool}: {r.skipped}" for r in rows if r.skipped})
        if skipped:
            print("\nskipped:\n  " + "\n  ".join(skipped))
    for name, section in extra.items():
        print(f"\n{name}:")
        for line in section.get("lines", []):
            print("  " + line)
    print(f"\nbench wall time {elapsed:.0f} s")

    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "sizes": size_name, "reps": args.reps, "transfer_overrides": transfer,
        "wall_seconds": elapsed,
        "rows": [r.as_dict() for r in rows],
        **{k: {kk: vv for kk, vv in v.items() if kk != "lines"} for k, v in extra.items()},
    }
    if rows:
        from bench.transfer import tool_versions

        doc["versions"] = tool_versions()
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2))
    if args.markdown and rows:
        args.markdown.write_text(format_markdown(rows) + "\n")
    failures = sum(1 for r in rows for s in r.samples if not s.ok)
    return 1 if failures else 0
