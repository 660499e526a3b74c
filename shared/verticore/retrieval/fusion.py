"""Fusion of several ranked lists into one: weighted reciprocal-rank fusion and convex score fusion."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import DataError
from ..text import minmax_normalise
from .base import RetrievalComponent, RetrievalHit, fusions

Ranked = Sequence[RetrievalHit] | Sequence[tuple[str, float]]


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise DataError(f"got {len(w)} fusion weights for {n} ranked lists")
    return w


def _ordered(scores: Mapping[str, float]) -> list[RetrievalHit]:
    # ties broken by key so a fused list never depends on dict order
    return [RetrievalHit(k, float(s)) for k, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


class Fusion(RetrievalComponent):
    """Combines ranked lists (best first) into one list of :class:`RetrievalHit`."""

    def fuse(self, ranked: Sequence[Ranked], scores: Sequence[Mapping[str, float]] | None = None) -> list[RetrievalHit]:
        """Fuse ``ranked`` lists; ``scores`` optionally gives each retriever's scores for more keys
        than its own list (e.g. BM25 of a dense-only candidate) for score-based fusions."""
        raise NotImplementedError


@fusions.decorator("rrf")
class RRF(Fusion):
    """Reciprocal-rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))`` with 1-based ranks."""

    kind = "rrf"

    def __init__(self, k: int = 60, weights: Sequence[float] | None = None) -> None:
        self.k = int(k)
        self.weights = None if weights is None else [float(w) for w in weights]

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "weights": self.weights}

    def fuse(self, ranked: Sequence[Ranked], scores: Sequence[Mapping[str, float]] | None = None) -> list[RetrievalHit]:
        fused: dict[str, float] = {}
        for lst, w in zip(ranked, _weights(self.weights, len(ranked))):
            for rank, hit in enumerate(lst, start=1):
                fused[hit[0]] = fused.get(hit[0], 0.0) + w / (self.k + rank)
        return _ordered(fused)


@fusions.decorator("convex")
class ConvexFusion(Fusion):
    """Weighted sum of min-max normalised scores over the union of candidates (Weaviate's
    relative-score fusion). A key missing from a retriever's scores counts as 0 there."""

    kind = "convex"

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        self.weights = None if weights is None else [float(w) for w in weights]

    def settings(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def fuse(self, ranked: Sequence[Ranked], scores: Sequence[Mapping[str, float]] | None = None) -> list[RetrievalHit]:
        keys = list(dict.fromkeys(hit[0] for lst in ranked for hit in lst))
        if not keys:
            return []
        maps = list(scores) if scores is not None else [dict((h[0], h[1]) for h in lst) for lst in ranked]
        total = [0.0] * len(keys)
        for smap, w in zip(maps, _weights(self.weights, len(ranked))):
            norm = minmax_normalise([smap.get(key, 0.0) for key in keys])
            total = [t + w * float(v) for t, v in zip(total, norm)]
        return _ordered(dict(zip(keys, total)))


#: Fusion methods of a two-retriever (dense, BM25) hybrid.
FUSION_METHODS = ("rrf", "convex")


def two_way_fusion(method: str, dense_weight: float, rrf_k: int = 60) -> Fusion:
    """The fusion of a (dense, BM25) pair where ``dense_weight`` w weighs dense against BM25:
    RRF weights ``(2w, 2(1 - w))`` (so 0.5 is plain RRF) or convex weights ``(w, 1 - w)``."""
    w = float(dense_weight)
    if not 0.0 <= w <= 1.0:
        raise DataError(f"dense_weight must be in [0, 1], got {w}")
    if method == "rrf":
        return RRF(k=rrf_k, weights=[2.0 * w, 2.0 * (1.0 - w)])
    if method == "convex":
        return ConvexFusion(weights=[w, 1.0 - w])
    raise DataError(f"unknown fusion {method!r}; use one of {list(FUSION_METHODS)}")


def rrf_fuse(rankings: Sequence[Sequence[str]], k: int = 60,
             weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Plain-key RRF: ``[(key, score), ...]`` best first (the functional form of :class:`RRF`)."""
    return [tuple(h) for h in RRF(k, weights).fuse([[(key, 0.0) for key in r] for r in rankings])]


__all__ = ["Fusion", "RRF", "ConvexFusion", "FUSION_METHODS", "two_way_fusion", "rrf_fuse"]
