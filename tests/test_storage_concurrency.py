"""Several processes opening (and so migrating) one new database at once: each open succeeds, once."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

MIGRATIONS = (
    "CREATE TABLE items (id INTEGER PRIMARY KEY, title TEXT);\nCREATE INDEX items_title ON items(title);",
    "ALTER TABLE items ADD COLUMN source TEXT;",
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT);",
)


def _open_many(path: str, barrier, n: int, out) -> None:
    from verticore.storage import connect

    errors = []
    barrier.wait()
    for _ in range(n):
        try:
            conn = connect(path, MIGRATIONS)
            conn.execute("INSERT INTO items (title, source) VALUES ('t', 's')")
            conn.close()
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            errors.append(f"{type(exc).__name__}: {exc}")
    out.put(errors)


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_first_opens_migrate_once(tmp_path, round_):
    ctx = mp.get_context("spawn")
    path = str(tmp_path / "new.db")
    procs, barrier, out = 5, ctx.Barrier(5), ctx.Queue()
    workers = [ctx.Process(target=_open_many, args=(path, barrier, 5, out)) for _ in range(procs)]
    for w in workers:
        w.start()
    errors = [e for _ in workers for e in out.get(timeout=120)]
    for w in workers:
        w.join(timeout=60)
    assert errors == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == procs * 5


def test_newer_schema_is_refused(tmp_path):
    from verticore.errors import ArtifactError
    from verticore.storage import connect

    path = tmp_path / "db.sqlite"
    connect(path, MIGRATIONS).close()
    with pytest.raises(ArtifactError, match="newer than this code knows"):
        connect(path, MIGRATIONS[:1])
