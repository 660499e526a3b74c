"""Persistence: a storage interface and its SQLite implementation (one file, WAL, numbered migrations).

Tables: ``items`` (every ingested item with source, timestamps, text, scores, model versions and
per-sentence evidence), ``item_series`` (item -> entity/topic, for trend queries), ``alerts``
(one row per episode), ``outbox`` (webhook deliveries: the durable queue), ``delivery_attempts``,
``rejected`` (bad input with the reason), ``kv`` (detector state, file offsets).

The :class:`NewsStore` ABC is what the rest of the app uses, so a Postgres store can follow.
"""
from __future__ import annotations

import abc
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from verticore.storage import connect

from .items import ScoredItem

MIGRATIONS: list[str] = [
    # v1: items, alerts, outbox
    """
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        item_id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        url TEXT NOT NULL DEFAULT '',
        title TEXT NOT NULL,
        body TEXT NOT NULL DEFAULT '',
        published_at REAL NOT NULL,
        ingested_at REAL NOT NULL,
        title_hash TEXT NOT NULL,
        duplicate_of INTEGER REFERENCES items(id),
        sentiment TEXT,
        sentiment_score REAL,
        p_positive REAL,
        p_neutral REAL,
        p_negative REAL,
        topics TEXT NOT NULL DEFAULT '[]',
        entities TEXT NOT NULL DEFAULT '[]',
        evidence TEXT NOT NULL DEFAULT '[]',
        model_version TEXT,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX items_published ON items(published_at);
    CREATE INDEX items_title_hash ON items(title_hash, published_at);
    CREATE TABLE item_series (
        item_rowid INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (item_rowid, kind, key)
    );
    CREATE INDEX item_series_key ON item_series(kind, key);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        alert_key TEXT NOT NULL UNIQUE,
        rule TEXT NOT NULL,
        series_kind TEXT NOT NULL,
        series_key TEXT NOT NULL,
        direction TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        resolved_at REAL,
        window_count INTEGER NOT NULL,
        hit_count INTEGER NOT NULL,
        share REAL NOT NULL,
        baseline REAL NOT NULL,
        z REAL NOT NULL,
        evidence TEXT NOT NULL DEFAULT '[]',
        summary TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX alerts_series ON alerts(series_kind, series_key, opened_at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts(id),
        event TEXT NOT NULL,
        target TEXT NOT NULL,
        url TEXT NOT NULL,
        format TEXT NOT NULL,
        payload TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        last_status INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        delivered_at REAL
    );
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE TABLE delivery_attempts (
        id INTEGER PRIMARY KEY,
        outbox_id INTEGER NOT NULL REFERENCES outbox(id),
        at REAL NOT NULL,
        duration_s REAL NOT NULL,
        status_code INTEGER,
        error TEXT,
        ok INTEGER NOT NULL
    );
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
    """,
    # v2: topic-model version per item, rejected-input log
    """
    ALTER TABLE items ADD COLUMN topic_model_version TEXT;
    CREATE TABLE rejected (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        raw TEXT NOT NULL DEFAULT ''
    );
    """,
    # v3: item ids are per source (two feeds may both use guid "1" for different stories).
    # SQLite cannot drop a UNIQUE constraint, so the table is rebuilt. The new table references
    # itself as items_v3 (the RENAME below rewrites that to items), and item_series is copied
    # aside first because dropping the old table cascades into it.
    """
    CREATE TABLE items_v3 (
        id INTEGER PRIMARY KEY,
        item_id TEXT NOT NULL,
        source TEXT NOT NULL,
        url TEXT NOT NULL DEFAULT '',
        title TEXT NOT NULL,
        body TEXT NOT NULL DEFAULT '',
        published_at REAL NOT NULL,
        ingested_at REAL NOT NULL,
        title_hash TEXT NOT NULL,
        duplicate_of INTEGER REFERENCES items_v3(id),
        sentiment TEXT,
        sentiment_score REAL,
        p_positive REAL,
        p_neutral REAL,
        p_negative REAL,
        topics TEXT NOT NULL DEFAULT '[]',
        entities TEXT NOT NULL DEFAULT '[]',
        evidence TEXT NOT NULL DEFAULT '[]',
        model_version TEXT,
        meta TEXT NOT NULL DEFAULT '{}',
        topic_model_version TEXT,
        UNIQUE (source, item_id)
    );
    INSERT INTO items_v3 (id, item_id, source, url, title, body, published_at, ingested_at, title_hash, duplicate_of,
        sentiment, sentiment_score, p_positive, p_neutral, p_negative, topics, entities, evidence, model_version, meta,
        topic_model_version)
    SELECT id, item_id, source, url, title, body, published_at, ingested_at, title_hash, duplicate_of,
        sentiment, sentiment_score, p_positive, p_neutral, p_negative, topics, entities, evidence, model_version, meta,
        topic_model_version FROM items;
    CREATE TABLE item_series_v3_copy AS SELECT item_rowid, kind, key FROM item_series;
    DROP TABLE items;
    ALTER TABLE items_v3 RENAME TO items;
    DELETE FROM item_series;
    INSERT OR IGNORE INTO item_series (item_rowid, kind, key) SELECT item_rowid, kind, key FROM item_series_v3_copy;
    DROP TABLE item_series_v3_copy;
    CREATE INDEX items_published ON items(published_at);
    CREATE INDEX items_title_hash ON items(title_hash, published_at);
    CREATE INDEX items_item_id ON items(item_id);
    """,
    # v4: alerting (issue #15): the signal and reason of an alert, whether it is muted, silences
    """
    ALTER TABLE alerts ADD COLUMN signal TEXT;
    ALTER TABLE alerts ADD COLUMN reason TEXT;
    ALTER TABLE alerts ADD COLUMN silenced_by INTEGER;
    ALTER TABLE alerts ADD COLUMN inhibited_by TEXT;
    CREATE INDEX alerts_open_window ON alerts(opened_at, resolved_at);
    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_at REAL NOT NULL,
        ends_at REAL NOT NULL CHECK (ends_at > starts_at),
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_at REAL NOT NULL,
        expired_at REAL
    );
    CREATE INDEX silences_ends ON silences(ends_at);
    """,
    # v5: analysts' sentiment labels (issue #14): every relabel kept with who gave it and when
    """
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        item_rowid INTEGER REFERENCES items(id) ON DELETE SET NULL,
        item_id TEXT NOT NULL,
        item_source TEXT NOT NULL,
        text TEXT NOT NULL,
        label TEXT NOT NULL CHECK (label IN ('positive', 'neutral', 'negative')),
        previous TEXT,
        source TEXT NOT NULL,
        labelled_by TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX labels_created ON labels(created_at, id);
    """,
    # v6: analysts' topic labels (issue #14), the topic model's feedback, kept like the sentiment labels
    """
    CREATE TABLE topic_labels (
        id INTEGER PRIMARY KEY,
        item_rowid INTEGER REFERENCES items(id) ON DELETE SET NULL,
        item_id TEXT NOT NULL,
        item_source TEXT NOT NULL,
        text TEXT NOT NULL,
        topic TEXT NOT NULL CHECK (length(topic) BETWEEN 1 AND 64),
        previous TEXT,
        source TEXT NOT NULL,
        labelled_by TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX topic_labels_created ON topic_labels(created_at, id);
    """,
]
SENTIMENT_LABELS = ("positive", "neutral", "negative")


class NewsStore(abc.ABC):
    """Storage interface of the monitor (SQLite today; the methods map one-to-one onto SQL)."""

    @abc.abstractmethod
    def transaction(self): ...
    @abc.abstractmethod
    def existing_item_ids(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...
    @abc.abstractmethod
    def find_title_hashes(self, hashes: Sequence[str], since: float) -> dict[str, int]: ...
    @abc.abstractmethod
    def insert_items(self, items: Sequence[ScoredItem]) -> list[int]: ...
    @abc.abstractmethod
    def recent_items(self, limit: int = 100, **filters: Any) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    def record_rejected(self, source: str, reason: str, raw: str = "") -> None: ...
    @abc.abstractmethod
    def upsert_alert(self, alert: dict[str, Any]) -> int: ...
    @abc.abstractmethod
    def list_alerts(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    def enqueue(self, alert_id: int, event: str, target: str, url: str, fmt: str, payload: dict[str, Any],
                idempotency_key: str, now: float) -> bool: ...
    @abc.abstractmethod
    def claim_due(self, now: float, limit: int = 20, lease_s: float = 60.0, *,
                  due_by: float | None = None) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    def finish_attempt(self, outbox_id: int, *, ok: bool, now: float, duration_s: float, status: int | None,
                       error: str | None, next_attempt_at: float | None, dead: bool,
                       lease: float | None = None) -> bool: ...
    @abc.abstractmethod
    def list_outbox(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    def resend(self, outbox_id: int, now: float) -> bool: ...
    @abc.abstractmethod
    def series_items(self, kind: str, key: str, since: float | None = None) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    def series_keys(self, kind: str) -> list[tuple[str, int]]: ...
    @abc.abstractmethod
    def count_items(self, duplicates: bool | None = None) -> int: ...
    @abc.abstractmethod
    def list_rejected(self, limit: int = 100) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    def attempts_for(self, outbox_id: int) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    def close(self) -> None: ...
    @abc.abstractmethod
    def get_alert(self, alert_key: str) -> dict[str, Any] | None: ...
    @abc.abstractmethod
    def alerts_firing_at(self, t: float) -> list[dict[str, Any]]: ...
    @abc.abstractmethod
    def mark_alert_muted(self, alert_key: str, silence_id: int | None, inhibited_by: str | None) -> None: ...
    @abc.abstractmethod
    def add_silence(self, silence: Any) -> int: ...
    @abc.abstractmethod
    def list_silences(self, *, include_expired: bool = False, now: float | None = None) -> list[Any]: ...
    @abc.abstractmethod
    def silences_overlapping(self, t: float) -> list[Any]: ...
    @abc.abstractmethod
    def expire_silence(self, silence_id: int, now: float) -> bool: ...
    @abc.abstractmethod
    def kv_get(self, key: str) -> Any: ...
    @abc.abstractmethod
    def kv_set(self, key: str, value: Any) -> None: ...


class SQLiteStore(NewsStore):
    """SQLite implementation. Thread-safe (one connection guarded by a lock); WAL lets other
    processes (the dashboard) read while the monitor writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.conn: sqlite3.Connection = connect(self.path, MIGRATIONS, check_same_thread=False)
        self._lock = threading.RLock()
        self._depth = 0

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error); nested calls join the outer one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    # -- items -----------------------------------------------------------------------
    def existing_item_ids(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """The ``(source, item_id)`` pairs of ``keys`` already stored (an id is unique per source only)."""
        wanted = {(str(s), str(i)) for s, i in keys}
        ids = sorted({i for _, i in wanted})
        out: set[tuple[str, str]] = set()
        for n in range(0, len(ids), 500):
            chunk = ids[n:n + 500]
            rows = self._query(f"SELECT source, item_id FROM items WHERE item_id IN ({','.join('?' * len(chunk))})", chunk)
            out.update(k for k in ((r["source"], r["item_id"]) for r in rows) if k in wanted)
        return out

    def find_title_hashes(self, hashes: Sequence[str], since: float) -> dict[str, int]:
        out: dict[str, int] = {}
        hs = list(dict.fromkeys(hashes))
        for i in range(0, len(hs), 500):
            chunk = hs[i:i + 500]
            rows = self._query(
                f"SELECT title_hash, MIN(COALESCE(duplicate_of, id)) AS id FROM items WHERE title_hash IN "
                f"({','.join('?' * len(chunk))}) AND published_at >= ? GROUP BY title_hash", [*chunk, since])
            out.update({r["title_hash"]: int(r["id"]) for r in rows})
        return out

    def insert_items(self, items: Sequence[ScoredItem]) -> list[int]:
        rowids: list[int] = []
        with self.transaction() as conn:
            for s in items:
                it = s.item
                p = s.probabilities
                cur = conn.execute(
                    "INSERT INTO items (item_id, source, url, title, body, published_at, ingested_at, title_hash, duplicate_of,"
                    " sentiment, sentiment_score, p_positive, p_neutral, p_negative, topics, entities, evidence, model_version,"
                    " topic_model_version, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (it.item_id, it.source, it.url, it.title, it.body, it.published_at, it.ingested_at, s.title_hash,
                     s.duplicate_of, s.sentiment, s.sentiment_score, p.get("positive"), p.get("neutral"), p.get("negative"),
                     json.dumps(s.topics), json.dumps(s.entities), json.dumps([e.to_dict() for e in s.evidence]),
                     s.model_version, s.topic_model_version, json.dumps(it.meta, default=str)))
                rowid = int(cur.lastrowid)
                s.rowid = rowid
                rowids.append(rowid)
                if not s.is_duplicate:
                    series = [("entity", e) for e in s.entities] + [("topic", t) for t in s.topics] + [("all", "*")]
                    conn.executemany("INSERT OR IGNORE INTO item_series (item_rowid, kind, key) VALUES (?,?,?)",
                                     [(rowid, k, v) for k, v in series])
        return rowids

    def recent_items(self, limit: int = 100, *, entity: str | None = None, topic: str | None = None,
                     since: float | None = None, include_duplicates: bool = False, sentiment: str | None = None) -> list[dict[str, Any]]:
        """Newest first; JSON columns decoded."""
        where, params = [], []
        join = ""
        if entity or topic:
            join = "JOIN item_series s ON s.item_rowid = i.id"
            where.append("s.kind = ? AND s.key = ?")
            params += ["entity", entity] if entity else ["topic", topic]
        if since is not None:
            where.append("i.published_at >= ?")
            params.append(since)
        if not include_duplicates:
            where.append("i.duplicate_of IS NULL")
        if sentiment:
            where.append("i.sentiment = ?")
            params.append(sentiment)
        sql = f"SELECT i.* FROM items i {join} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY i.published_at DESC, i.id DESC LIMIT ?"
        rows = self._query(sql, [*params, int(limit)])
        for r in rows:
            for k in ("topics", "entities", "evidence", "meta"):
                r[k] = json.loads(r[k]) if r.get(k) else ([] if k != "meta" else {})
        return rows

    def series_items(self, kind: str, key: str, since: float | None = None) -> list[dict[str, Any]]:
        """(published_at, sentiment, sentiment_score) of the non-duplicate items of one series, oldest first."""
        params: list[Any] = [kind, key]
        extra = ""
        if since is not None:
            extra = "AND i.published_at >= ?"
            params.append(since)
        return self._query(
            "SELECT i.id, i.published_at, i.sentiment, i.sentiment_score, i.title FROM items i JOIN item_series s ON s.item_rowid = i.id"
            f" WHERE s.kind = ? AND s.key = ? AND i.duplicate_of IS NULL {extra} ORDER BY i.published_at", params)

    def series_keys(self, kind: str) -> list[tuple[str, int]]:
        rows = self._query("SELECT key, COUNT(*) AS n FROM item_series WHERE kind = ? GROUP BY key ORDER BY n DESC", [kind])
        return [(r["key"], int(r["n"])) for r in rows]

    def count_items(self, duplicates: bool | None = None) -> int:
        cond = "" if duplicates is None else ("WHERE duplicate_of IS NOT NULL" if duplicates else "WHERE duplicate_of IS NULL")
        return int(self._query(f"SELECT COUNT(*) AS n FROM items {cond}")[0]["n"])

    def record_rejected(self, source: str, reason: str, raw: str = "") -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO rejected (at, source, reason, raw) VALUES (?,?,?,?)",
                         (time.time(), source[:200], reason[:500], raw[:2000]))

    def list_rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM rejected ORDER BY id DESC LIMIT ?", [int(limit)])

    # -- alerts ----------------------------------------------------------------------
    def upsert_alert(self, alert: dict[str, Any]) -> int:
        """Insert or update an alert by ``alert_key``; returns its id."""
        cols = ["alert_key", "rule", "series_kind", "series_key", "direction", "severity", "state", "opened_at",
                "updated_at", "resolved_at", "window_count", "hit_count", "share", "baseline", "z", "evidence", "summary",
                "signal", "reason"]
        vals = [json.dumps(alert[c]) if c == "evidence" else alert.get(c) for c in cols]
        updates = ", ".join(f"{c}=excluded.{c}" for c in cols[5:])
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                         f"ON CONFLICT(alert_key) DO UPDATE SET {updates}", vals)
            return int(conn.execute("SELECT id FROM alerts WHERE alert_key = ?", (alert["alert_key"],)).fetchone()[0])

    def list_alerts(self, state: str | None = None, limit: int = 200, *, series_key: str | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if state:
            where.append("a.state = ?")
            params.append(state)
        if series_key:
            where.append("a.series_key = ?")
            params.append(series_key)
        rows = self._query(
            "SELECT a.*, (SELECT COUNT(*) FROM outbox o WHERE o.alert_id = a.id AND o.state = 'delivered') AS delivered,"
            " (SELECT COUNT(*) FROM outbox o WHERE o.alert_id = a.id AND o.state = 'dead') AS dead,"
            " (SELECT COUNT(*) FROM outbox o WHERE o.alert_id = a.id AND o.state IN ('pending', 'sending')) AS pending,"
            " (SELECT COALESCE(SUM(attempts), 0) FROM outbox o WHERE o.alert_id = a.id) AS attempts"
            f" FROM alerts a {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY a.opened_at DESC LIMIT ?",
            [*params, int(limit)])
        for r in rows:
            r["evidence"] = json.loads(r["evidence"] or "[]")
        return rows

    def get_alert(self, alert_key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM alerts WHERE alert_key = ?", [alert_key])
        if not rows:
            return None
        rows[0]["evidence"] = json.loads(rows[0]["evidence"] or "[]")
        return rows[0]

    def alerts_firing_at(self, t: float) -> list[dict[str, Any]]:
        """Alerts open at time ``t`` (opened at or before it, not resolved by then)."""
        return self._query("SELECT id, alert_key, rule, series_kind, series_key, direction, severity, signal, opened_at,"
                           " resolved_at, state FROM alerts WHERE opened_at <= ? AND (resolved_at IS NULL OR resolved_at > ?)",
                           [t, t])

    def mark_alert_muted(self, alert_key: str, silence_id: int | None, inhibited_by: str | None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE alerts SET silenced_by = ?, inhibited_by = ? WHERE alert_key = ?",
                         (silence_id, inhibited_by, alert_key))

    # -- silences --------------------------------------------------------------------
    def add_silence(self, silence: Any) -> int:
        """Store a validated :class:`~finance_sentiment.alerting.Silence`; returns its id."""
        with self.transaction() as conn:
            cur = conn.execute("INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment, created_at)"
                               " VALUES (?,?,?,?,?,?)", (json.dumps(silence.matchers, sort_keys=True), silence.starts_at,
                                                         silence.ends_at, silence.created_by, silence.comment,
                                                         silence.created_at if silence.created_at is not None else time.time()))
            silence.id = int(cur.lastrowid)
            return silence.id

    def _silences(self, where: str = "", params: Sequence[Any] = ()) -> list[Any]:
        from .alerting import silence_from_row

        return [silence_from_row(r) for r in self._query(f"SELECT * FROM silences {where} ORDER BY id", params)]

    def list_silences(self, *, include_expired: bool = False, now: float | None = None) -> list[Any]:
        """Silences not ended yet at ``now`` (all of them with ``include_expired``)."""
        if include_expired:
            return self._silences()
        return self._silences("WHERE ends_at > ?", [time.time() if now is None else now])

    def get_silence(self, silence_id: int) -> Any:
        rows = self._silences("WHERE id = ?", [int(silence_id)])
        return rows[0] if rows else None

    def silences_overlapping(self, t: float) -> list[Any]:
        """Silences that have not ended by ``t`` (active at ``t`` or later)."""
        return self._silences("WHERE ends_at > ?", [t])

    def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence now (kept, with ``expired_at``); False when there is no such silence still running."""
        with self.transaction() as conn:
            # a silence that has not started yet is moved to end now as well (it never mutes anything)
            cur = conn.execute("UPDATE silences SET starts_at = MIN(starts_at, ? - 0.001), ends_at = ?, expired_at = ?"
                               " WHERE id = ? AND ends_at > ?", (now, now, now, int(silence_id), now))
            return cur.rowcount == 1

    # -- outbox ----------------------------------------------------------------------
    def enqueue(self, alert_id: int, event: str, target: str, url: str, fmt: str, payload: dict[str, Any],
                idempotency_key: str, now: float) -> bool:
        """Queue a delivery; a second enqueue with the same idempotency key is ignored (returns False)."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO outbox (alert_id, event, target, url, format, payload, idempotency_key, state,"
                " attempts, next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?, 'pending', 0, ?, ?)",
                (alert_id, event, target, url, fmt, json.dumps(payload, default=str), idempotency_key, now, now))
            return cur.rowcount == 1

    def claim_due(self, now: float, limit: int = 20, lease_s: float = 60.0, *, due_by: float | None = None) -> list[dict[str, Any]]:
        """Atomically lease up to ``limit`` due deliveries (pending with ``next_attempt_at <= due_by``
        (default ``now``), or 'sending' whose lease expired because a worker died mid-send). Each
        row's ``lease_until`` is its lease token for :meth:`finish_attempt`. Workers claim one row at
        a time (``limit=1``) right before sending it, so a lease never runs out while the row waits
        behind others in a batch."""
        due = now if due_by is None else min(due_by, now)
        with self.transaction() as conn:
            rows = [dict(r) for r in conn.execute(
                "SELECT * FROM outbox WHERE (state = 'pending' AND next_attempt_at <= ?) OR (state = 'sending' AND lease_until < ?)"
                " ORDER BY next_attempt_at, id LIMIT ?", (due, due, int(limit))).fetchall()]
            for r in rows:
                r["lease_until"] = now + lease_s
                conn.execute("UPDATE outbox SET state = 'sending', lease_until = ? WHERE id = ?", (r["lease_until"], r["id"]))
        for r in rows:
            r["state"] = "sending"
            r["payload"] = json.loads(r["payload"])
        return rows

    def finish_attempt(self, outbox_id: int, *, ok: bool, now: float, duration_s: float, status: int | None,
                       error: str | None, next_attempt_at: float | None, dead: bool,
                       lease: float | None = None) -> bool:
        """Record one attempt and move the row on. With ``lease`` (the claim's ``lease_until``) a
        failure only reschedules the row if this worker still holds it (after an expired lease
        another worker owns it); a success always marks it delivered, which is the receiver's truth.
        Returns whether the row's state was changed."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO delivery_attempts (outbox_id, at, duration_s, status_code, error, ok) VALUES (?,?,?,?,?,?)",
                         (outbox_id, now, duration_s, status, error, int(ok)))
            if ok:
                cur = conn.execute("UPDATE outbox SET state='delivered', attempts=attempts+1, delivered_at=?, last_status=?,"
                                   " last_error=NULL, lease_until=NULL WHERE id=? AND state != 'delivered'", (now, status, outbox_id))
            else:
                held = "" if lease is None else " AND state = 'sending' AND lease_until = ?"
                cur = conn.execute("UPDATE outbox SET state=?, attempts=attempts+1, next_attempt_at=?, last_status=?, last_error=?,"
                                   " lease_until=NULL WHERE id=? AND state != 'delivered'" + held,
                                   ("dead" if dead else "pending", next_attempt_at if next_attempt_at is not None else now, status,
                                    (error or "")[:500], outbox_id, *(() if lease is None else (lease,))))
            return cur.rowcount == 1

    def list_outbox(self, state: str | None = None, limit: int = 200, *, alert_id: int | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if state:
            where.append("state = ?")
            params.append(state)
        if alert_id is not None:
            where.append("alert_id = ?")
            params.append(alert_id)
        rows = self._query(f"SELECT * FROM outbox {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC LIMIT ?",
                           [*params, int(limit)])
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows

    def attempts_for(self, outbox_id: int) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM delivery_attempts WHERE outbox_id = ? ORDER BY id", [outbox_id])

    def resend(self, outbox_id: int, now: float) -> bool:
        """Move a dead-lettered delivery back to pending (same idempotency key, attempts reset)."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE outbox SET state='pending', attempts=0, next_attempt_at=?, lease_until=NULL"
                               " WHERE id=? AND state='dead'", (now, outbox_id))
            return cur.rowcount == 1

    # -- kv --------------------------------------------------------------------------
    def kv_get(self, key: str) -> Any:
        rows = self._query("SELECT value FROM kv WHERE key = ?", [key])
        return json.loads(rows[0]["value"]) if rows else None

    def kv_set(self, key: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO kv (key, value, updated_at) VALUES (?,?,?) ON CONFLICT(key) DO UPDATE SET"
                         " value=excluded.value, updated_at=excluded.updated_at", (key, json.dumps(value), time.time()))

    # -- labels (issue #14) ------------------------------------------------------------
    def find_items(self, item_id: str, source: str | None = None) -> list[dict[str, Any]]:
        """Stored items with this ``item_id`` (one per source; ``source`` narrows it), as rows."""
        sql, params = "SELECT id, item_id, source, title, sentiment, topics FROM items WHERE item_id = ?", [str(item_id)]
        if source:
            sql, params = sql + " AND source = ?", [*params, str(source)]
        return self._query(sql + " ORDER BY id", params)

    def items_by_rowid(self, rowids: Sequence[int]) -> list[dict[str, Any]]:
        """Stored items by their row ids (the ``id`` the dashboard feed shows), as rows."""
        ids = [int(i) for i in rowids]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return self._query(f"SELECT id, item_id, source, title, sentiment, topics FROM items WHERE id IN ({marks})",
                           ids)

    def add_label(self, item: dict[str, Any], label: str, *, by: str | None = None, source: str = "analyst",
                  created_at: str | None = None) -> dict[str, Any]:
        """Record a sentiment label for a stored item (a row of :meth:`find_items` or :meth:`recent_items`);
        the item's headline is the labelled text. Every label is kept (the retrain loop resolves conflicts)."""
        from verticore.errors import DataError
        from verticore.text import utc_iso

        label = str(label).strip().lower()
        if label not in SENTIMENT_LABELS:
            raise DataError(f"label {label!r} is not one of {', '.join(SENTIMENT_LABELS)}")
        when = created_at or utc_iso(timespec="microseconds")
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO labels (item_rowid, item_id, item_source, text, label, previous, source, labelled_by,"
                " created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (item.get("id"), str(item["item_id"]), str(item["source"]), str(item["title"]), label,
                 item.get("sentiment"), source, by, when))
            row_id = cur.lastrowid
        return self._query("SELECT * FROM labels WHERE id = ?", [row_id])[0]

    def list_labels(self, since: str | None = None) -> list[dict[str, Any]]:
        """Sentiment labels oldest first (``since``: ISO 8601 UTC time, only later ones)."""
        return self._labels_since("labels", since)

    def _labels_since(self, table: str, since: str | None) -> list[dict[str, Any]]:
        assert table in ("labels", "topic_labels")  # a fixed name, never user input
        if since:
            return self._query(f"SELECT * FROM {table} WHERE created_at > ? ORDER BY created_at, id", [since])
        return self._query(f"SELECT * FROM {table} ORDER BY created_at, id")

    def add_topic_label(self, item: dict[str, Any], topic: str, *, known: Sequence[str] | None = None,
                        by: str | None = None, source: str = "analyst",
                        created_at: str | None = None) -> dict[str, Any]:
        """Record a topic label for a stored item (its headline is the labelled text). ``known``: the
        topics the topic model has (a label outside them is refused: the classifier cannot learn a new
        class from a handful of relabels). Every label is kept; the retrain loop resolves conflicts."""
        from verticore.errors import DataError
        from verticore.text import utc_iso

        topic = " ".join(str(topic).split()).lower()
        if not topic or len(topic) > 64:
            raise DataError("a topic label must be 1 to 64 characters")
        if known is not None and topic not in {str(k).lower() for k in known}:
            raise DataError(f"topic {topic!r} is not one the topic model knows ({', '.join(sorted(known))})")
        previous = item.get("topics")
        if isinstance(previous, str):
            try:
                previous = json.loads(previous)
            except ValueError:
                previous = None
        prev_text = ",".join(map(str, previous)) if isinstance(previous, list) and previous else None
        when = created_at or utc_iso(timespec="microseconds")
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO topic_labels (item_rowid, item_id, item_source, text, topic, previous, source,"
                " labelled_by, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (item.get("id"), str(item["item_id"]), str(item["source"]), str(item["title"]), topic, prev_text,
                 source, by, when))
            row_id = cur.lastrowid
        return self._query("SELECT * FROM topic_labels WHERE id = ?", [row_id])[0]

    def list_topic_labels(self, since: str | None = None) -> list[dict[str, Any]]:
        """Topic labels oldest first (``since``: ISO 8601 UTC time, only later ones)."""
        return self._labels_since("topic_labels", since)
