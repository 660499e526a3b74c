"""Calibration of a hybrid's fusion on labelled dev queries."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..evaluation import ranking_metrics
from .base import RetrievalComponent
from .fusion import FUSION_METHODS, two_way_fusion
from .hybrid import Candidates, HybridRetriever

DEFAULT_WEIGHTS: tuple[float, ...] = tuple(float(w) for w in np.round(np.arange(0.0, 1.0001, 0.05), 2))


class FusionCalibrator(RetrievalComponent):
    """Grid search over fusion methods and dense weights, scored by hit@1 (ties: MRR@k).

    Args:
        methods: fusion methods tried (``rrf``, ``convex``).
        weights: dense weights tried.
        k: list depth for MRR.
        rrf_k: the RRF constant.
    """

    kind = "fusion-calibrator"

    def __init__(self, methods: Sequence[str] = FUSION_METHODS, weights: Sequence[float] = DEFAULT_WEIGHTS,
                 k: int = 10, rrf_k: int = 60) -> None:
        self.methods = [str(m) for m in methods]
        self.weights = [float(w) for w in weights]
        self.k = int(k)
        self.rrf_k = int(rrf_k)
        for m in self.methods:
            two_way_fusion(m, 0.5, self.rrf_k)

    def settings(self) -> dict[str, Any]:
        return {"methods": self.methods, "weights": self.weights, "k": self.k, "rrf_k": self.rrf_k}

    def _score(self, ranked: list[list[str]], relevant: Sequence[set[str]]) -> tuple[float, float]:
        rec = dict(enumerate(ranked))
        rel = dict(enumerate(relevant))
        hit1 = ranking_metrics(rec, rel, k=1, include_empty=True)["hit@1"]
        mrr = ranking_metrics(rec, rel, k=self.k, include_empty=True)["mrr"]
        return float(hit1), float(mrr)

    def calibrate(self, hybrid: HybridRetriever, candidates: Sequence[Candidates],
                  relevant: Sequence[set[str]]) -> dict[str, Any]:
        """Score every setting on the dev queries' ``candidates`` (from :meth:`HybridRetriever.collect`)
        against their ``relevant`` keys.

        Returns ``{"chosen": {method, dense_weight, rrf_k, dev_hit1, dev_mrr, dev_dense_only_hit1,
        dev_bm25_only_hit1}, "table": [{method, dense_weight, hit1, mrr}, ...]}``; the dense-only
        and BM25-only figures show whether fusion pays off.
        """
        if not candidates:
            raise DataError("calibration needs at least one dev query")
        if len(candidates) != len(relevant):
            raise DataError(f"got {len(candidates)} candidate lists for {len(relevant)} relevance sets")
        relevant = [set(r) for r in relevant]
        table = []
        for method in self.methods:
            for w in self.weights:
                fusion = two_way_fusion(method, w, self.rrf_k)
                ranked = [[h.key for h in hybrid.fuse(c, "hybrid", fusion)[: self.k]] for c in candidates]
                hit1, mrr = self._score(ranked, relevant)
                table.append({"method": method, "dense_weight": float(w), "hit1": hit1, "mrr": mrr})
        best = max(table, key=lambda r: (r["hit1"], r["mrr"], -abs(r["dense_weight"] - 0.5)))
        dense_hit1 = self._score([[h.key for h in c.dense[:1]] for c in candidates], relevant)[0]
        bm25_hit1 = self._score([[h.key for h in c.bm25[:1]] for c in candidates], relevant)[0]
        chosen = {"method": best["method"], "dense_weight": best["dense_weight"], "rrf_k": self.rrf_k,
                  "dev_hit1": round(best["hit1"], 4), "dev_mrr": round(best["mrr"], 4),
                  "dev_dense_only_hit1": round(dense_hit1, 4), "dev_bm25_only_hit1": round(bm25_hit1, 4)}
        return {"chosen": chosen, "table": table}


__all__ = ["FusionCalibrator", "DEFAULT_WEIGHTS"]
