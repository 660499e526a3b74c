"""Re-ranking: maximal marginal relevance (diversity) and popularity/recency priors."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from verticore.text import minmax_normalise


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, diversity: float = 0.0) -> list[int]:
    """Maximal marginal relevance: indices of ``k`` candidates, greedily maximising
    ``(1 - diversity) * relevance - diversity * max_sim_to_selected``.

    ``relevance`` is min-max scaled first so ``diversity`` (0 = pure relevance, 1 = pure novelty)
    means the same whatever the score scale. ``vectors`` must be L2-normalised.
    """
    n = len(relevance)
    k = min(int(k), n)
    if k <= 0:
        return []
    rel = minmax_normalise(relevance)
    if diversity <= 0:
        return [int(i) for i in np.argsort(-rel, kind="stable")[:k]]
    if not 0 <= diversity <= 1:
        raise ValueError("diversity must be between 0 and 1")
    v = np.asarray(vectors, dtype=np.float32)
    sim = v @ v.T
    selected: list[int] = []
    max_sim = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        red = np.where(np.isfinite(max_sim), max_sim, 0.0)
        score = (1 - diversity) * rel - diversity * red
        score[~available] = -np.inf
        i = int(np.argmax(score))
        selected.append(i)
        available[i] = False
        max_sim = np.maximum(max_sim, sim[i])
    return selected


def popularity_prior(item_ids: Sequence[str], counts: Mapping[str, float]) -> np.ndarray:
    """log1p(count) scaled to [0, 1] over the whole count table (0 for never-seen items)."""
    if not counts:
        return np.zeros(len(item_ids))
    top = np.log1p(max(counts.values()))
    if top <= 0:
        return np.zeros(len(item_ids))
    return np.array([np.log1p(max(counts.get(i, 0.0), 0.0)) / top for i in item_ids], dtype=np.float64)
