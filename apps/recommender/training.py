"""Fine-tuning the embedder on behaviour: co-interaction pairs -> contrastive training (core)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

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
