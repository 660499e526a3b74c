"""Hybrid retrieval: dense and BM25 candidate lists, each candidate scored by both, then fused."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError
from .base import RetrievalComponent, RetrievalHit, check_k, retrievers
from .bm25 import BM25Retriever
from .dense import DenseRetriever
from .fusion import FUSION_METHODS, Fusion, two_way_fusion

MODES = ("bm25", "dense", "hybrid")


@dataclass
class Candidates:
    """One query's candidates: each retriever's ranked list and each retriever's scores for the
    other's candidates too (exact BM25 of a dense candidate, cosine of a BM25 candidate)."""

    dense: list[RetrievalHit] = field(default_factory=list)
    bm25: list[RetrievalHit] = field(default_factory=list)
    dense_scores: dict[str, float] = field(default_factory=dict)
    bm25_scores: dict[str, float] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return list(dict.fromkeys([h.key for h in self.dense] + [h.key for h in self.bm25]))


@dataclass
class HybridHit:
    """A fused hit with what each retriever said about it (None where it did not rank it)."""

    key: str
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None
    dense_rank: int | None = None
    bm25_rank: int | None = None


def _as(component: Any, cls: type, default: Any) -> Any:
    if component is None:
        return default()
    if isinstance(component, Mapping):
        return cls.from_dict(component)
    return component


@retrievers.decorator("hybrid")
class HybridRetriever(RetrievalComponent):
    """BM25 + dense with a fusion (weighted RRF by default).

    Args:
        dense / bm25: the two retrievers (objects or their ``to_dict()``).
        method / dense_weight / rrf_k: the fusion (see :func:`~verticore.retrieval.fusion.two_way_fusion`).
        candidates: depth of each retriever's list before fusion.
    """

    kind = "hybrid"

    def __init__(self, dense: Any = None, bm25: Any = None, method: str = "rrf", dense_weight: float = 0.5,
                 rrf_k: int = 60, candidates: int = 50) -> None:
        self.dense = _as(dense, DenseRetriever, DenseRetriever)
        self.bm25 = _as(bm25, BM25Retriever, BM25Retriever)
        self.method = str(method)
        self.dense_weight = float(dense_weight)
        self.rrf_k = int(rrf_k)
        self.candidates = int(candidates)
        two_way_fusion(self.method, self.dense_weight, self.rrf_k)  # validate now, not at the first search

    def settings(self) -> dict[str, Any]:
        return {"dense": self.dense.to_dict(), "bm25": self.bm25.to_dict(), "method": self.method,
                "dense_weight": self.dense_weight, "rrf_k": self.rrf_k, "candidates": self.candidates}

    @property
    def fusion(self) -> Fusion:
        return two_way_fusion(self.method, self.dense_weight, self.rrf_k)

    def warm_up(self) -> None:
        self.dense.warm_up()
        self.bm25.warm_up()

    def add(self, keys: Sequence[str], texts: Sequence[str], bm25_texts: Sequence[str] | None = None,
            show_progress: bool = False) -> None:
        """Index ``texts`` in both retrievers (``bm25_texts`` when BM25 should see other text)."""
        self.dense.add(keys, texts, show_progress=show_progress)
        self.bm25.add(keys, bm25_texts if bm25_texts is not None else texts)

    def delete(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        return max(self.dense.delete(keys), self.bm25.delete(keys))

    def __len__(self) -> int:
        return max(len(self.dense), len(self.bm25))

    # -- candidates and fusion ------------------------------------------------------------
    def collect(self, queries: Sequence[str], k: int = 10, mode: str = "hybrid", allow: Iterable[str] | None = None,
                exclude: Sequence[str | None] | None = None, query_vectors: Any = None,
                show_progress: bool = False) -> list[Candidates]:
        """Each query's :class:`Candidates` (``candidates`` deep in hybrid mode, ``k`` otherwise)."""
        if mode not in MODES:
            raise DataError(f"unknown retrieval mode {mode!r}; use one of {', '.join(MODES)}")
        k = check_k(k)
        n = len(queries)
        out = [Candidates() for _ in range(n)]
        allow = None if allow is None else set(allow)
        depth = max(k, self.candidates if mode == "hybrid" else k)
        qv = None
        if mode in ("dense", "hybrid") and len(self.dense):
            qv = (np.asarray(query_vectors, np.float32) if query_vectors is not None
                  else self.dense.encode(queries, show_progress=show_progress))
            for c, hits in zip(out, self.dense.search_vectors(qv, depth, allow=allow, exclude=exclude)):
                c.dense = hits
                c.dense_scores = dict(hits)
        if mode in ("bm25", "hybrid") and len(self.bm25):
            skip = list(exclude) if exclude is not None else [None] * n
            mask = self.bm25.allow_mask(allow)
            for qi, q in enumerate(queries):
                scores = self.bm25.scores(q)
                c = out[qi]
                c.bm25 = self.bm25.top(scores, depth, mask, skip[qi])
                c.bm25_scores = dict(c.bm25)
                if not c.bm25 and not np.any(scores > 0):
                    continue  # no query term in the corpus: BM25 has nothing to say
                for key, _ in c.dense:  # exact BM25 of dense-only candidates (0 = no shared term)
                    pos = self.bm25.position(key)
                    if key not in c.bm25_scores and pos is not None:
                        c.bm25_scores[key] = max(0.0, float(scores[pos]))
        if mode == "hybrid" and qv is not None:
            for qi, c in enumerate(out):
                missing = [h.key for h in c.bm25 if h.key not in c.dense_scores]
                if missing:
                    c.dense_scores.update(self.dense.similarities(qv[qi], missing))
        return out

    def fuse(self, cand: Candidates, mode: str = "hybrid", fusion: Fusion | None = None) -> list[RetrievalHit]:
        """One query's ranking: a retriever's own list, or both fused."""
        if mode == "dense":
            return list(cand.dense)
        if mode == "bm25":
            return list(cand.bm25)
        return (fusion or self.fusion).fuse([cand.dense, cand.bm25], [cand.dense_scores, cand.bm25_scores])

    def search_many(self, queries: Sequence[str], k: int = 10, allow: Iterable[str] | None = None,
                    exclude: Sequence[str | None] | None = None, mode: str = "hybrid", query_vectors: Any = None,
                    fusion: Fusion | None = None, show_progress: bool = False) -> list[list[HybridHit]]:
        """Top ``k`` fused hits per query with each retriever's score and rank."""
        cands = self.collect(queries, k, mode, allow, exclude, query_vectors, show_progress)
        return [self.explain(c, self.fuse(c, mode, fusion)[:k]) for c in cands]

    def search(self, query: str, k: int = 10, allow: Iterable[str] | None = None,
               mode: str = "hybrid") -> list[HybridHit]:
        return self.search_many([query], k=k, allow=allow, mode=mode)[0]

    @staticmethod
    def explain(cand: Candidates, ranked: Sequence[RetrievalHit]) -> list[HybridHit]:
        d_rank = {h.key: r for r, h in enumerate(cand.dense, start=1)}
        b_rank = {h.key: r for r, h in enumerate(cand.bm25, start=1)}
        return [HybridHit(h.key, float(h.score), cand.dense_scores.get(h.key), cand.bm25_scores.get(h.key),
                          d_rank.get(h.key), b_rank.get(h.key)) for h in ranked]


__all__ = ["HybridRetriever", "HybridHit", "Candidates", "MODES", "FUSION_METHODS"]
