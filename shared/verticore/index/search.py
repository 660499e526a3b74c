"""Top-k search over a :class:`~verticore.index.store.FaissStore`: FAISS selectors for allow-lists
and tombstones on CPU, over-fetching where selectors do not pass (GPU, pre-transformed IVF),
exact scoring of small candidate sets, and turning ids back into keyed hits.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from .factory import faiss_module
from .idmap import IdMap
from .store import FaissStore

#: FAISS's limit on ``k`` for GPU searches
GPU_MAX_K = 2048

ExactFn = Callable[[np.ndarray, int, np.ndarray], "tuple[np.ndarray, np.ndarray]"]


class SearchHit(NamedTuple):
    """One search result: the key and its score (higher is better)."""

    key: str
    score: float


def exact_top_k(vectors: np.ndarray, q: np.ndarray, k: int, ids: np.ndarray,
                metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Score queries ``q`` against ``vectors`` (stored under ``ids``) exactly; FAISS-style
    ``(distances, ids)`` of the best ``k`` per query, best first (inner product, or squared L2)."""
    if metric == "l2":
        d = (q * q).sum(1)[:, None] - 2.0 * q @ vectors.T + (vectors * vectors).sum(1)[None, :]
        order_key = d
    else:
        d = q @ vectors.T
        order_key = -d
    kk = min(k, len(ids))
    if kk < len(ids):
        part = np.argpartition(order_key, kk - 1, axis=1)[:, :kk]
    else:
        part = np.tile(np.arange(len(ids)), (len(q), 1))
    rows = np.arange(len(q))[:, None]
    order = np.argsort(order_key[rows, part], axis=1, kind="stable")
    top = part[rows, order]
    return d[rows, top], ids[top]


def to_hits(scores: np.ndarray, ids: np.ndarray, idmap: IdMap, metric: str) -> list[list[SearchHit]]:
    """FAISS ``(distances, ids)`` rows as :class:`SearchHit` lists; dead/absent ids are dropped and
    L2 distances become negative scores so that higher is always better."""
    sign = -1.0 if metric == "l2" else 1.0
    out: list[list[SearchHit]] = []
    for srow, irow in zip(scores.tolist(), ids.tolist()):
        row = []
        for s, i in zip(srow, irow):
            key = idmap.key_of(i) if i >= 0 else None
            if key is not None:
                row.append(SearchHit(key, sign * float(s) + 0.0))  # + 0.0: no "-0.0" scores
        out.append(row)
    return out


class IndexSearcher:
    """One search over ``store``: CPU selectors or a GPU copy, tombstones and allow-lists filtered.

    Args:
        store: the FAISS indexes.
        idmap: keys, live ids and tombstones.
        metric: ``"ip"``, ``"cosine"`` or ``"l2"``.
        ef_search: HNSW search breadth (raised to ``k`` when ``k`` is larger).
        exact: exact scorer ``(q, k, ids) -> (distances, ids)`` used when a graph walk comes up
            short or the GPU's ``k`` limit is reached.
    """

    def __init__(self, store: FaissStore, idmap: IdMap, metric: str, ef_search: int, exact: ExactFn) -> None:
        self.store, self.idmap, self.metric, self.ef_search, self.exact = store, idmap, metric, ef_search, exact

    def params(self, sel: Any = None, k: int = 10) -> Any:
        """FAISS search parameters for the active index (``None`` when none apply)."""
        faiss = faiss_module()
        kind = self.store.kind
        if kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, k))
        if kind == "ivf":
            if not isinstance(faiss.downcast_index(self.store.main), faiss.IndexIVF):
                return None  # pre-transformed IVF: parameters do not pass through; nprobe is set on the index
            return faiss.SearchParametersIVF(sel=sel, nprobe=self.store.nprobe)
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def search(self, q: np.ndarray, k: int, allow_ids: np.ndarray | None,
               gpu_index: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)`` of the best ``k`` live (and allowed) vectors per query row."""
        n_live = len(self.idmap) if allow_ids is None else len(allow_ids)
        want = min(k, n_live)
        if gpu_index is not None:
            return self.overfetch(gpu_index, q, k, want, allow_ids, gpu=True)
        faiss = faiss_module()
        index = self.store.active
        tombstones = self.idmap.tombstones
        if allow_ids is not None:
            sel = faiss.IDSelectorBatch(allow_ids)
        elif tombstones:
            dead = faiss.IDSelectorBatch(np.fromiter(tombstones, dtype=np.int64))
            sel = faiss.IDSelectorNot(dead)
            sel._keep = dead  # keep the inner selector alive while searching
        else:
            sel = None
        params = self.params(sel, k)
        if params is None and sel is not None:
            return self.overfetch(index, q, k, want, allow_ids)
        dist, found = index.search(q, want, params=params) if params is not None else index.search(q, want)
        short = (found >= 0).sum(1) < want
        if short.any() and self.store.kind == "hnsw":
            # a restrictive filter starved the graph walk: widen it, then fall back to exact
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(4 * self.ef_search, 4 * k, 256))
            dist2, found2 = index.search(q[short], want, params=params)
            dist[short], found[short] = dist2, found2
            short = (found >= 0).sum(1) < want
            if short.any():
                ids = allow_ids if allow_ids is not None else np.sort(self.idmap.live_ids())
                dist3, found3 = self.exact(q[short], want, ids)
                dist[short], found[short] = dist3, found3
        return dist, found

    def overfetch(self, index: Any, q: np.ndarray, k: int, want: int, allow_ids: np.ndarray | None,
                  gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Search without selectors: fetch more than ``k`` and drop tombstoned / disallowed ids."""
        total = index.ntotal
        allowed = set(allow_ids.tolist()) if allow_ids is not None else None
        dead = self.idmap.tombstones
        fetch = min(total, max(2 * k, k + len(dead)) if allowed is None else max(4 * k, 64))
        cap = GPU_MAX_K if gpu else total
        dist_out = np.full((len(q), want), -np.inf if self.metric != "l2" else np.inf, dtype=np.float32)
        ids_out = np.full((len(q), want), -1, dtype=np.int64)
        todo = np.arange(len(q))
        while len(todo):
            fetch = min(fetch, total, cap)
            params = None if gpu else self.params(None, fetch)
            if params is not None:
                dist, found = index.search(q[todo], fetch, params=params)
            else:
                dist, found = index.search(q[todo], fetch)
            still = []
            for row, (drow, irow) in zip(todo.tolist(), zip(dist, found)):
                keep = [(d, i) for d, i in zip(drow.tolist(), irow.tolist())
                        if i >= 0 and i not in dead and (allowed is None or i in allowed)]
                if len(keep) >= want or fetch >= min(total, cap):
                    keep = keep[:want]
                    if keep:
                        dist_out[row, :len(keep)] = [d for d, _ in keep]
                        ids_out[row, :len(keep)] = [i for _, i in keep]
                    if len(keep) < want and fetch < total:  # GPU cap reached: finish exactly on CPU
                        ids = allow_ids if allow_ids is not None else np.sort(self.idmap.live_ids())
                        dist3, found3 = self.exact(q[row:row + 1], want, ids)
                        dist_out[row, :found3.shape[1]], ids_out[row, :found3.shape[1]] = dist3[0], found3[0]
                else:
                    still.append(row)
            todo = np.array(still, dtype=np.int64)
            fetch *= 4
        return dist_out, ids_out


__all__ = ["SearchHit", "IndexSearcher", "exact_top_k", "to_hits", "GPU_MAX_K"]
