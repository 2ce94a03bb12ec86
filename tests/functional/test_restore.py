"""Restores from a packed cold tier over file tiers with a SQLite catalog and a fixed clock.

Requests, coalescing, priority, cancel, progress and ETA, the expiry sweep, the Glacier protocol against a
fake archive (the real one is in tests/integration), and the CLI. Bytes are read back after every restore.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FixedClock, check_invariant, make_tree, open_app, read_all, run_cli, workspace_config, write_config
from sqlalchemy import delete, func, select

from tiering import datasets, registration
from tiering.app import App
from tiering.catalog.models import AuditEntry, Member, MoveJob, MoveStep, Replica, Tier
from tiering.errors import ArchivedObject, DatasetArchived, RestoreNotFound, UsageError
from tiering.restore.dispatch import dispatch_restores
from tiering.restore.requests import cancel_restore, list_restores, request_restore
from tiering.restore.sweep import sweep_expired
from tiering.storage import FaultyBackend
from tiering.storage.base import Backend, ObjectInfo, ReadStream
from tiering.transfer.copier import Progress
from tiering.transfer.hashing import xxh3_bytes

PACKED_COLD = {"archive": "packed", "pack_threshold": "40KB", "shard_size": "200KB"}


def config(tmp_path: Path, *, cold: dict[str, Any] | None = None) -> dict[str, Any]:
    data = workspace_config(tmp_path)
    data["tiers"]["cold"].update(cold or PACKED_COLD)
    return data


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def archived(app: App, tmp_path: Path, name: str = "d", *, files: int = 20, seed: int = 1) -> dict[str, bytes]:
    """Register ``name@1`` on hot and move it to the packed cold tier; returns its files."""
    content = make_tree(tmp_path / f"src-{name}", files, seed=seed, max_size=60_000)
    registration.register(app, str(tmp_path / f"src-{name}"), name=name, version="1", tier="hot")
    assert datasets.move(app, f"{name}@1", to="cold").state == "done"
    return content


def staged_expiries(app: App, tier: str = "hot") -> set[dt.datetime | None]:
    with app.catalog.session() as s:
        return set(s.scalars(
            select(Replica.expires_at).join(Tier, Tier.id == Replica.tier_id).where(Tier.name == tier)))


def audit_actions(app: App) -> list[str]:
    with app.catalog.session() as s:
        return [a.action for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]


@pytest.fixture
def app(tmp_path: Path, clock: FixedClock) -> Iterator[App]:
    a = open_app(config(tmp_path), clock=clock)
    yield a
    a.close()


def test_resolving_an_archived_dataset_names_the_restore_command_then_the_restore_under_way(
    app: App, tmp_path: Path
) -> None:
    archived(app, tmp_path)
    with pytest.raises(DatasetArchived, match=r"`tiering restore d@1 --to hot --days 7`") as first:
        datasets.resolve(app, "d")
    assert first.value.exit_code == 10
    view = request_restore(app, "d@1", to="hot", days=3, priority="high")
    with pytest.raises(DatasetArchived, match=rf"a restore to hot is queued \(request {view.id}, 0% done\)"):
        datasets.resolve(app, "d")


def test_a_restore_stages_a_verified_copy_until_expiry_and_the_sweep_removes_it_keeping_cold(
    app: App, tmp_path: Path, clock: FixedClock
) -> None:
    files = archived(app, tmp_path)
    cold_before = sorted(i.key for i in app.backend("cold").list(""))
    view = request_restore(app, "d@1", to="hot", days=7)
    report = dispatch_restores(app)
    assert [(g.dataset, g.state) for g in report.groups] == [("d@1", "ready")]

    where = datasets.resolve(app, "d@1")
    assert (where.tier, where.path) == ("hot", str(tmp_path / "tiers/hot/dataset/d/1"))
    for rel, data in files.items():  # unpacked to the original paths, bytes identical
        assert (tmp_path / "tiers/hot/dataset/d/1" / rel).read_bytes() == data
    assert staged_expiries(app) == {clock.now + dt.timedelta(days=7)}
    ready = list_restores(app)[0]
    assert (ready.id, ready.state, ready.progress, ready.expires_at) == (
        view.id, "ready", 1.0, clock.now + dt.timedelta(days=7))
    assert datasets.show(app, "d@1").dataset.tier == "cold"  # the home never moved: cold is the master
    assert check_invariant(app).problems == []

    clock.advance(days=6, hours=23)
    assert sweep_expired(app).removed == []
    assert datasets.resolve(app, "d@1").tier == "hot"
    clock.advance(hours=2)
    swept = sweep_expired(app)
    assert swept.removed == [{"dataset": "d@1", "tier": "hot", "replicas": len(files),
                              "bytes": sum(map(len, files.values()))}]
    assert [i.key for i in app.backend("hot").list("")] == []
    assert sorted(i.key for i in app.backend("cold").list("")) == cold_before
    with pytest.raises(DatasetArchived):
        datasets.resolve(app, "d@1")
    assert list_restores(app, include_finished=True)[0].state == "expired"
    assert audit_actions(app)[-2:] == ["restore", "expire"]
    assert check_invariant(app).problems == []


def test_ten_requests_for_one_dataset_make_one_copy_and_the_latest_expiry_wins(
    tmp_path: Path, clock: FixedClock
) -> None:
    counters: dict[str, FaultyBackend] = {}

    def count(tier: str, backend: Backend) -> Backend:
        counters[tier] = FaultyBackend(backend)
        return counters[tier]

    app = open_app(config(tmp_path), clock=clock, backend_wrapper=count)
    try:
        files = archived(app, tmp_path, files=15)
        puts_before = counters["hot"].calls.get("put", 0)
        views = [request_restore(app, "d@1", to="hot", days=d, requested_by=f"user{d}") for d in range(1, 11)]
        assert {v.state for v in views} == {"queued"}
        dispatch_restores(app)
        assert dispatch_restores(app).groups == []  # nothing left to do
        assert counters["hot"].calls["put"] - puts_before == len(files) + 1  # each member once, plus manifest
        with app.catalog.session() as s:
            restore_jobs = s.scalar(select(func.count(MoveJob.id)).where(MoveJob.purpose == "restore"))
        assert restore_jobs == 1
        assert audit_actions(app).count("restore") == 1
        assert staged_expiries(app) == {clock.now + dt.timedelta(days=10)}
        rows = {r.requested_by: r for r in list_restores(app)}
        assert {r.state for r in rows.values()} == {"ready"}
        assert rows["user3"].expires_at == clock.now + dt.timedelta(days=3)
        # an eleventh request once it is staged copies nothing and only extends the expiry
        later = request_restore(app, "d@1", to="hot", days=20)
        assert (later.state, later.expires_at) == ("ready", clock.now + dt.timedelta(days=20))
        assert staged_expiries(app) == {clock.now + dt.timedelta(days=20)}
        assert counters["hot"].calls["put"] - puts_before == len(files) + 1
        # a shorter request never shortens it
        request_restore(app, "d@1", to="hot", days=1)
        assert staged_expiries(app) == {clock.now + dt.timedelta(days=20)}
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_the_dispatcher_takes_high_priority_first_then_the_oldest(
    app: App, tmp_path: Path, clock: FixedClock
) -> None:
    for i, name in enumerate(("a", "b", "c", "e")):
        archived(app, tmp_path, name, files=4, seed=i)
    order = [("a", "low"), ("b", "normal"), ("c", "high"), ("e", "normal")]
    for name, priority in order:
        request_restore(app, f"{name}@1", to="hot", days=1, priority=priority)
        clock.advance(minutes=1)
    assert [r.dataset for r in list_restores(app)] == ["c@1", "b@1", "e@1", "a@1"]
    served = [g.dataset for _ in range(4) for g in dispatch_restores(app, limit=1).groups]
    assert served == ["c@1", "b@1", "e@1", "a@1"]
    assert {r.state for r in list_restores(app)} == {"ready"}


def test_cancelling_a_queued_request_copies_nothing_and_cancelling_one_of_two_keeps_the_other(
    app: App, tmp_path: Path
) -> None:
    files = archived(app, tmp_path, files=6)
    lone = request_restore(app, "d@1", to="warm", days=2)
    assert cancel_restore(app, lone.id).state == "cancelled"
    assert dispatch_restores(app).groups == []
    assert [i.key for i in app.backend("warm").list("")] == []
    with pytest.raises(UsageError, match="cancelled"):
        cancel_restore(app, lone.id)
    with pytest.raises(RestoreNotFound):
        cancel_restore(app, 999)

    first = request_restore(app, "d@1", to="hot", days=2)
    second = request_restore(app, "d@1", to="hot", days=2)
    cancel_restore(app, first.id)
    assert [(g.request_ids, g.state) for g in dispatch_restores(app).groups] == [([second.id], "ready")]
    for rel, data in files.items():
        assert read_all(app.backend("hot"), f"dataset/d/1/{rel}") == data


def test_cancelling_the_last_ready_request_lets_the_next_sweep_remove_its_copy(
    app: App, tmp_path: Path
) -> None:
    archived(app, tmp_path, files=5)
    view = request_restore(app, "d@1", to="hot", days=30)
    dispatch_restores(app)
    cancel_restore(app, view.id)
    assert sweep_expired(app).removed[0]["replicas"] == 5
    assert [i.key for i in app.backend("hot").list("")] == []
    assert check_invariant(app).problems == []


class StopAfter(Progress):
    """Sets ``stop`` once ``n`` members are done, like a Ctrl-C half way through."""

    def __init__(self, stop: threading.Event, n: int) -> None:
        super().__init__()
        self.stop, self.n = stop, n

    def add(self, nbytes: int, *, failed: bool = False) -> None:
        super().add(nbytes, failed=failed)
        if self.done_objects >= self.n:
            self.stop.set()


def test_progress_and_eta_of_a_partly_done_restore_are_visible_then_it_resumes_without_recopying(
    tmp_path: Path, clock: FixedClock
) -> None:
    counters: dict[str, FaultyBackend] = {}

    def count(tier: str, backend: Backend) -> Backend:
        counters[tier] = FaultyBackend(backend)
        return counters[tier]

    app = open_app(config(tmp_path, cold={"archive": "packed", "pack_threshold": "1B"}), clock=clock,
                   backend_wrapper=count)  # nothing packed: one copy per member, so a stop lands mid-way
    try:
        files = archived(app, tmp_path, files=40)
        total = sum(map(len, files.values()))
        view = request_restore(app, "d@1", to="hot", days=2)
        stop = threading.Event()
        report = dispatch_restores(app, progress=StopAfter(stop, 5), stop=stop)
        assert report.groups[0].state == "running"
        running = list_restores(app)[0]
        assert (running.id, running.state) == (view.id, "running")
        assert 0 < running.bytes_done < total
        assert running.progress == pytest.approx(running.bytes_done / total)
        assert running.eta_seconds is not None and running.eta_seconds > 0
        with pytest.raises(DatasetArchived, match=rf"request {view.id}, \d+% done, ETA"):
            datasets.resolve(app, "d@1")

        clock.advance(seconds=30)
        assert dispatch_restores(app).groups[0].state == "ready"
        # each member written to hot once by the register and once by the restore, plus two manifests
        assert counters["hot"].calls["put"] == 2 * (len(files) + 1)
        for rel, data in files.items():
            assert read_all(app.backend("hot"), f"dataset/d/1/{rel}") == data
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_cancelling_the_only_request_of_a_restore_under_way_stops_it_and_removes_its_partial_copy(
    tmp_path: Path, clock: FixedClock
) -> None:
    app = open_app(config(tmp_path, cold={"archive": "packed", "pack_threshold": "1B"}), clock=clock)
    try:
        archived(app, tmp_path, files=30)
        view = request_restore(app, "d@1", to="hot", days=2)
        stop = threading.Event()
        dispatch_restores(app, progress=StopAfter(stop, 3), stop=stop)
        assert any(True for _ in app.backend("hot").list("dataset/"))  # some members already copied
        assert cancel_restore(app, view.id).state == "cancelled"
        assert [i.key for i in app.backend("hot").list("")] == []
        with app.catalog.session() as s:
            job_states = list(s.scalars(select(MoveJob.state).where(MoveJob.purpose == "restore")))
        assert job_states == ["cancelled"]
        assert dispatch_restores(app).groups == []
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_the_sweep_never_removes_the_last_verified_copy_of_a_member(
    app: App, tmp_path: Path, clock: FixedClock
) -> None:
    files = archived(app, tmp_path, files=5)
    request_restore(app, "d@1", to="hot", days=1)
    dispatch_restores(app)
    lost = sorted(files)[0]
    with app.catalog.session() as s:  # the archive lost one member's copy
        mid = s.scalars(select(Member.id).where(Member.path == lost)).one()
        cold = s.scalars(select(Tier.id).where(Tier.name == "cold")).one()
        s.execute(delete(Replica).where(Replica.member_id == mid, Replica.tier_id == cold))
    clock.advance(days=2)
    report = sweep_expired(app)
    assert report.kept_last_copy == 1
    assert [i.key for i in app.backend("hot").list("dataset/") if "/_tiering/" not in i.key] == [
        f"dataset/d/1/{lost}"]
    assert read_all(app.backend("hot"), f"dataset/d/1/{lost}") == files[lost]
    with app.catalog.session() as s:
        last = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    assert last is not None and (last.action, last.result, last.detail["kept_last_copy"]) == ("expire", "partial", 1)


def test_a_restore_with_one_corrupt_member_restores_the_others_names_it_on_one_line_and_a_retry_finishes(
    app: App, tmp_path: Path
) -> None:
    files = archived(app, tmp_path, files=8)
    victim = sorted(p for p, b in files.items() if len(b) < 40_000)[0]
    with app.catalog.session() as s:
        key, offset = s.execute(
            select(Replica.key, Replica.shard_offset).join(Member, Member.id == Replica.member_id)
            .join(Tier, Tier.id == Replica.tier_id).where(Member.path == victim, Tier.name == "cold")
        ).one()
    assert offset is not None  # a packed member
    shard = tmp_path / "tiers/cold" / key
    good_bytes = shard.read_bytes()
    raw = bytearray(good_bytes)
    raw[offset] ^= 0x55
    shard.write_bytes(bytes(raw))

    view = request_restore(app, "d@1", to="hot", days=1)
    report = dispatch_restores(app)
    assert report.groups[0].state == "partial"
    failed = list_restores(app, include_finished=True)[0]
    assert (failed.id, failed.state) == (view.id, "failed")
    assert failed.last_error is not None
    head, *lines = failed.last_error.splitlines()
    assert head.startswith("restore of d@1 to hot failed for 1 of 8 members; 7 are readable there")
    expected_digest = xxh3_bytes(files[victim])
    actual_digest = xxh3_bytes(bytes(raw[offset:offset + len(files[victim])]))
    assert lines == [f"d@1:{victim}: cold:{key} at offset {offset}: corrupt archive copy: hashes to "
                     f"{actual_digest} ({len(files[victim])} bytes), catalog says {expected_digest} "
                     f"({len(files[victim])} bytes)"]
    # every member that verified is readable on hot; the bad one is not copied there
    hot = app.backend("hot")
    for path, data in files.items():
        if path == victim:
            assert list(hot.list(f"dataset/d/1/{path}")) == []
        else:
            assert read_all(hot, f"dataset/d/1/{path}") == data
    with pytest.raises(DatasetArchived):
        datasets.resolve(app, "d@1")  # not whole: the dataset still resolves only by restoring it

    # the archive copy is repaired: a new request copies only the missing member and finishes
    shard.write_bytes(good_bytes)
    again = request_restore(app, "d@1", to="hot", days=1)
    assert dispatch_restores(app).groups[0].state == "ready"
    assert [r.state for r in list_restores(app) if r.id == again.id] == ["ready"]
    with app.catalog.session() as s:
        job_id = s.scalar(select(MoveJob.id).order_by(MoveJob.id.desc()).limit(1))
        copied = s.scalar(select(func.count()).select_from(MoveStep).where(
            MoveStep.job_id == job_id, MoveStep.attempts > 0))
    assert copied == 1
    assert datasets.resolve(app, "d@1").tier == "hot"
    for path, data in files.items():
        assert read_all(hot, f"dataset/d/1/{path}") == data
    assert check_invariant(app).problems == []


class FakeArchive(FaultyBackend):
    """Glacier semantics over any backend: every object is archived until asked for with
    ``request_restore``, then readable after ``delay`` more ``head`` calls."""

    def __init__(self, inner: Backend, delay: int) -> None:
        super().__init__(inner)
        self.delay = delay
        self.asked: list[tuple[str, int, str]] = []
        self._left: dict[str, int] = {}

    def request_restore(self, key: str, *, days: int, retrieval_tier: str = "Standard") -> None:
        self.asked.append((key, days, retrieval_tier))
        self._left.setdefault(key, self.delay)

    def head(self, key: str) -> ObjectInfo:
        info = super().head(key)
        if self._left.get(key, 0) > 0:
            self._left[key] -= 1
        archived = self._left.get(key, 1) > 0
        return dataclasses.replace(info, storage_class="GLACIER", archived=archived,
                                   restore_in_progress=archived and key in self._left)

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        if self._left.get(key, 1) > 0:
            raise ArchivedObject(f"{key} is in GLACIER", backend=self.url, key=key)
        return super().open_read(key, offset=offset, length=length)


def test_a_glacier_tier_is_asked_once_per_object_with_the_priority_tier_and_polled_until_readable(
    tmp_path: Path, clock: FixedClock
) -> None:
    archive: dict[str, FakeArchive] = {}

    def glacier(tier: str, backend: Backend) -> Backend:
        if tier != "cold":
            return backend
        archive["cold"] = FakeArchive(backend, delay=4)
        return archive["cold"]

    app = open_app(config(tmp_path, cold={"archive": "glacier", "pack_threshold": "40KB", "shard_size": "200KB"}),
                   clock=clock, backend_wrapper=glacier)
    try:
        files = archived(app, tmp_path, files=20)
        with pytest.raises(DatasetArchived, match="tiering restore d@1"):
            datasets.read_member(app, "d@1", sorted(files)[0], io.BytesIO())
        objects = {i.key for i in app.backend("cold").list("dataset/") if "/_tiering/" not in i.key}
        assert any("/_shards/" in k for k in objects) and len(objects) < len(files)

        request_restore(app, "d@1", to="hot", days=3, priority="high")
        waiting = dispatch_restores(app)  # max_wait_seconds=0: ask, look once, come back later
        assert waiting.groups[0].state == "running"
        assert sorted(k for k, _, _ in archive["cold"].asked) == sorted(objects)
        assert {(d, t) for _, d, t in archive["cold"].asked} == {(2, "Expedited")}
        assert list_restores(app)[0].note == "waiting for the archive to make the objects readable"

        slept: list[float] = []
        now = [0.0]

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        done = dispatch_restores(app, sleep=sleep, monotonic=lambda: now[0], poll_seconds=5,
                                 max_wait_seconds=60)
        assert done.groups[0].state == "ready"
        assert slept == [5]
        assert len(archive["cold"].asked) == len(objects)  # a restore under way is joined, not repeated
        for rel, data in files.items():
            assert read_all(app.backend("hot"), f"dataset/d/1/{rel}") == data
        assert datasets.resolve(app, "d@1").tier == "hot"
    finally:
        app.close()


def test_the_cli_files_lists_waits_for_and_cancels_restores(tmp_path: Path) -> None:
    data = config(tmp_path)
    cfg = write_config(tmp_path, data)
    app = open_app(data)
    try:
        files = archived(app, tmp_path, files=6)
        archived(app, tmp_path, "other", files=3, seed=2)
    finally:
        app.close()

    resolved = run_cli(cfg, "resolve", "d")
    assert resolved.returncode == 10
    assert "tiering restore d@1 --to hot --days 7" in resolved.stderr

    filed = run_cli(cfg, "restore", "d@1", "--to", "warm", "--days", "3", "--json")
    assert filed.returncode == 0, filed.stderr
    queued = json.loads(filed.stdout)
    assert (queued["state"], queued["target"], queued["days"]) == ("queued", "warm", 3)

    waited = run_cli(cfg, "restore", "d@1", "--to", "hot", "--priority", "high", "--wait", "--json",
                     "--no-progress")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["state"] == "ready"
    for rel, payload in files.items():
        assert (tmp_path / "tiers/hot/dataset/d/1" / rel).read_bytes() == payload

    listed = json.loads(run_cli(cfg, "restores", "--json").stdout)
    assert [(r["id"], r["state"], r["priority"]) for r in listed] == [
        (queued["id"], "queued", "normal"), (queued["id"] + 1, "ready", "high")]

    cancelled = run_cli(cfg, "restore", "cancel", str(queued["id"]))
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancelled restore request {queued['id']}" in cancelled.stdout

    restored = run_cli(cfg, "resolve", "other", "--restore", "--wait", "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["tier"] == "hot"
    assert (tmp_path / "tiers/hot/dataset/other/1").is_dir()
