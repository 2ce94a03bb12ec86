"""Config: validated once, errors name file and key, secrets never show."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tiering.config import Credentials, CredentialsSource, Secret, config_from_dict, load_config, parse_size
from tiering.errors import ConfigError
from tiering.logs import RedactSecrets

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1GiB", 2**30), ("50 TiB", 50 * 2**40), ("1.5TB", 1_500_000_000_000), (4096, 4096), ("512", 512)],
)
def test_sizes_parse_in_binary_and_decimal_units(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["ten gigs", "-1", "1XB", True])
def test_bad_sizes_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)  # type: ignore[arg-type]


def _tiers() -> dict[str, dict[str, object]]:
    return {"hot": {"rank": 0, "backend": "file:///tmp/hot"}, "warm": {"rank": 1, "backend": "s3://b/p"}}


def test_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "tiering.yaml"
    cfg.write_text("tiers:\n  hot: {rank: zero, backend: 'file:///x'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert f"{cfg}: tiers.hot.rank:" in str(err.value)


def test_unknown_keys_two_tiers_of_one_rank_and_relative_file_urls_are_refused() -> None:
    with pytest.raises(ConfigError, match="tiers.hot.colour"):
        config_from_dict({"tiers": {"hot": {"rank": 0, "backend": "file:///x", "colour": "red"}}})
    with pytest.raises(ConfigError, match="same rank"):
        config_from_dict({"tiers": {"a": {"rank": 0, "backend": "file:///x"}, "b": {"rank": 0, "backend": "file:///y"}}})
    with pytest.raises(ConfigError, match="absolute path"):
        config_from_dict({"tiers": {"a": {"rank": 0, "backend": "file://relative/x"}}})


@pytest.mark.parametrize(("endpoint", "message"), [
    ("127.0.0.1:8333", "http:// or https:// URL with a host"),
    ("ftp://nas:21", "http:// or https:// URL with a host"),
    ("http://", "http:// or https:// URL with a host"),
    ("http://minio:9000/my prefix", "no spaces or control characters"),
    ("http://minio:9000/x\r\nHost: evil", "no spaces or control characters"),
])
def test_an_endpoint_that_is_not_a_plain_http_url_is_refused_naming_the_tier(endpoint: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        config_from_dict({"tiers": {"hot": {"rank": 0, "backend": "s3://b/p", "endpoint": endpoint}}})
    assert "tiers.hot.endpoint" in str(err.value)
    good = {"rank": 0, "backend": "s3://b/p", "endpoint": "https://minio.lab:9000/proxy"}
    assert config_from_dict({"tiers": {"hot": good}}).tiers["hot"].endpoint == "https://minio.lab:9000/proxy"


def test_env_overrides_apply_after_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERING_CATALOG", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("TIERING_TRANSFER_WORKERS", "3")
    c = config_from_dict({"tiers": _tiers()})
    assert c.catalog == "postgresql+psycopg://u@h/db"
    assert c.transfer.workers == 3


def test_credentials_from_env_are_redacted_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOT_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("HOT_SECRET_ACCESS_KEY", "very-secret-value")
    creds = CredentialsSource(env="HOT").resolve("hot")
    assert creds.secret_access_key.reveal() == "very-secret-value"
    for text in (repr(creds), str(creds), repr(creds.secret_access_key), f"{creds.secret_access_key}"):
        assert "very-secret-value" not in text and "AKIAEXAMPLE" not in text


def test_missing_env_credentials_say_which_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_ACCESS_KEY_ID", raising=False)
    with pytest.raises(ConfigError, match="NOPE_ACCESS_KEY_ID and NOPE_SECRET_ACCESS_KEY"):
        CredentialsSource(env="NOPE").resolve("hot")


def test_credentials_file_profiles_are_read(tmp_path: Path) -> None:
    f = tmp_path / "creds.ini"
    f.write_text("[warm]\naws_access_key_id = K\naws_secret_access_key = S3CR3T\n")
    creds = CredentialsSource(file=str(f), profile="warm").resolve("warm")
    assert isinstance(creds, Credentials) and creds.access_key_id == "K"
    assert creds.secret_access_key == Secret("S3CR3T")
    with pytest.raises(ConfigError, match="no profile"):
        CredentialsSource(file=str(f), profile="other").resolve("warm")


def test_the_log_filter_scrubs_secrets_from_messages() -> None:
    record = logging.LogRecord("botocore", logging.DEBUG, __file__, 1,
                               "headers: Authorization=AWS4-HMAC-SHA256 abc, aws_secret_access_key=XYZ", None, None)
    RedactSecrets().filter(record)
    assert "XYZ" not in record.getMessage() and "AWS4-HMAC" not in record.getMessage()


def test_the_shipped_deploy_config_is_valid() -> None:
    config = load_config(REPO / "deploy" / "tiering.yaml")
    assert config.tiers_by_rank() == ["hot", "warm", "cold"]
