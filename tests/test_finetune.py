import json

import numpy as np
import pytest

from verticore import DataError, Embedder, TextClassifier
from verticore.finetune import ClassifierTrainingConfig, EmbedderTrainingConfig, train_classifier, train_embedder


def test_artifact_is_self_describing(tiny_classifier):
    d = tiny_classifier.artifact_dir
    for name in ("model.safetensors", "config.json", "tokenizer.json", "labels.json", "metrics.json",
                 "training_config.json", "verticore.json", "README.md", "calibration.json"):
        assert (d / name).exists(), name
    meta = json.loads((d / "verticore.json").read_text())
    assert meta["kind"] == "classifier" and meta["data_fingerprint"].startswith("sha256:")
    metrics = json.loads((d / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "weighted_f1", "confusion_matrix"} <= set(metrics["dev"])
    assert json.loads((d / "labels.json").read_text())["labels"] == ["negative", "neutral", "positive"]
    assert not list(d.parent.glob(".*staging"))  # staging dir swapped in, nothing left behind


def test_load_reproduces_predictions_bit_for_bit(tiny_classifier, tiny_sentiment):
    dev = tiny_sentiment.text.tolist()[::3]
    probs = TextClassifier(tiny_classifier.artifact_dir, device="cpu").predict_proba(dev)
    assert np.array_equal(probs, tiny_classifier.dev_probabilities)


def test_training_is_seeded_and_reproducible(tiny_classifier, tiny_sentiment, tmp_path):
    df = tiny_sentiment
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=6, eval_every=3, learning_rate=1e-4,
                                   max_length=64, device="cpu")
    again = train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[::3], df.label.tolist()[::3],
                             tmp_path / "again", cfg, show_progress=False)
    assert np.array_equal(again.dev_probabilities, tiny_classifier.dev_probabilities)


def test_lora_saves_head_and_adapter(tiny_sentiment, tmp_path):
    df = tiny_sentiment
    cfg = ClassifierTrainingConfig(method="lora", epochs=1, batch_size=8, max_steps=4, eval_every=2,
                                   max_length=64, device="cpu", lora_learning_rate=3e-3)
    res = train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[1::3], df.label.tolist()[1::3],
                           tmp_path / "lora", cfg, show_progress=False)
    d = res.artifact_dir
    assert (d / "adapter" / "adapter_model.safetensors").exists()
    cfg_json = json.loads((d / "adapter" / "adapter_config.json").read_text())
    assert "classifier" in cfg_json["modules_to_save"]
    # The merged artifact reproduces the in-memory model exactly, head included.
    probs = TextClassifier(d, device="cpu").predict_proba(df.text.tolist()[1::3])
    assert np.array_equal(probs, res.dev_probabilities)
    # And the adapter reloads through peft onto the base with the trained head.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from verticore import resolve_model

    base = AutoModelForSequenceClassification.from_pretrained(str(resolve_model("default").path), num_labels=3)
    peft_model = PeftModel.from_pretrained(base, str(d / "adapter")).eval()
    tok = AutoTokenizer.from_pretrained(str(d))
    enc = tok(df.text.tolist()[1:4], padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    with torch.inference_mode():
        a, b = peft_model(**enc).logits, merged(**enc).logits
    assert torch.allclose(a, b, atol=1e-4)


def test_multilabel_training(tiny_sentiment, tmp_path):
    df = tiny_sentiment
    labels = [t.split("|") for t in df.topics]
    cfg = ClassifierTrainingConfig(multi_label=True, epochs=1, batch_size=8, max_steps=3, max_length=64, device="cpu")
    res = train_classifier(df.text.tolist(), labels, df.text.tolist()[:10], labels[:10], tmp_path / "ml", cfg,
                           show_progress=False)
    clf = TextClassifier(res.artifact_dir)
    assert clf.multi_label and set(clf.labels) == {"earnings", "guidance", "legal", "markets", "mna", "other"}
    p = clf.predict("Profit fell and guidance was cut.")
    assert all(0 <= v <= 1 for v in p.probabilities.values())
    assert "micro_f1" in res.metrics["dev"] or "macro_f1" in res.metrics["dev"]


def test_bad_training_input(tmp_path):
    with pytest.raises(DataError, match="empty"):
        train_classifier(["good", "  "], ["a", "b"], ["x"], ["a"], tmp_path / "x", show_progress=False)
    with pytest.raises(DataError, match="only one label"):
        train_classifier(["a", "b"], ["x", "x"], ["c"], ["x"], tmp_path / "x", show_progress=False)
    with pytest.raises(DataError, match="not seen in training"):
        train_classifier(["a", "b"], ["x", "y"], ["c"], ["z"], tmp_path / "x", show_progress=False)
    assert not (tmp_path / "x").exists()


def test_embedder_finetune_artifact_loads(tmp_path):
    pairs = [("how do I reset my password", "To reset your password open Settings and choose Reset."),
             ("where is my refund", "Refunds arrive within 5 business days after approval."),
             ("cancel my order", "You can cancel an order from the Orders page before it ships."),
             ("change delivery address", "Update the delivery address in your account before dispatch."),
             ("card was declined", "A declined card usually means the bank blocked the payment."),
             ("open a new account", "Sign up on our website with your email to open an account.")]
    res = train_embedder(pairs, tmp_path / "emb", EmbedderTrainingConfig(batch_size=3, max_steps=2, device="cpu"),
                         dev_pairs=pairs, show_progress=False)
    assert {"dev_before", "dev"} <= set(res.metrics)
    emb = Embedder(str(res.artifact_dir), device="cpu")
    v = emb.encode([q for q, _ in pairs])
    assert v.shape == (6, 384)
    assert emb.fingerprint != Embedder("default").fingerprint
    assert json.loads((res.artifact_dir / "verticore.json").read_text())["kind"] == "embedder"


def test_mean_pooled_head_travels_with_the_weights(tiny_classifier, tiny_sentiment, tmp_path):
    """Sentence-transformers bases train a head over mean-pooled states; the choice is stored in
    config.json and every loader applies it (TextClassifier, a plain HF pipeline)."""
    import torch
    from transformers import AutoTokenizer, pipeline

    from verticore.inference.heads import load_hf_classifier

    d = tiny_classifier.artifact_dir
    assert json.loads((d / "config.json").read_text())["verticore_pooling"] == "mean"
    texts = tiny_sentiment.text.tolist()[:6]
    clf = TextClassifier(d, device="cpu")
    logits, _ = clf.predict_logits(texts)
    model = load_hf_classifier(d).eval()
    tok = AutoTokenizer.from_pretrained(str(d))
    with torch.inference_mode():
        hf = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts]).numpy()
    assert np.allclose(logits, hf, atol=1e-4)
    # Mean pooling is really used: a plain [CLS] load of the same weights gives other logits.
    from transformers import AutoModelForSequenceClassification

    cls_model = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    with torch.inference_mode():
        cls_logits = cls_model(**tok([texts[0]], return_tensors="pt")).logits.numpy()
    assert not np.allclose(cls_logits, hf[:1], atol=1e-3)
    pipe = pipeline("text-classification", model=model, tokenizer=tok, device=-1)
    assert [p["label"] for p in pipe(texts)] == [clf.labels[i] for i in logits.argmax(1)]
    # native pooling stays available (e.g. for heads that are not one Linear)
    df = tiny_sentiment
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=2, max_length=64, device="cpu", pooling="native")
    res = train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[:6], df.label.tolist()[:6],
                           tmp_path / "native", cfg, show_progress=False)
    assert json.loads((res.artifact_dir / "config.json").read_text())["verticore_pooling"] == "native"
    with pytest.raises(Exception, match="pooling"):
        train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[:6], df.label.tolist()[:6],
                         tmp_path / "bad", ClassifierTrainingConfig(max_steps=1, pooling="max"), show_progress=False)


def test_grouped_embedder_batches_never_mix_a_group():
    from verticore.finetune.embedder import _batches

    rng = np.random.default_rng(0)
    pairs = [(f"q{i}", f"a{i % 7}") for i in range(60)]  # answers repeat: never twice in a batch
    groups = [i % 5 for i in range(60)]
    batches = _batches(pairs, 4, rng, groups)
    assert batches and all(len({groups[i] for i in b}) == len(b) for b in batches)
    assert all(len({pairs[i][1] for i in b}) == len(b) for b in batches)
    assert sum(len(b) for b in batches) >= 50  # almost nothing dropped
    with pytest.raises(DataError, match="groups"):
        train_embedder([("a", "b"), ("c", "d")], "/tmp/never", groups=["x"], show_progress=False)
    with pytest.raises(DataError, match="two distinct"):
        train_embedder([("a", "b"), ("c", "d")], "/tmp/never", groups=["x", "x"], show_progress=False)


def test_linear_probe_head_init(tiny_sentiment, tmp_path):
    """LP-FT: the head is fitted on frozen features before fine-tuning, and recorded."""
    df = tiny_sentiment
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=2, max_length=64, device="cpu", head_init="linear_probe")
    res = train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[:9], df.label.tolist()[:9],
                           tmp_path / "lp", cfg, show_progress=False)
    probe = res.metrics["linear_probe"]
    assert probe["n"] == len(df) and probe["train_accuracy"] > 0.6  # frozen MiniLM features separate this data
    with pytest.raises(DataError, match="head_init"):
        train_classifier(df.text.tolist(), df.label.tolist(), df.text.tolist()[:9], df.label.tolist()[:9],
                         tmp_path / "bad", ClassifierTrainingConfig(max_steps=1, head_init="zeros"), show_progress=False)
