import numpy as np
import pytest

from verticore import ArtifactError, DataError, TextClassifier, VerticoreError


def test_embedder_matches_sentence_transformers(default_embedder):
    from sentence_transformers import SentenceTransformer

    texts = ["The company reported record profits.", "Shares fell 5% after the guidance cut.", "ok"]
    ours = default_embedder.encode(texts)
    ref = SentenceTransformer(str(default_embedder.model_path), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * ref).sum(1).min() > 0.9999


def test_embedder_sorting_does_not_change_order(default_embedder):
    texts = ["short", "a much longer sentence about quarterly earnings and guidance", "mid length text"]
    batch = default_embedder.encode(texts, batch_size=2)
    single = np.stack([default_embedder.encode(t) for t in texts])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_long_text_is_chunked_not_truncated(default_embedder):
    head = "Profits collapsed and the company filed for bankruptcy. " * 40
    tail = "Football season starts with a big match on Sunday. " * 40
    v_long = default_embedder.encode(head + tail)
    v_head = default_embedder.encode(head)
    v_tail = default_embedder.encode(tail)
    # The tail beyond the window still shapes the vector.
    assert float(v_long @ v_tail) > 0.5 and float(v_long @ v_head) < 0.99


@pytest.mark.parametrize("bad", ["", "   \n\t"])
def test_empty_texts_are_rejected(default_embedder, bad):
    with pytest.raises(DataError, match="empty"):
        default_embedder.encode(["fine", bad])


def test_classifier_predictions(tiny_classifier):
    clf = TextClassifier(tiny_classifier.artifact_dir)
    preds = clf.predict(["Profit rose sharply.", "Shares plunged."], top_k=2)
    assert len(preds) == 2
    for p in preds:
        assert p.label in clf.labels and len(p.top_k) == 2
        assert abs(sum(p.probabilities.values()) - 1) < 1e-5
        assert p.chunks == 1


def test_classifier_long_text_reports_chunks(tiny_classifier):
    clf = TextClassifier(tiny_classifier.artifact_dir, max_length=32)
    p = clf.predict("The company beat expectations. " * 50)
    assert p.chunks > 1 and p.aggregation == "mean_of_chunk_probabilities"
    assert abs(sum(p.probabilities.values()) - 1) < 1e-5


def test_corrupt_artifact_is_clear(tiny_classifier, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_classifier.artifact_dir, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="corrupt|could not load"):
        TextClassifier(bad).predict("x")
    (bad / "labels.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        TextClassifier(bad)
    with pytest.raises(VerticoreError, match="not found"):
        TextClassifier(tmp_path / "missing")
