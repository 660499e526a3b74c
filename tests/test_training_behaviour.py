"""What early stopping, class weights and multi-label training do (not only that their keys exist)."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from verticore import TextClassifier
from verticore.finetune import ClassifierTrainingConfig, train_classifier
from verticore.finetune.classifier import make_loss
from verticore.finetune.loop import fit
from verticore.finetune.methods import get_method


class _TinyModel(torch.nn.Module):
    """Bag of embeddings + linear head, called like a transformers classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(10, 4)
        self.classifier = torch.nn.Linear(4, 2)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.classifier(self.emb(input_ids).mean(1)))


def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    model = _TinyModel()
    cfg = ClassifierTrainingConfig(epochs=100, batch_size=4, eval_every=1, patience=2, learning_rate=0.1,
                                   warmup_ratio=0.0, device="cpu")
    ids = torch.randint(0, 10, (16, 3))
    target = torch.randint(0, 2, (16,))
    scores = iter([0.2, 0.5, 0.4, 0.3, 0.9, 0.9])  # best at the 2nd evaluation, then two without gain
    snapshots = []

    def evaluate() -> float:
        snapshots.append(model.classifier.weight.detach().clone())
        return next(scores)

    res = fit(model, cfg, get_method("full"), [3] * 16,
              lambda idx: (ids[idx], torch.ones_like(ids[idx]), target[idx]),
              torch.nn.CrossEntropyLoss(), evaluate, "cpu", "dev_score", "test", show_progress=False)
    assert (res.steps, res.best_step, res.best_score) == (4, 2, 0.5)  # 100 epochs x 4 steps allowed
    assert [h["dev_score"] for h in res.history] == [0.2, 0.5, 0.4, 0.3]
    assert torch.equal(model.classifier.weight, snapshots[1])  # the best checkpoint is what remains
    assert not torch.equal(model.classifier.weight, snapshots[3])


def test_train_classifier_stops_early_when_dev_does_not_improve(tiny_sentiment, tmp_path):
    df = tiny_sentiment
    # learning rate 0: the dev score can never improve after the first evaluation
    cfg = ClassifierTrainingConfig(epochs=20, batch_size=8, eval_every=1, patience=2, learning_rate=0.0,
                                   max_length=32, device="cpu", head_init="random")
    res = train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[::3], df.label.tolist()[::3],
                           tmp_path / "es", cfg, show_progress=False)
    assert res.metrics["steps"] == 3 and res.metrics["best_step"] == 1  # 20 epochs x 4 steps were allowed
    assert len(res.metrics["history"]) == 3


def test_balanced_class_weights_weigh_the_rare_class_up():
    y = np.array([0] * 8 + [1] * 2)
    weighted = make_loss(y, 2, False, "balanced", "cpu")
    assert weighted.weight[1] > weighted.weight[0] and float(weighted.weight.mean()) == pytest.approx(1.0)
    # in a batch with one mistake on each class, the rare class's mistake dominates the weighted loss
    logits, target = torch.tensor([[-1.0, 1.0], [2.0, -2.0]]), torch.tensor([0, 1])
    per_row = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert per_row[1] > per_row[0]
    assert weighted(logits, target) > make_loss(y, 2, False, None, "cpu")(logits, target)
    # multi-label: positives weighted by negatives / positives per label, clipped to [1, 10]
    ym = np.array([[1, 0], [0, 0], [0, 0], [0, 1], [0, 1]], dtype=np.float32)
    assert make_loss(ym, 2, True, "balanced", "cpu").pos_weight.tolist() == [4.0, 1.5]
    with pytest.raises(Exception, match="class_weights"):
        make_loss(y, 2, False, "inverse", "cpu")


def test_class_weights_shift_predictions_toward_a_rare_class(tiny_sentiment, tmp_path):
    df = tiny_sentiment
    data = pd.concat([df[df.label != "positive"], df[df.label == "positive"].head(2)])  # 10 / 10 / 2 rows
    mean_rare = {}
    for weights in ("balanced", None):
        cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=1, learning_rate=1e-5, max_length=32,
                                       device="cpu", class_weights=weights)
        res = train_classifier(data.text.tolist(), data.label.tolist(), df.text.tolist(), df.label.tolist(),
                               tmp_path / str(weights), cfg, show_progress=False)
        probs = TextClassifier(res.artifact_dir, device="cpu").predict_proba(df.text.tolist())
        mean_rare[weights] = probs[:, ["negative", "neutral", "positive"].index("positive")].mean()
    assert mean_rare["balanced"] > mean_rare[None]


def test_multilabel_gives_per_label_sigmoid_probabilities_and_several_labels(tiny_sentiment, tmp_path):
    df = tiny_sentiment
    labels = [t.split("|") for t in df.topics]
    cfg = ClassifierTrainingConfig(multi_label=True, epochs=1, batch_size=8, max_steps=2, learning_rate=1e-5,
                                   max_length=32, device="cpu")
    res = train_classifier(df.text.tolist(), labels, df.text.tolist(), labels, tmp_path / "ml", cfg,
                           show_progress=False)
    clf = TextClassifier(res.artifact_dir, device="cpu")
    texts = df.text.tolist()
    probs = clf.predict_proba(texts)
    logits, _ = clf.predict_logits(texts)
    # one independent, temperature-scaled sigmoid per label: rows need not sum to 1
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits / clf.temperature)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs.sum(1), 1.0)
    threshold = clf.label_space.threshold
    assert threshold == 0.5
    preds = clf.predict(texts)
    for p, row in zip(preds, probs):
        assert p.labels == [l for l, v in zip(clf.labels, row) if v >= threshold]
    # the model learned the two-topic rows: at least one of them gets both of its labels
    multi = [i for i, ls in enumerate(labels) if len(ls) > 1]
    assert any(set(labels[i]) <= set(preds[i].labels) for i in multi)
    assert max(len(p.labels) for p in preds) > 1
    assert res.metrics["dev"]["micro_f1"] > 0.5


def _fit_tiny(ema_decay, scores):
    """Train _TinyModel 4 steps with one evaluation per step; returns (model, result, weights seen by evaluate)."""
    model = _TinyModel()
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=4, eval_every=1, patience=10, learning_rate=0.5,
                                   warmup_ratio=0.0, device="cpu", ema_decay=ema_decay)
    g = torch.Generator().manual_seed(1)
    ids, target = torch.randint(0, 10, (16, 3), generator=g), torch.randint(0, 2, (16,), generator=g)
    seen, it = [], iter(scores)

    def evaluate() -> float:
        seen.append(model.classifier.weight.detach().clone())
        return next(it)

    res = fit(model, cfg, get_method("full"), [3] * 16, lambda idx: (ids[idx], torch.ones_like(ids[idx]), target[idx]),
              torch.nn.CrossEntropyLoss(), evaluate, "cpu", "dev_score", "test", show_progress=False)
    return model, res, seen


def test_ema_scores_and_keeps_the_averaged_weights_while_training_goes_on_from_the_raw_ones():
    start = _TinyModel().classifier.weight.detach().clone()
    _, plain_res, plain_seen = _fit_tiny(None, [0.1, 0.2, 0.3, 0.4])
    # with EMA each evaluation scores the raw weights first, then the average: 8 calls
    model, res, seen = _fit_tiny(0.5, [0.0, 0.1, 0.0, 0.7, 0.0, 0.2, 0.0, 0.3])
    raw, averaged = seen[0::2], seen[1::2]
    for a, b in zip(raw, plain_seen):  # swapping the average in and out never touches the training path
        assert torch.equal(a, b)
    expected, want = start, []
    for n, w in enumerate(raw, start=1):  # decay warmed up as min(decay, (1 + n) / (10 + n))
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * w
        want.append(expected)
    for got, exp in zip(averaged, want):
        assert torch.allclose(got, exp, atol=1e-6)
    assert not torch.allclose(averaged[1], raw[1])  # the average really differs from the live weights
    assert res.best_step == 2 and [h["dev_score"] for h in res.history] == [0.1, 0.7, 0.2, 0.3]
    assert [h["dev_score_raw"] for h in res.history] == [0.0] * 4
    assert torch.allclose(model.classifier.weight, want[1], atol=1e-6)  # the best averaged checkpoint is kept
    assert plain_res.history and "dev_score_raw" not in plain_res.history[0]


def test_ema_decay_outside_zero_one_is_refused_when_the_config_is_made():
    from verticore.errors import DataError

    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(DataError, match="ema_decay"):
            ClassifierTrainingConfig(ema_decay=bad)


def test_train_classifier_with_ema_writes_a_loadable_artifact_of_the_averaged_weights(tiny_sentiment, tmp_path):
    df = tiny_sentiment
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, eval_every=1, max_steps=3, max_length=32, device="cpu",
                                   head_init="random", ema_decay=0.9)
    res = train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[::3], df.label.tolist()[::3],
                           tmp_path / "ema", cfg, show_progress=False)
    assert all("dev_macro_f1_raw" in h for h in res.metrics["history"])
    clf = TextClassifier(str(res.artifact_dir))
    np.testing.assert_allclose(clf.predict_proba(df.text.tolist()[::3]), res.dev_probabilities, atol=1e-5)
    assert json.loads((res.artifact_dir / "training_config.json").read_text())["ema_decay"] == 0.9
