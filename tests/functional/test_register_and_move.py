"""Registration and moves over file and memory backends with a SQLite catalog."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import check_invariant, make_tree, open_app, read_all, workspace_config
from sqlalchemy import select

from tiering import datasets, registration
from tiering.app import App
from tiering.catalog.models import AuditEntry, MoveJob, MoveStep, Replica
from tiering.errors import (
    DatasetExists,
    DatasetNotFound,
    InvalidName,
    MoveInProgress,
    PathNotFound,
    SourceChanged,
    TierNotFound,
    UsageError,
)
from tiering.layout import manifest_key
from tiering.storage import FaultyBackend
from tiering.storage.base import Backend
from tiering.transfer import sources
from tiering.transfer.hashing import xxh3_bytes


@pytest.fixture(params=["file", "memory"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    tiers = None
    if request.param == "memory":
        run = uuid.uuid4().hex[:8]
        tiers = {n: {"rank": r, "backend": f"memory://{run}-{n}"} for r, n in enumerate(("hot", "warm", "cold"))}
    a = open_app(workspace_config(tmp_path, tiers=tiers))
    yield a
    a.close()


def test_register_uploads_every_file_with_its_digest_and_a_manifest(app: App, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 25, seed=1)
    result = registration.register(app, str(tmp_path / "src"), name="imagenet-mini", version="2024-01", tier="hot")
    assert (result.members, result.bytes) == (25, sum(len(b) for b in files.values()))
    hot = app.backend("hot")
    for rel, data in files.items():
        key = f"dataset/imagenet-mini/2024-01/{rel}"
        assert read_all(hot, key) == data
        assert hot.head(key).metadata["xxh3-128"] == xxh3_bytes(data)
    manifest = json.loads(read_all(hot, manifest_key("dataset/imagenet-mini/2024-01/")))
    assert manifest["member_count"] == 25
    assert {m["path"]: m["xxh3_128"] for m in manifest["members"]} == {r: xxh3_bytes(d) for r, d in files.items()}
    assert check_invariant(app).problems == []


def test_registering_identical_content_again_is_a_no_op_and_different_content_is_refused(
    app: App, tmp_path: Path
) -> None:
    make_tree(tmp_path / "src", 5, seed=2)
    registration.register(app, str(tmp_path / "src"), name="d", version="1")
    again = registration.register(app, str(tmp_path / "src"), name="d", version="1")
    assert again.already_registered
    (tmp_path / "src" / "f0000.bin").write_bytes(b"changed")
    with pytest.raises(DatasetExists):
        registration.register(app, str(tmp_path / "src"), name="d", version="1")
    assert len(datasets.list_datasets(app)) == 1


@pytest.mark.parametrize("name", ["a/b", "..", "x..y", "", ".hidden", "with space"])
def test_names_with_slashes_dots_or_spaces_are_refused(app: App, tmp_path: Path, name: str) -> None:
    make_tree(tmp_path / "src", 1)
    with pytest.raises(InvalidName):
        registration.register(app, str(tmp_path / "src"), name=name, version="1")
    assert datasets.list_datasets(app) == []


def test_missing_path_and_unknown_tier_change_nothing(app: App, tmp_path: Path) -> None:
    with pytest.raises(PathNotFound):
        registration.register(app, str(tmp_path / "nope"), name="d", version="1")
    make_tree(tmp_path / "src", 1)
    with pytest.raises(TierNotFound):
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="lukewarm")
    assert datasets.list_datasets(app) == []


def test_move_copies_verifies_commits_then_deletes_the_source(app: App, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 30, seed=3)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    outcome = datasets.move(app, "d@1", to="warm")
    assert outcome.state == "done"
    assert datasets.resolve(app, "d@1").tier == "warm"
    hot, warm = app.backend("hot"), app.backend("warm")
    assert [i.key for i in hot.list("dataset/")] == []
    for rel, data in files.items():
        assert read_all(warm, f"dataset/d/1/{rel}") == data
    with app.catalog.session() as s:
        states = set(s.scalars(select(MoveStep.state)))
        actions = [a.action for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert states == {"source_deleted"}
    assert actions == ["register", "move"]
    assert check_invariant(app).problems == []


def test_move_to_the_same_tier_or_an_unknown_tier_is_refused(app: App, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", 2)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    with pytest.raises(UsageError):
        datasets.move(app, "d", to="hot")
    with pytest.raises(TierNotFound):
        datasets.move(app, "d", to="tepid")
    with pytest.raises(DatasetNotFound):
        datasets.move(app, "nope", to="warm")


class _CannotCheckContent:
    """A store that cannot check what it stores (as an S3 endpoint that checks no request checksum); ``put`` says so."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url

    def put(self, key: str, body: Any, **kw: Any) -> bool:
        kw.pop("content_xxh3", None)
        self.inner.put(key, body, **kw)
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    ("verify", "store_checks"),
    [("auto", True), ("auto", False), ("readback", True)],
    ids=["auto-store-checks", "auto-store-cannot-check", "readback"],
)
def test_a_destination_that_corrupts_bytes_fails_with_checksum_mismatch_and_keeps_the_source(
    tmp_path: Path, verify: str, store_checks: bool,
) -> None:
    files = make_tree(tmp_path / "src", 6, seed=4, min_size=10)
    warm_stores: list[FaultyBackend] = []

    def corrupt_warm(tier: str, backend: Backend) -> Backend:
        if tier != "warm":
            return backend
        store = backend if store_checks else cast(Backend, _CannotCheckContent(backend))
        warm_stores.append(FaultyBackend(store, corrupt_writes=True))
        return warm_stores[-1]

    app = open_app(workspace_config(tmp_path, transfer={"verify": verify}), backend_wrapper=corrupt_warm)
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        outcome = datasets.move(app, "d@1", to="warm")
        assert outcome.state == "failed"
        assert "checksum_mismatch" in (outcome.error or "")
        with app.catalog.session() as s:
            step_errors = [e for e in s.scalars(select(MoveStep.last_error)) if e]
            warm_replicas = s.scalars(select(Replica).where(Replica.tier_id == 2)).all()
            job_state = s.scalars(select(MoveJob.state)).one()
        others = [e for e in step_errors if not e.startswith("checksum_mismatch")]
        assert step_errors and others == []
        assert warm_replicas == []
        assert job_state == "failed"
        assert [i.key for i in app.backend("warm").list("dataset/")] == []
        for rel, data in files.items():
            assert read_all(app.backend("hot"), f"dataset/d/1/{rel}") == data
        assert datasets.resolve(app, "d").tier == "hot"
        assert check_invariant(app).problems == []
        # caught by the destination's own check (no read-back) where it can make that check
        reads_back = sum(w.calls.get("open_read", 0) for w in warm_stores)
        assert (reads_back == 0) == (verify == "auto" and store_checks)
    finally:
        app.close()


def test_a_source_changed_behind_the_catalog_fails_the_move_with_source_changed(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", 4, seed=5, min_size=10)
    app = open_app(workspace_config(tmp_path))
    try:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        victim = tmp_path / "tiers/hot/dataset/d/1/f0000.bin"
        victim.write_bytes(b"tampered" + victim.read_bytes()[8:])
        outcome = datasets.move(app, "d@1", to="warm")
        assert outcome.state == "failed"
        assert "source_changed" in (outcome.error or "")
        assert datasets.resolve(app, "d").tier == "hot"
        assert [i.key for i in app.backend("warm").list("dataset/")] == []
    finally:
        app.close()


def test_verify_finds_a_corrupted_replica_and_names_it(app: App, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", 5, seed=6, min_size=10)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    assert datasets.verify(app, "d").ok
    hot = app.backend("hot")
    key = "dataset/d/1/f0002.bin"
    data = read_all(hot, key)
    import io

    hot.put(key, io.BytesIO(bytes([data[0] ^ 0xFF]) + data[1:]), size=len(data))
    report = datasets.verify(app, "d")
    assert not report.ok
    assert [(p.problem, p.path) for p in report.problems] == [("checksum_mismatch", "f0002.bin")]


def test_a_second_move_while_one_is_unfinished_is_refused(app: App, tmp_path: Path) -> None:
    from tiering.moves.executor import Executor

    make_tree(tmp_path / "src", 3)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    ex = Executor(app)
    with app.catalog.session() as s:
        ds_id = datasets.find_dataset(s, "d").id
    job = ex.create_job(ds_id, "warm")
    with pytest.raises(MoveInProgress):
        ex.create_job(ds_id, "cold")
    outcomes = datasets.resume(app)
    assert [(o.job_id, o.state) for o in outcomes] == [(job, "done")]
    assert check_invariant(app).problems == []


def test_adopt_registers_files_in_place_without_copying(tmp_path: Path) -> None:
    app = open_app(workspace_config(tmp_path))
    try:
        files = make_tree(tmp_path / "tiers/warm/models/fraud/v3", 4, seed=7)
        url = (tmp_path / "tiers/warm/models/fraud/v3").as_uri() + "/"
        r = registration.register(app, url, name="fraud", version="v3", kind="model", adopt=True)
        assert (r.tier, r.members, r.adopted) == ("warm", 4, True)
        assert datasets.resolve(app, "fraud").path.endswith("models/fraud/v3")
        assert datasets.verify(app, "fraud").ok
        datasets.move(app, "fraud@v3", to="hot")
        hot = app.backend("hot")
        for rel, data in files.items():
            assert read_all(hot, f"model/fraud/v3/{rel}") == data
        assert not (tmp_path / "tiers/warm/models/fraud/v3" / "f0000.bin").exists()
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_adopting_a_url_outside_every_tier_is_refused(app: App, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not inside any configured tier"):
        registration.register(app, "file:///somewhere/else/", name="x", version="1", adopt=True)


class ChangesFilesBeforeUpload(datasets.Progress):
    """Rewrites files on disk once hashing is done and the upload is about to start (when the totals are set)."""

    def __init__(self, changes: dict[Path, bytes]) -> None:
        super().__init__()
        self.changes = changes

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "total_objects" and value:
            for path, data in self.changes.items():
                path.write_bytes(data)


def test_a_small_file_is_uploaded_from_the_bytes_that_were_hashed_and_a_large_one_changed_is_refused(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.bin").write_bytes(b"s" * 1000)
    monkeypatch.setattr(sources, "PRELOAD_FILE_MAX", 1000)  # "large" is just past it
    (src / "large.bin").write_bytes(b"L" * 1001)
    # the small file is read once, so its later change is not seen: the copy is the registered content
    result = registration.register(app, str(src), name="d", version="1", tier="hot",
                           progress=ChangesFilesBeforeUpload({src / "small.bin": b"changed"}))
    assert result.members == 2
    hot = app.backend("hot")
    assert read_all(hot, "dataset/d/1/small.bin") == b"s" * 1000
    assert hot.head("dataset/d/1/small.bin").metadata["xxh3-128"] == xxh3_bytes(b"s" * 1000)
    assert check_invariant(app).problems == []
    # a file above the size kept in memory is read again for the upload: a change is caught, nothing is kept
    with pytest.raises(SourceChanged):
        registration.register(app, str(src), name="d", version="2", tier="hot",
                      progress=ChangesFilesBeforeUpload({src / "large.bin": b"M" * 1001}))
    assert [i.key for i in hot.list("dataset/d/2/")] == []
    assert check_invariant(app).problems == []



class _SlowStorage:
    """A directory read with a storage wait before every open (as a network share would make it), that
    notes which threads read."""

    def __init__(self, inner: Backend, wait: float) -> None:
        self._inner = inner
        self._wait = wait
        self.url = inner.url
        self.threads: set[int] = set()

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> Any:
        self.threads.add(threading.get_ident())
        if self._wait:
            time.sleep(self._wait)
        return self._inner.open_read(key, offset=offset, length=length)


@pytest.mark.parametrize("wait", [0.0, 0.002])
def test_small_local_files_are_hashed_on_one_thread_unless_their_storage_keeps_it_waiting(
    tmp_path: Path, wait: float,
) -> None:
    bodies = make_tree(tmp_path / "data", 300, max_size=5000)
    inner, files, _entries = sources.scan_local(tmp_path / "data")
    readers = []
    for _ in range(3):  # the choice is measured: a preempted first task may pick threads; one of three will not
        slow = _SlowStorage(inner, wait)
        digests, kept = sources.hash_all(cast(Backend, slow), files, workers=32, local=True)
        assert {path: d.xxh3 for path, d in digests.items()} == {p: xxh3_bytes(b) for p, b in bodies.items()}
        assert {f.path: kept[f.key] for f in files} == bodies  # the bytes hashed are kept for the upload
        readers.append(slow.threads)
    if wait:
        assert all(len(threads) > 1 for threads in readers)
    else:
        assert {threading.get_ident()} in readers


def test_a_move_to_a_directory_tier_records_small_copies_only_after_syncing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tiering.moves.executor import Executor
    from tiering.storage import FileBackend
    from tiering.transfer.copier import CopyResult

    synced: set[Path] = set()
    recorded: list[int] = []
    warm_backends: list[FileBackend] = []

    def keep_warm(tier: str, backend: Backend) -> Backend:
        if tier == "warm":
            warm_backends.append(cast(FileBackend, backend))
            real_batched_sync = backend.batched_sync  # type: ignore[attr-defined]

            @contextlib.contextmanager
            def batched_sync(prefix: str) -> Any:
                with real_batched_sync(prefix) as real_sync:
                    def sync() -> None:
                        synced.update(backend._batched[prefix][1])  # type: ignore[attr-defined]
                        real_sync()
                    yield sync
            backend.batched_sync = batched_sync  # type: ignore[attr-defined]
        return backend

    real_record = Executor._record_verified

    def record_checked(self: Executor, batch: list[CopyResult], dst_tier_id: int, outcome: Any) -> None:
        if batch:
            root = warm_backends[0].root
            assert {root / r.item.dst_key for r in batch} <= synced  # on the disk before the catalog says so
            recorded.append(len(batch))
        real_record(self, batch, dst_tier_id, outcome)

    monkeypatch.setattr(Executor, "_record_verified", record_checked)
    monkeypatch.setattr("tiering.moves.executor.RECORD_BATCH", 16)
    app = open_app(workspace_config(tmp_path), backend_wrapper=keep_warm)
    files = make_tree(tmp_path / "src", 120, seed=5, max_size=4000)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
    assert datasets.move(app, "d@1", to="warm").state == "done"
    assert sum(recorded) == len(files) and len(recorded) > 1  # several batches, each synced first
    assert warm_backends[0]._batched == {}
    for rel, data in files.items():
        assert read_all(app.backend("warm"), f"dataset/d/1/{rel}") == data
    assert check_invariant(app).problems == []


def test_a_move_refused_for_an_unfinished_restore_says_how_a_restore_finishes_not_resume(
    app: App, tmp_path: Path
) -> None:
    from tiering.moves.executor import Executor

    make_tree(tmp_path / "src", 3)
    registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="cold")
    ex = Executor(app)
    with app.catalog.session() as s:
        ds_id = datasets.find_dataset(s, "d").id
    job = ex.create_job(ds_id, "hot", purpose="restore")
    with pytest.raises(MoveInProgress) as refused:
        datasets.move(app, "d@1", to="warm")
    message = str(refused.value)
    assert f"unfinished restore job {job}" in message
    assert "tiering restores --dispatch" in message
    assert "tiering resume" not in message
