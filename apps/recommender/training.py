"""Training on behaviour: the embedder on co-interaction pairs (core), the hybrid weight on a holdout."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from verticore.errors import DataError

from .interactions import Interactions

log = logging.getLogger(__name__)


def co_interaction_pairs(interactions: Interactions, item_texts: Mapping[str, str], *, window: int = 3,
                         max_gap_days: float | None = 30.0, max_pairs: int | None = None,
                         seed: int = 42) -> list[tuple[str, str]]:
    """(anchor text, positive text) pairs of items consumed by the same user close in time.

    For each user's time-ordered history, item ``i`` is paired with the next ``window`` items
    whose timestamp is within ``max_gap_days`` (``None`` = no time limit). Unordered duplicates
    are removed, order is shuffled (``seed``) and capped at ``max_pairs``. Items without a text
    in ``item_texts`` are skipped with a warning that counts them.
    """
    if window < 1:
        raise DataError("window must be at least 1")
    pairs: set[tuple[str, str]] = set()
    unknown: set[str] = set()
    gap = None if max_gap_days is None else float(max_gap_days) * 86400.0
    for _, h in interactions.by_user().items():
        items = h["item"].tolist()
        ts = h["timestamp"].to_numpy(dtype=np.float64)
        for a in range(len(items)):
            if items[a] not in item_texts:
                unknown.add(items[a])
                continue
            for b in range(a + 1, min(a + 1 + window, len(items))):
                if gap is not None and ts[b] - ts[a] > gap:
                    break
                if items[b] == items[a] or items[b] not in item_texts:
                    continue
                x, y = sorted((items[a], items[b]))
                pairs.add((x, y))
    if unknown:
        log.warning("co-interaction pairs: skipped %d item(s) with no text in the catalog", len(unknown))
    ordered = sorted(pairs)
    rng = np.random.default_rng(seed)
    rng.shuffle(ordered)
    # random direction so neither side is always the "smaller" id
    flip = rng.random(len(ordered)) < 0.5
    out = [(item_texts[y], item_texts[x]) if f else (item_texts[x], item_texts[y]) for (x, y), f in zip(ordered, flip)]
    if max_pairs is not None:
        out = out[: int(max_pairs)]
    if len(out) < 2:
        raise DataError("too few co-interaction pairs to fine-tune on (need users with 2+ items close in time)")
    return out


def finetune_on_behaviour(interactions: Interactions, item_texts: Mapping[str, str], out_dir: str | Path, *,
                          base: str = "default", window: int = 3, max_gap_days: float | None = 30.0,
                          max_pairs: int | None = None, epochs: int = 1, batch_size: int = 32,
                          learning_rate: float = 2e-5, max_length: int = 64, max_steps: int | None = None,
                          dev_fraction: float = 0.02, seed: int = 42, show_progress: bool = True) -> Any:
    """Train the embedder contrastively on co-interaction pairs with the core's ``train_embedder``.

    Returns the core ``TrainResult``; ``Embedder(str(result.artifact_dir))`` (or
    ``Catalog(embedder=that_dir)``) replaces the default model with it.
    """
    from verticore.finetune import EmbedderTrainingConfig, train_embedder

    pairs = co_interaction_pairs(interactions, item_texts, window=window, max_gap_days=max_gap_days,
                                 max_pairs=max_pairs, seed=seed)
    n_dev = min(200, int(len(pairs) * dev_fraction)) if len(pairs) >= 200 else 0
    dev, train = pairs[:n_dev], pairs[n_dev:]
    cfg = EmbedderTrainingConfig(base=base, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                 max_length=max_length, seed=seed, max_steps=max_steps)
    return train_embedder(train, out_dir, config=cfg, dev_pairs=dev or None, show_progress=show_progress)


# -- hybrid blend weight --------------------------------------------------------------------
# The grid the MovieLens bench has always searched (its figures depend on it): coarse at the ends,
# fine around the usual optimum (0.8-0.95, CF dominant once users have some history).
ALPHA_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.65, 0.8, 0.85, 0.9, 0.95, 1.0)
DEFAULT_ALPHA = 0.5  # used only when there is nothing to tune on (no CF, or too little history)


@dataclass
class AlphaTuning:
    """The hybrid weight picked on a holdout of the training interactions.

    ``scores`` maps each alpha of the grid to the holdout ``metric`` (NDCG@k averaged over
    ``users`` validation users); ``alpha`` is the first grid value with the highest score.
    """

    alpha: float
    scores: dict[float, float]
    metric: str
    users: int
    holdout_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (alpha keys become strings, as JSON requires)."""
        return {"alpha": self.alpha, "metric": self.metric, "users": self.users,
                "holdout_fraction": self.holdout_fraction, "scores": {str(a): s for a, s in self.scores.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AlphaTuning":
        """Inverse of :meth:`to_dict`."""
        return cls(alpha=float(data["alpha"]), scores={float(a): float(s) for a, s in data["scores"].items()},
                   metric=str(data["metric"]), users=int(data["users"]),
                   holdout_fraction=float(data["holdout_fraction"]))


def holdout_last(interactions: Interactions, fraction: float = 0.2,
                 min_history: int = 3) -> tuple[Interactions, dict[str, set[str]]]:
    """Split each user's history by time: the latest ``fraction`` (at least one item) is held out.

    Users with fewer than ``min_history`` interactions keep everything (they would lose their
    whole profile). Returns the remaining interactions and ``{user: held-out items}``.
    """
    import pandas as pd

    keep, held = [], {}
    for user, h in interactions.by_user().items():
        n_val = max(1, int(round(len(h) * fraction))) if len(h) >= min_history else 0
        keep.append(h.iloc[: len(h) - n_val])
        if n_val:
            held[user] = set(h["item"].iloc[len(h) - n_val:])
    if not keep:
        return Interactions.empty(), held
    return Interactions(pd.concat(keep, ignore_index=True)), held


def tune_alpha(catalog: Any, interactions: Interactions, *, l2: float = 200.0,
               grid: Sequence[float] = ALPHA_GRID, k: int = 10, holdout_fraction: float = 0.2,
               users: Sequence[str] | None = None, max_users: int | None = 300,
               **recommender_kwargs: Any) -> AlphaTuning:
    """Pick the hybrid CF weight on a time holdout of ``interactions`` (never on test data).

    Each user's latest ``holdout_fraction`` of items is held out (:func:`holdout_last`), EASE
    (``l2``) is refitted on the rest, and a hybrid :class:`~recommender.recommender.Recommender`
    over ``catalog`` ranks the top ``k`` for up to ``max_users`` validation users (in the order
    of ``users`` when given) for every alpha in ``grid``; the score is NDCG@k from the core
    evaluator. ``recommender_kwargs`` (``n_interests``, ``half_life_days``, ...) are passed to
    the recommender so tuning sees the model that will serve. Raises :class:`DataError` when no
    user has enough history to hold any out.
    """
    from verticore.evaluation import ranking_metrics

    from .cf import EASE
    from .recommender import Recommender

    if not grid:
        raise DataError("the alpha grid is empty")
    fit_part, held = holdout_last(interactions, holdout_fraction)
    held = {u: items & set(catalog.ids) for u, items in held.items()}
    order = list(users) if users is not None else list(held)
    val_users = [u for u in order if held.get(u) and fit_part.has_user(u)]
    val_users = [u for u in val_users if any(i in catalog for i in fit_part.seen(u))]
    if max_users is not None:
        val_users = val_users[: int(max_users)]
    if not val_users or not len(fit_part):
        raise DataError("too little history to tune alpha: no user has 3+ interactions with catalog items")
    ease = EASE(l2=l2).fit(fit_part)
    scores: dict[float, float] = {}
    for a in grid:
        rec = Recommender(catalog, fit_part, cf=ease, mode="hybrid", alpha=float(a), **recommender_kwargs)
        recs = {u: [r.item for r in rec.recommend(u, k, explain=False)] for u in val_users}
        scores[float(a)] = float(ranking_metrics(recs, {u: held[u] for u in val_users}, k=k)[f"ndcg@{k}"])
    best = max(scores, key=scores.__getitem__)  # first of equal maxima: the grid order breaks ties
    log.info("hybrid alpha tuned on a %.0f%% time holdout of %d users: %s -> %s",
             holdout_fraction * 100, len(val_users), scores, best)
    return AlphaTuning(alpha=best, scores=scores, metric=f"ndcg@{k}", users=len(val_users),
                       holdout_fraction=float(holdout_fraction))
