"""Fixtures shared by integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import SeaweedServer


@pytest.fixture
def s3_tiers(
    seaweed: SeaweedServer, seaweed2: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, dict[str, Any]]]:
    run = uuid.uuid4().hex[:10]
    hot_bucket = seaweed.make_bucket(f"hot-{run}")
    warm_bucket = seaweed2.make_bucket(f"warm-{run}")
    for prefix, server in (("HOT", seaweed), ("WARM", seaweed2)):
        monkeypatch.setenv(f"{prefix}_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv(f"{prefix}_SECRET_ACCESS_KEY", server.secret_key)
    yield {
        "hot": {"rank": 0, "backend": f"s3://{hot_bucket}/nvme", "endpoint": seaweed.endpoint,
                "credentials": {"env": "HOT"}},
        "warm": {"rank": 1, "backend": f"s3://{warm_bucket}/nas", "endpoint": seaweed2.endpoint,
                 "credentials": {"env": "WARM"}},
        "cold": {"rank": 2, "backend": (tmp_path / "cold").as_uri()},
    }
    seaweed.remove_bucket(hot_bucket)
    seaweed2.remove_bucket(warm_bucket)
