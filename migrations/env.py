"""Alembic environment: the only way the catalog schema is made.

Run by ``tiering init`` / ``tiering migrate`` (programmatically, with a live connection in
``config.attributes["connection"]``) or by ``alembic`` with ``alembic.ini`` and ``-x url=...``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from tiering.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    x = context.get_x_argument(as_dictionary=True)
    url = x.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the catalog URL: alembic -x url=sqlite:///tiering.db upgrade head")
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
