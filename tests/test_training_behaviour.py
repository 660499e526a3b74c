"""What early stopping, class weights and multi-label training do (not only that their keys exist)."""
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
