"""Shared fixtures. Real servers are started once per session on free loopback ports.

===================  =========  ==================================================================
fixture              scope      yields
===================  =========  ==================================================================
``seaweed``          session    :class:`SeaweedServer`: ``.endpoint``, ``.access_key``/``.secret_key``,
                                ``.make_bucket(name)``, ``.remove_bucket(name)``, ``.client()``
``seaweed2``         session    a second, independent SeaweedFS (another tier)
``seaweed_auth``     session    a SeaweedFS that enforces one identity (``.access_key``/``.secret_key``)
``bucket``           function   :class:`BucketRef` (``.name``, ``.endpoint``, ``.server``): a fresh
                                bucket on ``seaweed``, removed with its contents afterwards
``moto_server``      session    :class:`MotoServer` (``.endpoint``, ``.make_bucket``): Glacier protocol only
``postgres_server``  session    libpq URL of the PostgreSQL (``$TIERING_TEST_POSTGRES`` or
                                ``postgresql://postgres@127.0.0.1:5432/test``) where test databases are made
``postgres_url``     function   ``postgresql+psycopg://...`` of a fresh database, dropped afterwards
===================  =========  ==================================================================

A test that needs a server it cannot get is skipped; with ``TIERING_REQUIRE_SERVERS=1`` (CI) it fails.
Tests using these fixtures get the ``server`` marker automatically (``-m "not server"`` deselects them).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import pytest

# tests/ is not a package (no __init__.py): pytest puts it on sys.path, so helpers import by bare name
from servers import (
    MotoServer,
    SeaweedServer,
    ServerUnavailable,
    create_postgres_database,
    drop_postgres_database,
    postgres_admin_url,
    start_moto,
    start_seaweed,
)

T = TypeVar("T")

#: fixtures that need a real server; a test using any of them is marked ``server``
SERVER_FIXTURES = frozenset(
    {"seaweed", "seaweed2", "seaweed_auth", "bucket", "moto_server", "postgres_server", "postgres_url"}
)

#: the only identity ``seaweed_auth`` accepts
AUTH_ACCESS_KEY = "tiering-auth-key"
AUTH_SECRET_KEY = "tiering-auth-secret-do-not-print"


def servers_required() -> bool:
    return os.environ.get("TIERING_REQUIRE_SERVERS") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when CI demands real servers."""
    if servers_required():
        pytest.fail(f"{reason}\n(TIERING_REQUIRE_SERVERS=1 turns this skip into a failure)", pytrace=False)
    pytest.skip(reason)


def _start(what: str, start: Callable[[], T]) -> T:
    try:
        return start()
    except ServerUnavailable as exc:
        unavailable(f"{what} unavailable: {exc}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    server = _start("SeaweedFS", lambda: start_seaweed("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed2() -> Iterator[SeaweedServer]:
    server = _start("SeaweedFS (second)", lambda: start_seaweed("seaweed2"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed_auth() -> Iterator[SeaweedServer]:
    server = _start(
        "SeaweedFS with identities",
        lambda: start_seaweed("seaweed-auth", identities=(AUTH_ACCESS_KEY, AUTH_SECRET_KEY)),
    )
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class BucketRef:
    name: str
    endpoint: str
    server: SeaweedServer


@pytest.fixture
def bucket(seaweed: SeaweedServer) -> Iterator[BucketRef]:
    name = seaweed.make_bucket(f"t-{uuid.uuid4().hex[:16]}")
    try:
        yield BucketRef(name=name, endpoint=seaweed.endpoint, server=seaweed)
    finally:
        seaweed.remove_bucket(name)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = _start("moto server", start_moto)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A libpq URL of the PostgreSQL on which test databases are made."""
    return _start("PostgreSQL", postgres_admin_url)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    name, url = create_postgres_database(postgres_server)
    try:
        yield url
    finally:
        drop_postgres_database(postgres_server, name)
