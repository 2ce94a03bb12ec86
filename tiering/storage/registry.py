"""Which backend a tier's URL names: a scheme -> factory registry.

Each backend kind registers its scheme in its own module (``register_scheme("file", open_file)`` in
:mod:`tiering.storage.file`); :mod:`tiering.storage` imports the built-in kinds so they are registered before
the first :func:`open_backend`. A new kind is one module with its backend and one ``register_scheme`` call.
A factory builds the backend ready to use, wrapped as its kind needs (an S3 backend retries whole
operations), and makes no request.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

from tiering.config import TierConfig, TransferConfig
from tiering.storage.base import Backend

#: ``factory(name, tier, transfer)``: the backend of tier ``name``
BackendFactory = Callable[[str, TierConfig, TransferConfig], Backend]

_FACTORIES: dict[str, BackendFactory] = {}


def register_scheme(scheme: str, factory: BackendFactory) -> None:
    """Make ``open_backend`` build tiers whose URL starts with ``scheme://`` with ``factory``.

    Registering a scheme again replaces its factory (a test may stand in for a kind)."""
    if not scheme or scheme != scheme.lower() or "://" in scheme:
        raise ValueError(f"a backend scheme is a lower-case URL scheme without '://', not {scheme!r}")
    _FACTORIES[scheme] = factory


def unregister_scheme(scheme: str) -> None:
    """Forget ``scheme`` (missing is fine)."""
    _FACTORIES.pop(scheme, None)


def registered_schemes() -> list[str]:
    """The schemes ``open_backend`` knows, sorted (the built-in kinds included: importing this module imports
    the :mod:`tiering.storage` package first, which registers them)."""
    return sorted(_FACTORIES)


def open_backend(name: str, tier: TierConfig, transfer: TransferConfig) -> Backend:
    """The backend of tier ``name``, ready to use (no request is made here).

    Raises ``ValueError`` on a URL whose scheme no backend kind registered, and whatever the kind's factory
    raises (``ConfigError`` when the tier's credentials source cannot be read).
    """
    factory = _FACTORIES.get(urlparse(tier.backend).scheme)
    if factory is None:
        raise ValueError(f"tier {name!r}: unsupported backend URL {tier.backend!r}")
    return factory(name, tier, transfer)
