"""Config files an attacker (or a tired operator) writes: shared tiers, YAML bombs, secrets in URLs and in the
wrong keys. Each is refused at load with one line that names the file and never prints the secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tiering.cli import main
from tiering.config import config_from_dict, load_config, parse_size
from tiering.config_yaml import MAX_DOCUMENT_BYTES, load_yaml
from tiering.errors import ConfigError

SECRET = "Sup3rSecretValue"

BILLION_LAUGHS = "\n".join(
    ['lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 10)}]" for i in range(1, 10)]
    + ["tiers: *lol9", ""]
)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _s3(hot: tuple[str, str], warm: tuple[str, str]) -> dict[str, Any]:
    return {"tiers": {"hot": {"rank": 0, "backend": hot[0], "endpoint": hot[1]},
                      "warm": {"rank": 1, "backend": warm[0], "endpoint": warm[1]}}}


@pytest.mark.parametrize(("hot", "warm"), [
    ("{t}/tiers/a", "{t}/tiers/a/"),              # one directory, written twice
    ("{t}/tiers/a", "{t}/tiers/b/../a"),          # through ..
    ("{t}/tiers/a", "{t}/link"),                  # through a symlink to it
    ("{t}/tiers/a", "{t}/tiers/a/inner"),         # one inside the other
    ("{t}/link/inner", "{t}/tiers/a"),            # inside, through a symlink
])
def test_two_directory_tiers_on_one_place_or_nested_are_refused_naming_both(
    tmp_path: Path, hot: str, warm: str
) -> None:
    (tmp_path / "tiers" / "a").mkdir(parents=True)
    (tmp_path / "tiers" / "b").mkdir()
    os.symlink(tmp_path / "tiers" / "a", tmp_path / "link")
    # a file:// URL keeps `..` as written (Path.as_uri would refuse it), so build it by hand
    data = {"tiers": {"hot": {"rank": 0, "backend": "file://" + hot.format(t=tmp_path)},
                      "warm": {"rank": 1, "backend": "file://" + warm.format(t=tmp_path)}}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, source="tiering.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("tiering.yaml: ") and "'hot'" in message and "'warm'" in message


def test_sibling_directories_whose_names_share_a_prefix_are_two_tiers(tmp_path: Path) -> None:
    config = config_from_dict({"tiers": {"hot": {"rank": 0, "backend": (tmp_path / "tier").as_uri()},
                                         "warm": {"rank": 1, "backend": (tmp_path / "tier2").as_uri()}}})
    assert set(config.tiers) == {"hot", "warm"}


@pytest.mark.parametrize(("hot", "warm"), [
    (("s3://data/tiers", "http://127.0.0.1:8333"), ("s3://data/tiers/", "http://127.0.0.1:8333/")),
    (("s3://data/tiers", "http://MinIO.internal"), ("s3://data/tiers", "http://minio.internal:80")),
    (("s3://data/tiers", "https://minio.internal:443"), ("s3://data/./tiers", "https://minio.internal")),
    (("s3://data/tiers", "http://localhost:8333"), ("s3://data/tiers", "http://127.0.0.1:8333")),
    (("s3://data/tiers", "http://h:9000"), ("s3://data/tiers/warm", "http://h:9000")),     # nested prefix
    (("s3://data", "http://h:9000"), ("s3://data/warm", "http://h:9000")),                 # whole bucket
    (("s3://data/a/../tiers", "http://h:9000"), ("s3://data//tiers", "http://h:9000")),
    (("s3://data/tiers", ""), ("s3://data/tiers/x", "")),                                    # AWS, no endpoint
])
def test_two_s3_tiers_on_one_endpoint_bucket_and_prefix_or_nested_are_refused(
    hot: tuple[str, str], warm: tuple[str, str]
) -> None:
    data = _s3(hot, warm)
    for tier in data["tiers"].values():
        if not tier["endpoint"]:
            del tier["endpoint"]
    with pytest.raises(ConfigError, match=r"tiers 'hot' and 'warm' are on .*each tier needs its own"):
        config_from_dict(data)


@pytest.mark.parametrize(("hot", "warm"), [
    (("s3://data/hot", "http://h:9000"), ("s3://data/hotter", "http://h:9000")),   # prefix of the name only
    (("s3://data/tiers", "http://h:9000"), ("s3://other/tiers", "http://h:9000")),
    (("s3://data/tiers", "http://h:9000"), ("s3://data/tiers", "http://h:9001")),
    (("s3://data/tiers", "http://h:9000"), ("s3://data/tiers", "http://nas:9000")),
])
def test_s3_tiers_on_distinct_places_are_accepted(hot: tuple[str, str], warm: tuple[str, str]) -> None:
    assert set(config_from_dict(_s3(hot, warm)).tiers) == {"hot", "warm"}


def test_the_cli_refuses_a_shared_tier_config_with_exit_2_and_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "tiering.yaml"
    cfg.write_text(yaml.safe_dump({
        "catalog": f"sqlite:///{tmp_path / 'c.db'}",
        "tiers": {"hot": {"rank": 0, "backend": (tmp_path / "t").as_uri()},
                  "warm": {"rank": 1, "backend": (tmp_path / "t").as_uri() + "/"}},
    }))
    code, _, err = run(capsys, "--config", str(cfg), "init")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert str(cfg) in err and "'hot'" in err and "'warm'" in err


def test_a_billion_laughs_config_is_refused_naming_the_file_and_never_expanded(tmp_path: Path) -> None:
    cfg = tmp_path / "tiering.yaml"
    cfg.write_text(BILLION_LAUGHS)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    message = str(err.value)
    assert message.startswith(f"{cfg}:") and "refused" in message and "aliases" in message
    assert "lol" not in message


def test_the_cli_refuses_a_billion_laughs_config_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "tiering.yaml"
    cfg.write_text(BILLION_LAUGHS)
    code, out, err = run(capsys, "--config", str(cfg), "ls")
    assert code == 2
    assert str(cfg) in err and "refused" in err
    assert len(out) + len(err) < 500


@pytest.mark.parametrize(("text", "problem"), [
    ("a: &a [x]\n" + "".join(f"k{i}: *a\n" for i in range(101)), "more than 100 aliases"),
    ("a: &a [*a]\n", "contains it"),
    ("a: " + "[" * 200 + "]" * 200 + "\n", "nested more than"),
])
def test_documents_over_the_alias_and_depth_bounds_are_refused(text: str, problem: str) -> None:
    with pytest.raises(yaml.YAMLError, match=problem):
        load_yaml(text)


def test_a_few_anchors_and_merge_keys_still_load() -> None:
    data = load_yaml("base: &base {rank: 0, region: eu}\nhot: {<<: *base, rank: 1}\nwarm: *base\n")
    assert data["hot"] == {"rank": 1, "region": "eu"} and data["warm"] == {"rank": 0, "region": "eu"}


def test_a_config_file_over_one_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    cfg = tmp_path / "tiering.yaml"
    cfg.write_text("# padding\n" * (MAX_DOCUMENT_BYTES // 10 + 1) + "tiers: {}\n")
    with pytest.raises(ConfigError, match=r"refused: larger than 1 MiB"):
        load_config(cfg)


@pytest.mark.parametrize("field", ["endpoint", "backend"])
def test_a_url_with_a_user_and_password_is_refused_without_printing_the_password(field: str) -> None:
    tier: dict[str, Any] = {"rank": 0, "backend": "s3://data/tiers", "endpoint": "http://minio:9000"}
    tier[field] = f"http://admin:{SECRET}@minio:9000" if field == "endpoint" else f"s3://admin:{SECRET}@data/t"
    with pytest.raises(ConfigError) as err:
        config_from_dict({"tiers": {"hot": tier}}, source="tiering.yaml")
    message = str(err.value)
    assert f"tiering.yaml: tiers.hot.{field}:" in message and "credentials" in message
    assert SECRET not in message and "admin" not in message


def test_a_user_alone_in_an_endpoint_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="user name or password"):
        config_from_dict({"tiers": {"hot": {"rank": 0, "backend": "s3://d", "endpoint": "http://admin@minio"}}})


@pytest.mark.parametrize("credentials", [
    {"env": "HOT", "secret_access_key": SECRET},
    {"file": "/etc/x.ini", "aws_secret_access_key": SECRET},
    {"env": "HOT", "profile": {"key": SECRET}},
    {"env": ["HOT", SECRET]},
    SECRET,
])
def test_a_misplaced_secret_under_credentials_is_never_echoed(credentials: Any) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"tiers": {"hot": {"rank": 0, "backend": "s3://d", "credentials": credentials}}},
                         source="tiering.yaml")
    assert "tiers.hot.credentials" in str(err.value)
    assert SECRET not in str(err.value)


def test_an_unknown_key_anywhere_names_the_path_but_not_its_value() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"tiers": {"hot": {"rank": 0, "backend": "s3://d", "secret_key": SECRET}},
                          "aws_secret": SECRET})
    message = str(err.value)
    assert "tiers.hot.secret_key" in message and "aws_secret" in message
    assert SECRET not in message


@pytest.mark.parametrize("size", ["9" * 40, "1e400", float("inf"), float("nan"), 2**64, "99999999999 PiB"])
def test_sizes_beyond_64_bits_or_not_finite_are_a_value_error(size: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(size)


def test_a_config_capacity_beyond_64_bits_is_a_config_error_not_a_crash() -> None:
    with pytest.raises(ConfigError, match="tiers.hot.capacity"):
        config_from_dict({"tiers": {"hot": {"rank": 0, "backend": "s3://d", "capacity": "9" * 25 + "PiB"}}})
