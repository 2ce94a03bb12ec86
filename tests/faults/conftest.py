"""Fixtures of the fault drills: hot and warm as S3 tiers on two independent SeaweedFS servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import S3TierView, SeaweedTiers
from servers import SeaweedServer


@pytest.fixture
def seaweed_tiers(
    seaweed: SeaweedServer, seaweed2: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SeaweedTiers]:
    """hot on ``seaweed``, warm on ``seaweed2``, each in a fresh bucket under a prefix; credentials in the
    environment (``HOT_*``, ``WARM_*``), where CLI subprocesses inherit them."""
    run = uuid.uuid4().hex[:10]
    servers = {"hot": seaweed, "warm": seaweed2}
    buckets = {tier: server.make_bucket(f"{tier}-{run}") for tier, server in servers.items()}
    config: dict[str, dict[str, Any]] = {}
    views: dict[str, S3TierView] = {}
    for rank, (tier, server) in enumerate(servers.items()):
        monkeypatch.setenv(f"{tier.upper()}_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv(f"{tier.upper()}_SECRET_ACCESS_KEY", server.secret_key)
        config[tier] = {"rank": rank, "backend": f"s3://{buckets[tier]}/{tier}-tier", "endpoint": server.endpoint,
                        "credentials": {"env": tier.upper()}}
        views[tier] = S3TierView(server.client(), buckets[tier], f"{tier}-tier/")
    yield SeaweedTiers(config, views)
    for tier, server in servers.items():
        server.remove_bucket(buckets[tier])
