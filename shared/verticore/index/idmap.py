"""String keys <-> the int64 ids FAISS stores, plus tombstones (ids deleted but still in the index).

Ids are owned by the map and never reused: a deleted key's id stays dead, so a stale id found in a
FAISS result can never name another key.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError


def check_keys(keys: Iterable[str]) -> list[str]:
    """``keys`` as a list of non-empty, distinct strings (:class:`DataError` naming the first bad one)."""
    if isinstance(keys, str):
        raise DataError("keys must be a list of strings, got a single string")
    out = list(keys)
    seen: set[str] = set()
    for i, k in enumerate(out):
        if not isinstance(k, str):
            raise DataError(f"key #{i} is {type(k).__name__}, keys must be strings")
        if not k:
            raise DataError(f"key #{i} is empty")
        if k in seen:
            raise DataError(f"key {k!r} appears twice in one batch")
        seen.add(k)
    return out


class IdMap:
    """Bidirectional key <-> id map in insertion order, the next free id and the tombstone set."""

    def __init__(self) -> None:
        self.key_to_id: dict[str, int] = {}
        self.id_to_key: dict[int, str] = {}
        self.tombstones: set[int] = set()
        self.next_id = 0

    def __len__(self) -> int:
        return len(self.key_to_id)

    def __contains__(self, key: object) -> bool:
        return key in self.key_to_id

    def keys(self) -> list[str]:
        """Live keys in insertion order."""
        return list(self.key_to_id)

    def key_of(self, id_: int) -> str | None:
        """The live key stored under ``id_`` (``None`` for a dead or unknown id)."""
        return self.id_to_key.get(id_)

    def ids_of(self, keys: Sequence[str]) -> np.ndarray:
        """Ids of ``keys`` (all must be present) as int64."""
        return np.array([self.key_to_id[k] for k in keys], dtype=np.int64)

    def allowed_ids(self, keys: Iterable[str]) -> np.ndarray:
        """Sorted ids of those ``keys`` that are present (unknown keys are ignored)."""
        return np.array(sorted({self.key_to_id[k] for k in keys if k in self.key_to_id}), dtype=np.int64)

    def live_ids(self) -> np.ndarray:
        """Ids of every live key (insertion order)."""
        return np.fromiter(self.id_to_key.keys(), dtype=np.int64, count=len(self.id_to_key))

    def allocate(self, n: int) -> np.ndarray:
        """``n`` fresh ids (not yet registered)."""
        return np.arange(self.next_id, self.next_id + n, dtype=np.int64)

    def register(self, keys: Sequence[str], ids: np.ndarray) -> None:
        """Record ``keys`` under ``ids`` (from :meth:`allocate`) and move the next free id past them."""
        for k, i in zip(keys, ids.tolist()):
            self.key_to_id[k] = i
            self.id_to_key[i] = k
        if len(ids):
            self.next_id = max(self.next_id, int(ids[-1]) + 1)

    def pop(self, keys: Sequence[str]) -> np.ndarray:
        """Forget ``keys`` (all must be present); returns their ids."""
        ids = np.array([self.key_to_id.pop(k) for k in keys], dtype=np.int64)
        for i in ids.tolist():
            del self.id_to_key[i]
        return ids

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON fields the index sidecar stores (``keys``/``ids`` parallel lists)."""
        keys = list(self.key_to_id)
        return {"keys": keys, "ids": [self.key_to_id[k] for k in keys], "tombstones": sorted(self.tombstones),
                "next_id": self.next_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IdMap":
        """Rebuild from :meth:`to_dict` output; ``ValueError`` when keys/ids/tombstones disagree."""
        keys, ids = list(data["keys"]), [int(i) for i in data["ids"]]
        tombstones = {int(i) for i in data.get("tombstones", [])}
        next_id = int(data["next_id"])
        if len(keys) != len(ids) or len(set(keys)) != len(keys) or len(set(ids)) != len(ids):
            raise ValueError("inconsistent key map")
        out = cls()
        out.key_to_id = dict(zip(keys, ids))
        out.id_to_key = dict(zip(ids, keys))
        out.tombstones = tombstones
        # never hand out an id FAISS may still hold, whatever next_id says
        out.next_id = max([next_id, *(i + 1 for i in ids), *(i + 1 for i in tombstones)])
        return out

    def stored_ids(self) -> set[int]:
        """Every id FAISS should hold: live ones and tombstones."""
        return set(self.id_to_key) | self.tombstones


__all__ = ["IdMap", "check_keys"]
