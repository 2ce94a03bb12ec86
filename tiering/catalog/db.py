"""Engine, sessions and migrations for the catalog (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tiering.errors import CatalogError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

#: the newest migration shipped (``migrations/versions``); tests/unit/test_migrations.py keeps it equal to
#: Alembic's head, so opening a catalog checks the schema with one query instead of loading Alembic
SCHEMA_HEAD = "0003"


def dialect_insert(dialect: str, table: Any) -> Any:
    """An INSERT of ``table`` that can take ``on_conflict_do_update`` on this dialect (SQLite or PostgreSQL).

    The dialect modules load on first use: a command that upserts nothing does not pay for them.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def redact_url(url: str) -> str:
    """The catalog URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid catalog URL>"


def create_catalog_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine tuned for the catalog.

    SQLite: WAL journal (readers never block the writer), a 30 s busy timeout so concurrent workers
    wait instead of failing, foreign keys on. PostgreSQL: pre-ping so a restarted server is survived; sessions
    in UTC.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CatalogError(f"invalid catalog URL {redact_url(url)!r}: expected e.g. sqlite:///tiering.db") from exc
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                # pysqlite's implicit deferred BEGIN lets two writers deadlock on lock upgrade (SQLITE_BUSY
                # without waiting); take the write lock at BEGIN instead, so the busy timeout applies.
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(engine, "begin")
            def _begin_immediate(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

            return engine
        engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)

        @event.listens_for(engine, "connect")
        def _utc_session(dbapi_conn: Any, _record: Any) -> None:
            # the catalog holds UTC: times then come back in UTC as they are, with no zone conversion per value
            cur = dbapi_conn.cursor()
            cur.execute("SET TIME ZONE 'UTC'")
            cur.close()
            dbapi_conn.commit()

        return engine
    except (ArgumentError, ImportError) as exc:
        raise CatalogError(f"cannot use catalog {redact_url(url)}: {exc}") from exc


def _alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    script_location = resources.files("tiering.migrations")
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: latest). Idempotent."""
    from alembic import command

    cfg = _alembic_config(engine)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise CatalogError(f"cannot reach catalog {redact_url(str(engine.url))}: {exc.orig}") from exc


def schema_status(engine: Engine) -> tuple[str | None, str]:
    """(current revision in the database, newest revision shipped)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(engine)
    head = ScriptDirectory.from_config(cfg).get_current_head() or ""
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise CatalogError(f"cannot reach catalog {redact_url(str(engine.url))}: {exc.orig}") from exc
    return current, head


def _current_revision(engine: Engine) -> str | None:
    """The revision recorded in the catalog (Alembic's ``alembic_version`` table); None when there is none."""
    try:
        with engine.connect() as conn:
            has_table = engine.dialect.has_table(conn, "alembic_version")
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if has_table else None
    except OperationalError as exc:
        raise CatalogError(f"cannot reach catalog {redact_url(str(engine.url))}: {exc.orig}") from exc


def check_schema(engine: Engine) -> None:
    """Raise CatalogError unless the database schema is at the newest migration."""
    current, head = _current_revision(engine), SCHEMA_HEAD
    if current is None:
        raise CatalogError(
            f"catalog {redact_url(str(engine.url))} has no schema yet; run `tiering init` or `tiering migrate`"
        )
    if current != head:
        raise CatalogError(f"catalog schema is at {current}, this version needs {head}; run `tiering migrate`")


class Catalog:
    """Owns the engine and hands out sessions. One per process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        except OperationalError as exc:
            raise CatalogError(f"catalog error: {exc.orig}") from exc
        finally:
            session.close()

    def close(self) -> None:
        self.engine.dispose()
