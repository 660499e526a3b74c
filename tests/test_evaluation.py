"""The shared evaluation protocol, checked against hand-computed values and scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest

from verticore.errors import DataError
from verticore.evaluation import (
    RankingEvaluator,
    Recommender,
    classification_metrics,
    coverage,
    evaluate,
    hit_at_k,
    mrr,
    multilabel_metrics,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)


def test_classification_hand_computed():
    y_true = ["pos", "pos", "neg", "neg", "neu", "neu"]
    y_pred = ["pos", "neg", "neg", "neg", "pos", "neu"]
    m = classification_metrics(y_true, y_pred)
    assert m["labels"] == ["neg", "neu", "pos"]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # neg: P=2/3 R=1 F=0.8 ; neu: P=1 R=1/2 F=2/3 ; pos: P=1/2 R=1/2 F=1/2
    assert m["per_class"]["neg"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_class"]["neu"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["pos"]["precision"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)
    assert m["weighted_f1"] == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)  # equal supports
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [1, 0, 1]]  # rows true, cols predicted
    assert m["n"] == 6


def test_classification_matches_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(3)
    labels = ["a", "b", "c", "d"]
    y_true = list(rng.choice(labels, size=300, p=[0.5, 0.3, 0.15, 0.05]))
    y_pred = [t if rng.random() < 0.6 else rng.choice(labels[:3]) for t in y_true]  # "d" never predicted
    m = classification_metrics(y_true, y_pred, labels=labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, lab in enumerate(labels):
        assert m["per_class"][lab]["precision"] == pytest.approx(p[i])
        assert m["per_class"][lab]["recall"] == pytest.approx(r[i])
        assert m["per_class"][lab]["f1"] == pytest.approx(f[i])
        assert m["per_class"][lab]["support"] == s[i]
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()


def test_classification_errors():
    with pytest.raises(DataError, match="3 items but y_pred has 2"):
        classification_metrics(["a", "b", "c"], ["a", "b"])
    with pytest.raises(DataError, match="empty"):
        classification_metrics([], [])
    with pytest.raises(DataError, match="'z'"):
        classification_metrics(["a", "b"], ["a", "z"], labels=["a", "b"])


def test_multilabel_hand_computed_and_sklearn():
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    t = [{"a", "b"}, {"b"}, {"c"}, set()]
    p = [{"a"}, {"b", "c"}, {"c"}, set()]
    m = multilabel_metrics(t, p, labels=["a", "b", "c"])
    # tp: a1 b1 c1 = 3; fp: c1; fn: b1 -> micro P=3/4 R=3/4
    assert m["micro_f1"] == pytest.approx(0.75)
    assert m["subset_accuracy"] == pytest.approx(2 / 4)
    assert m["hamming_loss"] == pytest.approx(2 / 12)
    mlb = MultiLabelBinarizer(classes=["a", "b", "c"]).fit([["a", "b", "c"]])
    T, P = mlb.transform(t), mlb.transform(p)
    assert m["macro_f1"] == pytest.approx(f1_score(T, P, average="macro", zero_division=0))
    assert m["micro_f1"] == pytest.approx(f1_score(T, P, average="micro", zero_division=0))
    with pytest.raises(DataError, match="'x'"):
        multilabel_metrics([{"x"}], [set()], labels=["a"])


def test_ranking_single_user_hand_computed():
    rec = ["a", "b", "c", "d", "e"]
    rel = {"b", "e", "z"}
    assert recall_at_k(rec, rel, 5) == pytest.approx(2 / 3)
    assert recall_at_k(rec, rel, 2) == pytest.approx(1 / 3)
    assert precision_at_k(rec, rel, 5) == pytest.approx(2 / 5)
    assert precision_at_k(rec[:2], rel, 10) == pytest.approx(1 / 10)  # divided by k, not list length
    assert hit_at_k(rec, rel, 1) == 0.0 and hit_at_k(rec, rel, 2) == 1.0
    assert mrr(rec, rel) == pytest.approx(1 / 2)
    assert mrr(rec, {"e"}, k=3) == 0.0
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(rec, rel, 5) == pytest.approx(dcg / idcg)
    # ideal DCG uses min(k, |relevant|): one relevant item at rank 1 is perfect
    assert ndcg_at_k(["x", "y"], {"x"}, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["y", "x"], {"x"}, 10) == pytest.approx(1 / math.log2(3))
    # repeated items count once
    assert precision_at_k(["b", "b", "b"], rel, 3) == pytest.approx(1 / 3)
    assert recall_at_k([], rel, 3) == 0.0 and ndcg_at_k(rec, set(), 3) == 0.0
    with pytest.raises(DataError, match="positive"):
        recall_at_k(rec, rel, 0)


def test_ranking_metrics_average_and_coverage():
    recommended = {"u1": ["a", "b", "c"], "u2": ["c", "d", "e"], "u3": ["a", "x", "y"], "u4": ["q"]}
    relevant = {"u1": {"a"}, "u2": {"e", "f"}, "u3": set(), "u5": {"a"}}
    m = ranking_metrics(recommended, relevant, k=3, catalog_size=10)
    # evaluated users: u1, u2, u5 (u3 has nothing relevant; u5 has no list -> zeros)
    assert m["users"] == 3 and m["k"] == 3
    assert m["recall@3"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert m["hit@3"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    ndcg_u2 = (1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@3"] == pytest.approx((1 + ndcg_u2 + 0) / 3)
    # coverage: distinct items in all lists {a,b,c,d,e,x,y,q} = 8 of 10
    assert m["coverage"] == pytest.approx(0.8)
    assert coverage(recommended, 10, k=1) == pytest.approx(3 / 10)  # a, c, q
    assert ranking_metrics(recommended, relevant, k=3)["coverage"] is None
    assert set(ranking_metrics(recommended, relevant, k=10)) >= {"recall@10", "precision@10", "mrr", "ndcg@10", "hit@10", "coverage"}
    with pytest.raises(DataError, match="no user"):
        ranking_metrics(recommended, {"u1": set()}, k=3)


class PopularityModel:
    """Recommends the globally most popular items to everyone."""

    def __init__(self, items):
        self.items = list(items)
        self.calls = 0

    def recommend_batch(self, users, k):
        self.calls += 1
        return {u: self.items[:k] for u in users}


def test_evaluator_with_recommender_protocol():
    relevant = {f"u{i}": {"a"} if i % 2 else {"z"} for i in range(10)}
    model = PopularityModel(["a", "b", "c"])
    assert isinstance(model, Recommender)
    m = evaluate(model, relevant, k=2, catalog_size=4, batch_size=3)
    assert model.calls == 4  # 10 users in batches of 3
    assert m["hit@2"] == pytest.approx(0.5) and m["recall@2"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx(0.5) and m["coverage"] == pytest.approx(2 / 4)
    assert m["ms_per_user"] >= 0.0
    ev = RankingEvaluator(relevant, k=1)
    assert ev.evaluate(model)["precision@1"] == pytest.approx(0.5)
    with pytest.raises(DataError, match="recommend_batch"):
        ev.evaluate(object())
