"""Who owns a name@version while it is registered, which prefixes an adoption may take, and which names and
lengths a registration accepts: over directory tiers and SQLite, bytes read back from the tier."""

from __future__ import annotations

import datetime as dt
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import FixedClock, check_invariant, make_tree, open_app, read_all, run_cli, workspace_config, write_config
from sqlalchemy import select

from tiering import datasets, registration
from tiering.app import App
from tiering.catalog.models import Dataset, Tier
from tiering.errors import InvalidName, PrefixInUse, RegistrationInProgress, UsageError
from tiering.layout import check_members_form_a_tree


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Any]:
    return workspace_config(tmp_path)


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _rows(app: App) -> list[tuple[str, str, str]]:
    with app.catalog.session() as s:
        return [(d.name, d.version, d.state) for d in s.scalars(select(Dataset))]


def _objects(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path / "tiers")) for p in (tmp_path / "tiers").rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ ownership


def _leave_a_registering_row(app: App, *, version: str = "1", owner: str | None,
                             lease_until: dt.datetime | None) -> None:
    """The row a registration leaves when it dies between its claim and its end."""
    with app.catalog.session() as s:
        hot = s.scalars(select(Tier).where(Tier.name == "hot")).one()
        now = app.now()
        s.add(Dataset(name="d", version=version, kind="dataset", owner="", tags={}, home_tier_id=hot.id,
                      state="registering", created_at=now, home_since=now, registration_owner=owner,
                      registration_lease_until=lease_until))


def test_a_row_owned_by_a_registration_on_another_host_is_refused_until_its_lease_runs_out(
    data: dict[str, Any], tmp_path: Path
) -> None:
    clock = FixedClock(dt.datetime(2026, 5, 1, tzinfo=dt.UTC))
    app = open_app(data, clock=clock)
    try:
        files = make_tree(tmp_path / "src", 6, seed=9)
        _leave_a_registering_row(app, owner="elsewhere:4242:cafe0001",
                                 lease_until=clock.now + dt.timedelta(seconds=60))
        with pytest.raises(RegistrationInProgress, match="d@1 is being registered by another registration"):
            registration.register(app, str(tmp_path / "src"), name="d", version="1")
        assert _objects(tmp_path) == []
        clock.advance(seconds=61)
        result = registration.register(app, str(tmp_path / "src"), name="d", version="1")
        assert result.members == 6
        for rel, payload in files.items():
            assert read_all(app.backend("hot"), f"dataset/d/1/{rel}") == payload
        with app.catalog.session() as s:
            ds = s.scalars(select(Dataset)).one()
            assert (ds.state, ds.registration_owner, ds.registration_lease_until) == ("active", None, None)
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_a_row_of_a_dead_process_on_this_host_or_of_an_older_version_is_taken_over_at_once(
    data: dict[str, Any], tmp_path: Path
) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    app = open_app(data)
    try:
        make_tree(tmp_path / "src", 4, seed=10)
        _leave_a_registering_row(app, owner=f"{socket.gethostname()}:{dead.stdout.strip()}:0badf00d",
                                 lease_until=app.now() + dt.timedelta(hours=1))
        assert registration.register(app, str(tmp_path / "src"), name="d", version="1").members == 4
        _leave_a_registering_row(app, version="2", owner=None, lease_until=None)  # an older version's row
        assert registration.register(app, str(tmp_path / "src"), name="d", version="2").members == 4
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_kill_9_after_the_upload_then_the_same_command_again_finishes_and_leaves_no_stray_object(
    data: dict[str, Any], tmp_path: Path
) -> None:
    config = write_config(tmp_path, data)
    open_app(data).close()
    files = make_tree(tmp_path / "src", 10, seed=13)
    (tmp_path / "src" / "gone-later.bin").write_bytes(b"only in the crashed attempt")
    args = ("register", str(tmp_path / "src"), "--name", "d", "--version", "1", "--no-progress")
    crashed = run_cli(config, *args, crash_at="register_after_upload")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    (tmp_path / "src" / "gone-later.bin").unlink()
    again = run_cli(config, *args)
    assert again.returncode == 0, again.stderr
    app = open_app(data)
    try:
        for rel, payload in files.items():
            assert read_all(app.backend("hot"), f"dataset/d/1/{rel}") == payload
        report = check_invariant(app)
        assert report.problems == [] and report.stray_objects == []
    finally:
        app.close()


def test_a_second_registration_while_one_uploads_is_refused_and_uploads_nothing(
    data: dict[str, Any], tmp_path: Path
) -> None:
    first, second = open_app(data), open_app(data)
    try:
        files = make_tree(tmp_path / "a", 8, seed=14)
        make_tree(tmp_path / "b", 8, seed=15)
        refused: list[BaseException] = []

        class SecondTriesMidUpload(datasets.Progress):
            def add(self, nbytes: int, *, failed: bool = False) -> None:
                super().add(nbytes, failed=failed)
                if not refused:
                    try:
                        registration.register(second, str(tmp_path / "b"), name="d", version="1")
                    except RegistrationInProgress as exc:
                        refused.append(exc)

        registration.register(first, str(tmp_path / "a"), name="d", version="1", progress=SecondTriesMidUpload())
        assert len(refused) == 1
        for rel, payload in files.items():
            assert read_all(first.backend("hot"), f"dataset/d/1/{rel}") == payload
        assert check_invariant(first).problems == []
    finally:
        first.close()
        second.close()


# ------------------------------------------------------------------------------------------ adopt


def test_adopting_a_prefix_that_holds_another_datasets_objects_is_refused_and_its_bytes_stay(
    data: dict[str, Any], tmp_path: Path
) -> None:
    app = open_app(data)
    try:
        files = make_tree(tmp_path / "src", 5, seed=16)
        registration.register(app, str(tmp_path / "src"), name="a", version="1", tier="hot")
        hot = (tmp_path / "tiers/hot").as_uri()
        (tmp_path / "tiers/hot/dataset/a/1/extra").mkdir(parents=True)
        (tmp_path / "tiers/hot/dataset/a/1/extra/x.bin").write_bytes(b"x")
        for url in (f"{hot}/dataset/", f"{hot}/dataset/a/", f"{hot}/dataset/a/1/", f"{hot}/dataset/a/1/extra/"):
            with pytest.raises(PrefixInUse, match="overlaps dataset a@1"):
                registration.register(app, url, name="thief", version="1", adopt=True)
        with pytest.raises(UsageError, match="root of tier"):
            registration.register(app, hot + "/", name="thief", version="1", adopt=True)
        (tmp_path / "tiers/hot/dataset/a/1/extra/x.bin").unlink()
        assert [r.label for r in datasets.list_datasets(app)] == ["a@1"]
        for rel, payload in files.items():
            assert read_all(app.backend("hot"), f"dataset/a/1/{rel}") == payload
        assert check_invariant(app).problems == []
    finally:
        app.close()


def test_adopted_prefixes_may_not_nest_and_a_registration_may_not_land_inside_one(
    data: dict[str, Any], tmp_path: Path
) -> None:
    app = open_app(data)
    try:
        make_tree(tmp_path / "tiers/warm/models/fraud/v3", 3, seed=17)
        warm = (tmp_path / "tiers/warm").as_uri()
        registration.register(app, f"{warm}/models/fraud/v3/", name="fraud", version="v3", kind="model", adopt=True)
        for inner in ("models/fraud/", "models/fraud/v3/part-1/", "models/"):
            with pytest.raises(PrefixInUse, match="fraud@v3"):
                registration.register(app, f"{warm}/{inner}", name="other", version="1", adopt=True)
        # a dataset whose standard prefix sits inside an adopted one would be deleted with it by a move
        make_tree(tmp_path / "tiers/warm/dataset/x", 2, seed=18)
        registration.register(app, f"{warm}/dataset/x/", name="whole", version="1", adopt=True)
        make_tree(tmp_path / "src", 2, seed=19)
        with pytest.raises(PrefixInUse, match="whole@1"):
            registration.register(app, str(tmp_path / "src"), name="x", version="1", tier="warm")
        # a prefix where another dataset goes when it is moved to this tier is refused too
        registration.register(app, str(tmp_path / "src"), name="y", version="1", tier="hot")
        make_tree(tmp_path / "tiers/warm/dataset/y/1", 2, seed=20)
        with pytest.raises(PrefixInUse, match="y@1"):
            registration.register(app, f"{warm}/dataset/y/1/", name="squatter", version="1", adopt=True)
        assert sorted(r.label for r in datasets.list_datasets(app)) == ["fraud@v3", "whole@1", "y@1"]
    finally:
        app.close()


# ------------------------------------------------------------------------------------------ names and lengths


@pytest.mark.parametrize("bad", ["back\\slash.bin", "bell\x07.bin", "cr\r.bin", "c1\x9b.bin"])
def test_a_file_name_with_a_backslash_or_a_control_character_is_exit_2_naming_it_escaped(
    data: dict[str, Any], tmp_path: Path, bad: str
) -> None:
    config = write_config(tmp_path, data)
    open_app(data).close()
    make_tree(tmp_path / "src", 3, seed=21)
    (tmp_path / "src" / bad).write_bytes(b"x")
    done = run_cli(config, "register", str(tmp_path / "src"), "--name", "d", "--version", "1", "--no-progress")
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert repr(bad)[1:-1] in line and str(tmp_path / "src") in line
    assert _objects(tmp_path) == []


def test_a_file_name_that_is_not_utf8_is_refused(data: dict[str, Any], tmp_path: Path) -> None:
    app = open_app(data)
    try:
        make_tree(tmp_path / "src", 2, seed=22)
        with open(bytes(tmp_path / "src") + b"/caf\xe9.bin", "wb") as f:
            f.write(b"latin-1 name")
        with pytest.raises(InvalidName, match="not UTF-8"):
            registration.register(app, str(tmp_path / "src"), name="d", version="1")
        assert _rows(app) == [] and _objects(tmp_path) == []
    finally:
        app.close()


def test_a_file_that_is_also_a_directory_of_another_member_is_refused() -> None:
    check_members_form_a_tree(["a/b", "a/c", "ab"])
    with pytest.raises(InvalidName, match="both a file and the directory"):
        check_members_form_a_tree(["a/b/c", "a/b"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--version", "v" * 129], "longer than 128"),
        (["--version", "1", "--owner", "o" * 129], "longer than 128"),
        (["--version", "1", "--tag", "k=" + "v" * 1025], "longer than 1024"),
        (["--version", "1", "--owner", "bell\x07"], "control character"),
    ],
)
def test_a_version_owner_or_tag_longer_than_the_catalog_holds_is_exit_2(
    data: dict[str, Any], tmp_path: Path, args: list[str], needle: str
) -> None:
    config = write_config(tmp_path, data)
    open_app(data).close()
    make_tree(tmp_path / "src", 2, seed=23)
    done = run_cli(config, "register", str(tmp_path / "src"), "--name", "d", *args, "--no-progress")
    assert done.returncode == 2, done.stderr
    assert needle in _one_line(done.stderr)
    assert _objects(tmp_path) == []


def test_a_member_path_of_1100_characters_is_refused_before_any_upload(data: dict[str, Any], tmp_path: Path) -> None:
    app = open_app(data)
    try:
        make_tree(tmp_path / "src", 2, seed=24)
        deep = (tmp_path / "src").joinpath(*(["d" * 200] * 5))
        deep.mkdir(parents=True)
        (deep / ("f" * 95)).write_bytes(b"deep")
        with pytest.raises(InvalidName, match="1100 characters, longer than 1024"):
            registration.register(app, str(tmp_path / "src"), name="d", version="1")
        assert _rows(app) == [] and _objects(tmp_path) == []
    finally:
        app.close()


def test_a_catalog_that_refuses_the_final_write_undoes_the_upload_and_answers_in_one_line(
    data: dict[str, Any], tmp_path: Path
) -> None:
    config = write_config(tmp_path, data)
    open_app(data).close()
    make_tree(tmp_path / "src", 6, seed=25)
    db = sqlite3.connect(data["catalog"].removeprefix("sqlite:///"))
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON members BEGIN SELECT RAISE(ABORT, 'members refused'); END")
    db.commit()
    db.close()
    done = run_cli(config, "register", str(tmp_path / "src"), "--name", "d", "--version", "1", "--no-progress")
    assert done.returncode == 5, done.stderr
    line = _one_line(done.stderr)
    assert "members refused" in line and "INSERT" not in line
    app = open_app(data)
    try:
        assert _rows(app) == [] and _objects(tmp_path) == []
    finally:
        app.close()
