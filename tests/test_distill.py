"""Distillation (issue 14): a single student learns a teacher's soft labels (plus unlabeled text)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from verticore.errors import DataError
from verticore.finetune import ClassifierTrainingConfig
from verticore.finetune.distill import distill_classifier, distillation_loss, soften

# Keyword teacher over three topics; "music" never appears among the hard labels, only through the
# teacher's soft labels on unlabeled texts.
KEYWORDS = {"food": ("pizza", "pasta", "soup", "bread", "salad"),
            "music": ("guitar", "violin", "piano", "drums", "concert"),
            "sport": ("football", "tennis", "rugby", "marathon", "hockey")}
TEMPLATES = ("I really love {}", "we talked about {} all evening", "is {} any good here?", "my friend hates {}")


class KeywordTeacher:
    """A fake teacher with fixed probabilities: 0.9 on the label whose keyword the text contains."""

    labels = sorted(KEYWORDS)

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, texts):
        self.calls += 1
        out = np.full((len(texts), len(self.labels)), 0.05, dtype=np.float32)
        for r, t in enumerate(texts):
            for j, lab in enumerate(self.labels):
                if any(k in t for k in KEYWORDS[lab]):
                    out[r, j] = 0.9
        return out / out.sum(1, keepdims=True)

    def predict(self, texts):  # pragma: no cover - the protocol's third member, unused here
        raise NotImplementedError


def _rows(label: str, templates=TEMPLATES):
    return [tpl.format(k) for k in KEYWORDS[label] for tpl in templates]


def _cfg(**kw):
    base = dict(epochs=2, batch_size=8, max_steps=8, eval_every=4, learning_rate=1e-4, max_length=32, device="cpu",
                head_init="linear_probe", class_weights=None, patience=5)
    return ClassifierTrainingConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    teacher = KeywordTeacher()
    train = _rows("food", TEMPLATES[:3]) + _rows("sport", TEMPLATES[:3])
    labels = ["food"] * 15 + ["sport"] * 15
    unlabeled = _rows("music", TEMPLATES[:3])
    dev = [TEMPLATES[3].format(k) for lab in KEYWORDS for k in KEYWORDS[lab]]
    dev_labels = [lab for lab in KEYWORDS for _ in KEYWORDS[lab]]
    out = tmp_path_factory.mktemp("distill") / "student"
    res = distill_classifier(teacher, train, labels, dev, dev_labels, out, _cfg(), unlabeled_texts=unlabeled,
                             temperature=2.0, alpha=0.5, teacher_name="keywords", show_progress=False)
    return res, teacher, train + unlabeled, dev, dev_labels


def test_student_is_a_loadable_classifier_artifact(distilled):
    from verticore import TextClassifier

    res, _, _, dev, _ = distilled
    clf = TextClassifier(str(res.artifact_dir), device="cpu")
    assert clf.labels == ["food", "music", "sport"]
    assert np.allclose(clf.predict_proba(dev), res.dev_probabilities, atol=1e-5)
    metrics = json.loads((res.artifact_dir / "metrics.json").read_text())
    d = metrics["distillation"]
    assert d["teacher"] == "keywords" and d["temperature"] == 2.0 and d["alpha"] == 0.5
    assert d["n_labelled"] == 30 and d["n_unlabeled"] == 15
    assert (res.artifact_dir / "calibration.json").exists()


def test_student_agrees_with_teacher_and_learns_unlabeled_only_label(distilled):
    from verticore import TextClassifier

    res, teacher, texts, _, _ = distilled
    assert teacher.calls >= 1
    clf = TextClassifier(str(res.artifact_dir), device="cpu")
    student = clf.predict_proba(texts).argmax(1)
    agree = float((student == teacher.predict_proba(texts).argmax(1)).mean())
    assert agree >= 0.8, agree
    music = [clf.labels[i] for i in clf.predict_proba(_rows("music", TEMPLATES[:3])).argmax(1)]
    assert music.count("music") >= 10, music  # a label known only from the teacher on unlabeled text


def test_loss_mixes_hard_and_soft_terms():
    import torch

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    soft = torch.from_numpy(soften(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32), 2.0))
    hard = torch.tensor([0, -1])
    pure_kl = distillation_loss(2.0, 0.0)(logits, (hard, soft))
    pure_ce = distillation_loss(2.0, 1.0)(logits, (hard, soft))
    ce0 = torch.nn.functional.cross_entropy(logits[:1], hard[:1])
    kl1 = distillation_loss(2.0, 0.0)(logits[1:], (hard[1:], soft[1:]))
    assert torch.isclose(pure_ce, (ce0 + kl1) / 2)  # the unlabeled row keeps its KL term even at alpha = 1
    assert pure_kl > 0
    assert np.allclose(soften(np.array([[0.7, 0.2, 0.1]]), 1.0), [[0.7, 0.2, 0.1]], atol=1e-6)


def test_bad_input_is_one_line_data_error(tmp_path):
    teacher = KeywordTeacher()
    train, dev = _rows("food")[:4] + _rows("sport")[:4], ["pizza now", "football now"]
    with pytest.raises(DataError, match="not one of the teacher's labels") as exc:
        distill_classifier(teacher, train, ["food"] * 4 + ["weather"] * 4, dev, ["food", "sport"], tmp_path / "a",
                           _cfg(), show_progress=False)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="at least 2 training"):
        distill_classifier(teacher, [], [], dev, ["food", "sport"], tmp_path / "b", _cfg(), show_progress=False)
    with pytest.raises(DataError, match="alpha"):
        distill_classifier(teacher, train, None, dev, ["food", "sport"], tmp_path / "c", _cfg(), alpha=1.5,
                           show_progress=False)
    with pytest.raises(DataError, match="dev label"):
        distill_classifier(teacher, train, None, dev, ["food", "jazz"], tmp_path / "d", _cfg(), show_progress=False)
    assert teacher.calls == 0  # refused before the teacher ran
    assert not any(tmp_path.iterdir())


def test_cli_distils_an_artifact_teacher(tmp_path, tiny_classifier, tiny_sentiment):
    from typer.testing import CliRunner

    from verticore.cli import app

    df = tiny_sentiment
    df[["text", "label"]].to_csv(tmp_path / "train.csv", index=False)
    df[["text", "label"]].iloc[::3].to_csv(tmp_path / "dev.csv", index=False)
    df[["text"]].iloc[::2].to_csv(tmp_path / "unlabeled.csv", index=False)
    args = ["distill", "--teacher", str(tiny_classifier.artifact_dir), "--train", str(tmp_path / "train.csv"),
            "--dev", str(tmp_path / "dev.csv"), "--unlabeled", str(tmp_path / "unlabeled.csv"),
            "--out", str(tmp_path / "student"), "--max-steps", "2", "--batch-size", "16", "--max-length", "32",
            "--head-init", "random", "--device", "cpu"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["distillation"]["n_unlabeled"] == len(df.iloc[::2])
    assert metrics["distillation"]["teacher"] == str(tiny_classifier.artifact_dir)

    bad = CliRunner().invoke(app, [*args[:2], str(tmp_path), *args[3:]])  # not an artifact
    assert bad.exit_code != 0


def test_base_classifier_head_is_kept_only_for_the_same_labels(tiny_classifier):
    """A fine-tuned classifier as ``base``: same labels in the same order -> its head is a warm start
    (what ``bench/distill.py --student-init`` relies on); other labels of the same count -> the head is
    re-initialised, not silently reused with rows that mean other classes."""
    from safetensors.numpy import load_file
    from transformers import AutoModelForSequenceClassification

    from verticore.artifact import read_labels
    from verticore.finetune.classifier import resolve_head_init
    from verticore.finetune.loop import load_with_new_head

    art = tiny_classifier.artifact_dir
    saved = load_file(str(art / "model.safetensors"))
    key = next(k for k in saved if k.startswith("classifier") and k.endswith("weight"))
    labels = read_labels(art).labels
    cfg = ClassifierTrainingConfig(base=str(art), device="cpu")
    same, *_ = load_with_new_head(AutoModelForSequenceClassification, cfg, labels)
    assert np.allclose(same.state_dict()[key].numpy(), saved[key])
    assert resolve_head_init(same, "auto", "mean") == "warm_start"  # "auto" does not fit a new head over it
    other, *_ = load_with_new_head(AutoModelForSequenceClassification, cfg, list(reversed(labels)))
    assert not np.allclose(other.state_dict()[key].numpy(), saved[key])
    encoder_key = next(k for k in saved if k.startswith("bert.encoder"))
    assert np.allclose(other.state_dict()[encoder_key].numpy(), saved[encoder_key])  # the encoder is still reused
    assert resolve_head_init(other, "auto", "mean") == "linear_probe"
