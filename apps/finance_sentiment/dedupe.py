"""Story deduplication: exact (normalised title hash) and near-duplicate (embedding similarity).

One story syndicated ten times ("UPDATE 1-Acme cuts outlook - Reuters", "Acme cuts outlook |
MarketWatch", a lightly rewritten version) becomes one signal: the copies are stored with
``duplicate_of`` pointing at the first one and are left out of trends and detection.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from verticore.index import VectorIndex

from .items import NewsItem
from .store import NewsStore
from .text import title_hash

log = logging.getLogger("finance_sentiment")


class Deduplicator:
    """Find duplicates of incoming items among recent stored items and within the batch.

    ``threshold`` is the cosine similarity of title embeddings above which two items are the
    same story; only items published within ``window_hours`` of each other are compared.
    The near-duplicate index holds recent originals (a :class:`verticore.VectorIndex`).
    """

    def __init__(self, store: NewsStore, *, dimension: int = 384, threshold: float = 0.92, window_hours: float = 48.0,
                 model_fingerprint: str | None = None) -> None:
        self.store = store
        self.threshold = float(threshold)
        self.window_s = float(window_hours) * 3600.0
        self.index = VectorIndex(dimension, metric="ip", factory="Flat", model_fingerprint=model_fingerprint, use_gpu=False)
        self._ts: dict[str, float] = {}
        self._latest = 0.0

    def warm(self, embedder, limit: int = 5000) -> int:
        """Re-index recent originals from the store (after a restart); returns how many."""
        rows = self.store.recent_items(limit=limit)
        if not rows:
            return 0
        vecs = embedder.encode([r["title"] for r in rows])
        self.remember([int(r["id"]) for r in rows], vecs, [float(r["published_at"]) for r in rows])
        return len(rows)

    def find(self, items: Sequence[NewsItem], embeddings: np.ndarray | None) -> list[tuple[str, int | str | None]]:
        """For each item: ``(title_hash, duplicate_of)`` where ``duplicate_of`` is a stored row id, the string
        ``"batch:<i>"`` for an earlier item of the same batch, or ``None`` for an original."""
        hashes = [title_hash(it.title) for it in items]
        since = min((it.published_at for it in items), default=0.0) - self.window_s
        stored = self.store.find_title_hashes(hashes, since)
        out: list[tuple[str, int | str | None]] = []
        seen_hash: dict[str, int] = {}
        originals: list[int] = []
        for i, (it, h) in enumerate(zip(items, hashes)):
            dup: int | str | None = None
            if h in stored:
                dup = stored[h]
            elif h in seen_hash:
                dup = f"batch:{seen_hash[h]}"
            elif embeddings is not None:
                v = embeddings[i]
                if len(self.index):
                    for hit in self.index.search_one(v, k=5):
                        ts = self._ts.get(hit.key)
                        if hit.score >= self.threshold and ts is not None and abs(ts - it.published_at) <= self.window_s:
                            dup = int(hit.key)
                            break
                if dup is None and originals:
                    sims = embeddings[originals] @ v
                    j = int(np.argmax(sims))
                    if sims[j] >= self.threshold and abs(items[originals[j]].published_at - it.published_at) <= self.window_s:
                        dup = f"batch:{originals[j]}"
            if dup is None:
                seen_hash[h] = i
                originals.append(i)
            out.append((h, dup))
        return out

    def remember(self, rowids: Sequence[int], embeddings: np.ndarray, published: Sequence[float]) -> None:
        """Add stored originals to the near-duplicate index and expire ones older than the window."""
        if len(rowids) == 0:
            return
        keys = [str(r) for r in rowids]
        self.index.upsert(keys, np.asarray(embeddings, dtype=np.float32))
        for k, ts in zip(keys, published):
            self._ts[k] = float(ts)
        self._latest = max(self._latest, max(published))
        horizon = self._latest - 2 * self.window_s
        if len(self._ts) > 2000:
            old = [k for k, ts in self._ts.items() if ts < horizon]
            if len(old) > len(self._ts) // 4:
                self.index.delete(old)
                for k in old:
                    del self._ts[k]
