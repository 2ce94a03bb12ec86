"""A tier is one place: a move never deletes its own destination, and a tier moved in the config is refused
until the operator says its data is there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_tree, read_all, workspace_config, write_config
from sqlalchemy import select
from test_cli import run

from tiering import datasets, registration
from tiering.app import App
from tiering.catalog.models import MoveStep, Tier
from tiering.config import config_from_dict
from tiering.errors import TierBackendChanged
from tiering.moves.executor import Executor


def _app_with_warm_on_hots_directory(tmp_path: Path, *, through_symlink: bool) -> App:
    """hot and warm on one directory: built past the config's own check, as a config from an older version,
    an edited catalog, or a directory turned into a symlink after the config was read would be."""
    config = config_from_dict(workspace_config(tmp_path), source="test")
    hot_dir = tmp_path / "tiers" / "hot"
    hot_dir.mkdir(parents=True)
    warm_url = hot_dir.as_uri()
    if through_symlink:
        (tmp_path / "warm-link").symlink_to(hot_dir)
        warm_url = (tmp_path / "warm-link").as_uri()
    tiers = dict(config.tiers)
    tiers["warm"] = tiers["warm"].model_copy(update={"backend": warm_url})
    return App.open(config.model_copy(update={"tiers": tiers}), create=True)


@pytest.mark.parametrize("through_symlink", [False, True])
def test_a_move_between_two_tiers_on_one_directory_keeps_every_byte_and_says_why(
    tmp_path: Path, through_symlink: bool
) -> None:
    files = make_tree(tmp_path / "src", 12, seed=5)
    with _app_with_warm_on_hots_directory(tmp_path, through_symlink=through_symlink) as app:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        outcome = datasets.move(app, "d@1", to="warm")
        assert outcome.state == "committed"
        assert outcome.error is not None and "refused to delete source" in outcome.error
        assert "hot" in outcome.error and "warm" in outcome.error
        with app.catalog.session() as s:
            errors = s.scalars(select(MoveStep.last_error)).all()
        assert len(errors) == len(files) and all(e and "refused to delete source" in e for e in errors)
        # the bytes, read back from the directory and through the tier the catalog now serves them from
        warm = app.backend("warm")
        for rel, data in files.items():
            assert (tmp_path / "tiers" / "hot" / "dataset" / "d" / "1" / rel).read_bytes() == data
            assert read_all(warm, f"dataset/d/1/{rel}") == data
        # resuming tries again, refuses again, and still deletes nothing
        Executor(app).resume_all()
        for rel, data in files.items():
            assert (tmp_path / "tiers" / "hot" / "dataset" / "d" / "1" / rel).read_bytes() == data
        assert (tmp_path / "tiers" / "hot" / "dataset" / "d" / "1" / "_tiering" / "manifest.json").exists()


def test_a_move_between_two_distinct_directories_still_deletes_its_source(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", 4, seed=6)
    with App.open(config_from_dict(workspace_config(tmp_path), source="test"), create=True) as app:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        assert datasets.move(app, "d@1", to="warm").state == "done"
    for rel, data in files.items():
        assert not (tmp_path / "tiers" / "hot" / "dataset" / "d" / "1" / rel).exists()
        assert (tmp_path / "tiers" / "warm" / "dataset" / "d" / "1" / rel).read_bytes() == data


def test_a_tier_whose_directory_changed_is_refused_until_the_change_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = workspace_config(tmp_path)
    config = write_config(tmp_path, data)
    c = ("--config", str(config))
    assert run(capsys, *c, "init")[0] == 0
    make_tree(tmp_path / "src", 3, seed=7)
    code, _, err = run(capsys, *c, "register", str(tmp_path / "src"), "--name", "d", "--version", "1", "--tier", "hot")
    assert code == 0, err
    old_dir, new_dir = tmp_path / "tiers" / "hot", tmp_path / "tiers" / "hot-nvme2"
    data["tiers"]["hot"]["backend"] = new_dir.as_uri()
    # warm holds nothing: its place may change without a word
    data["tiers"]["warm"]["backend"] = (tmp_path / "tiers" / "warm2").as_uri()
    write_config(tmp_path, data)

    for command in (["ls"], ["resolve", "d@1"], ["tiers"]):
        code, out, err = run(capsys, *c, *command)
        assert code == TierBackendChanged.exit_code, (command, out, err)
        assert len(err.strip().splitlines()) == 1
        assert "'hot'" in err and old_dir.as_uri() in err and new_dir.as_uri() in err
        assert "--accept-change hot" in err

    old_dir.rename(new_dir)  # the operator moved the data, then says so
    code, out, err = run(capsys, *c, "tiers", "--accept-change", "hot")
    assert code == 0, err
    assert new_dir.as_uri() in err
    code, out, _ = run(capsys, *c, "ls", "--json")
    assert code == 0 and [r["label"] for r in json.loads(out)] == ["d@1"]
    code, out, _ = run(capsys, *c, "resolve", "d@1", "--json")
    assert code == 0 and str(new_dir) in out


def test_the_catalog_records_each_tiers_place_without_credentials(tmp_path: Path) -> None:
    data = workspace_config(tmp_path)
    data["tiers"]["cold"] = {"rank": 2, "backend": "s3://Archive/tiers/", "endpoint": "HTTP://Tape.internal:80/",
                             "credentials": {"env": "COLD"}}
    with App.open(config_from_dict(data, source="test"), create=True) as app, app.catalog.session() as s:
        places = {name: place for name, place in s.execute(select(Tier.name, Tier.backend_identity))}
    assert places == {"hot": (tmp_path / "tiers" / "hot").resolve().as_uri(),
                      "warm": (tmp_path / "tiers" / "warm").resolve().as_uri(),
                      "cold": "http://tape.internal:80/archive/tiers"}


def test_accepting_a_change_of_a_tier_that_is_not_configured_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, workspace_config(tmp_path))
    assert run(capsys, "--config", str(config), "init")[0] == 0
    code, _, err = run(capsys, "--config", str(config), "tiers", "--accept-change", "hto")
    assert code == 3 and "'hto'" in err
