"""A small webhook receiver on loopback: records each alert event once (by idempotency key),
verifies signatures, and can be told to fail, hang, answer slowly or trickle. Used by the tests,
the demo, the fault bench, and by ``finance-sentiment receiver`` to try a webhook configuration.

With ``db`` it keeps what it accepted in SQLite (``verticore.storage.connect``), so exactly-once
holds across its own restarts and a bench can count afterwards::

    SELECT COUNT(*) FROM accepted;                        -- unique deliveries
    SELECT COALESCE(SUM(duplicates), 0) FROM accepted;    -- duplicate sends of accepted keys
    SELECT COUNT(*) FROM requests;                        -- every request, failed ones included
    SELECT alert_key, COUNT(*) FROM accepted GROUP BY alert_key;  -- keys per alert
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from verticore.errors import DataError
from verticore.storage import connect

from .webhooks import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

MODES = ("ok", "fail", "hang", "reject", "slow", "trickle")
MAX_BODY = 1_000_000

RECEIVER_MIGRATIONS: list[str] = [
    """
    CREATE TABLE accepted (
        idempotency_key TEXT PRIMARY KEY,
        alert_key TEXT,
        event TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        duplicates INTEGER NOT NULL DEFAULT 0,
        payload TEXT NOT NULL
    );
    CREATE INDEX accepted_alert ON accepted(alert_key);
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        idempotency_key TEXT,
        mode TEXT NOT NULL,
        status INTEGER NOT NULL
    );
    """,
]


def _alert_key(payload: Any) -> str | None:
    """The alert episode a payload is about (generic JSON format); None for Slack-format bodies."""
    if isinstance(payload, dict) and isinstance(payload.get("alert"), dict):
        key = payload["alert"].get("key")
        return str(key) if key is not None else None
    return None


def receiver_counts(db: str | Path) -> dict[str, int]:
    """What a receiver database saw: unique deliveries, duplicate sends, requests, alerts, the most
    idempotency keys any one alert received (more than the number of its events means duplicates)."""
    if not Path(db).exists():
        raise DataError(f"receiver database not found: {db}")
    conn = connect(db, RECEIVER_MIGRATIONS)
    try:
        one = conn.execute("SELECT COUNT(*) AS unique_deliveries, COALESCE(SUM(duplicates), 0) AS duplicate_sends,"
                           " COUNT(DISTINCT alert_key) AS alerts FROM accepted").fetchone()
        requests = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        per_alert = conn.execute("SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM accepted"
                                 " WHERE alert_key IS NOT NULL GROUP BY alert_key, event)").fetchone()[0]
        return {"unique_deliveries": int(one["unique_deliveries"]), "duplicate_sends": int(one["duplicate_sends"]),
                "alerts": int(one["alerts"]), "requests": int(requests), "max_keys_per_alert_event": int(per_alert)}
    finally:
        conn.close()


class LocalReceiver:
    """Threaded HTTP receiver on ``host:<port>`` (0 = a free port).

    ``mode``: ``ok`` (200), ``fail`` (503), ``reject`` (400), ``hang`` (processes, then sleeps
    ``hang_s`` before answering 200: a timed-out-but-processed request), ``slow`` (sleeps ``slow_s``,
    then processes and answers 200), ``trickle`` (processes, then sends the answer one byte every
    ``trickle_s``). ``processed`` holds each idempotency key's payload once; ``requests`` counts every
    request; ``duplicates`` counts requests for keys already accepted. With ``db`` the accepted keys
    (first-seen time, duplicate count) and a request log persist across restarts.
    """

    def __init__(self, port: int = 0, *, secret: str | None = None, mode: str = "ok", hang_s: float = 2.0,
                 slow_s: float = 5.0, trickle_s: float = 1.0, db: str | Path | None = None,
                 host: str = "127.0.0.1") -> None:
        if mode not in MODES:
            raise DataError(f"receiver mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.secret = secret
        self.mode = mode
        self.hang_s = hang_s
        self.slow_s = slow_s
        self.trickle_s = trickle_s
        self.processed: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.duplicates = 0
        self.bad_signatures = 0
        self._lock = threading.Lock()
        self.db_path = str(db) if db is not None else None
        self._conn = connect(self.db_path, RECEIVER_MIGRATIONS, check_same_thread=False) if db is not None else None
        if self._conn is not None:
            for r in self._conn.execute("SELECT idempotency_key, payload FROM accepted"):
                self.processed[r["idempotency_key"]] = json.loads(r["payload"])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    return self._answer(413, {"error": "bad length"}, None)
                body = self.rfile.read(length)
                key = self.headers.get(IDEMPOTENCY_HEADER) or ""
                with receiver._lock:
                    receiver.requests += 1
                    mode = receiver.mode
                if receiver.secret is not None:
                    ok = verify_signature(receiver.secret, self.headers.get(TIMESTAMP_HEADER, ""), body,
                                          self.headers.get(SIGNATURE_HEADER, ""))
                    if not ok:
                        with receiver._lock:
                            receiver.bad_signatures += 1
                        return self._answer(401, {"error": "bad signature"}, key)
                if mode == "fail":
                    return self._answer(503, {"error": "temporarily unavailable"}, key)
                if mode == "reject":
                    return self._answer(400, {"error": "rejected"}, key)
                try:
                    payload = json.loads(body)
                except json.JSONDecodeError:
                    return self._answer(400, {"error": "not JSON"}, key)
                if mode == "slow":
                    time.sleep(receiver.slow_s)
                duplicate = receiver._accept(key, payload)
                if mode == "hang":
                    time.sleep(receiver.hang_s)
                self._answer(200, {"ok": True, "duplicate": duplicate}, key, trickle=mode == "trickle")

            def _answer(self, code: int, obj: dict[str, Any], key: str | None, trickle: bool = False) -> None:
                receiver._log_request(key, code)
                data = json.dumps(obj).encode()
                try:
                    if trickle:  # a receiver that never quite finishes: one byte at a time
                        raw = (f"HTTP/1.1 {code} OK\r\nContent-Type: application/json\r\n"
                               f"Content-Length: {len(data)}\r\n\r\n").encode() + data
                        for i in range(len(raw)):
                            self.wfile.write(raw[i:i + 1])
                            self.wfile.flush()
                            time.sleep(receiver.trickle_s)
                        return
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:  # client gave up (timeout): expected
                pass

        self.server = Server((host, port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _accept(self, key: str, payload: Any) -> bool:
        """Record an accepted event once per idempotency key (committed before the 200 goes out);
        returns whether it was a duplicate."""
        now = time.time()
        with self._lock:
            duplicate = key in self.processed
            if duplicate:
                self.duplicates += 1
            else:
                self.processed[key] = payload
            if self._conn is not None:
                if duplicate:
                    self._conn.execute("UPDATE accepted SET duplicates = duplicates + 1, last_seen = ? WHERE idempotency_key = ?",
                                       (now, key))
                else:
                    event = payload.get("event") if isinstance(payload, dict) else None
                    self._conn.execute("INSERT INTO accepted (idempotency_key, alert_key, event, first_seen, last_seen, payload)"
                                       " VALUES (?,?,?,?,?,?)", (key, _alert_key(payload), event, now, now, json.dumps(payload)))
        return duplicate

    def _log_request(self, key: str | None, status: int) -> None:
        with self._lock:
            if self._conn is None:
                return
            self._conn.execute("INSERT INTO requests (at, idempotency_key, mode, status) VALUES (?,?,?,?)",
                               (time.time(), key, self.mode, status))

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}/hook"

    def start(self) -> "LocalReceiver":
        self._thread = threading.Thread(target=self.server.serve_forever, name="local-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._conn is not None:
            with self._lock:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "LocalReceiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
