"""The schema comes only from Alembic migrations, and the migrations match the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tiering.catalog.db import SCHEMA_HEAD, check_schema, create_catalog_engine, migrate, schema_status
from tiering.catalog.models import Base
from tiering.errors import CatalogError


def _diff(url: str) -> list[object]:
    engine = create_catalog_engine(url)
    migrate(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    return diff


def test_sqlite_schema_from_migrations_equals_the_models(tmp_path: Path) -> None:
    assert _diff(f"sqlite:///{tmp_path / 'c.db'}") == []


def test_postgres_schema_from_migrations_equals_the_models(postgres_url: str) -> None:
    assert _diff(postgres_url) == []


def test_migrate_twice_is_harmless_and_reaches_head(tmp_path: Path) -> None:
    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    migrate(engine)
    current, head = schema_status(engine)
    assert current == head
    assert head == SCHEMA_HEAD  # the constant that opening a catalog compares with, without loading Alembic
    assert "move_steps" in inspect(engine).get_table_names()
    engine.dispose()


def test_an_empty_database_is_reported_as_needing_init(tmp_path: Path) -> None:
    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(CatalogError, match="tiering init"):
        check_schema(engine)
    engine.dispose()
