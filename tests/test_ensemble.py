"""Classifier ensembles: the frozen-embedding probe, probability averaging, loading, training."""
import json
import shutil

import numpy as np
import pytest

from verticore import (
    ArtifactError,
    ClassifierEnsemble,
    DataError,
    EmbeddingProbe,
    TextClassifier,
    TfidfProbe,
    VerticoreError,
    load_classifier,
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory, tiny_sentiment, default_embedder):
    out = tmp_path_factory.mktemp("probe") / "probe"
    return EmbeddingProbe.fit(tiny_sentiment.text.tolist(), tiny_sentiment.label.tolist(), out, embedder=default_embedder)


def test_probe_fits_saves_and_reloads(probe, tiny_sentiment, default_embedder):
    texts, labels = tiny_sentiment.text.tolist(), tiny_sentiment.label.tolist()
    p = probe.predict_proba(texts)
    assert p.shape == (len(texts), len(set(labels))) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    acc = np.mean([probe.labels[i] == y for i, y in zip(p.argmax(1), labels)])
    assert acc >= 0.9  # a linear probe separates 30 training sentences of 3 sentiments
    again = EmbeddingProbe(probe.path, embedder=default_embedder)
    assert again.labels == probe.labels
    assert np.allclose(again.predict_proba(texts), p, atol=1e-6)
    # precomputed embeddings give the same answer without a second encode
    assert np.allclose(again.predict_proba(texts, embeddings=default_embedder.encode(texts)), p, atol=1e-6)
    assert not list(probe.path.glob("*.pkl"))  # safetensors + JSON only


def test_probe_rejects_other_weights_and_corrupt_files(probe, tmp_path, default_embedder):
    other = tmp_path / "other"
    shutil.copytree(probe.path, other)
    cfg = json.loads((other / "probe.json").read_text())
    cfg["embedder_fingerprint"] = "0" * 16
    (other / "probe.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="fitted on embeddings"):
        EmbeddingProbe(other, embedder=default_embedder)
    broken = tmp_path / "broken"
    shutil.copytree(probe.path, broken)
    (broken / "probe.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ArtifactError, match="corrupt"):
        EmbeddingProbe(broken, embedder=default_embedder)
    with pytest.raises(ArtifactError, match="not an embedding probe"):
        EmbeddingProbe(tmp_path / "missing")
    with pytest.raises(DataError, match="two different labels"):
        EmbeddingProbe.fit(["a", "b"], ["x", "x"], tmp_path / "one", embedder=default_embedder)


def _ensemble_dir(tmp_path, tiny_classifier, probe, permute_probe=False):
    d = tmp_path / "ens"
    shutil.copytree(tiny_classifier.artifact_dir, d / "member0")
    shutil.copytree(probe.path, d / "probe")
    if permute_probe:  # same probe, labels stored in another order: the ensemble must realign columns
        from safetensors.numpy import load_file, save_file

        t = load_file(str(d / "probe" / "probe.safetensors"))
        cfg = json.loads((d / "probe" / "probe.json").read_text())
        order = list(reversed(range(len(cfg["labels"]))))
        save_file({"weight": np.ascontiguousarray(t["weight"][order]), "bias": np.ascontiguousarray(t["bias"][order])},
                  str(d / "probe" / "probe.safetensors"))
        cfg["labels"] = [cfg["labels"][i] for i in order]
        (d / "probe" / "probe.json").write_text(json.dumps(cfg))
    labels = TextClassifier(str(d / "member0")).labels
    ClassifierEnsemble.write(d, [("member0", "classifier", 1.0), ("probe", "embedding_probe", 1.0)], labels)
    return d


def test_ensemble_averages_member_probabilities(tmp_path, tiny_classifier, probe, tiny_sentiment):
    texts = tiny_sentiment.text.tolist()[:12]
    d = _ensemble_dir(tmp_path, tiny_classifier, probe, permute_probe=True)
    ens = load_classifier(d, device="cpu")
    assert isinstance(ens, ClassifierEnsemble)
    clf = TextClassifier(str(tiny_classifier.artifact_dir), device="cpu", max_length=256)
    assert ens.labels == clf.labels
    p_clf = clf.predict_proba(texts)
    p_probe = probe.predict_proba(texts)[:, [probe.labels.index(l) for l in clf.labels]]
    p = ens.predict_proba(texts)
    assert np.allclose(p, (p_clf + p_probe) / 2, atol=1e-5)
    preds = ens.predict(texts, top_k=2)
    assert [x.label for x in preds] == [clf.labels[i] for i in p.argmax(1)]
    assert len(preds[0].top_k) == 2 and ens.predict(texts[0]).label == preds[0].label
    assert ens.predict([]) == []
    # a plain artifact still loads as a TextClassifier
    assert isinstance(load_classifier(tiny_classifier.artifact_dir), TextClassifier)


def test_ensemble_bad_configs_fail_clearly(tmp_path, tiny_classifier, probe):
    d = _ensemble_dir(tmp_path, tiny_classifier, probe)
    cfg = json.loads((d / "ensemble.json").read_text())
    cfg["members"][1]["path"] = "../elsewhere"
    (d / "ensemble.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="inside"):
        ClassifierEnsemble(d)
    cfg["members"] = []
    (d / "ensemble.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="no members"):
        ClassifierEnsemble(d)
    (d / "ensemble.json").write_text("{ truncated")
    with pytest.raises(ArtifactError):
        ClassifierEnsemble(d)
    # a member trained on other labels
    d2 = tmp_path / "mismatch"
    d2.mkdir()
    shutil.copytree(tiny_classifier.artifact_dir, d2 / "member0")
    shutil.copytree(probe.path, d2 / "probe")
    pc = json.loads((d2 / "probe" / "probe.json").read_text())
    pc["labels"] = [l + "_x" for l in pc["labels"]]
    (d2 / "probe" / "probe.json").write_text(json.dumps(pc))
    ClassifierEnsemble.write(d2, [("member0", "classifier", 1.0), ("probe", "embedding_probe", 1.0)],
                             TextClassifier(str(d2 / "member0")).labels)
    with pytest.raises(ArtifactError, match="other labels"):
        ClassifierEnsemble(d2)


def test_train_classifier_ensemble_and_intent_model(tmp_path, tiny_sentiment):
    from customer_service.intents import IntentModel, train_intent_model
    from verticore.finetune import ClassifierTrainingConfig

    df = tiny_sentiment
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=3, learning_rate=1e-4, max_length=64, device="cpu")
    model, metrics = train_intent_model(df.text.tolist(), df.label.tolist(), df.text.tolist()[::3], df.label.tolist()[::3],
                                        tmp_path / "intents", cfg, show_progress=False, ensemble=True, oos_method="energy")
    spec = json.loads((tmp_path / "intents" / "ensemble.json").read_text())
    assert [m["kind"] for m in spec["members"]] == ["classifier", "classifier", "embedding_probe", "tfidf_probe"]
    assert json.loads((tmp_path / "intents" / "member1" / "training_config.json").read_text())["head_init"] == "linear_probe"
    assert set(spec["metrics"]["members"]) == {"member0", "member1", "probe", "tfidf"}
    assert 0.0 <= metrics["dev_accuracy"] <= 1.0 and "oos" in metrics
    assert isinstance(model.classifier, ClassifierEnsemble)
    res = IntentModel(tmp_path / "intents").classify("Profits rose sharply and the outlook is strong.")
    assert res.confidence > 0 and len(res.top_k) == 3 and np.isfinite(res.score)
    probs, scores = model.scores(df.text.tolist()[:5])
    assert probs.shape == (5, 3) and np.isfinite(scores).all() and np.ptp(scores) > 0  # energy is informative


def test_cli_finetune_ensemble_then_predict_and_eval(tmp_path, capsys, tiny_sentiment):
    from verticore.cli import main

    def run(argv):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out = capsys.readouterr()
        return exc.value.code, out.out, out.err

    train = tmp_path / "train.csv"
    tiny_sentiment.to_csv(train, index=False)
    out = tmp_path / "ens"
    common = ["finetune", "--train", str(train), "--dev", str(train), "--out", str(out), "--max-steps", "2",
              "--batch-size", "8", "--max-length", "48", "--ensemble"]
    code, stdout, err = run(common)
    assert code in (0, None), err
    assert (out / "ensemble.json").exists() and "ensemble written" in stdout
    code, stdout, err = run(["predict", "--model", str(out), "--input", str(train), "--output", str(tmp_path / "p.csv")])
    assert code in (0, None), err
    import pandas as pd

    df = pd.read_csv(tmp_path / "p.csv")
    assert (df[["p_negative", "p_neutral", "p_positive"]].sum(1) - 1).abs().max() < 1e-4
    code, stdout, err = run(["eval", "--model", str(out), "--input", str(train)])
    assert code in (0, None), err
    assert 0.0 <= json.loads(stdout)["accuracy"] <= 1.0
    code, stdout, err = run(common[:-1] + ["--ensemble", "--multi-label", "--out", str(tmp_path / "ml")])
    assert code == 3 and "single-label" in err


def test_server_classifies_with_an_ensemble(tmp_path, tiny_classifier, probe):
    from fastapi.testclient import TestClient

    from verticore.server import create_app

    d = _ensemble_dir(tmp_path, tiny_classifier, probe)
    client = TestClient(create_app(classifier=str(d), embedder=None, device="cpu"))
    r = client.post("/classify", json={"texts": ["Profits rose sharply.", "The company warned of losses."], "top_k": 2})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2 and preds[0]["aggregation"] == "ensemble_mean_of_probabilities"
    assert abs(sum(preds[0]["probabilities"].values()) - 1.0) < 1e-4


def test_missing_member_and_mismatched_probe_data_fail_clearly(tmp_path, tiny_classifier, probe, default_embedder):
    d = _ensemble_dir(tmp_path, tiny_classifier, probe)
    before = (d / "ensemble.json").read_text()
    shutil.rmtree(d / "member0")
    with pytest.raises(ArtifactError, match="member0 listed in .*ensemble.json is missing"):
        load_classifier(d)
    assert (d / "ensemble.json").read_text() == before  # loading never rewrites the ensemble
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        EmbeddingProbe.fit(["a", "b", "c"], ["x", "y"], tmp_path / "p", embedder=default_embedder)
    assert not (tmp_path / "p").exists()  # nothing half-written


def test_bot_embeds_each_query_once_when_the_probe_shares_the_kb_embedder(tmp_path, tiny_classifier, probe,
                                                                          default_embedder, tiny_sentiment, monkeypatch):
    from customer_service.bot import Bot, BotConfig
    from customer_service.intents import IntentModel
    from customer_service.kb import KnowledgeBase
    from customer_service.store import BotStore
    from verticore import Embedder

    texts = tiny_sentiment.text.tolist()[:8]
    d = _ensemble_dir(tmp_path, tiny_classifier, probe)
    shared = load_classifier(d, device="cpu", embedder=default_embedder)
    assert shared.embedder is default_embedder  # same weights: the probe uses the caller's instance
    p_texts, z_texts = shared.predict_proba_and_logits(texts)
    p_vecs, z_vecs = shared.predict_proba_and_logits(texts, embeddings=default_embedder.encode(texts))
    assert np.allclose(p_texts, p_vecs, atol=1e-6) and np.allclose(z_texts, z_vecs, atol=1e-5)
    with pytest.raises(DataError, match="8 texts but 2 embeddings"):
        shared.predict_proba_and_logits(texts, embeddings=default_embedder.encode(texts[:2]))

    class OtherWeights:  # an embedder with other weights is never shared
        fingerprint = "0" * 16

    assert load_classifier(d, device="cpu", embedder=OtherWeights()).embedder is not None
    assert not isinstance(load_classifier(d, device="cpu", embedder=OtherWeights()).embedder, OtherWeights)

    doc = tmp_path / "help.md"
    doc.write_text("# Refunds\n\nRefunds are paid back to the original card within five working days.\n", encoding="utf-8")
    kb = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    kb.ingest(doc)
    calls = []
    real_encode = Embedder.encode
    monkeypatch.setattr(Embedder, "encode", lambda self, *a, **k: calls.append(1) or real_encode(self, *a, **k))
    for intents, expected in [(IntentModel(d, device="cpu", embedder=kb.embedder), 1), (IntentModel(d, device="cpu"), 2)]:
        bot = Bot(kb, intents, config=BotConfig(confident_intent=1.01), store=BotStore(tmp_path / f"bot{expected}.sqlite"))
        calls.clear()
        reply = bot.ask("How long do refunds take to reach my card?")
        assert reply.intent in intents.labels and reply.citations, reply
        assert len(calls) == expected  # shared: one encode serves the intent probe and the dense search


def _sklearn_reference(texts, labels, queries):
    """The same model built directly with scikit-learn, to check the saved probe against."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=min(2, len(texts) // 10) or 1)
    lr = LogisticRegression(C=10.0, max_iter=3000).fit(hstack([word.fit_transform(texts), char.fit_transform(texts)]), labels)
    return list(lr.classes_), lr.predict_proba(hstack([word.transform(queries), char.transform(queries)]))


@pytest.mark.parametrize("n_labels", [3, 2])
def test_tfidf_probe_matches_scikit_learn_and_reloads_without_pickle(tmp_path, tiny_sentiment, n_labels):
    df = tiny_sentiment[tiny_sentiment.label.isin(sorted(tiny_sentiment.label.unique())[:n_labels])]
    texts, labels = df.text.tolist(), df.label.tolist()
    queries = ["Profits rose sharply this quarter.", "The company warned of heavy losses.", "Shares were flat."]
    probe = TfidfProbe.fit(texts, labels, tmp_path / "tfidf")
    classes, want = _sklearn_reference(texts, labels, queries)
    got = probe.predict_proba(queries)
    assert probe.labels == classes and got.shape == (3, n_labels)
    assert np.allclose(got, want, atol=2e-4)  # binary LR is stored as a two-row softmax: same probabilities
    again = TfidfProbe(tmp_path / "tfidf")
    assert np.allclose(again.predict_proba(queries), got, atol=1e-6)
    assert sorted(f.name for f in (tmp_path / "tfidf").iterdir()) == ["tfidf.json", "tfidf.safetensors"]


def test_tfidf_probe_bad_files_and_data_fail_clearly(tmp_path, tiny_sentiment, tiny_classifier):
    texts, labels = tiny_sentiment.text.tolist(), tiny_sentiment.label.tolist()
    probe = TfidfProbe.fit(texts, labels, tmp_path / "tfidf")
    broken = tmp_path / "broken"
    shutil.copytree(probe.path, broken)
    (broken / "tfidf.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(ArtifactError, match="corrupt"):
        TfidfProbe(broken)
    short = tmp_path / "short"
    shutil.copytree(probe.path, short)
    cfg = json.loads((short / "tfidf.json").read_text())
    cfg["word"]["terms"] = cfg["word"]["terms"][:-1]
    (short / "tfidf.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="vocabulary"):
        TfidfProbe(short)
    with pytest.raises(ArtifactError, match="not a TF-IDF probe"):
        TfidfProbe(tmp_path / "nothing")
    with pytest.raises(DataError, match="two different labels"):
        TfidfProbe.fit(["a b", "c d"], ["x", "x"], tmp_path / "one")
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        TfidfProbe.fit(["a b", "c d", "e f"], ["x", "y"], tmp_path / "two")
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()
    # as an ensemble member next to a fine-tune; an unknown member kind is named
    d = tmp_path / "ens"
    shutil.copytree(tiny_classifier.artifact_dir, d / "member0")
    shutil.copytree(probe.path, d / "tfidf")
    ClassifierEnsemble.write(d, [("member0", "classifier", 1.0), ("tfidf", "tfidf_probe", 1.0)],
                             TextClassifier(str(d / "member0")).labels)
    ens = load_classifier(d, device="cpu")
    clf = TextClassifier(str(d / "member0"), device="cpu")
    p_tfidf = probe.predict_proba(texts[:6])[:, [probe.labels.index(l) for l in clf.labels]]
    assert np.allclose(ens.predict_proba(texts[:6]), (clf.predict_proba(texts[:6]) + p_tfidf) / 2, atol=1e-5)
    cfg = json.loads((d / "ensemble.json").read_text())
    cfg["members"][1]["kind"] = "bag_of_words"
    (d / "ensemble.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="unknown ensemble member kind 'bag_of_words'"):
        ClassifierEnsemble(d)


def test_new_member_kinds_register_without_touching_the_core(tmp_path, tiny_classifier, tiny_sentiment, monkeypatch):
    from verticore.inference import ensemble as ens_mod

    class ClassPrior:  # a member that always predicts the training label frequencies
        temperature = 1.0

        def __init__(self, path):
            spec = json.loads((path / "prior.json").read_text())
            self.labels, self.p = list(spec), np.array(list(spec.values()), dtype=np.float64)

        def warm_up(self):
            pass

        def predict_proba_and_logits(self, texts):
            p = np.tile(self.p, (len(texts), 1))
            return p, np.log(p)

    # register into copies: the registry is as it was after the test
    monkeypatch.setattr(ens_mod.MEMBER_KINDS, "_entries", dict(ens_mod.MEMBER_KINDS._entries))
    monkeypatch.setattr(ens_mod.MEMBER_KINDS, "_origin", dict(ens_mod.MEMBER_KINDS._origin))
    ens_mod.register_member_kind("class_prior", lambda path, *args: ClassPrior(path))
    with pytest.raises(VerticoreError, match="already registered"):  # a taken kind is refused
        ens_mod.register_member_kind("class_prior", lambda path, *args: None)
    d = tmp_path / "ens"
    shutil.copytree(tiny_classifier.artifact_dir, d / "member0")
    labels = TextClassifier(str(d / "member0")).labels
    freq = tiny_sentiment.label.value_counts(normalize=True)
    (d / "prior").mkdir()
    (d / "prior" / "prior.json").write_text(json.dumps({l: float(freq[l]) for l in reversed(labels)}))
    ClassifierEnsemble.write(d, [("member0", "classifier", 3.0), ("prior", "class_prior", 1.0)], labels)
    texts = tiny_sentiment.text.tolist()[:4]
    p_clf = TextClassifier(str(d / "member0"), device="cpu").predict_proba(texts)
    want = (3 * p_clf + np.array([freq[l] for l in labels])) / 4  # weighted, columns realigned
    assert np.allclose(load_classifier(d, device="cpu").predict_proba(texts), want, atol=1e-5)


def test_an_ensemble_weaker_than_its_best_member_says_so():
    from verticore.finetune.ensemble import weaker_than_best_member

    good = {"dev_accuracy": 0.93, "members": {"member0": {"dev_accuracy": 0.92}, "probe": {"dev_accuracy": 0.91}}}
    assert weaker_than_best_member(good) is None and good["best_member_on_dev"] == "member0"
    bad = {"dev_accuracy": 0.845, "members": {"member0": {"dev_accuracy": 0.865}, "tfidf": {"dev_accuracy": 0.818}}}
    advice = weaker_than_best_member(bad)
    assert "below its member 'member0' (0.8650)" in advice and "member0/ alone" in advice
    assert weaker_than_best_member({"members": {}}) is None  # no dev set: nothing to say


def test_probes_normalise_labels_like_the_fine_tune_and_reject_missing_ones(tmp_path, tiny_sentiment, default_embedder):
    texts = tiny_sentiment.text.tolist()
    padded = [f" {y} " for y in tiny_sentiment.label]  # as read from a sloppy CSV
    assert TfidfProbe.fit(texts, padded, tmp_path / "tfidf").labels == sorted(tiny_sentiment.label.unique())
    assert EmbeddingProbe.fit(texts, padded, tmp_path / "probe", embedder=default_embedder).labels == \
        sorted(tiny_sentiment.label.unique())  # so they line up with a fine-tune's labels in one ensemble
    holes = list(tiny_sentiment.label)
    holes[4] = None
    for fit, out in [(lambda o: TfidfProbe.fit(texts, holes, o), tmp_path / "t2"),
                     (lambda o: EmbeddingProbe.fit(texts, holes, o, embedder=default_embedder), tmp_path / "p2")]:
        with pytest.raises(DataError, match="label #4 is missing"):
            fit(out)
        assert not out.exists()  # nothing half-written
