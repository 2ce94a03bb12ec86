"""The concurrency drill: CLI processes that overlap on two SeaweedFS tiers and one PostgreSQL catalog.

A registration beside a move, reads of a dataset while it moves (every read gives the right bytes or a clean
error, never wrong bytes), two moves of one dataset at once, two registrations of one name@version at once,
and two schedulers whose leader loses its lock connection. After each, the invariant of DESIGN.md section 5
is checked from the outside (plain SQL, boto3, xxh3-128 of every byte).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import (
    SeaweedTiers,
    check_invariant_over_s3,
    open_app,
    run_cli,
    start_cli,
    workspace_config,
    write_config,
)
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tiering import datasets, registration
from tiering.catalog.models import Dataset, MoveJob
from tiering.errors import TieringError

pytestmark = pytest.mark.slow

MiB = 2**20
#: part size and threshold at the S3 minimum, so the multi-MiB members take multipart uploads
TRANSFER = {"workers": 8, "part_size": "5MiB", "multipart_threshold": "5MiB"}


def sample(seed: int, *, small: int = 40, large: int = 2) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"part-{i % 3}/f{i:03d}.bin": rng.randbytes(rng.randint(0, 30_000)) for i in range(small)}
    files.update({f"weights/w{i}.bin": rng.randbytes(5 * MiB + rng.randint(1, 2 * MiB)) for i in range(large)})
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, payload in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)
    return root


@dataclass
class Drill:
    tmp_path: Path
    tiers: SeaweedTiers
    catalog_url: str
    data: dict[str, Any]
    config: Path

    def register(self, label: str, files: dict[str, bytes], tier: str) -> None:
        name, version = label.split("@")
        app = open_app(self.data)
        try:
            registration.register(app, str(write_tree(self.tmp_path / "src" / label, files)), name=name,
                                  version=version, tier=tier)
        finally:
            app.close()

    def invariant(self, expected: dict[str, dict[str, bytes]]) -> list[str]:
        return check_invariant_over_s3(self.catalog_url, self.tiers.views, after_crash=False, expected=expected)

    def home(self, label: str) -> str:
        app = open_app(self.data)
        try:
            return datasets.resolve(app, label, record=False).tier
        finally:
            app.close()


@pytest.fixture
def drill(tmp_path: Path, seaweed_tiers: SeaweedTiers, postgres_url: str) -> Drill:
    data = workspace_config(tmp_path, tiers=seaweed_tiers.config, catalog=postgres_url, transfer=TRANSFER)
    open_app(data).close()  # the catalog's schema
    return Drill(tmp_path, seaweed_tiers, postgres_url, data, write_config(tmp_path, data))


def one_clean_line(stderr: str) -> bool:
    lines = stderr.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr


def test_a_registration_beside_a_move_of_another_dataset_leaves_both_whole(drill: Drill) -> None:
    moving, arriving = sample(1), sample(2, small=60, large=1)
    drill.register("moving@1", moving, "hot")
    src = write_tree(drill.tmp_path / "src" / "arriving@1", arriving)

    move = start_cli(drill.config, "move", "moving@1", "--to", "warm", "--no-progress")
    # onto the tier the move writes to, under its own prefix
    register = start_cli(drill.config, "register", str(src), "--name", "arriving", "--version", "1", "--tier", "warm")
    move_err, register_err = move.communicate(timeout=120)[1], register.communicate(timeout=120)[1]

    assert (move.returncode, register.returncode) == (0, 0), (move_err, register_err)
    assert drill.home("moving@1") == "warm" and drill.home("arriving@1") == "warm"
    assert drill.invariant({"moving@1": moving, "arriving@1": arriving}) == []


@dataclass
class Reads:
    """What the readers saw: each read's kind and result, whether a move was running when it began."""

    results: Counter[tuple[str, str]] = field(default_factory=Counter)
    during_move: int = 0
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, result: str, *, moving: bool, wrong: str | None = None) -> None:
        with self.lock:
            self.results[(kind, result)] += 1
            self.during_move += moving
            if wrong is not None:
                self.wrong.append(f"{kind}: {wrong}")


def test_reads_of_a_dataset_while_it_moves_both_ways_give_its_bytes_or_a_clean_error_never_wrong_bytes(
    drill: Drill,
) -> None:
    files = sample(3, small=80, large=2)
    drill.register("busy@1", files, "hot")
    paths = sorted(files)
    views = {view.client.meta.endpoint_url: view for view in drill.tiers.views.values()}
    moving = threading.Event()
    stop = threading.Event()
    reads = Reads()

    def member_through_cli(rng: random.Random) -> None:
        out = drill.tmp_path / "out.bin"
        while not stop.is_set():
            path, during = rng.choice(paths), moving.is_set()
            out.unlink(missing_ok=True)
            got = run_cli(drill.config, "show", "member", "busy@1", path, "--out", str(out))
            if got.returncode == 0:
                ok = out.read_bytes() == files[path]
                reads.add("show member", "ok" if ok else "WRONG", moving=during, wrong=None if ok else path)
            else:
                clean = one_clean_line(got.stderr) and not out.exists() and got.returncode in (3, 6)
                reads.add("show member", f"exit {got.returncode}", moving=during,
                          wrong=None if clean else f"{path}: exit {got.returncode}: {got.stderr.strip()}")

    def resolve_then_read_with_boto3(rng: random.Random) -> None:
        while not stop.is_set():
            during = moving.is_set()
            shown = run_cli(drill.config, "show", "busy@1", "--json")
            if shown.returncode != 0 or json.loads(shown.stdout)["dataset"]["members"] != len(files):
                reads.add("show", "WRONG", moving=during, wrong=shown.stderr or shown.stdout[:300])
            got = run_cli(drill.config, "resolve", "busy@1", "--json", "--no-record")
            if got.returncode != 0:
                reads.add("resolve", f"exit {got.returncode}", moving=during, wrong=got.stderr.strip())
                continue
            where = json.loads(got.stdout)
            view = views[where["endpoint"]]
            assert where["bucket"] == view.bucket
            for path in rng.sample(paths, 10):
                try:
                    body = view.client.get_object(Bucket=where["bucket"], Key=where["prefix"] + path)["Body"].read()
                except view.client.exceptions.NoSuchKey:
                    reads.add("resolve + GET", "NoSuchKey", moving=during)  # moved on: resolve again
                    continue
                ok = body == files[path]
                reads.add("resolve + GET", "ok" if ok else "WRONG", moving=during, wrong=None if ok else path)

    def member_through_python(rng: random.Random) -> None:
        app = open_app(drill.data)
        try:
            while not stop.is_set():
                path, during = rng.choice(paths), moving.is_set()
                sink = io.BytesIO()
                try:
                    datasets.read_member(app, "busy@1", path, sink)
                except TieringError as exc:
                    clean = exc.exit_code in (3, 6) and "\n" not in str(exc)
                    reads.add("read_member", type(exc).__name__, moving=during, wrong=None if clean else repr(exc))
                    continue
                ok = sink.getvalue() == files[path]
                reads.add("read_member", "ok" if ok else "WRONG", moving=during, wrong=None if ok else path)
                time.sleep(0.01)
        finally:
            app.close()

    readers = [
        threading.Thread(target=fn, args=(random.Random(i),), daemon=True)
        for i, fn in enumerate((member_through_cli, resolve_then_read_with_boto3, member_through_python))
    ]
    for t in readers:
        t.start()
    try:
        time.sleep(1.0)  # readers under way before the first move starts
        for dst in ("warm", "hot"):
            moving.set()
            moved = run_cli(drill.config, "move", "busy@1", "--to", dst, "--no-progress")
            moving.clear()
            assert moved.returncode == 0, moved.stderr
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=120)
    print(f"\nreads during moves: {reads.during_move}; {dict(reads.results)}")
    assert reads.wrong == []
    assert reads.during_move >= 20
    assert sum(n for (_kind, result), n in reads.results.items() if result == "ok") >= 20
    assert drill.home("busy@1") == "hot"
    assert drill.invariant({"busy@1": files}) == []


def test_two_moves_of_one_dataset_at_once_refuse_one_with_exit_4_and_keep_every_byte(drill: Drill) -> None:
    files = sample(4, small=30, large=3)
    drill.register("twice@1", files, "hot")
    engine = create_engine(drill.catalog_url, poolclass=NullPool)

    def job_written() -> bool:
        with engine.connect() as conn:
            return conn.execute(select(MoveJob.id)).first() is not None

    # the first is held right after it wrote its job (a slow copy), so the second surely meets it
    first = start_cli(drill.config, "move", "twice@1", "--to", "warm", "--no-progress")
    try:
        wait_for(lambda: job_written() or first.poll() is not None, 60, "the first move's job")
        os.kill(first.pid, signal.SIGSTOP)
        second = run_cli(drill.config, "move", "twice@1", "--to", "warm", "--no-progress")
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first_err = first.communicate(timeout=120)[1]
        engine.dispose()
    assert (first.returncode, second.returncode) == (0, 4), (first_err, second.stderr)
    assert one_clean_line(second.stderr) and "twice@1" in second.stderr, second.stderr
    assert "unfinished move job" in second.stderr
    assert drill.home("twice@1") == "warm"
    assert drill.invariant({"twice@1": files}) == []

    # back, both started at the same moment: never two moves of one dataset; one may also come after the end
    procs = [start_cli(drill.config, "move", "twice@1", "--to", "hot", "--no-progress") for _ in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 4], [0, 2]), (codes, errs)
    refused = errs[[p.returncode for p in procs].index(codes[1])]
    assert one_clean_line(refused), refused
    assert ("unfinished move job" if codes[1] == 4 else "already on tier hot") in refused
    assert drill.home("twice@1") == "hot"
    assert drill.invariant({"twice@1": files}) == []
    # the refused ones left nothing to resume
    assert run_cli(drill.config, "resume", "--no-progress").stdout.strip() == "no unfinished move jobs"


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what}: not reached in {timeout:.0f} s")


def test_two_registrations_of_one_name_and_version_with_different_contents_accept_one_and_refuse_the_other(
    drill: Drill,
) -> None:
    first, second = sample(5, small=10, large=3), sample(6, small=10, large=3)
    assert sorted(first) == sorted(second) and first != second  # same paths, other bytes
    src1 = write_tree(drill.tmp_path / "src1", first)
    src2 = write_tree(drill.tmp_path / "src2", second)
    engine = create_engine(drill.catalog_url, poolclass=NullPool)

    def registering() -> bool:
        with engine.connect() as conn:
            return conn.execute(select(Dataset.state).where(Dataset.name == "same")).scalar() == "registering"

    proc1 = start_cli(drill.config, "register", str(src1), "--name", "same", "--version", "1", "--tier", "hot")
    try:
        # the first has claimed name@version and is uploading: hold it there (a slow network, a GC pause)
        # while the second runs from start to end, then let it go on
        wait_for(lambda: registering() or proc1.poll() is not None, 60, "first registration under way")
        os.kill(proc1.pid, signal.SIGSTOP)
        proc2 = start_cli(drill.config, "register", str(src2), "--name", "same", "--version", "1", "--tier", "hot")
        try:
            proc2.wait(timeout=15)
        except subprocess.TimeoutExpired:  # the second waits for the first: let the first go on
            os.kill(proc1.pid, signal.SIGCONT)
        err2 = proc2.communicate(timeout=120)[1]
    finally:
        os.kill(proc1.pid, signal.SIGCONT)
        err1 = proc1.communicate(timeout=120)[1]
        engine.dispose()

    codes = (proc1.returncode, proc2.returncode)
    # whoever the catalog names, the tier holds its bytes
    catalog_says = {"same@1": first if proc1.returncode == 0 else second}
    problems = drill.invariant(catalog_says)
    assert sorted(codes) == [0, 4] and problems == [], (codes, err1, err2, problems[:5])
    assert one_clean_line(err2 if proc1.returncode == 0 else err1)


POLICY = """
heat_half_life_days: 7
rules:
  - name: everything-down
    move: {from: hot, to: warm}
    when: {age_days: ">= 0"}
"""


def test_a_scheduler_whose_lock_connection_is_killed_stops_leading_when_the_standby_takes_over(
    drill: Drill,
) -> None:
    policy = drill.tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    logs = [drill.tmp_path / f"scheduler{i}.log" for i in range(2)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for log in logs:
            with open(log, "wb") as fh:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "tiering", "--config", str(drill.config), "scheduler", "--policy",
                     str(policy), "--standby-poll", "0.5"],
                    stdout=subprocess.DEVNULL, stderr=fh, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                ))

        def texts() -> list[str]:
            return [log.read_text() for log in logs]

        wait_for(lambda: sum("leader:" in t for t in texts()) == 1 and sum("standby" in t for t in texts()) == 1,
                 60, "one leader and one standby")
        leader = ["leader:" in t for t in texts()].index(True)
        standby = 1 - leader
        seen_before = len(texts()[leader])

        url = make_url(drill.catalog_url)
        with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False),
                             autocommit=True) as conn:
            holders = conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
            assert len(holders) == 1, holders
            conn.execute("SELECT pg_terminate_backend(%s)", (holders[0][0],))

        wait_for(lambda: "leader:" in texts()[standby] or "leader:" in texts()[leader][seen_before:], 30,
                 "a leader after the lock connection was killed")
        if "leader:" in texts()[standby]:
            # the standby took over: the old leader must stop leading (exit, or say it lost the lock)
            try:
                wait_for(lambda: procs[leader].poll() is not None
                         or any(w in texts()[leader][seen_before:].lower() for w in ("standby", "lost")),
                         10, "the old leader stops leading")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; two leaders at once:\n{texts()[leader]}") from None
        else:
            # the old leader took its lock back: the other stays on standby through several of its polls
            time.sleep(2)
            assert "leader:" not in texts()[standby], texts()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
