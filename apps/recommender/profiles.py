"""User profiles from history: time-decayed weighted means and multi-interest clusters."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def decay_weights(timestamps: np.ndarray, weights: np.ndarray | None = None, half_life_days: float | None = None,
                  now: float | None = None) -> np.ndarray:
    """Interaction weights times ``0.5 ** (age / half_life)`` (no decay when ``half_life_days`` is None).

    ``now`` defaults to the user's latest timestamp, so a user's most recent item weighs 1.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    w = np.ones_like(ts) if weights is None else np.asarray(weights, dtype=np.float64).clip(min=1e-6)
    if half_life_days and len(ts):
        ref = ts.max() if now is None else float(now)
        age_days = np.clip(ref - ts, 0, None) / 86400.0
        w = w * np.power(0.5, age_days / float(half_life_days))
    return w


def weighted_mean(vectors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """L2-normalised weighted mean of row vectors."""
    v = np.asarray(vectors, dtype=np.float32)
    if len(v) == 0:
        raise ValueError("no vectors to average")
    w = np.ones(len(v), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
    m = (v * w[:, None]).sum(axis=0) / max(float(w.sum()), 1e-12)
    n = float(np.linalg.norm(m))
    return (m / n if n > 0 else m).astype(np.float32)


@dataclass
class Interest:
    """One interest of a user: a unit centroid, its share of the history weight, member rows."""

    centroid: np.ndarray
    weight: float
    members: list[int]


def multi_interest(vectors: np.ndarray, weights: np.ndarray | None = None, k: int = 3, seed: int = 0,
                   iters: int = 20, min_share: float = 0.0) -> list[Interest]:
    """Spherical weighted k-means over a user's item vectors: up to ``k`` interests, largest first.

    ``k`` is capped by the number of distinct vectors. Clusters with less than ``min_share`` of
    the weight are dropped (their items then join no interest), unless that would drop all.
    """
    v = np.asarray(vectors, dtype=np.float32)
    n = len(v)
    if n == 0:
        return []
    w = np.ones(n, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    distinct = len(np.unique(np.round(v, 5), axis=0))
    k = max(1, min(int(k), distinct))
    if k == 1:
        return [Interest(weighted_mean(v, w), 1.0, list(range(n)))]
    rng = np.random.default_rng(seed)
    # k-means++ init (weighted), deterministic for a given seed
    first = int(np.argmax(w))
    centers = [v[first]]
    for _ in range(1, k):
        sims = np.max(np.stack([v @ c for c in centers], axis=1), axis=1)
        d = np.clip(1.0 - sims, 0, None) * w
        if d.sum() <= 0:
            break
        centers.append(v[int(rng.choice(n, p=d / d.sum()))])
    c = np.stack(centers).astype(np.float32)
    assign = np.zeros(n, dtype=int)
    for _ in range(iters):
        new_assign = np.argmax(v @ c.T, axis=1)
        if _ > 0 and np.array_equal(new_assign, assign):
            break
        assign = new_assign
        for j in range(len(c)):
            idx = np.where(assign == j)[0]
            if len(idx):
                c[j] = weighted_mean(v[idx], w[idx])
    total = float(w.sum())
    out = []
    for j in range(len(c)):
        idx = np.where(assign == j)[0]
        if len(idx) == 0:
            continue
        out.append(Interest(weighted_mean(v[idx], w[idx]), float(w[idx].sum() / total), idx.tolist()))
    out.sort(key=lambda it: -it.weight)
    kept = [it for it in out if it.weight >= min_share]
    return kept or out[:1]


def interleave(lists: list[list[str]], shares: list[float] | None = None, k: int | None = None) -> list[str]:
    """Merge ranked lists round-robin (weighted by ``shares``), skipping duplicates."""
    shares = shares or [1.0] * len(lists)
    pos = [0] * len(lists)
    credit = [0.0] * len(lists)
    out: list[str] = []
    seen: set[str] = set()
    limit = k if k is not None else sum(len(x) for x in lists)
    while len(out) < limit and any(p < len(lst) for p, lst in zip(pos, lists)):
        for j in range(len(lists)):
            credit[j] += shares[j]
        order = sorted((j for j in range(len(lists)) if pos[j] < len(lists[j])), key=lambda j: -credit[j])
        j = order[0]
        credit[j] -= sum(shares)
        while pos[j] < len(lists[j]):
            item = lists[j][pos[j]]
            pos[j] += 1
            if item not in seen:
                seen.add(item)
                out.append(item)
                break
    return out
