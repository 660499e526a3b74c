"""Execution backends: ONNX Runtime fp32/int8 and torch int8 against plain torch.

Exports go to a per-session temporary ``VERTICORE_CACHE`` so the tests never touch the user's cache.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

SENTENCES = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007.",
    "The company expects net sales to decrease slightly compared to last year.",
    "Shares of the retailer fell 4% after the profit warning on Tuesday.",
    "The board proposes a dividend of EUR 0.50 per share for the financial year.",
    "Finnish steel maker reported a loss before taxes of EUR 2.3 million.",
    "The contract is valued at approximately USD 12 million.",
    "Production at the plant will be halted for two weeks in July.",
    "Net interest income increased by 18% year on year.",
    "The acquisition will strengthen our position in the Nordic market.",
    "Customers can now pay their bills through the mobile app.",
    "I lost my card yesterday, how do I block it?",
    "Why was my transfer declined even though I have enough money?",
    "Can I change the PIN of my debit card at an ATM?",
    "The exchange rate applied to my payment looks wrong.",
    "My top-up is still pending after two days.",
    "How long does it take for a new card to arrive?",
    "The order confirmation never reached my inbox.",
    "Please cancel my subscription before the next billing cycle.",
    "Great service, the refund arrived within an hour!",
    "The delivery was late and the package was damaged.",
    "Headcount will be reduced by about 150 people as part of the restructuring.",
    "Sales in Russia doubled, driven by strong demand for building materials.",
    "Earnings per share were EUR 0.12, down from EUR 0.15.",
    "The new terminal is expected to be operational by the end of 2010.",
    "Analysts had expected a sharper drop in quarterly revenue.",
    "The merger was approved by the competition authorities.",
    "Demand for paper products remained weak throughout the quarter.",
    "The bank raised its full-year guidance for the second time.",
    "ok",
    "Interest rates are expected to stay low for an extended period, which supports mortgage lending "
    "but puts pressure on net interest margins across the sector, according to the report.",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("vcache")
    mp.setenv("VERTICORE_CACHE", str(root))
    yield root / "onnx"
    mp.undo()


@pytest.fixture(scope="module")
def torch_vectors(default_embedder):
    return default_embedder.encode(SENTENCES)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A small random BERT classifier (2 layers, hidden 32) with a sharpened head."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from verticore import resolve_model
    from verticore.io import atomic_write_json

    out = tmp_path_factory.mktemp("tiny_clf")
    src = resolve_model("default").path
    tok = AutoTokenizer.from_pretrained(str(src))
    torch.manual_seed(0)
    labels = ["negative", "neutral", "positive"]
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, num_labels=3,
                     id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # spread and centre the logits so argmax varies and is not rounding noise
        model.classifier.weight.mul_(40.0)
        enc = tok(SENTENCES, padding=True, return_tensors="pt")
        logits = model(**enc).logits
        model.classifier.bias.sub_(logits.mean(0))
        model.classifier.weight.div_(logits.std(0).clamp(min=1e-6)[:, None])
        model.classifier.bias.div_(logits.std(0).clamp(min=1e-6))
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    atomic_write_json(out / "labels.json", {"labels": labels, "multi_label": False, "threshold": 0.5})
    return out


def _encode(backend: str) -> np.ndarray:
    from verticore import Embedder

    emb = Embedder("default", device="cpu", backend=backend)
    return emb.encode(SENTENCES)


def test_onnx_matches_torch_and_caches(cache, torch_vectors):
    vecs = _encode("onnx")
    cos = np.sum(vecs * torch_vectors, axis=1)
    assert vecs.shape == torch_vectors.shape and vecs.dtype == np.float32
    assert cos.min() >= 0.9999
    files = sorted(p.name for p in cache.glob("*-pool-mean-fp32-*.onnx"))
    assert len(files) == 1
    meta = json.loads((cache / files[0].replace(".onnx", ".json")).read_text())
    assert meta["head"] == "pool" and meta["variant"] == "fp32" and meta["size"] == (cache / files[0]).stat().st_size


def test_export_cache_is_reused(cache, torch_vectors, monkeypatch):
    from verticore.inference import onnx_backend

    _encode("onnx")  # make sure the export exists (independent of test order)

    def boom(self, tmp):
        raise AssertionError("re-exported although an intact cache file exists")

    monkeypatch.setattr(onnx_backend.OnnxExporter, "_build", boom)
    vecs = _encode("onnx")
    assert np.sum(vecs * torch_vectors, axis=1).min() >= 0.9999


def test_onnx_int8_keeps_fidelity(cache, torch_vectors):
    vecs = _encode("onnx-int8")
    cos = np.sum(vecs * torch_vectors, axis=1)
    sentence = np.array([len(s.split()) >= 4 for s in SENTENCES])
    # Bar of the issue on sentences; one- or two-token inputs ("ok") are measurably less stable
    # under int8; the int8 recipe keeps nodes in fp32 until its calibration set (which has "ok")
    # reaches cosine 0.995.
    assert cos[sentence].min() >= 0.99, f"min cosine {cos[sentence].min():.4f}"
    assert cos.min() >= 0.99, f"min cosine over all inputs {cos.min():.4f}"


def test_torch_int8_runs_but_is_approximate(cache, torch_vectors):
    # torch dynamic int8 (all Linear layers) does NOT meet the 0.99 bar on this model; it is
    # kept as an explicit opt-in. Guard against it getting worse than measured.
    vecs = _encode("torch-int8")
    cos = np.sum(vecs * torch_vectors, axis=1)
    assert vecs.shape == torch_vectors.shape and cos.mean() >= 0.97, f"mean cosine {cos.mean():.4f}"


def test_classifier_logits_match(cache, tiny_classifier):
    from verticore import TextClassifier

    ref = TextClassifier(str(tiny_classifier), device="cpu", backend="torch")
    ref_logits, _ = ref.predict_logits(SENTENCES)
    assert np.unique(ref_logits.argmax(1)).size > 1  # the check below is not vacuous
    onnx = TextClassifier(str(tiny_classifier), device="cpu", backend="onnx")
    logits, _ = onnx.predict_logits(SENTENCES)
    np.testing.assert_allclose(logits, ref_logits, atol=2e-3)  # the sharpened head amplifies fp32 rounding
    assert [p.label for p in onnx.predict(SENTENCES)] == [p.label for p in ref.predict(SENTENCES)]
    # int8 on a random 2-layer, 32-wide model says nothing about fidelity (bench/throughput.py
    # measures it on the trained phrasebank classifier); here: the logits head exports and runs.
    q = TextClassifier(str(tiny_classifier), device="cpu", backend="onnx-int8")
    qlogits, _ = q.predict_logits(SENTENCES)
    assert qlogits.shape == ref_logits.shape and np.isfinite(qlogits).all()


def test_corrupt_cache_file_is_reexported(cache, tiny_classifier):
    from verticore.inference.backends import make_backend
    from verticore.inference.onnx_backend import OnnxExporter

    exp = OnnxExporter(tiny_classifier, head="logits")
    ids = np.array([[101, 2054, 2003, 102], [101, 7592, 102, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    good = make_backend("onnx", model_dir=tiny_classifier, head="logits", device="cpu").run(ids, mask)
    assert exp.path.exists()
    data = exp.path.read_bytes()
    exp.path.write_bytes(data[: len(data) // 2])  # truncated, as after a crash or full disk
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = make_backend("onnx", model_dir=tiny_classifier, head="logits", device="cpu").run(ids, mask)
    assert any("corrupt" in str(w.message) for w in caught)
    np.testing.assert_allclose(again, good, atol=1e-5)
    assert exp.path.stat().st_size == len(data) and exp.cached() == exp.path


def test_unwritable_cache_falls_back_to_memory(tiny_classifier, tmp_path, monkeypatch):
    from verticore.inference.backends import make_backend

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    monkeypatch.setenv("VERTICORE_CACHE", str(blocker))  # cache_root() cannot be created under a file
    with pytest.warns(UserWarning, match="in memory"):
        be = make_backend("onnx", model_dir=tiny_classifier, head="logits", device="cpu")
    ids = np.array([[101, 2054, 102]], dtype=np.int64)
    assert be.run(ids, np.ones_like(ids)).shape == (1, 3)


def test_unknown_backend_and_bad_device(tiny_classifier):
    from verticore import VerticoreError
    from verticore.inference.backends import make_backend

    with pytest.raises(VerticoreError, match="unknown backend 'tensorrt'"):
        make_backend("tensorrt", model_dir=tiny_classifier, head="logits", device="cpu")
    with pytest.raises(VerticoreError, match="CPU only"):
        make_backend("onnx-int8", model_dir=tiny_classifier, head="logits", device="cuda")


def test_auto_backend_on_cpu_uses_onnx_runtime(cache, tiny_classifier):
    from verticore.inference.backends import AUTO_CPU_BACKEND, make_backend
    from verticore.inference.onnx_backend import OnnxBackend

    be = make_backend("auto", model_dir=tiny_classifier, head="logits", device="cpu")
    assert isinstance(be, OnnxBackend) and be.variant == ("int8" if AUTO_CPU_BACKEND.endswith("int8") else "fp32")
