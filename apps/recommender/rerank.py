"""Re-ranking: maximal marginal relevance (diversity) and popularity/recency priors, and the
:class:`Reranker` component that applies both to a scored candidate list."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from verticore.inference.component import Component, register_component
from verticore.text import minmax_normalise

#: The prior's scale against z-scored relevance: a full-weight prior spans about three standard deviations.
PRIOR_SCALE = 3.0


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


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardised scores (zeros for fewer than two values or no spread)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return np.zeros_like(x)
    sd = float(x.std())
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


@register_component("recommender.Reranker")
class Reranker(Component):
    """Re-ranks scored candidates: a popularity ``prior`` blended in (weight in [0, 1]), then MMR
    with ``diversity`` in [0, 1] (0 = by score alone).

    Settings only (no heavy state); the recommender builds one per request from its arguments.
    """

    def __init__(self, diversity: float = 0.0, prior: float = 0.0, prior_scale: float = PRIOR_SCALE) -> None:
        self.diversity = float(diversity)
        self.prior = float(prior)
        self.prior_scale = float(prior_scale)

    def _init_parameters(self) -> dict[str, Any]:
        return {"diversity": self.diversity, "prior": self.prior, "prior_scale": self.prior_scale}

    def rerank(self, scores: np.ndarray, k: int, vectors: Callable[[], np.ndarray],
               popularity: Callable[[], np.ndarray] | None = None) -> tuple[list[int], np.ndarray]:
        """Indices of the ``k`` chosen candidates (best first) and every candidate's final score.

        ``vectors`` and ``popularity`` are called only when needed (MMR, the prior): the
        candidates' L2-normalised vectors and their prior in [0, 1] (:func:`popularity_prior`).
        """
        score = np.asarray(scores, dtype=np.float64)
        if self.prior > 0 and popularity is not None:
            score = (1 - self.prior) * zscore(score) + self.prior * self.prior_scale * popularity()
        if self.diversity > 0:
            return mmr(score, vectors(), k, self.diversity), score
        return [int(i) for i in np.argsort(-score, kind="stable")[:k]], score
