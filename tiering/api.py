"""The Python API: the same use cases the CLI runs, for data engineers' code.

::

    import tiering

    with tiering.open("tiering.yaml") as t:
        t.register("./imagenet-mini", name="imagenet-mini", version="2024-01", tier="hot")
        where = t.resolve("imagenet-mini")        # counts as a read
        t.move("imagenet-mini@2024-01", to="warm")
        assert t.verify("imagenet-mini").ok
"""

from __future__ import annotations

import os
from typing import Any

from tiering import datasets, registration
from tiering.app import App, Clock, utcnow
from tiering.config import Config, load_config


class Tiering:
    """A handle on one catalog and its tiers. Close it (or use ``with``) to release connections."""

    def __init__(self, app: App) -> None:
        self.app = app

    def register(self, source: str, **kwargs: Any) -> registration.RegisterResult:
        return registration.register(self.app, source, **kwargs)

    def resolve(self, label: str, *, record: bool = True) -> datasets.Resolved:
        return datasets.resolve(self.app, label, record=record)

    def move(self, label: str, *, to: str, reason: str = "api") -> Any:
        return datasets.move(self.app, label, to=to, reason=reason)

    def resume(self) -> list[Any]:
        return datasets.resume(self.app)

    def verify(self, label: str, *, tier: str | None = None) -> datasets.VerifyReport:
        return datasets.verify(self.app, label, tier=tier)

    def ls(self, **filters: Any) -> list[datasets.DatasetRow]:
        return datasets.list_datasets(self.app, **filters)

    def show(self, label: str) -> datasets.DatasetDetail:
        return datasets.show(self.app, label)

    def tiers(self) -> list[datasets.TierUsage]:
        return datasets.tier_usage(self.app)

    def close(self) -> None:
        self.app.close()

    def __enter__(self) -> Tiering:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(  # noqa: A001 - mirrors the builtin on purpose: tiering.open(...)
    config: str | os.PathLike[str] | Config | None = None,
    *,
    create: bool = False,
    clock: Clock = utcnow,
) -> Tiering:
    """Open the catalog and tiers named by a config file path (default ./tiering.yaml) or a Config."""
    cfg = config if isinstance(config, Config) else load_config(config)
    return Tiering(App.open(cfg, create=create, clock=clock))
