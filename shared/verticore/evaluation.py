"""One evaluation protocol for every app and bench (Microsoft Recommenders style).

Classification::

    classification_metrics(y_true, y_pred, labels=None)
        -> {"accuracy", "macro_f1", "weighted_f1", "per_class": {label: {precision, recall, f1, support}},
            "confusion_matrix": [[...]], "labels": [...], "n"}
    multilabel_metrics(y_true_sets, y_pred_sets, labels=None)
        -> {"micro_f1", "macro_f1", "micro_precision", "micro_recall", "subset_accuracy", "hamming_loss", ...}

Ranking (binary relevance; each user's list is cut at ``k`` after dropping repeated items)::

    recall_at_k     |top-k ∩ relevant| / |relevant|
    precision_at_k  |top-k ∩ relevant| / k          (k, not the list length: short lists are penalised)
    hit_at_k        1 if any of the top-k is relevant
    mrr             1 / rank of the first relevant item within the top k (0 if none)
    ndcg_at_k       DCG / IDCG, gain 1 / log2(rank + 1), IDCG over min(k, |relevant|) ideal ranks
    coverage        distinct items in all top-k lists / catalog size

``ranking_metrics(recommended, relevant, k=10, catalog_size=None)`` averages the per-user metrics
over users with at least one relevant item (a user with no recommendation list scores 0) and
returns keys ``"recall@10"``, ``"precision@10"``, ``"mrr"``, ``"ndcg@10"``, ``"hit@10"``,
``"coverage"`` (``None`` when ``catalog_size`` is not given) and ``"users"``.

Anything with ``recommend_batch(users, k) -> {user: [items]}`` (the :class:`RankingModel` protocol)
can be evaluated with :func:`evaluate_ranking` or :class:`RankingEvaluator`, which add ``ms_per_user``.
``score_matrix_metrics(scores, targets)`` covers one-relevant-item retrieval from a score matrix
(an embedder's dev set). Classification metrics are scikit-learn's.

Zero divisions (a class never predicted, never present) count as 0, like scikit-learn's
``zero_division=0``.
"""
from __future__ import annotations

import math
import time
from typing import Any, Hashable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import DataError

# -- classification ---------------------------------------------------------------------------


def _safe_div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _sorted_labels(values: Iterable[Any]) -> list[Any]:
    uniq = list(dict.fromkeys(values))
    try:
        return sorted(uniq)
    except TypeError:
        return sorted(uniq, key=str)


def classification_metrics(y_true: Sequence[Any], y_pred: Sequence[Any],
                           labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix.

    ``labels`` fixes the order of classes (rows = true, columns = predicted in the confusion
    matrix); by default it is the sorted union of ``y_true`` and ``y_pred``. With explicit
    ``labels``, a value outside them raises :class:`~verticore.errors.DataError`.
    Macro F1 averages over every label in ``labels`` (also those with no support), as
    scikit-learn does.
    """
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise DataError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if not y_true:
        raise DataError("no examples to evaluate (y_true is empty)")
    if labels is None:
        labels = _sorted_labels(y_true + y_pred)
    else:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise DataError("labels contains duplicates")
    pos = {lab: i for i, lab in enumerate(labels)}
    for what, ys in (("y_true", y_true), ("y_pred", y_pred)):
        for y in ys:
            if y not in pos:
                raise DataError(f"{what} contains label {y!r} that is not in labels {labels}")
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    # labels may be any hashables (mixed types too): scikit-learn sees their positions
    idx = list(range(len(labels)))
    t_idx, p_idx = [pos[y] for y in y_true], [pos[y] for y in y_pred]
    cm = confusion_matrix(t_idx, p_idx, labels=idx)
    prec, rec, f1s, support = precision_recall_fscore_support(t_idx, p_idx, labels=idx, zero_division=0)
    tp = np.diag(cm)
    per_class: dict[Any, dict[str, float]] = {
        lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1s[i]), "support": int(support[i])}
        for i, lab in enumerate(labels)}
    total = int(support.sum())
    return {
        "accuracy": _safe_div(tp.sum(), total),
        "macro_f1": float(np.mean(f1s)) if len(f1s) else 0.0,
        "weighted_f1": _safe_div(float(np.dot(f1s, support)), total),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "labels": labels,
        "n": total,
    }


def multilabel_metrics(y_true_sets: Sequence[Iterable[Any]], y_pred_sets: Sequence[Iterable[Any]],
                       labels: Sequence[Any] | None = None) -> dict[str, Any]:
    """Multi-label metrics: micro/macro F1, micro precision/recall, subset accuracy, Hamming loss, per class.

    Each row is a set (or list) of labels. ``labels`` defaults to the sorted union of all labels.
    """
    t = [set(s) for s in y_true_sets]
    p = [set(s) for s in y_pred_sets]
    if len(t) != len(p):
        raise DataError(f"y_true_sets has {len(t)} rows but y_pred_sets has {len(p)}")
    if not t:
        raise DataError("no examples to evaluate (y_true_sets is empty)")
    if labels is None:
        labels = _sorted_labels(x for row in t + p for x in row)
    else:
        labels = list(labels)
        known = set(labels)
        for what, rows in (("y_true_sets", t), ("y_pred_sets", p)):
            for row in rows:
                extra = row - known
                if extra:
                    raise DataError(f"{what} contains label {sorted(extra, key=str)[0]!r} that is not in labels")
    from sklearn.metrics import hamming_loss, precision_recall_fscore_support

    col = {lab: j for j, lab in enumerate(labels)}
    yt = np.zeros((len(t), len(labels)), dtype=np.int8)
    yp = np.zeros_like(yt)
    for i, (a, b) in enumerate(zip(t, p)):
        yt[i, [col[x] for x in a if x in col]] = 1
        yp[i, [col[x] for x in b if x in col]] = 1
    if not labels:  # nothing predicted, nothing true: scikit-learn refuses zero columns
        yt = yp = np.zeros((len(t), 1), dtype=np.int8)
    prec, rec, f1s, support = precision_recall_fscore_support(yt, yp, average=None, zero_division=0)
    prec, rec, f1s, support = prec[: len(labels)], rec[: len(labels)], f1s[: len(labels)], support[: len(labels)]
    micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(yt, yp, average="micro", zero_division=0)
    per_class = {lab: {"precision": float(prec[j]), "recall": float(rec[j]), "f1": float(f1s[j]),
                       "support": int(support[j])} for j, lab in enumerate(labels)}
    return {
        "micro_f1": float(micro_f1),
        "macro_f1": float(np.mean(f1s)) if len(f1s) else 0.0,
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "subset_accuracy": sum(1 for a, b in zip(t, p) if a == b) / len(t),
        "hamming_loss": float(hamming_loss(yt, yp)) if labels else 0.0,
        "per_class": per_class,
        "labels": labels,
        "n": len(t),
    }


# -- ranking ------------------------------------------------------------------------------------


def check_k(k: Any) -> int:
    """``k`` as a positive int; anything else is a one-line :class:`DataError`."""
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise DataError(f"k must be a positive integer, got {k!r}") from None
    if k <= 0:
        raise DataError(f"k must be a positive integer, got {k}")
    return k


def _top_k(recommended: Iterable[Hashable] | None, k: int) -> list[Hashable]:
    """The first ``k`` distinct items of a recommendation list."""
    out: list[Hashable] = []
    seen: set[Hashable] = set()
    for item in recommended or ():
        if item not in seen:
            seen.add(item)
            out.append(item)
            if len(out) == k:
                break
    return out


def recall_at_k(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """Share of the relevant items found in the top ``k`` (0 when nothing is relevant)."""
    rel = set(relevant)
    top = _top_k(recommended, check_k(k))
    return _safe_div(sum(1 for x in top if x in rel), len(rel))


def precision_at_k(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """Relevant items in the top ``k`` divided by ``k``."""
    k = check_k(k)
    rel = set(relevant)
    return sum(1 for x in _top_k(recommended, k) if x in rel) / k


def hit_at_k(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """1.0 if any of the top ``k`` is relevant, else 0.0."""
    rel = set(relevant)
    return 1.0 if any(x in rel for x in _top_k(recommended, check_k(k))) else 0.0


def mrr(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int | None = None) -> float:
    """Reciprocal rank of the first relevant item (within the top ``k`` when given), else 0."""
    rel = set(relevant)
    top = _top_k(recommended, check_k(k)) if k is not None else _top_k(recommended, 10**12)
    for rank, x in enumerate(top, start=1):
        if x in rel:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(recommended: Sequence[Hashable], relevant: Iterable[Hashable], k: int = 10) -> float:
    """Binary-relevance NDCG@k with the log2 discount; the ideal DCG ranks ``min(k, |relevant|)`` hits first."""
    k = check_k(k)
    rel = set(relevant)
    if not rel:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank, x in enumerate(_top_k(recommended, k), start=1) if x in rel)
    idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(rel)) + 1))
    return dcg / idcg


def coverage(recommended: Mapping[Any, Sequence[Hashable]], catalog_size: int, k: int = 10) -> float:
    """Distinct items across all users' top-``k`` lists divided by ``catalog_size``."""
    k = check_k(k)
    if not catalog_size or catalog_size <= 0:
        raise DataError(f"catalog_size must be a positive integer, got {catalog_size!r}")
    items: set[Hashable] = set()
    for lst in recommended.values():
        items.update(_top_k(lst, k))
    return len(items) / int(catalog_size)


def ranking_metrics(recommended: Mapping[Any, Sequence[Hashable]], relevant: Mapping[Any, Iterable[Hashable]],
                    k: int = 10, catalog_size: int | None = None, include_empty: bool = False) -> dict[str, Any]:
    """Average recall/precision/hit/NDCG@k and MRR over users with at least one relevant item.

    With ``include_empty`` every user (query) in ``relevant`` counts, one with nothing relevant
    scoring 0 (retrieval calibration: a query whose answer no retriever found is a miss).

    Returns ``{"recall@k", "precision@k", "mrr", "ndcg@k", "hit@k", "coverage", "users", "k"}``
    (with the number in place of ``k``). A user missing from ``recommended`` scores 0.
    ``coverage`` is over every list in ``recommended`` and ``None`` without ``catalog_size``.
    """
    k = check_k(k)
    per_user = per_user_ranking_metrics(recommended, relevant, k=k, include_empty=include_empty)
    n = len(per_user)
    mean = {name: sum(m[name] for m in per_user.values()) / n
            for name in (f"recall@{k}", f"precision@{k}", "mrr", f"ndcg@{k}", f"hit@{k}")}
    return {
        **mean,
        "coverage": coverage(recommended, catalog_size, k) if catalog_size else None,
        "users": n,
        "k": k,
    }


def per_user_ranking_metrics(recommended: Mapping[Any, Sequence[Hashable]], relevant: Mapping[Any, Iterable[Hashable]],
                             k: int = 10, include_empty: bool = False) -> dict[Any, dict[str, float]]:
    """Recall/precision/hit/NDCG@k and reciprocal rank of every user with a relevant item (every
    user in ``relevant`` with ``include_empty``), in ``relevant``'s order: the per-example outcomes
    a paired comparison of two rankers (the registry's promotion gate) needs. :func:`ranking_metrics`
    is their mean."""
    k = check_k(k)
    if not isinstance(recommended, Mapping) or not isinstance(relevant, Mapping):
        raise DataError("recommended and relevant must be dicts keyed by user")
    users = [u for u, items in relevant.items() if include_empty or len(set(items)) > 0]
    if not users:
        raise DataError("no user has a relevant item; nothing to evaluate")
    out: dict[Any, dict[str, float]] = {}
    for u in users:
        rel = set(relevant[u])
        row = {f"recall@{k}": 0.0, f"precision@{k}": 0.0, "mrr": 0.0, f"ndcg@{k}": 0.0, f"hit@{k}": 0.0}
        if rel:
            top = _top_k(recommended.get(u), k)
            hits = [x in rel for x in top]
            n_hit = sum(hits)
            first = next((i for i, h in enumerate(hits, start=1) if h), None)
            dcg = sum(1.0 / math.log2(i + 1) for i, h in enumerate(hits, start=1) if h)
            idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(rel)) + 1))
            row = {f"recall@{k}": n_hit / len(rel), f"precision@{k}": n_hit / k, "mrr": 1.0 / first if first else 0.0,
                   f"ndcg@{k}": dcg / idcg, f"hit@{k}": 1.0 if n_hit else 0.0}
        out[u] = row
    return out


@runtime_checkable
class RankingModel(Protocol):
    """Anything that ranks ``k`` items for each of a batch of users (or queries).

    An app's ranking models (popularity, collaborative filtering, text, hybrid) implement it, so one
    :func:`evaluate_ranking` scores them all.
    """

    def recommend_batch(self, users: Sequence[Any], k: int) -> Mapping[Any, Sequence[Hashable]]:
        ...


#: Deprecated name of :class:`RankingModel` (it clashed with an app's own ``Recommender`` class).
Recommender = RankingModel


class RankingEvaluator:
    """Evaluate any :class:`RankingModel` against held-out relevant items.

    Args:
        relevant: ``{user: set(items)}`` (users without relevant items are skipped).
        k: list length evaluated.
        catalog_size: number of recommendable items, for ``coverage``.
        batch_size: users per ``recommend_batch`` call.

    :meth:`evaluate` returns :func:`ranking_metrics` plus ``ms_per_user`` (wall time of the
    ``recommend_batch`` calls divided by the number of users).
    """

    def __init__(self, relevant: Mapping[Any, Iterable[Hashable]], k: int = 10, catalog_size: int | None = None,
                 batch_size: int = 1024) -> None:
        self.relevant = {u: set(v) for u, v in relevant.items()}
        self.k = check_k(k)
        self.catalog_size = catalog_size
        self.batch_size = max(1, int(batch_size))
        self.users = [u for u, v in self.relevant.items() if v]
        if not self.users:
            raise DataError("no user has a relevant item; nothing to evaluate")

    def evaluate(self, model: RankingModel, show_progress: bool = False) -> dict[str, Any]:
        if not callable(getattr(model, "recommend_batch", None)):
            raise DataError(f"{type(model).__name__} has no recommend_batch(users, k) method")
        batches = [self.users[i:i + self.batch_size] for i in range(0, len(self.users), self.batch_size)]
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="evaluate", unit="batch")
        recommended: dict[Any, Sequence[Hashable]] = {}
        elapsed = 0.0
        for batch in batches:
            t0 = time.perf_counter()
            out = model.recommend_batch(list(batch), self.k)
            elapsed += time.perf_counter() - t0
            if not isinstance(out, Mapping):
                raise DataError(f"{type(model).__name__}.recommend_batch must return a dict user -> items, "
                                f"got {type(out).__name__}")
            recommended.update(out)
        metrics = ranking_metrics(recommended, self.relevant, self.k, self.catalog_size)
        metrics["ms_per_user"] = 1000.0 * elapsed / len(self.users)
        return metrics


def evaluate_ranking(model: RankingModel, relevant: Mapping[Any, Iterable[Hashable]], k: int = 10,
                     catalog_size: int | None = None, batch_size: int = 1024,
                     show_progress: bool = False) -> dict[str, Any]:
    """Shortcut for ``RankingEvaluator(relevant, k, catalog_size, batch_size).evaluate(model)``."""
    return RankingEvaluator(relevant, k, catalog_size, batch_size).evaluate(model, show_progress)


#: Deprecated name of :func:`evaluate_ranking`.
evaluate = evaluate_ranking


def score_matrix_metrics(scores: Any, targets: Sequence[int], ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Ranking metrics when each query (row of ``scores``) has exactly one relevant column.

    A query's rank is the number of columns scored strictly higher than its target (ties go
    the target's way). Returns ``hit@k`` and ``recall@k`` (equal with one relevant item) and
    ``ndcg@k`` (scikit-learn's ``ndcg_score``) for each ``k`` in ``ks``, and MRR over the full
    ranking. Used for an embedder's dev retrieval metrics.
    """
    from sklearn.metrics import ndcg_score

    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64)
    if s.ndim != 2 or len(s) != len(t) or len(t) == 0:
        raise DataError(f"scores must be (queries, candidates) with one target per query; got {s.shape} and {len(t)}")
    rank = (s > s[np.arange(len(t)), t][:, None]).sum(1)
    out: dict[str, float] = {"mrr": float((1.0 / (rank + 1)).mean())}
    truth = np.zeros_like(s)
    truth[np.arange(len(t)), t] = 1.0
    for k in ks:
        k = check_k(k)
        out[f"hit@{k}"] = out[f"recall@{k}"] = float((rank < k).mean())
        out[f"ndcg@{k}"] = float(ndcg_score(truth, s, k=k)) if s.shape[1] > 1 else float((rank < k).mean())
    return out


# -- token classification -------------------------------------------------------------------
def _prf(correct: int, n_pred: int, n_true: int) -> dict[str, float]:
    p = correct / n_pred if n_pred else 0.0
    r = correct / n_true if n_true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def entity_f1(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level micro precision/recall/F1 (exact span and type match) plus per-type scores,
    as seqeval's default mode and conlleval compute them (IOB2 tags)."""
    from .inference.token_classifier import iob2_spans  # the tagging scheme lives with the tagger

    if len(true_tags) != len(pred_tags):
        raise DataError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted")
    gold: set[tuple[int, str, int, int]] = set()
    pred: set[tuple[int, str, int, int]] = set()
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise DataError(f"sentence #{i}: {len(t)} gold tags but {len(p)} predicted")
        gold.update((i, *s) for s in iob2_spans(t))
        pred.update((i, *s) for s in iob2_spans(p))
    out: dict[str, Any] = {**_prf(len(gold & pred), len(pred), len(gold)), "support": len(gold), "per_type": {}}
    for typ in sorted({s[1] for s in gold | pred}):
        g = {s for s in gold if s[1] == typ}
        q = {s for s in pred if s[1] == typ}
        out["per_type"][typ] = {**_prf(len(g & q), len(q), len(g)), "support": len(g)}
    return out


__all__ = ["entity_f1", "classification_metrics", "multilabel_metrics", "recall_at_k", "precision_at_k", "hit_at_k", "mrr",
           "ndcg_at_k", "coverage", "ranking_metrics", "per_user_ranking_metrics", "score_matrix_metrics", "RankingModel", "RankingEvaluator",
           "evaluate_ranking", "Recommender", "evaluate"]
