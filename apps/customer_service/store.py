"""Persistent bot state in SQLite: sessions (memory + slots), turns, handoff tickets, feedback.

Turns, tickets and feedback are PII-redacted before they are written (see
:func:`customer_service.guardrails.redact_pii`). Session state holds the template slot values
(e-mail, card last four digits, order id) that answers need within the conversation, so it is
not redacted but encrypted at rest (Fernet) with a key kept outside the database: the
``VERTICORE_CS_KEY`` environment variable, else a ``bot.key`` file (mode 0600) created next to
``bot.sqlite``. Keep that file out of database backups you share.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from verticore.errors import ArtifactError, DataError
from verticore.io import fsync_dir
from verticore.storage import connect

from .guardrails import redact_pii

BOT_MIGRATIONS = [
    """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE turns (
        turn_id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        user_text TEXT NOT NULL,
        rewritten_query TEXT,
        bot_text TEXT NOT NULL,
        status TEXT NOT NULL,
        intent TEXT,
        confidence REAL,
        evidence REAL,
        escalated INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        citations TEXT NOT NULL DEFAULT '[]',
        latency_ms REAL
    );
    CREATE INDEX turns_session ON turns(session_id, turn_id);
    CREATE TABLE tickets (
        ticket_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        reason TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        summary TEXT NOT NULL,
        transcript TEXT NOT NULL,
        resolved_at TEXT,
        note TEXT
    );
    CREATE TABLE feedback (
        feedback_id INTEGER PRIMARY KEY AUTOINCREMENT,
        turn_id INTEGER NOT NULL REFERENCES turns(turn_id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
        comment TEXT
    );
    CREATE UNIQUE INDEX feedback_turn ON feedback(turn_id);
    """,
]

TICKET_STATUSES = ("open", "in_progress", "resolved")


KEY_ENV = "VERTICORE_CS_KEY"
"""Environment variable holding the session-state key (a Fernet key); overrides the key file."""
KEY_FILE = "bot.key"
"""Key file created next to ``bot.sqlite`` when :data:`KEY_ENV` is not set."""
_ENC_PREFIX = "enc:v1:"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fernet(key: bytes | str, where: str):
    from cryptography.fernet import Fernet

    try:
        return Fernet(key.strip() if isinstance(key, (bytes, str)) else key)
    except (ValueError, TypeError):
        raise ArtifactError(f"the session-state key from {where} is not a valid Fernet key (32 url-safe base64 bytes); "
                            "generate one with `python -c 'from cryptography.fernet import Fernet; "
                            "print(Fernet.generate_key().decode())'`") from None


def load_or_create_key(key_file: str | Path) -> bytes:
    """Read the Fernet key in ``key_file``, creating it (mode 0600, atomically, exactly once) if missing."""
    from cryptography.fernet import Fernet

    key_file = Path(key_file)
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
                f.flush()
                os.fsync(f.fileno())
            try:  # link() never replaces: a key another process just created wins
                os.link(tmp, key_file)
                fsync_dir(key_file.parent)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        return key_file.read_bytes().strip()
    except OSError as exc:
        raise ArtifactError(f"cannot read the session-state key {key_file}: {exc.strerror or exc}") from None


class BotStore:
    """SQLite store of sessions, turns, tickets and feedback (``bot.sqlite``)."""

    def __init__(self, path: str | Path, key: bytes | str | None = None, key_file: str | Path | None = None) -> None:
        """Open ``path``; session state is encrypted with ``key``, else ``$VERTICORE_CS_KEY``, else the
        Fernet key in ``key_file`` (default ``bot.key`` next to the database, created if missing)."""
        self.path = path
        if key is not None:
            where = "the key argument"
        elif os.environ.get(KEY_ENV):
            key, where = os.environ[KEY_ENV], f"${KEY_ENV}"
        elif str(path) == ":memory:" and key_file is None:
            from cryptography.fernet import Fernet

            key, where = Fernet.generate_key(), "a generated in-memory key"
        else:
            kf = Path(key_file) if key_file is not None else Path(path).parent / KEY_FILE
            key, where = load_or_create_key(kf), str(kf)
        self._fernet = _fernet(key, where)
        self._key_source = where
        self.conn = connect(path, BOT_MIGRATIONS)
        self._encrypt_plain_states()

    # -- sessions -----------------------------------------------------------------------
    def new_session(self) -> str:
        sid = uuid.uuid4().hex[:12]
        self.conn.execute("INSERT INTO sessions(session_id, created_at, updated_at) VALUES (?,?,?)", (sid, _now(), _now()))
        return sid

    def ensure_session(self, session_id: str | None) -> str:
        """Return ``session_id`` (created if unknown) or a new id when None."""
        if not session_id:
            return self.new_session()
        self.conn.execute("INSERT OR IGNORE INTO sessions(session_id, created_at, updated_at) VALUES (?,?,?)",
                          (str(session_id), _now(), _now()))
        return str(session_id)

    def _seal(self, state: dict[str, Any]) -> str:
        return _ENC_PREFIX + self._fernet.encrypt(json.dumps(state, ensure_ascii=False).encode("utf-8")).decode("ascii")

    def _open(self, session_id: str, stored: str) -> dict[str, Any]:
        from cryptography.fernet import InvalidToken

        if not stored.startswith(_ENC_PREFIX):  # written before encryption (migrated on open)
            return json.loads(stored)
        try:
            return json.loads(self._fernet.decrypt(stored[len(_ENC_PREFIX):].encode("ascii")))
        except InvalidToken:
            raise ArtifactError(f"session {session_id} was encrypted with another key than {self._key_source}; "
                                f"restore the original key (${KEY_ENV} or {KEY_FILE}) or start a new session") from None

    def _encrypt_plain_states(self) -> None:
        """Encrypt session states left in plain JSON by older versions (slot values would sit there raw)."""
        rows = self.conn.execute("SELECT session_id, state FROM sessions WHERE state NOT LIKE ? AND state != '{}'",
                                 (_ENC_PREFIX + "%",)).fetchall()
        for sid, stored in rows:
            try:
                state = json.loads(stored)
            except ValueError:
                state = {}
            self.conn.execute("UPDATE sessions SET state=? WHERE session_id=? AND state=?", (self._seal(state), sid, stored))

    def state(self, session_id: str) -> dict[str, Any]:
        """The session's memory (slots, pending question, failures), decrypted."""
        row = self.conn.execute("SELECT state FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        return self._open(session_id, row[0]) if row else {}

    def set_state(self, session_id: str, state: dict[str, Any]) -> None:
        """Save the session's memory, encrypted (it holds raw slot values such as e-mail addresses)."""
        self.conn.execute("UPDATE sessions SET state=?, updated_at=? WHERE session_id=?",
                          (self._seal(state), _now(), session_id))

    def history(self, session_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """The last ``limit`` turns of a session, oldest first."""
        rows = self.conn.execute("SELECT * FROM turns WHERE session_id=? ORDER BY turn_id DESC LIMIT ?",
                                 (session_id, int(limit))).fetchall()
        return [self._turn(r) for r in reversed(rows)]

    @staticmethod
    def _turn(r) -> dict[str, Any]:
        d = dict(r)
        d["citations"] = json.loads(d.get("citations") or "[]")
        d["escalated"] = bool(d["escalated"])
        return d

    def add_turn(self, session_id: str, user_text: str, bot_text: str, status: str, *, rewritten_query: str | None = None,
                 intent: str | None = None, confidence: float | None = None, evidence: float | None = None,
                 escalated: bool = False, reason: str | None = None, citations: list[dict[str, Any]] | None = None,
                 latency_ms: float | None = None) -> int:
        """Log one exchange (user text redacted); returns the turn id used for feedback."""
        cur = self.conn.execute(
            "INSERT INTO turns(session_id, created_at, user_text, rewritten_query, bot_text, status, intent, confidence, "
            "evidence, escalated, reason, citations, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (session_id, _now(), redact_pii(user_text), redact_pii(rewritten_query) if rewritten_query else None,
             redact_pii(bot_text), status, intent, confidence, evidence, int(bool(escalated)), reason,
             json.dumps(citations or [], ensure_ascii=False), latency_ms))
        self.conn.execute("UPDATE sessions SET updated_at=? WHERE session_id=?", (_now(), session_id))
        return int(cur.lastrowid)

    def turns(self, limit: int = 1000) -> list[dict[str, Any]]:
        return [self._turn(r) for r in self.conn.execute("SELECT * FROM turns ORDER BY turn_id DESC LIMIT ?", (int(limit),))]

    def transcript(self, session_id: str) -> list[dict[str, str]]:
        out = []
        for t in self.history(session_id, limit=200):
            out.append({"role": "customer", "text": t["user_text"], "at": t["created_at"]})
            out.append({"role": "bot", "text": t["bot_text"], "at": t["created_at"]})
        return out

    # -- tickets ------------------------------------------------------------------------
    def open_ticket(self, session_id: str, reason: str, summary: str, pending: list[dict[str, str]] | None = None) -> str:
        """Open a handoff ticket with the session transcript (plus ``pending`` exchanges not yet logged)."""
        existing = self.conn.execute("SELECT ticket_id FROM tickets WHERE session_id=? AND status!='resolved'",
                                     (session_id,)).fetchone()
        transcript = self.transcript(session_id) + [{**p, "text": redact_pii(p["text"])} for p in (pending or [])]
        if existing:
            self.conn.execute("UPDATE tickets SET transcript=?, reason=reason || ', ' || ? WHERE ticket_id=?",
                              (json.dumps(transcript, ensure_ascii=False), reason, existing[0]))
            return str(existing[0])
        tid = "T-" + uuid.uuid4().hex[:8].upper()
        self.conn.execute("INSERT INTO tickets(ticket_id, session_id, created_at, reason, summary, transcript) VALUES (?,?,?,?,?,?)",
                          (tid, session_id, _now(), reason, redact_pii(summary)[:300], json.dumps(transcript, ensure_ascii=False)))
        return tid

    def tickets(self, status: str | None = None) -> list[dict[str, Any]]:
        q, params = "SELECT * FROM tickets", ()
        if status:
            q, params = q + " WHERE status=?", (status,)
        rows = self.conn.execute(q + " ORDER BY created_at DESC, ticket_id", params).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["transcript"] = json.loads(d["transcript"])
            out.append(d)
        return out

    def set_ticket_status(self, ticket_id: str, status: str, note: str | None = None) -> None:
        if status not in TICKET_STATUSES:
            raise DataError(f"unknown ticket status {status!r}; use one of {TICKET_STATUSES}")
        cur = self.conn.execute("UPDATE tickets SET status=?, note=COALESCE(?, note), resolved_at=? WHERE ticket_id=?",
                                (status, note, _now() if status == "resolved" else None, ticket_id))
        if cur.rowcount == 0:
            raise DataError(f"no ticket {ticket_id!r}")

    # -- feedback -----------------------------------------------------------------------
    def add_feedback(self, turn_id: int, rating: int | str, comment: str | None = None) -> None:
        """Store thumbs up (+1 / "up") or down (-1 / "down") for one answer (last vote wins)."""
        mapping = {"up": 1, "down": -1, "+1": 1, "-1": -1, "1": 1}
        r = mapping.get(str(rating).strip().lower()) if isinstance(rating, str) else int(rating)
        if r not in (1, -1):
            raise DataError(f"rating must be up/down (+1/-1), got {rating!r}")
        if not self.conn.execute("SELECT 1 FROM turns WHERE turn_id=?", (int(turn_id),)).fetchone():
            raise DataError(f"no answer with turn id {turn_id}")
        self.conn.execute("INSERT INTO feedback(turn_id, created_at, rating, comment) VALUES (?,?,?,?) "
                          "ON CONFLICT(turn_id) DO UPDATE SET rating=excluded.rating, comment=excluded.comment, created_at=excluded.created_at",
                          (int(turn_id), _now(), r, redact_pii(comment) if comment else None))

    # -- analytics ----------------------------------------------------------------------
    def analytics(self) -> dict[str, Any]:
        """Intent mix, deflection rate, escalations, unanswered questions, feedback, latency p50/p95."""
        turns = [dict(r) for r in self.conn.execute("SELECT turn_id, user_text, status, intent, escalated, reason, latency_ms, created_at FROM turns")]
        n = len(turns)
        sessions = {}
        for r in self.conn.execute("SELECT session_id, MAX(escalated) AS esc, COUNT(*) AS n FROM turns GROUP BY session_id"):
            sessions[r[0]] = bool(r[1])
        intent_mix: dict[str, int] = {}
        for t in turns:
            key = t["intent"] or "(out of scope / none)"
            intent_mix[key] = intent_mix.get(key, 0) + 1
        reasons: dict[str, int] = {}
        for t in turns:
            if t["escalated"] and t["reason"]:
                for part in str(t["reason"]).split(","):
                    reasons[part.strip()] = reasons.get(part.strip(), 0) + 1
        lat = np.asarray([t["latency_ms"] for t in turns if t["latency_ms"] is not None], dtype=np.float64)
        fb = self.conn.execute("SELECT SUM(rating=1), SUM(rating=-1) FROM feedback").fetchone()
        unanswered = [t for t in turns if t["status"] in {"no_answer", "escalated"} and t["reason"] not in {"human_requested", "negative_sentiment"}]
        return {
            "turns": n,
            "sessions": len(sessions),
            "deflection_rate": (sum(1 for e in sessions.values() if not e) / len(sessions)) if sessions else None,
            "answered_rate": (sum(1 for t in turns if t["status"] == "answered") / n) if n else None,
            "escalations": sum(1 for t in turns if t["escalated"]),
            "escalation_reasons": reasons,
            "intent_mix": dict(sorted(intent_mix.items(), key=lambda kv: -kv[1])),
            "unanswered": [{"turn_id": t["turn_id"], "question": t["user_text"], "reason": t["reason"], "at": t["created_at"]}
                           for t in sorted(unanswered, key=lambda t: -t["turn_id"])[:50]],
            "feedback": {"up": int(fb[0] or 0), "down": int(fb[1] or 0)},
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
            "open_tickets": int(self.conn.execute("SELECT COUNT(*) FROM tickets WHERE status!='resolved'").fetchone()[0]),
        }

    def close(self) -> None:
        self.conn.close()
