"""API keys: create, list, revoke, rotate and verify, stored in SQLite as SHA-256 hashes.

A key looks like ``vk_<43 url-safe chars>`` and is shown exactly once, when created or rotated.
The database keeps only ``sha256(key)`` and a short display prefix, so a leaked ``keys.db``
does not leak usable keys. Keys carry scopes (what they may call), an optional rate limit
(``"20/s"``) and an optional daily quota (``"100000/day"``).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import DataError
from ..storage import connect

KEY_PREFIX = "vk_"
DISPLAY_PREFIX_CHARS = 10  # "vk_" + 7 chars: enough to tell keys apart, useless to an attacker
SCOPES: tuple[str, ...] = ("classify", "embed", "support:chat", "support:agent", "finance:ingest", "finance:read",
                           "rec:read", "rec:write", "admin")
LAST_USED_EVERY_S = 1.0  # last_used is written at most this often per key (not once per request)

_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}

MIGRATIONS = [
    """
    CREATE TABLE api_keys (
        name TEXT PRIMARY KEY,
        key_hash TEXT UNIQUE,
        prefix TEXT NOT NULL,
        scopes TEXT NOT NULL,
        rate TEXT,
        quota TEXT,
        created_at REAL NOT NULL,
        rotated_at REAL,
        last_used REAL,
        revoked_at REAL
    );
    """,
]


def default_keys_db(home: Path | None = None) -> Path:
    """``$VERTICORE_HOME/serving/keys.db``."""
    from ..dashboard import home as _home

    return (home or _home()) / "serving" / "keys.db"


def parse_rate(rate: str) -> tuple[int, int]:
    """``"20/s"`` -> ``(20, 1)``: requests per window seconds. Units: s, m(in), h(our), d(ay)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*([a-zA-Z]+)\s*", str(rate))
    if not m or m.group(3).lower() not in _UNITS or int(m.group(1)) <= 0:
        raise DataError(f"invalid rate {rate!r}: use N/UNIT with N > 0 and UNIT one of s, min, h, day (e.g. '20/s')")
    return int(m.group(1)), int(m.group(2) or 1) * _UNITS[m.group(3).lower()]


def parse_quota(quota: str) -> int:
    """``"100000/day"`` -> 100000 requests per UTC day (the only quota period)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(d|day)\s*", str(quota))
    if not m or int(m.group(1)) <= 0:
        raise DataError(f"invalid quota {quota!r}: use N/day with N > 0 (e.g. '100000/day')")
    return int(m.group(1))


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Normalise a scope list; unknown scopes raise :class:`DataError` naming them and the valid ones."""
    if isinstance(scopes, str):
        scopes = scopes.split(",")
    out = tuple(dict.fromkeys(s.strip() for s in scopes if s and s.strip()))
    unknown = [s for s in out if s not in SCOPES]
    if unknown:
        raise DataError(f"unknown scope(s) {', '.join(map(repr, unknown))}; valid scopes: {', '.join(SCOPES)}")
    if not out:
        raise DataError(f"a key needs at least one scope; valid scopes: {', '.join(SCOPES)}")
    return out


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """What the store knows about a key (never the key itself)."""

    name: str
    prefix: str
    scopes: tuple[str, ...]
    rate: str | None
    quota: str | None
    created_at: float
    rotated_at: float | None = None
    last_used: float | None = None
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def to_dict(self) -> dict:
        return {"name": self.name, "prefix": self.prefix, "scopes": list(self.scopes), "rate": self.rate,
                "quota": self.quota, "created_at": self.created_at, "rotated_at": self.rotated_at,
                "last_used": self.last_used, "revoked_at": self.revoked_at, "active": self.active}


def _record(row) -> KeyRecord:
    return KeyRecord(name=row["name"], prefix=row["prefix"], scopes=tuple(json.loads(row["scopes"])), rate=row["rate"],
                     quota=row["quota"], created_at=row["created_at"], rotated_at=row["rotated_at"],
                     last_used=row["last_used"], revoked_at=row["revoked_at"])


class KeyStore:
    """API keys in a SQLite database (WAL; safe to share between the server and the CLI)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_keys_db()
        self._conn = connect(self.path, MIGRATIONS)
        self._lock = threading.Lock()
        self._last_written: dict[str, float] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _new_key(self) -> tuple[str, str, str]:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        return key, hash_key(key), key[:DISPLAY_PREFIX_CHARS]

    def create(self, name: str, scopes: Iterable[str], rate: str | None = None,
               quota: str | None = None) -> tuple[str, KeyRecord]:
        """A new key: returns ``(plaintext, record)``; the plaintext is not stored anywhere."""
        name = (name or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}", name):
            raise DataError(f"invalid key name {name!r}: 1-64 letters, digits or _ . : @ -, starting with a letter or digit")
        scopes = check_scopes(scopes)
        if rate is not None:
            parse_rate(rate)
        if quota is not None:
            parse_quota(quota)
        key, digest, prefix = self._new_key()
        now = time.time()
        with self._lock:
            row = self._conn.execute("SELECT revoked_at FROM api_keys WHERE name=?", (name,)).fetchone()
            if row is not None and row["revoked_at"] is None:
                raise DataError(f"a key named {name!r} already exists; revoke or rotate it, or pick another name")
            # A revoked name may be reused: its old row (hash already cleared) is replaced.
            self._conn.execute(
                "INSERT OR REPLACE INTO api_keys(name, key_hash, prefix, scopes, rate, quota, created_at) "
                "VALUES (?,?,?,?,?,?,?)", (name, digest, prefix, json.dumps(list(scopes)), rate, quota, now))
        return key, KeyRecord(name, prefix, scopes, rate, quota, now)

    def get(self, name: str) -> KeyRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM api_keys WHERE name=?", (name,)).fetchone()
        return _record(row) if row else None

    def list(self, include_revoked: bool = True) -> list[KeyRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM api_keys ORDER BY name").fetchall()
        recs = [_record(r) for r in rows]
        return recs if include_revoked else [r for r in recs if r.active]

    def _require_active(self, name: str) -> None:
        row = self._conn.execute("SELECT revoked_at FROM api_keys WHERE name=?", (name,)).fetchone()
        if row is None:
            raise DataError(f"no key named {name!r}")
        if row["revoked_at"] is not None:
            raise DataError(f"key {name!r} is already revoked")

    def revoke(self, name: str) -> KeyRecord:
        """Revoke a key at once: its hash is erased, so it can never verify again."""
        with self._lock:
            self._require_active(name)
            self._conn.execute("UPDATE api_keys SET key_hash=NULL, revoked_at=? WHERE name=?", (time.time(), name))
        return self.get(name)  # type: ignore[return-value]

    def rotate(self, name: str) -> str:
        """Replace a key's secret (same name, scopes and limits); the old key stops working now."""
        key, digest, prefix = self._new_key()
        with self._lock:
            self._require_active(name)
            self._conn.execute("UPDATE api_keys SET key_hash=?, prefix=?, rotated_at=? WHERE name=?",
                               (digest, prefix, time.time(), name))
        return key

    def verify(self, plaintext: str | None) -> KeyRecord | None:
        """The active key's record, or None. Looks the key up by its hash (no secret comparison
        that leaks timing), and refreshes ``last_used`` at most once a second per key."""
        if not plaintext or not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 256:
            return None
        digest = hash_key(plaintext)
        with self._lock:
            row = self._conn.execute("SELECT * FROM api_keys WHERE key_hash=?", (digest,)).fetchone()
            if row is None or not hmac.compare_digest(row["key_hash"] or "", digest) or row["revoked_at"] is not None:
                return None
            now = time.time()
            if now - self._last_written.get(row["name"], 0.0) >= LAST_USED_EVERY_S:
                self._last_written[row["name"]] = now
                self._conn.execute("UPDATE api_keys SET last_used=? WHERE name=?", (now, row["name"]))
        return _record(row)


__all__ = ["KEY_PREFIX", "SCOPES", "KeyRecord", "KeyStore", "check_scopes", "default_keys_db", "hash_key",
           "parse_quota", "parse_rate"]
