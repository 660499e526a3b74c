"""Usage metering per API key, endpoint and UTC day, in SQLite.

Per ``(key, endpoint, day)`` the meter counts requests, units (texts/items: a handler reports
them with ``request.state.units = n``; 0 when it does not), approximate input tokens, errors
(status >= 400) and the latency sum in ms. ``endpoint`` is the route template
(``/v1/support/sessions/{session_id}/messages``), never the raw path.

Input tokens are an approximation: the number of whitespace-separated words of the input texts
when the handler reports them (``request.state.tokens``; the core's /classify and /embed do),
otherwise the request body size in bytes / 4 (the usual chars-per-token rule of thumb).

Counting happens in memory (no write per request); a background thread adds the counters into
SQLite every ``flush_interval_s`` (default 0.5 s) and on shutdown, so a ``kill -9`` loses at most
the last ~1 s of counts, never the whole day.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..storage import connect

log = logging.getLogger("verticore.serving")

MIGRATIONS = [
    """
    CREATE TABLE usage (
        key TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        day TEXT NOT NULL,
        requests INTEGER NOT NULL DEFAULT 0,
        units INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        latency_ms_sum REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (key, endpoint, day)
    );
    """,
    "CREATE INDEX usage_day ON usage(day);",
]
FIELDS = ("requests", "units", "input_tokens", "errors", "latency_ms_sum")

_UPSERT = ("INSERT INTO usage(key, endpoint, day, requests, units, input_tokens, errors, latency_ms_sum) "
           "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(key, endpoint, day) DO UPDATE SET "
           "requests=requests+excluded.requests, units=units+excluded.units, "
           "input_tokens=input_tokens+excluded.input_tokens, errors=errors+excluded.errors, "
           "latency_ms_sum=latency_ms_sum+excluded.latency_ms_sum")


def utc_day(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc).strftime("%Y-%m-%d")


def seconds_to_next_utc_day(ts: float | None = None) -> int:
    now = time.time() if ts is None else ts
    return max(1, int(86400 - (now % 86400)) + 1)


def default_usage_db(home: Path | None = None) -> Path:
    """``$VERTICORE_HOME/serving/usage.db``."""
    from ..dashboard import home as _home

    return (home or _home()) / "serving" / "usage.db"


def approx_tokens(texts: list[str]) -> int:
    """Whitespace-separated words: a cheap, tokenizer-free stand-in for input tokens."""
    return sum(len(t.split()) for t in texts)


class Meter:
    """In-memory usage counters flushed to SQLite by a background thread."""

    def __init__(self, path: str | Path, flush_interval_s: float = 0.5, start: bool = True) -> None:
        self.path = Path(path)
        self.flush_interval_s = float(flush_interval_s)
        self._conn = connect(self.path, MIGRATIONS)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], list[float]] = {}
        self._admitted: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="verticore-meter", daemon=True)
            self._thread.start()

    def record(self, key: str, endpoint: str, *, status: int, ms: float, units: int = 0, tokens: int = 0,
               ts: float | None = None) -> None:
        k = (key, endpoint, utc_day(ts))
        with self._lock:
            c = self._pending.get(k)
            if c is None:
                c = self._pending[k] = [0, 0, 0, 0, 0.0]
            c[0] += 1
            c[1] += int(units)
            c[2] += int(tokens)
            c[3] += 1 if status >= 400 else 0
            c[4] += float(ms)

    def admit(self, key: str, limit: int, ts: float | None = None) -> bool:
        """Count one request against ``key``'s daily quota; False (not counted) when it is used up.

        The first check of a day starts from what the database already holds for that key and
        day (requests served before a restart count). Several server processes sharing one
        database each keep their own running count, so they may overshoot by what the others
        served since they started.
        """
        day = utc_day(ts)
        with self._lock:
            used = self._admitted.get((key, day))
            if used is None:
                for old in [k for k in self._admitted if k[1] != day]:
                    del self._admitted[old]
                used = self._stored_requests(key, day) + sum(
                    int(c[0]) for (k, _, d), c in self._pending.items() if k == key and d == day)
            if used >= limit:
                self._admitted[(key, day)] = used
                return False
            self._admitted[(key, day)] = used + 1
            return True

    def _stored_requests(self, key: str, day: str) -> int:
        with self._write_lock:
            row = self._conn.execute("SELECT COALESCE(SUM(requests), 0) FROM usage WHERE key=? AND day=?",
                                     (key, day)).fetchone()
        return int(row[0])

    def flush(self) -> int:
        """Write pending counters now; returns the number of rows touched."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        rows = [(k, e, d, int(c[0]), int(c[1]), int(c[2]), int(c[3]), float(c[4])) for (k, e, d), c in pending.items()]
        with self._write_lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(_UPSERT, rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                with self._lock:  # keep the counts for the next flush instead of losing them
                    for k, c in pending.items():
                        cur = self._pending.setdefault(k, [0, 0, 0, 0, 0.0])
                        for i in range(5):
                            cur[i] += c[i]
                log.warning("usage flush to %s failed (%s); will retry", self.path, exc)
                return 0
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception:  # never let the flusher die silently; next tick retries
                log.exception("usage flush failed")

    def close(self) -> None:
        """Stop the flusher and write what is pending (called on server shutdown)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.flush()


def query_usage(path: str | Path, key: str | None = None, since: str | None = None) -> list[dict[str, Any]]:
    """Usage rows ``{key, endpoint, day, requests, units, input_tokens, errors, latency_ms_sum,
    mean_latency_ms}`` from a usage database, oldest day first. ``since`` is ``YYYY-MM-DD``."""
    if since is not None:
        try:
            date.fromisoformat(since)
        except ValueError:
            raise DataError(f"invalid --since {since!r}: use YYYY-MM-DD") from None
    path = Path(path)
    if not path.exists():
        return []
    conn = connect(path, MIGRATIONS)
    try:
        sql, args = "SELECT * FROM usage WHERE 1=1", []
        if key:
            sql, args = sql + " AND key=?", args + [key]
        if since:
            sql, args = sql + " AND day>=?", args + [since]
        rows = conn.execute(sql + " ORDER BY day, key, endpoint", args).fetchall()
    finally:
        conn.close()
    out = []
    for r in rows:
        d = {k: r[k] for k in ("key", "endpoint", "day", *FIELDS)}
        d["mean_latency_ms"] = round(d["latency_ms_sum"] / d["requests"], 3) if d["requests"] else 0.0
        d["latency_ms_sum"] = round(d["latency_ms_sum"], 3)
        out.append(d)
    return out


__all__ = ["Meter", "approx_tokens", "default_usage_db", "query_usage", "seconds_to_next_utc_day", "utc_day"]
