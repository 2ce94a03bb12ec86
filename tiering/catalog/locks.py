"""Locks that die with their process: one nightly planner, one scheduler leader, at a time.

PostgreSQL: a session-level advisory lock on a connection held open for the lock's lifetime; the server
frees it when the connection (or the process) dies. SQLite: ``flock`` on a file beside the database; the
kernel frees it when the process dies. Neither needs a lease or a cleanup after a crash.

A PostgreSQL lock can also be lost while its holder runs (its connection terminated): a long-lived holder
calls :meth:`ProcessLock.check` every few seconds, and fences its work (:mod:`tiering.catalog.leader`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from tiering.app import App
from tiering.errors import LockHeld


class ProcessLock:
    """A named, non-blocking, process-lifetime lock on the catalog. ``acquire`` returns False when held."""

    def __init__(self, app: App, name: str) -> None:
        self.app = app
        self.name = name
        self._conn: Any = None
        self._file: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._file is not None

    def acquire(self) -> bool:
        if self.held:
            return True
        engine = self.app.catalog.engine
        if engine.dialect.name == "postgresql":
            conn = engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key()}).scalar())
            conn.commit()
            if not got:
                conn.close()
                return False
            self._conn = conn
            return True
        path = self._lock_path()
        fh = open(path, "ab")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n".encode())
        fh.flush()
        self._file = fh
        return True

    def check(self) -> bool:
        """Whether the lock is still ours, asked of whoever keeps it; False (and the lock dropped) once lost.

        PostgreSQL: the lock's connection must answer and hold the advisory lock in ``pg_locks`` (an
        administrator's ``pg_terminate_backend``, a server restart or a dropped network frees the lock
        without telling us). A file lock: the lock file must still be the one locked (not deleted or replaced).
        """
        if self._conn is not None:
            try:
                held = bool(self._conn.execute(
                    text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                         "AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = :k"),
                    {"k": self._key()},
                ).scalar())
                self._conn.commit()
            except Exception:  # noqa: BLE001 - any failure of the lock's connection means the lock is gone
                held = False
            if not held:
                self.release()
            return held
        if self._file is not None:
            try:
                same = os.stat(self._lock_path()).st_ino == os.fstat(self._file.fileno()).st_ino
            except OSError:
                same = False
            if not same:
                self.release()
            return same
        return False

    def _key(self) -> int:
        return zlib.crc32(f"tiering:{self.name}".encode())

    def _lock_path(self) -> Path:
        url = make_url(self.app.config.catalog_url())
        db = url.database
        if not db or db == ":memory:":
            base = Path(self.app.config.base_dir) / ".tiering"
            base.mkdir(parents=True, exist_ok=True)
            return base / f"{self.name}.lock"
        return Path(f"{db}.{self.name}.lock")

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # closing the session releases the advisory lock
            self._conn = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                self._file.close()
            self._file = None


@contextlib.contextmanager
def exclusive(app: App, name: str) -> Iterator[ProcessLock]:
    """Hold lock ``name`` for the block, or raise :class:`LockHeld` at once when another process holds it."""
    lock = ProcessLock(app, name)
    if not lock.acquire():
        raise LockHeld(name)
    try:
        yield lock
    finally:
        lock.release()
