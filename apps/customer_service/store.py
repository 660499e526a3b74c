"""Persistent bot state in SQLite: sessions (memory + slots), turns, handoff tickets, feedback,
agent replies and the labelled examples agents leave for retraining.

Turns, tickets, feedback and agent replies are PII-redacted before they are written (see
:func:`customer_service.guardrails.redact_pii`). Session state holds the template slot values
(e-mail, card last four digits, order id) that answers need within the conversation, so it is
not redacted but encrypted at rest (Fernet) with a key kept outside the database: the
``VERTICORE_CS_KEY`` environment variable, else a ``bot.key`` file (mode 0600) created next to
``bot.sqlite``. Keep that file out of database backups you share.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from verticore.errors import ArtifactError, DataError
from verticore.io import fsync_dir
from verticore.settings import get_settings
from verticore.storage import connect
from verticore.text import utc_iso

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
    # v2: a real helpdesk -- tickets are claimed by an agent, agents reply into the customer's
    # session, and resolutions / corrections become labelled examples for retraining.
    """
    ALTER TABLE tickets ADD COLUMN agent TEXT;
    ALTER TABLE tickets ADD COLUMN claimed_at TEXT;
    ALTER TABLE tickets ADD COLUMN intent TEXT;
    UPDATE tickets SET status='claimed' WHERE status='in_progress';
    CREATE INDEX tickets_session ON tickets(session_id, created_at);
    CREATE TABLE agent_messages (
        message_id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
        ticket_id TEXT,
        agent TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL,
        after_turn_id INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX agent_messages_session ON agent_messages(session_id, message_id);
    CREATE TABLE labelled_examples (
        example_id INTEGER PRIMARY KEY AUTOINCREMENT,
        text TEXT NOT NULL,
        intent TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('agent_resolution', 'agent_correction')),
        ticket_id TEXT,
        turn_id INTEGER,
        agent TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX labelled_examples_source ON labelled_examples(source, example_id);
    """,
]

TICKET_STATUSES = ("open", "claimed", "resolved")
_STATUS_ALIASES = {"in_progress": "claimed"}  # the pre-v2 name of "claimed"
OUT_OF_SCOPE_LABEL = "out_of_scope"
"""The label an agent gives a question none of the bot's intents covers (training data for OOS detection)."""
MAX_AGENT_TEXT_CHARS = 4000
SESSION_STATUSES = ("bot", "waiting_for_agent", "with_agent", "resolved")


KEY_ENV = "VERTICORE_CS_KEY"
"""Environment variable holding the session-state key (a Fernet key); overrides the key file."""
KEY_FILE = "bot.key"
"""Key file created next to ``bot.sqlite`` when :data:`KEY_ENV` is not set."""
_ENC_PREFIX = "enc:v1:"


def _now() -> str:
    return utc_iso()


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


class NotFoundError(DataError):
    """No such session, message or ticket (the HTTP API answers 404)."""


class ConflictError(DataError):
    """The ticket's state forbids the action: resolved, or claimed by another agent (HTTP 409)."""


def _agent_name(agent: Any) -> str:
    name = str(agent or "").strip()
    if not name or len(name) > 100 or any(ord(ch) < 32 for ch in name):
        raise DataError("agent must be a name of 1 to 100 printable characters")
    return name


def check_intent(intent: Any, known_intents: list[str] | tuple[str, ...]) -> str:
    """``intent`` if it is one of ``known_intents``, else a :class:`DataError` listing them."""
    label = str(intent or "").strip()
    if label not in known_intents:
        raise DataError(f"unknown intent {label!r}; use one of: {', '.join(known_intents)}")
    return label


class BotStore:
    """SQLite store of sessions, turns, tickets and feedback (``bot.sqlite``)."""

    def __init__(self, path: str | Path, key: bytes | str | None = None, key_file: str | Path | None = None) -> None:
        """Open ``path``; session state is encrypted with ``key``, else ``$VERTICORE_CS_KEY``, else the
        Fernet key in ``key_file`` (default ``bot.key`` next to the database, created if missing)."""
        self.path = path
        if key is not None:
            where = "the key argument"
        elif (env_key := get_settings().cs_key) is not None:
            key, where = env_key.get_secret_value(), f"${KEY_ENV}"
        elif str(path) == ":memory:" and key_file is None:
            from cryptography.fernet import Fernet

            key, where = Fernet.generate_key(), "a generated in-memory key"
        else:
            kf = Path(key_file) if key_file is not None else Path(path).parent / KEY_FILE
            key, where = load_or_create_key(kf), str(kf)
        self._fernet = _fernet(key, where)
        self._key_source = where
        self.conn = connect(path, BOT_MIGRATIONS)
        # one connection serves the HTTP API's worker threads: multi-statement operations hold this lock
        self.lock = threading.RLock()
        self._encrypt_plain_states()

    # -- sessions -----------------------------------------------------------------------
    def new_session(self, customer_ref: str | None = None) -> str:
        """Create a session with an unguessable id (its id is all a chat client needs to read it).

        ``customer_ref`` (the company's own customer id, optional) is kept in the encrypted state."""
        sid = secrets.token_urlsafe(16)
        state = self._seal({"customer_ref": str(customer_ref)[:200]}) if customer_ref else "{}"
        self.conn.execute("INSERT INTO sessions(session_id, created_at, updated_at, state) VALUES (?,?,?,?)",
                          (sid, _now(), _now(), state))
        return sid

    def session_exists(self, session_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sessions WHERE session_id=?", (str(session_id),)).fetchone() is not None

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
        """The conversation as ``{role, text, at}`` (customer, bot and agent messages, redacted)."""
        return [{"role": m["role"], "text": m["text"], "at": m["at"]} for m in self.messages(session_id)]

    def messages(self, session_id: str, limit: int = 500) -> list[dict[str, Any]]:
        """The session's messages in order, as stored (redacted): customer, bot and agent.

        Each has ``id`` (unique in the session: ``c<turn>``, ``b<turn>``, ``a<n>``), ``role``, ``text``
        and ``at``; customer and bot messages carry ``message_id`` (the turn id that feedback and
        corrections take), bot messages ``status``, ``intent`` and ``citations``, agent messages
        ``agent``. Agent replies sit after the turn that was last when they were written, so the list
        only ever grows at its end (clients can poll it and append what is new).
        """
        turns = self.history(session_id, limit=limit)
        replies = [dict(r) for r in self.conn.execute(
            "SELECT * FROM agent_messages WHERE session_id=? ORDER BY message_id", (session_id,))]
        out: list[dict[str, Any]] = []
        i = 0
        for t in turns:
            while i < len(replies) and replies[i]["after_turn_id"] < t["turn_id"]:
                out.append(self._agent_message(replies[i]))
                i += 1
            out.append({"id": f"c{t['turn_id']}", "message_id": t["turn_id"], "role": "customer", "text": t["user_text"],
                        "at": t["created_at"]})
            if t["bot_text"]:  # empty while an agent has the conversation (the message went to them)
                out.append({"id": f"b{t['turn_id']}", "message_id": t["turn_id"], "role": "bot", "text": t["bot_text"],
                            "at": t["created_at"], "status": t["status"], "intent": t["intent"],
                            "citations": t["citations"]})
        out.extend(self._agent_message(r) for r in replies[i:])
        return out

    @staticmethod
    def _agent_message(r: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"a{r['message_id']}", "role": "agent", "text": r["text"], "at": r["created_at"],
                "agent": r["agent"], "ticket_id": r["ticket_id"]}

    def turn(self, session_id: str, turn_id: int) -> dict[str, Any]:
        """One turn of ``session_id``; :class:`NotFoundError` when the turn is not in that session."""
        row = self.conn.execute("SELECT * FROM turns WHERE turn_id=? AND session_id=?", (int(turn_id), session_id)).fetchone()
        if row is None:
            raise NotFoundError(f"no message {turn_id} in this session")
        return self._turn(row)

    def last_answer_id(self, session_id: str) -> int | None:
        row = self.conn.execute("SELECT MAX(turn_id) FROM turns WHERE session_id=? AND bot_text != ''", (session_id,)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

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
            status = _STATUS_ALIASES.get(status, status)
            if status not in TICKET_STATUSES:
                raise DataError(f"unknown ticket status {status!r}; use one of {', '.join(TICKET_STATUSES)}")
            q, params = q + " WHERE status=?", (status,)
        rows = self.conn.execute(q + " ORDER BY created_at DESC, ticket_id", params).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["transcript"] = json.loads(d["transcript"])
            out.append(d)
        return out

    def set_ticket_status(self, ticket_id: str, status: str, note: str | None = None) -> None:
        status = _STATUS_ALIASES.get(status, status)
        if status not in TICKET_STATUSES:
            raise DataError(f"unknown ticket status {status!r}; use one of {TICKET_STATUSES}")
        cur = self.conn.execute("UPDATE tickets SET status=?, note=COALESCE(?, note), resolved_at=? WHERE ticket_id=?",
                                (status, note, _now() if status == "resolved" else None, ticket_id))
        if cur.rowcount == 0:
            raise DataError(f"no ticket {ticket_id!r}")

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        """One ticket (transcript = the snapshot taken at handoff); :class:`NotFoundError` if unknown."""
        row = self.conn.execute("SELECT * FROM tickets WHERE ticket_id=?", (str(ticket_id),)).fetchone()
        if row is None:
            raise NotFoundError(f"no ticket {ticket_id!r}")
        d = dict(row)
        d["transcript"] = json.loads(d["transcript"])
        return d

    def session_ticket(self, session_id: str) -> dict[str, Any] | None:
        """The session's most recent ticket (None if it was never handed over)."""
        row = self.conn.execute("SELECT ticket_id FROM tickets WHERE session_id=? ORDER BY (status != 'resolved') DESC, "
                                "created_at DESC, rowid DESC LIMIT 1", (session_id,)).fetchone()
        return self.ticket(row[0]) if row else None

    def session_status(self, session_id: str) -> tuple[str, dict[str, Any] | None]:
        """``bot`` (never handed over), ``waiting_for_agent`` (open ticket), ``with_agent`` (claimed)
        or ``resolved``, with the ticket it comes from."""
        t = self.session_ticket(session_id)
        if t is None:
            return "bot", None
        return {"open": "waiting_for_agent", "claimed": "with_agent"}.get(t["status"], "resolved"), t

    def _tx(self):
        """``with store._tx():`` one write transaction (the connection runs in autocommit mode)."""
        store = self

        class _Tx:
            def __enter__(self_inner):
                store.lock.acquire()
                store.conn.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    store.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
                finally:
                    store.lock.release()
                return False

        return _Tx()

    def claim_ticket(self, ticket_id: str, agent: str) -> dict[str, Any]:
        """Assign an open ticket to ``agent`` (idempotent for the same agent).

        :class:`ConflictError` when another agent holds it or it is resolved."""
        agent = _agent_name(agent)
        with self._tx():
            t = self.ticket(ticket_id)
            if t["status"] == "resolved":
                raise ConflictError(f"ticket {ticket_id} is already resolved")
            if t["status"] == "claimed" and t["agent"] not in (None, agent):
                raise ConflictError(f"ticket {ticket_id} is claimed by {t['agent']!r}")
            if t["status"] != "claimed" or t["agent"] is None:
                self.conn.execute("UPDATE tickets SET status='claimed', agent=?, claimed_at=? WHERE ticket_id=?",
                                  (agent, _now(), ticket_id))
        return self.ticket(ticket_id)

    def add_agent_reply(self, ticket_id: str, agent: str, text: str) -> dict[str, Any]:
        """Append ``agent``'s reply (redacted like every stored message) to the ticket's session;
        an open ticket is claimed by the agent who answers it. Returns the new message."""
        agent = _agent_name(agent)
        body = str(text or "").strip()
        if not body:
            raise DataError("the reply is empty")
        if len(body) > MAX_AGENT_TEXT_CHARS:
            raise DataError(f"the reply has {len(body)} characters; the limit is {MAX_AGENT_TEXT_CHARS}")
        with self._tx():
            t = self.ticket(ticket_id)
            if t["status"] == "resolved":
                raise ConflictError(f"ticket {ticket_id} is resolved; the customer's next message reaches the bot")
            if t["status"] == "open":
                self.conn.execute("UPDATE tickets SET status='claimed', agent=?, claimed_at=? WHERE ticket_id=?",
                                  (agent, _now(), ticket_id))
            last = self.conn.execute("SELECT COALESCE(MAX(turn_id), 0) FROM turns WHERE session_id=?",
                                     (t["session_id"],)).fetchone()[0]
            cur = self.conn.execute("INSERT INTO agent_messages(session_id, ticket_id, agent, text, created_at, after_turn_id) "
                                    "VALUES (?,?,?,?,?,?)", (t["session_id"], ticket_id, agent, redact_pii(body), _now(), int(last)))
            self.conn.execute("UPDATE sessions SET updated_at=? WHERE session_id=?", (_now(), t["session_id"]))
            row = self.conn.execute("SELECT * FROM agent_messages WHERE message_id=?", (cur.lastrowid,)).fetchone()
        return self._agent_message(dict(row))

    def resolve_ticket(self, ticket_id: str, agent: str, intent: str, known_intents: list[str] | tuple[str, ...],
                       note: str | None = None) -> dict[str, Any]:
        """Resolve the ticket and save the customer's question with ``intent`` as a labelled example
        (``source='agent_resolution'``). The question is the last customer message of the handoff
        transcript that is more than a request for a human. Returns the example."""
        from .guardrails import wants_human

        agent = _agent_name(agent)
        intent = check_intent(intent, known_intents)
        with self._tx():
            t = self.ticket(ticket_id)
            if t["status"] == "resolved":
                raise ConflictError(f"ticket {ticket_id} is already resolved")
            asked = [m["text"] for m in t["transcript"] if m.get("role") == "customer" and str(m.get("text") or "").strip()]
            text = next((q for q in reversed(asked) if not wants_human(q)), asked[-1] if asked else t["summary"])
            self.conn.execute("UPDATE tickets SET status='resolved', resolved_at=?, agent=COALESCE(agent, ?), intent=?, "
                              "note=COALESCE(?, note) WHERE ticket_id=?",
                              (_now(), agent, intent, redact_pii(note)[:2000] if note else None, ticket_id))
            example = self._add_example(text, intent, "agent_resolution", agent, ticket_id=ticket_id)
        return example

    def correct_turn(self, session_id: str, turn_id: int, agent: str, intent: str,
                     known_intents: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """An agent's intent for one customer message (typically after a thumbs-down), saved as a
        labelled example (``source='agent_correction'``); a later correction of the turn replaces it."""
        agent = _agent_name(agent)
        intent = check_intent(intent, known_intents)
        with self._tx():
            t = self.turn(session_id, turn_id)
            self.conn.execute("DELETE FROM labelled_examples WHERE source='agent_correction' AND turn_id=?", (int(turn_id),))
            return self._add_example(t["user_text"], intent, "agent_correction", agent, turn_id=int(turn_id))

    def _add_example(self, text: str, intent: str, source: str, agent: str, *, ticket_id: str | None = None,
                     turn_id: int | None = None) -> dict[str, Any]:
        cur = self.conn.execute("INSERT INTO labelled_examples(text, intent, source, ticket_id, turn_id, agent, created_at) "
                                "VALUES (?,?,?,?,?,?,?)", (redact_pii(text), intent, source, ticket_id, turn_id, agent, _now()))
        return dict(self.conn.execute("SELECT * FROM labelled_examples WHERE example_id=?", (cur.lastrowid,)).fetchone())

    def labelled_examples(self, source: str | None = None) -> list[dict[str, Any]]:
        """Examples agents labelled (oldest first): ``text, intent, source, ticket_id, turn_id, agent, created_at``."""
        q, params = "SELECT * FROM labelled_examples", ()
        if source:
            q, params = q + " WHERE source=?", (source,)
        return [dict(r) for r in self.conn.execute(q + " ORDER BY example_id", params)]

    # -- feedback -----------------------------------------------------------------------
    def feedback_list(self, rating: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Rated answers, newest first (``rating`` "up"/"down" filters): what agents review and correct."""
        q = ("SELECT f.turn_id, f.rating, f.comment, f.created_at, t.session_id, t.user_text, t.bot_text, t.intent, "
             "t.status FROM feedback f JOIN turns t USING(turn_id)")
        params: tuple = ()
        if rating is not None:
            r = {"up": 1, "down": -1}.get(str(rating).lower())
            if r is None:
                raise DataError(f"rating must be up or down, got {rating!r}")
            q, params = q + " WHERE f.rating=?", (r,)
        rows = self.conn.execute(q + " ORDER BY f.feedback_id DESC LIMIT ?", (*params, int(limit))).fetchall()
        return [{**dict(r), "rating": "up" if r["rating"] == 1 else "down"} for r in rows]

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
