"""User-item interactions: (user, item, weight, timestamp) from CSV or pandas."""
from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from verticore.errors import DataError
from verticore.io import atomic_write_text, read_table

log = logging.getLogger(__name__)

USER_COLS = ("user", "user_id", "userId", "userid", "customer_id")
ITEM_COLS = ("item", "item_id", "itemId", "movieId", "product_id", "id")
WEIGHT_COLS = ("weight", "rating", "score", "count")
TIME_COLS = ("timestamp", "ts", "time", "date")
COLUMNS = ["user", "item", "weight", "timestamp"]
# implicit-feedback event kinds and the weight each gets when the caller gives none (ratings are 1..5)
EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "like": 4.0, "purchase": 5.0}


def _pick(columns: Iterable[str], wanted: str | None, candidates: tuple[str, ...], what: str, required: bool) -> str | None:
    cols = list(columns)
    if wanted is not None:
        if wanted not in cols:
            raise DataError(f"interactions have no {what} column {wanted!r}; columns are {cols}")
        return wanted
    for c in candidates:
        if c in cols:
            return c
    if required:
        raise DataError(f"interactions have no {what} column (looked for {list(candidates)}); columns are {cols}")
    return None


@dataclass
class Interactions:
    """A table of interactions with columns ``user``, ``item`` (strings), ``weight``, ``timestamp``.

    ``weight`` is a rating or an implicit weight (1.0 when absent); ``timestamp`` is seconds since
    the epoch (0 when absent). ``skipped`` counts rows dropped while loading, by reason.
    """

    df: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    _groups: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def _rows(self, user: Any) -> np.ndarray | None:
        """Row positions of ``user`` (index built once, rebuilt after a change)."""
        if self._groups is None:
            self._groups = {str(u): np.asarray(ix) for u, ix in self.df.groupby("user", sort=False).indices.items()} \
                if len(self.df) else {}
        return self._groups.get(str(user))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, *, user_col: str | None = None, item_col: str | None = None,
                       weight_col: str | None = None, timestamp_col: str | None = None,
                       min_weight: float | None = None, known_items: Iterable[Any] | None = None) -> "Interactions":
        """Normalise a DataFrame; column names are auto-detected from common spellings.

        Rows with a missing user/item or a non-numeric weight/timestamp, rows below
        ``min_weight`` and rows naming items outside ``known_items`` are dropped with a warning
        that counts them.
        """
        if df is None:
            raise DataError("no interactions given")
        u = _pick(df.columns, user_col, USER_COLS, "user", True)
        i = _pick(df.columns, item_col, ITEM_COLS, "item", True)
        w = _pick(df.columns, weight_col, WEIGHT_COLS, "weight", False)
        t = _pick(df.columns, timestamp_col, TIME_COLS, "timestamp", False)
        out = pd.DataFrame({
            "user": df[u].map(_as_key),
            "item": df[i].map(_as_key),
            "weight": pd.to_numeric(df[w], errors="coerce") if w else 1.0,
            "timestamp": _to_seconds(df[t]) if t else 0.0,
        })
        skipped: dict[str, int] = {}

        def drop(mask: pd.Series, why: str) -> None:
            nonlocal out
            n = int(mask.sum())
            if n:
                skipped[why] = skipped.get(why, 0) + n
                out = out[~mask]

        drop(out["user"].isna() | out["item"].isna(), "missing user or item")
        drop(out["weight"].isna(), "non-numeric weight")
        drop(out["timestamp"].isna(), "bad timestamp")
        if min_weight is not None:
            drop(out["weight"] < float(min_weight), f"weight below {min_weight}")
        if known_items is not None:
            known = {str(x) for x in known_items}
            drop(~out["item"].isin(known), "unknown item")
        if skipped:
            log.warning("interactions: skipped %d row(s): %s", sum(skipped.values()),
                        ", ".join(f"{n} {why}" for why, n in skipped.items()))
        out = out.astype({"weight": "float64", "timestamp": "float64"}).reset_index(drop=True)
        return cls(out, skipped)

    @classmethod
    def from_file(cls, path: str | Path, *, allow_empty: bool = False, **kwargs: Any) -> "Interactions":
        """Read CSV/TSV/JSONL (see :meth:`from_dataframe` for the columns)."""
        df = read_table(path, allow_empty=allow_empty)
        if df.empty:
            return cls.empty()
        return cls.from_dataframe(df, **kwargs)

    @classmethod
    def empty(cls) -> "Interactions":
        return cls(pd.DataFrame({c: pd.Series(dtype="object" if c in ("user", "item") else "float64") for c in COLUMNS}))

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.df)

    @property
    def users(self) -> list[str]:
        return list(dict.fromkeys(self.df["user"]))

    @property
    def items(self) -> list[str]:
        return list(dict.fromkeys(self.df["item"]))

    def has_user(self, user: Any) -> bool:
        return self._rows(user) is not None

    def history(self, user: Any) -> pd.DataFrame:
        """The user's interactions, oldest first; :class:`DataError` for an unknown user."""
        key = str(user)
        rows = self._rows(key)
        h = self.df.iloc[rows] if rows is not None else self.df.iloc[:0]
        if h.empty:
            raise DataError(f"unknown user {key!r}: no interactions recorded ({len(self.users)} users known)")
        return h.sort_values("timestamp", kind="stable")

    def seen(self, user: Any) -> set[str]:
        """Items the user interacted with (empty for an unknown user)."""
        rows = self._rows(user)
        return set() if rows is None else set(self.df["item"].to_numpy()[rows])

    def by_user(self) -> dict[str, pd.DataFrame]:
        """All histories at once (oldest first), faster than calling :meth:`history` per user."""
        d = self.df.sort_values(["user", "timestamp"], kind="stable")
        return {str(u): g for u, g in d.groupby("user", sort=False)}

    def counts(self, half_life_days: float | None = None, now: float | None = None,
               weighted: bool = False) -> dict[str, float]:
        """Popularity per item: interaction counts (summed weights if ``weighted``), optionally
        time-decayed with ``half_life_days`` (a recency prior)."""
        if self.df.empty:
            return {}
        w = self.df["weight"].to_numpy(dtype=np.float64).clip(min=0) if weighted else np.ones(len(self.df))
        if half_life_days:
            now = float(self.df["timestamp"].max()) if now is None else float(now)
            age = (now - self.df["timestamp"].to_numpy(dtype=np.float64)).clip(min=0) / 86400.0
            w = w * np.power(0.5, age / float(half_life_days))
        s = pd.Series(w, index=self.df["item"].to_numpy()).groupby(level=0).sum()
        return {str(k): float(v) for k, v in s.items()}

    # -- mutation -----------------------------------------------------------------------
    def add(self, user: Any, item: Any, weight: float = 1.0, timestamp: float | None = None) -> None:
        """Append one interaction (``timestamp`` defaults to now)."""
        import time

        if _as_key(user) is None or _as_key(item) is None:
            raise DataError("an interaction needs a user and an item")
        row = pd.DataFrame({"user": [str(user)], "item": [str(item)], "weight": [float(weight)],
                            "timestamp": [float(time.time() if timestamp is None else timestamp)]})
        self.df = row if self.df.empty else pd.concat([self.df, row], ignore_index=True)
        self._groups = None

    def add_many(self, rows: Iterable[tuple[str, str, float, float]]) -> int:
        """Append ``(user, item, weight, timestamp)`` rows in one concat (cheaper than :meth:`add` per row)."""
        rows = list(rows)
        if not rows:
            return 0
        new = pd.DataFrame(rows, columns=COLUMNS).astype({"user": "object", "item": "object", "weight": "float64",
                                                          "timestamp": "float64"})
        self.df = new if self.df.empty else pd.concat([self.df, new], ignore_index=True)
        self._groups = None
        return len(rows)

    def drop_items(self, items: Iterable[Any]) -> int:
        """Remove interactions with ``items`` (e.g. items removed from the catalog)."""
        gone = {str(i) for i in items}
        mask = self.df["item"].isin(gone)
        self.df = self.df[~mask].reset_index(drop=True)
        self._groups = None
        return int(mask.sum())

    def save(self, path: str | Path) -> Path:
        """Write as CSV atomically."""
        return atomic_write_text(path, self.df[COLUMNS].to_csv(index=False))


def append_rows(path: str | Path, rows: Iterable[tuple[str, str, float, float]]) -> int:
    """Durably append interaction rows to the CSV that :meth:`Interactions.save` writes.

    One ``write`` of whole lines on an ``O_APPEND`` descriptor, then ``fsync``: after a crash
    the file holds every acknowledged row; at worst the last, unacknowledged line is torn, and
    :func:`repair_tail` drops it (it is also dropped before the next append, so a torn line
    never swallows the next row). Creates the file with a header when missing.
    """
    rows = list(rows)
    if not rows:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        w.writerow(COLUMNS)
    for user, item, weight, ts in rows:
        w.writerow([user, item, repr(float(weight)), repr(float(ts))])
    data = buf.getvalue().encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(rows)


def repair_tail(path: str | Path) -> bool:
    """Truncate a torn last line (a crash mid-append) back to the last newline; True if it did."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size == 0:
        return False
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        # walk back to the last newline (lines are short; read a bounded tail)
        back = min(size, 1 << 16)
        f.seek(size - back)
        tail = f.read(back)
        cut = tail.rfind(b"\n")
        keep = (size - back + cut + 1) if cut >= 0 else 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("interactions: dropped a torn last line in %s (%d bytes)", path, size - keep)
    return True


def _as_key(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    s = str(v).strip()
    return s or None


def _to_seconds(col: pd.Series) -> pd.Series:
    num = pd.to_numeric(col, errors="coerce")
    if num.notna().sum() >= max(1, int(0.5 * col.notna().sum())):
        return num.astype("float64")
    dt = pd.to_datetime(col, errors="coerce", utc=True)
    secs = (dt - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return secs.astype("float64")
