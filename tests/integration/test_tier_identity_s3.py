"""Two S3 tiers on one bucket and prefix, written two ways (127.0.0.1 and localhost): the config refuses them,
and a move between them built past that check keeps every byte on the real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import make_tree, workspace_config

from tiering import datasets, registration
from tiering.app import App
from tiering.config import config_from_dict
from tiering.errors import ConfigError


def _tiers(bucket: Any) -> dict[str, dict[str, object]]:
    port = bucket.endpoint.rsplit(":", 1)[1]
    return {
        "hot": {"rank": 0, "backend": f"s3://{bucket.name}/t", "endpoint": f"http://127.0.0.1:{port}",
                "credentials": {"env": "HOT"}},
        "warm": {"rank": 1, "backend": f"s3://{bucket.name}/t/", "endpoint": f"http://LOCALHOST:{port}/",
                 "credentials": {"env": "HOT"}},
    }


def test_two_s3_tiers_on_one_bucket_and_prefix_are_refused_at_load(tmp_path: Path, bucket: Any) -> None:
    with pytest.raises(ConfigError, match="tiers 'hot' and 'warm' are on the same place"):
        config_from_dict(workspace_config(tmp_path, tiers=_tiers(bucket)), source="tiering.yaml")


def test_a_move_between_two_s3_tiers_on_one_bucket_keeps_every_object(
    tmp_path: Path, bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOT_ACCESS_KEY_ID", bucket.server.access_key)
    monkeypatch.setenv("HOT_SECRET_ACCESS_KEY", bucket.server.secret_key)
    tiers = _tiers(bucket)
    config = config_from_dict(workspace_config(tmp_path, tiers={"hot": tiers["hot"]}), source="test")
    shared = config.tiers["hot"].model_copy(update={"rank": 1, "backend": tiers["warm"]["backend"],
                                                    "endpoint": tiers["warm"]["endpoint"]})
    config = config.model_copy(update={"tiers": {**config.tiers, "warm": shared}})
    files = make_tree(tmp_path / "src", 8, seed=9, min_size=1)
    with App.open(config, create=True) as app:
        registration.register(app, str(tmp_path / "src"), name="d", version="1", tier="hot")
        outcome = datasets.move(app, "d@1", to="warm")
        assert outcome.state == "committed"
        assert outcome.error is not None and "refused to delete source" in outcome.error
    client = bucket.server.client()
    for rel, data in files.items():
        assert client.get_object(Bucket=bucket.name, Key=f"t/dataset/d/1/{rel}")["Body"].read() == data
