"""SQLite helpers shared by the apps: WAL mode, busy timeout, numbered migrations.

Each app declares its schema as an ordered list of SQL scripts; :func:`connect` applies the
ones newer than the database's ``PRAGMA user_version`` inside a transaction, so an old
database file is upgraded in place and a half-applied migration never persists. The schema
version is read only after the write lock is taken (``BEGIN IMMEDIATE``), so several processes
opening a new database at once migrate it exactly once instead of racing to create tables.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Sequence

from .errors import ArtifactError

_lock = threading.Lock()


def connect(path: str | Path, migrations: Sequence[str] = (), *, check_same_thread: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) a SQLite database in WAL mode and apply pending migrations.

    ``":memory:"`` works for tests. Rows come back as :class:`sqlite3.Row`.
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=check_same_thread, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")  # first: the pragmas below may wait for other processes
        _set_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, migrations)
    except sqlite3.DatabaseError as exc:
        raise ArtifactError(f"database {path} is unreadable or corrupt: {exc}") from None
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _set_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    # Switching a brand-new file to WAL needs an exclusive lock; a concurrent opener can make it
    # fail with "database is locked" despite busy_timeout, so retry briefly.
    for attempt in range(attempts):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> int:
    """Apply migrations ``[current_version:]``; returns the new version.

    The version is read inside ``BEGIN IMMEDIATE``: another process that got the write lock
    first has already migrated, and this one sees its version and applies nothing twice.
    """
    with _lock:
        if schema_version(conn) >= len(migrations):  # the common case, read-only
            return _check_version(conn, migrations)
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            if current > len(migrations):
                raise ArtifactError(
                    f"database schema version {current} is newer than this code knows ({len(migrations)}); upgrade Verticore"
                )
            for version, script in enumerate(migrations[current:], start=current + 1):
                for stmt in _split_sql(script):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return schema_version(conn)


def _check_version(conn: sqlite3.Connection, migrations: Sequence[str]) -> int:
    current = schema_version(conn)
    if current > len(migrations):
        raise ArtifactError(
            f"database schema version {current} is newer than this code knows ({len(migrations)}); upgrade Verticore"
        )
    return current


def _split_sql(script: str) -> list[str]:
    # executescript() would COMMIT implicitly and break atomicity; split on complete statements.
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
