"""The benchmark harness still runs: every benchmark once, on tiny data, through ``python -m bench all``.

No timing is asserted (timings belong to ``bench/``, not to tests): this proves that the servers start,
that ours and every installed peer complete each workload on the same data and produce what was asked
(the harness checks object counts and bytes after each run), and that the JSON report is complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import ServerUnavailable, find_weed

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_every_benchmark_runs_on_tiny_data_and_reports_each_workload(tmp_path: Path) -> None:
    try:
        find_weed()
    except ServerUnavailable as exc:
        if os.environ.get("TIERING_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{exc}\n(TIERING_REQUIRE_SERVERS=1 turns this skip into a failure)", pytrace=False)
        pytest.skip(str(exc))
    out = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--sizes", "tiny", "--reps", "1", "--shapes", "8x256KiB",
         "--plan-sizes", "200", "--ingest-lines", "500", "--out", str(out), "--workdir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())

    rows = doc["rows"]
    for workload in ("register", "copy", "read"):
        ours = [r for r in rows if r["workload"] == workload and r["is_ours"]]
        assert ours, f"no row of ours for {workload}"
        assert all(s["ok"] for r in ours for s in r["samples"]), ours
        peers = [r for r in rows if r["workload"] == workload and not r["is_ours"] and not r["skipped"]]
        assert peers, f"no peer ran for {workload}"
        assert all(r["samples"] and all(s["ok"] for s in r["samples"]) for r in peers), peers
    assert {"none", "stream", "auto", "readback"} <= set(doc["hashing"])
    assert doc["hashing"]["xxh3_one_call_gb_s"] > 0
    plans = [p for p in doc["plan"]["results"] if "skipped" not in p]
    assert plans and all("plan_seconds" in p and p["peak_rss_mib"] > 0 for p in plans), doc["plan"]
    assert doc["ingest"]["result"]["events"] > 0
    webhook = doc["webhook"]["result"]
    assert webhook["ok"] > 0 and webhook["reads_counted"] == webhook["ok"], webhook
    assert "vs best peer" in proc.stdout
