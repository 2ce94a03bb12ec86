"""Composition root: builds the catalog, the tier backends and their wrappers from a Config.

Nothing else constructs engines or backends; use cases receive an :class:`App`.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiering.catalog.db import Catalog, check_schema, create_catalog_engine, migrate
from tiering.catalog.models import Dataset, Replica, Tier
from tiering.config import Config, TierConfig, backend_identity, redact_userinfo
from tiering.errors import ConfigError, TierBackendChanged, TierNotFound
from tiering.storage.base import Backend

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _build_backend(name: str, tier: TierConfig, config: Config) -> Backend:
    from tiering.storage import open_backend

    return open_backend(name, tier, config.transfer)


def check_backend_schemes(config: Config) -> None:
    """Raise :class:`ConfigError` naming the first tier whose backend URL no backend kind serves."""
    from tiering.storage import registry

    known = registry.registered_schemes()
    for name, tier in config.tiers.items():
        if urlparse(tier.backend).scheme not in known:
            listed = ", ".join(f"{s}://" for s in known)
            raise ConfigError(f"tiers.{name}.backend: expected a URL starting with one of {listed}, "
                              f"got {redact_userinfo(tier.backend)!r}")


def _holds_copies(session: Session, tier_id: int) -> bool:
    """Whether the catalog records any copy on the tier, or any dataset served from it."""
    replica = session.scalar(select(Replica.id).where(Replica.tier_id == tier_id).limit(1))
    return replica is not None or session.scalar(
        select(Dataset.id).where(Dataset.home_tier_id == tier_id).limit(1)) is not None


@dataclass
class App:
    config: Config
    catalog: Catalog
    clock: Clock = utcnow
    actor: str = field(default_factory=default_actor)
    #: wraps every backend once built (fault injection in tests, dry runs)
    backend_wrapper: Callable[[str, Backend], Backend] | None = None
    _backends: dict[str, Backend] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        clock: Clock = utcnow,
        create: bool = False,
        backend_wrapper: Callable[[str, Backend], Backend] | None = None,
        accept_changes: Collection[str] = (),
    ) -> App:
        """Open the catalog named by ``config``. ``create`` runs migrations; otherwise the schema is checked.

        Raises :class:`~tiering.errors.TierBackendChanged` when a tier that holds copies now points at another
        place than the catalog recorded, unless the tier is in ``accept_changes`` (see :meth:`sync_tiers`).
        """
        check_backend_schemes(config)
        engine = create_catalog_engine(config.catalog_url())
        if create:
            migrate(engine)
        else:
            check_schema(engine)
        app = cls(config=config, catalog=Catalog(engine), clock=clock, backend_wrapper=backend_wrapper)
        try:
            app.sync_tiers(accept_changes=accept_changes)
        except BaseException:
            app.close()
            raise
        return app

    def now(self) -> dt.datetime:
        return self.clock()

    def backend(self, tier: str) -> Backend:
        if tier not in self._backends:
            backend = _build_backend(tier, self.config.tier(tier), self.config)
            if self.backend_wrapper is not None:
                backend = self.backend_wrapper(tier, backend)
            self._backends[tier] = backend
        return self._backends[tier]

    def sync_tiers(self, *, accept_changes: Collection[str] = ()) -> None:
        """Make the catalog's tier rows match the config (tiers are never deleted: replicas point at them).

        Each row records its tier's place (:func:`~tiering.config.backend_identity`). A tier whose place changed
        while copies are recorded on it would make every read, move and listing point where nothing is: that
        raises :class:`~tiering.errors.TierBackendChanged` and changes nothing, unless the tier is named in
        ``accept_changes`` (the operator moved the data there). A tier without copies takes its new place.
        """
        unknown = sorted(set(accept_changes) - set(self.config.tiers))
        if unknown:
            raise TierNotFound(unknown[0], list(self.config.tiers))
        with self.catalog.session() as s:
            existing = {t.name: t for t in s.scalars(select(Tier))}
            for name, tc in self.config.tiers.items():
                row = existing.get(name)
                identity = str(backend_identity(name, tc))
                if row is None:
                    row = Tier(name=name)
                    s.add(row)
                elif row.backend_identity and row.backend_identity != identity and name not in accept_changes \
                        and _holds_copies(s, row.id):
                    raise TierBackendChanged(name, row.backend_identity, identity)
                row.backend_identity = identity
                row.rank = tc.rank
                row.backend_url = tc.backend
                row.endpoint = tc.endpoint
                row.archive = tc.archive or ""
                row.capacity_bytes = tc.capacity
                row.cost_per_tib_month = tc.cost_per_tib_month
            # a tier dropped from the config keeps its row; give it a rank that cannot collide
            for name, row in existing.items():
                if name not in self.config.tiers:
                    row.rank = 1000 + row.id

    def close(self) -> None:
        for b in self._backends.values():
            b.close()
        self._backends.clear()
        self.catalog.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
