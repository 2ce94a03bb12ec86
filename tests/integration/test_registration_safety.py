"""Registration on real servers: two registrations of one version at once, catalog failures after the
upload, and which member names an S3 server stores faithfully. Bytes are read back from the tier."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import check_invariant, make_tree, open_app, read_all, run_cli, workspace_config, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import MotoServer, SeaweedServer
from sqlalchemy import select

from tiering import datasets
from tiering.catalog.models import Dataset
from tiering.config import config_from_dict
from tiering.errors import InvalidName
from tiering.layout import check_member_path
from tiering.storage import open_backend
from tiering.storage.base import Backend
from tiering.transfer.hashing import xxh3_bytes


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _start_register(config: Path, src: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIERING_CRASH_AT"}
    return subprocess.Popen(
        [sys.executable, "-m", "tiering", "--config", str(config), "register", str(src), "--name", "d",
         "--version", "1", "--tier", "hot", "--no-progress", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _two_registrations_at_once(tmp_path: Path, data: dict[str, Any]) -> None:
    config = write_config(tmp_path, data)
    open_app(data).close()  # schema made before either process starts
    trees = {
        side: make_tree(tmp_path / side, 300, seed=seed, min_size=20_000, max_size=60_000)
        for side, seed in (("a", 1), ("b", 2))
    }
    procs = {side: _start_register(config, tmp_path / side) for side in trees}
    results = {side: (p.wait(timeout=120), *p.communicate()) for side, p in procs.items()}
    codes = sorted(code for code, _out, _err in results.values())
    assert codes == [0, 4], results
    winner = next(side for side, (code, _o, _e) in results.items() if code == 0)
    loser_err = next(err for code, _o, err in results.values() if code == 4)
    # refused while the winner uploads, or (if the winner was quicker than the loser's start) as existing
    assert "d@1" in _one_line(loser_err), loser_err
    assert "another registration" in loser_err or "already registered with different content" in loser_err

    app = open_app(data)
    try:
        hot = app.backend("hot")
        for rel, payload in trees[winner].items():
            assert read_all(hot, f"dataset/d/1/{rel}") == payload
        assert datasets.verify(app, "d@1").ok
        report = check_invariant(app)
        assert report.problems == [], report.problems
        assert report.members == len(trees[winner])
    finally:
        app.close()


def test_two_registrations_of_one_version_at_once_on_seaweed_and_postgres_keep_the_winners_bytes(
    tmp_path: Path, s3_tiers: dict[str, Any], postgres_url: str
) -> None:
    _two_registrations_at_once(tmp_path, workspace_config(tmp_path, tiers=s3_tiers, catalog=postgres_url))


def test_two_registrations_of_one_version_at_once_on_seaweed_and_sqlite_keep_the_winners_bytes(
    tmp_path: Path, s3_tiers: dict[str, Any]
) -> None:
    _two_registrations_at_once(tmp_path, workspace_config(tmp_path, tiers=s3_tiers))


def test_two_registrations_of_one_version_at_once_on_directories_and_sqlite_keep_the_winners_bytes(
    tmp_path: Path,
) -> None:
    _two_registrations_at_once(tmp_path, workspace_config(tmp_path))


# ------------------------------------------------------------------------------------------ names on S3

#: characters a member name may hold (the rule in tiering.layout.check_member_path), drawn from all of Unicode
NAME_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x7f\ufffe\uffff",
)
NAMES = st.lists(st.text(NAME_CHARS, min_size=1, max_size=12), min_size=1, max_size=3).map("/".join).filter(
    lambda p: p.split("/")[0] != "_tiering" and all(c not in (".", "..") for c in p.split("/"))
)


@pytest.fixture(params=["seaweed", "moto"])
def s3_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    server: SeaweedServer | MotoServer = request.getfixturevalue("seaweed" if request.param == "seaweed"
                                                                  else "moto_server")
    monkeypatch.setenv("HOT_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("HOT_SECRET_ACCESS_KEY", server.secret_key)
    return server


def _s3_tier(server: SeaweedServer | MotoServer, tmp_path: Path) -> dict[str, Any]:
    name = server.make_bucket(f"names-{uuid.uuid4().hex[:12]}")
    return {"hot": {"rank": 0, "backend": f"s3://{name}/pre fix", "endpoint": server.endpoint,
                    "credentials": {"env": "HOT"}},
            "warm": {"rank": 1, "backend": (tmp_path / "warm").as_uri()}}


def _hot_backend(tiers: dict[str, Any], tmp_path: Path) -> Backend:
    config = config_from_dict(workspace_config(tmp_path, tiers=tiers), source="test")
    return open_backend("hot", config.tier("hot"), config.transfer)


def test_every_member_name_the_rule_accepts_round_trips_through_s3(
    s3_server: SeaweedServer | MotoServer, tmp_path: Path
) -> None:
    backend = _hot_backend(_s3_tier(s3_server, tmp_path), tmp_path)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(path=NAMES)
    def round_trip(path: str) -> None:
        check_member_path(path)
        prefix = f"dataset/n/{uuid.uuid4().hex[:8]}/"
        key = prefix + path
        body = path.encode() + b"\n"
        backend.put(key, io.BytesIO(body), size=len(body), metadata={"xxh3-128": xxh3_bytes(body)},
                    content_xxh3=xxh3_bytes(body))
        try:
            assert [i.key for i in backend.list(prefix)] == [key]
            assert read_all(backend, key) == body
            assert backend.head(key).metadata["xxh3-128"] == xxh3_bytes(body)
        finally:
            assert backend.delete_many([key]) == {}
        assert list(backend.list(prefix)) == []

    try:
        round_trip()
    finally:
        backend.close()


@pytest.mark.parametrize("bad", ["bell\x07.bin", "carriage\r.bin", "next\x85line.bin", "del\x7f.bin",
                                 "back\\slash.bin"])
def test_a_member_name_no_s3_server_stores_faithfully_is_refused_before_any_upload(
    s3_server: SeaweedServer | MotoServer, tmp_path: Path, bad: str
) -> None:
    tiers = _s3_tier(s3_server, tmp_path)
    config = write_config(tmp_path, workspace_config(tmp_path, tiers=tiers))
    open_app(workspace_config(tmp_path, tiers=tiers)).close()
    src = tmp_path / "src"
    make_tree(src, 5, seed=4)
    (src / bad).write_bytes(b"payload")
    done = run_cli(config, "register", str(src), "--name", "d", "--version", "1", "--no-progress")
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert repr(bad)[1:-1] in line, line  # the offending character is shown escaped
    backend = _hot_backend(tiers, tmp_path)
    try:
        assert list(backend.list("")) == []
    finally:
        backend.close()
    app = open_app(workspace_config(tmp_path, tiers=tiers))
    try:
        assert datasets.list_datasets(app) == []
    finally:
        app.close()


def test_check_member_path_refuses_what_it_should() -> None:
    for bad in ("a\x00b", "a\tb", "a\nb", "x\x9fy", "a/./b", "a/../b", "a//b", "/abs", "a/", "_tiering/x",
                "bad\udcffname", "x\ufffe"):
        with pytest.raises(InvalidName):
            check_member_path(bad)


# ------------------------------------------------------------------------------------------ catalog failures


def test_a_member_path_longer_than_the_catalog_holds_is_refused_before_any_upload_on_postgres(
    tmp_path: Path, s3_tiers: dict[str, Any], postgres_url: str
) -> None:
    data = workspace_config(tmp_path, tiers=s3_tiers, catalog=postgres_url)
    config = write_config(tmp_path, data)
    src = tmp_path / "src"
    make_tree(src, 3, seed=5)
    deep = src.joinpath(*(["d" * 200] * 5))
    deep.mkdir(parents=True)
    (deep / ("f" * 90)).write_bytes(b"deep")  # a member path of 1,095 characters
    open_app(data).close()
    done = run_cli(config, "register", str(src), "--name", "d", "--version", "1", "--no-progress")
    assert done.returncode == 2, done.stderr
    assert "longer than" in _one_line(done.stderr)
    app = open_app(data)
    try:
        assert datasets.list_datasets(app) == []
        assert list(app.backend("hot").list("")) == []
    finally:
        app.close()


def test_a_catalog_that_refuses_the_final_write_undoes_the_upload_and_says_so_in_one_line_on_postgres(
    tmp_path: Path, s3_tiers: dict[str, Any], postgres_url: str
) -> None:
    data = workspace_config(tmp_path, tiers=s3_tiers, catalog=postgres_url)
    config = write_config(tmp_path, data)
    make_tree(tmp_path / "src", 8, seed=6)
    open_app(data).close()
    # the database itself refuses the members (as a full disk, a constraint or a lost connection would)
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "RAISE EXCEPTION 'members are refused today' USING DETAIL = 'a second line'; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON members FOR EACH ROW EXECUTE FUNCTION refuse()")
    done = run_cli(config, "register", str(tmp_path / "src"), "--name", "d", "--version", "1", "--no-progress")
    assert done.returncode == 5, done.stderr
    line = _one_line(done.stderr)
    assert "members are refused today" in line
    assert "INSERT" not in line and "parameters" not in line
    app = open_app(data)
    try:
        with app.catalog.session() as s:
            assert s.scalars(select(Dataset)).all() == []
        assert list(app.backend("hot").list("")) == []
    finally:
        app.close()
