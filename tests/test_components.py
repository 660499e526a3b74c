"""The inference component contract: light construction, warm_up, to_dict/from_dict, save/load;
the Classifier protocol; backends and member kinds in the generic registry; binary data for every
ensemble member kind; no import cycle between the backend registry, the heads and ONNX."""
import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from verticore import (
    ArtifactError,
    Classifier,
    ClassifierEnsemble,
    Component,
    DataError,
    Embedder,
    EmbeddingProbe,
    TextClassifier,
    TfidfProbe,
    TokenClassifier,
    VerticoreError,
    load_classifier,
)

INFERENCE = Path(__file__).resolve().parents[1] / "shared" / "verticore" / "inference"


def _tiny_encoder_dir(out: Path, head: str, labels: list[str]) -> Path:
    """A 1-layer BERT with the default model's tokenizer: a real artifact that loads in milliseconds."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertForTokenClassification

    from verticore.models import default_model_path

    tok = AutoTokenizer.from_pretrained(str(default_model_path()))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    cls = BertForSequenceClassification if head == "sequence" else BertForTokenClassification
    cls(cfg).save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_sentiment, default_embedder):
    """Artifacts of every component kind (built before any load is counted)."""
    root = tmp_path_factory.mktemp("components")
    labels = sorted(tiny_sentiment.label.unique())
    texts, y = tiny_sentiment.text.tolist(), tiny_sentiment.label.tolist()
    seq = _tiny_encoder_dir(root / "seq", "sequence", labels)
    tok = _tiny_encoder_dir(root / "tok", "token", ["O", "B-ORG", "I-ORG"])
    ens = root / "ens"
    shutil.copytree(seq, ens / "member0")
    EmbeddingProbe.fit(texts, y, ens / "probe", embedder=default_embedder)
    TfidfProbe.fit(texts, y, ens / "tfidf")
    ClassifierEnsemble.write(ens, [("member0", "classifier", 1.0), ("probe", "embedding_probe", 1.0),
                                   ("tfidf", "tfidf_probe", 1.0)], labels)
    return {"seq": seq, "tok": tok, "ens": ens, "texts": texts[:5]}


BUILDERS = {
    "Embedder": lambda p: Embedder("default", device="cpu", batch_size=16, max_length=128),
    "TextClassifier": lambda p: TextClassifier(str(p["seq"]), device="cpu", max_length=64),
    "TokenClassifier": lambda p: TokenClassifier(str(p["tok"]), device="cpu", stride=16),
    "EmbeddingProbe": lambda p: EmbeddingProbe(p["ens"] / "probe", device="cpu"),
    "TfidfProbe": lambda p: TfidfProbe(p["ens"] / "tfidf"),
    "ClassifierEnsemble": lambda p: ClassifierEnsemble(p["ens"], device="cpu", max_length=64, batch_size=8),
    "ClassifierEnsemble+shared embedder": lambda p: ClassifierEnsemble(p["ens"], device="cpu",
                                                                       embedder=Embedder("default", device="cpu")),
}
#: components whose warm_up loads transformers weights (a TF-IDF probe has none)
LOADS_WEIGHTS = {"Embedder", "TextClassifier", "TokenClassifier", "EmbeddingProbe", "ClassifierEnsemble",
                 "ClassifierEnsemble+shared embedder"}


@pytest.fixture
def loads(monkeypatch):
    """Counts every tokenizer / weight load that goes through transformers."""
    import transformers

    calls: list[str] = []
    for name in ("AutoTokenizer", "AutoModel", "AutoModelForSequenceClassification", "AutoModelForTokenClassification"):
        cls = getattr(transformers, name)
        orig = cls.from_pretrained

        def counted(*args, _orig=orig, _name=name, **kwargs):
            calls.append(_name)
            return _orig(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", counted)
    return calls


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_constructing_loads_nothing_and_warm_up_loads_the_weights(kind, parts, loads):
    comp = BUILDERS[kind](parts)
    assert isinstance(comp, Component)
    assert loads == [], f"{kind}() loaded {loads}"
    comp.warm_up()
    comp.warm_up()  # idempotent
    if kind in LOADS_WEIGHTS:
        assert "AutoTokenizer" in loads and len(loads) >= 2
        n = len(loads)
        comp.warm_up()
        assert len(loads) == n
    else:
        assert loads == []


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_every_component_round_trips_through_dict_and_directory(kind, parts, tmp_path):
    comp = BUILDERS[kind](parts)
    data = comp.to_dict()
    assert set(data) == {"type", "init_parameters"} and data["type"] == type(comp).component_name
    assert json.loads(json.dumps(data)) == data  # plain JSON
    again = type(comp).from_dict(data)
    assert type(again) is type(comp) and again.to_dict() == data
    assert Component.from_dict(data).to_dict() == data  # the base dispatches on "type"
    f = comp.save(tmp_path / "cfg")
    assert f == tmp_path / "cfg" / "component.json" and json.loads(f.read_text()) == data
    loaded = type(comp).load(tmp_path / "cfg")
    assert type(loaded) is type(comp) and loaded.to_dict() == data


def test_round_trip_keeps_settings_and_overrides_win(parts, tmp_path):
    emb = Embedder("default", device="cpu", batch_size=7, max_length=99, normalize=False)
    emb.save(tmp_path)
    back = Embedder.load(tmp_path, batch_size=3)
    assert (back.batch_size, back.max_length, back.normalize, back.device) == (3, 99, False, "cpu")
    ens = ClassifierEnsemble(parts["ens"], device="cpu", embedder=emb, batch_size=8)
    nested = ens.to_dict()["init_parameters"]
    assert nested["embedder"]["type"] == "Embedder" and nested["batch_size"] == 8
    rebuilt = ClassifierEnsemble.from_dict(ens.to_dict())
    assert isinstance(rebuilt.embedder, Embedder) and rebuilt.embedder.batch_size == 7
    assert rebuilt.classifier_kwargs == {"batch_size": 8}


def test_load_without_component_json_opens_the_artifact(parts):
    clf = TextClassifier.load(parts["seq"], device="cpu")
    assert clf.labels == TextClassifier(str(parts["seq"])).labels and clf.device == "cpu"
    assert TfidfProbe.load(parts["ens"] / "tfidf").labels == clf.labels
    assert isinstance(ClassifierEnsemble.load(parts["ens"]), ClassifierEnsemble)


def test_from_dict_refuses_other_types_and_unserialisable_settings(parts, tmp_path):
    data = TfidfProbe(parts["ens"] / "tfidf").to_dict()
    with pytest.raises(DataError, match="not a TextClassifier"):
        TextClassifier.from_dict(data)
    with pytest.raises(VerticoreError, match="unknown component"):
        Component.from_dict({"type": "NoSuchThing", "init_parameters": {}})
    with pytest.raises(DataError):
        Component.from_dict({"init_parameters": {}})
    (tmp_path / "component.json").write_text("{not json")
    with pytest.raises(ArtifactError):
        Embedder.load(tmp_path)
    odd = ClassifierEnsemble(parts["ens"], device="cpu", embedder=object())
    with pytest.raises(VerticoreError, match="not JSON-serialisable"):
        odd.to_dict()


def test_embedder_resolves_its_model_lazily(tmp_path):
    emb = Embedder(str(tmp_path / "not-there"))  # settings only: nothing is looked up yet
    assert emb.to_dict()["init_parameters"]["model"].endswith("not-there")
    with pytest.raises(VerticoreError):
        emb.encode(["hello"])


@pytest.mark.parametrize("kind", ["TextClassifier", "EmbeddingProbe", "TfidfProbe", "ClassifierEnsemble"])
def test_every_classifier_satisfies_the_classifier_protocol(kind, parts):
    clf = BUILDERS[kind](parts)
    assert isinstance(clf, Classifier)
    p = clf.predict_proba(parts["texts"])
    assert p.shape == (len(parts["texts"]), len(clf.labels)) and np.allclose(p.sum(1), 1, atol=1e-5)
    preds = clf.predict(parts["texts"])
    assert [x.label for x in preds] == [clf.labels[i] for i in p.argmax(1)]
    assert clf.predict(parts["texts"][0]).label == preds[0].label


def test_finance_models_type_against_the_core_protocol():
    import finance_sentiment.scoring as scoring

    assert not hasattr(scoring, "ProbaClassifier")
    assert scoring.SentimentModel.__init__.__annotations__["classifier"].startswith("Classifier")


# -- binary data for every member kind ------------------------------------------------------------
@pytest.fixture(scope="module")
def binary(tiny_sentiment):
    df = tiny_sentiment[tiny_sentiment.label.isin(["negative", "positive"])]
    return df.text.tolist(), df.label.tolist()


def test_every_member_kind_trains_saves_and_loads_on_two_labels(binary, tmp_path, default_embedder):
    from sklearn.linear_model import LogisticRegression

    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    texts, labels = binary
    out = tmp_path / "ens"
    probe = EmbeddingProbe.fit(texts, labels, out / "probe", embedder=default_embedder)
    tfidf = TfidfProbe.fit(texts, labels, out / "tfidf")
    cfg = ClassifierTrainingConfig(epochs=1, batch_size=8, max_steps=3, eval_every=3, learning_rate=1e-4,
                                   max_length=64, device="cpu")
    train_classifier(texts, labels, texts[::2], labels[::2], out / "member0", cfg, show_progress=False)
    # each member reloads from disk (the probe used to save one coefficient row and refuse it)
    reloaded = [EmbeddingProbe(out / "probe", embedder=default_embedder), TfidfProbe(out / "tfidf"),
                TextClassifier(str(out / "member0"), device="cpu")]
    for m in reloaded:
        assert sorted(m.labels) == ["negative", "positive"]
        p = m.predict_proba(texts)
        assert p.shape == (len(texts), 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    # the saved probe gives scikit-learn's own probabilities
    x = default_embedder.encode(texts)
    lr = LogisticRegression(C=10.0, max_iter=2000).fit(x, labels)
    assert list(lr.classes_) == probe.labels
    assert np.allclose(reloaded[0].predict_proba(texts), lr.predict_proba(x), atol=1e-4)
    assert np.allclose(reloaded[1].predict_proba(texts), tfidf.predict_proba(texts), atol=1e-6)
    ClassifierEnsemble.write(out, [("member0", "classifier", 1.0), ("probe", "embedding_probe", 1.0),
                                   ("tfidf", "tfidf_probe", 1.0)], ["negative", "positive"])
    ens = load_classifier(out, device="cpu", embedder=default_embedder)
    p = ens.predict_proba(texts)
    assert p.shape == (len(texts), 2)
    assert np.mean([ens.labels[i] == y for i, y in zip(p.argmax(1), labels)]) >= 0.8


# -- registries -----------------------------------------------------------------------------------
def test_backends_live_in_the_generic_registry_and_refuse_duplicates(monkeypatch):
    from verticore.inference import backends
    from verticore.registries import Registry

    assert isinstance(backends.BACKENDS, Registry) and backends.BACKENDS.group == "verticore.backends"
    assert {"torch", "torch-int8", "auto"} <= set(backends.available_backends())
    monkeypatch.setattr(backends.BACKENDS, "_entries", dict(backends.BACKENDS._entries))
    monkeypatch.setattr(backends.BACKENDS, "_origin", dict(backends.BACKENDS._origin))

    @backends.register_backend("echo")
    class Echo:
        def __init__(self, model_dir=None, head="pool", device="cpu", **kwargs):
            self.device = device

        def run(self, input_ids, attention_mask):
            return input_ids.astype(np.float32)

    assert "echo" in backends.available_backends()
    assert backends.make_backend("echo").run(np.ones((1, 2), dtype=np.int64), None).dtype == np.float32
    with pytest.raises(VerticoreError, match="already registered"):
        backends.register_backend("echo")(type("Other", (), {}))
    with pytest.raises(VerticoreError, match="unknown backend 'nope'"):
        backends.make_backend("nope")


def test_member_kinds_use_the_generic_registry():
    from verticore.inference.ensemble import MEMBER_KINDS
    from verticore.registries import Registry

    assert isinstance(MEMBER_KINDS, Registry) and MEMBER_KINDS.group == "verticore.ensemble_members"
    assert {"classifier", "embedding_probe", "tfidf_probe"} <= set(MEMBER_KINDS.names())


# -- no import cycle --------------------------------------------------------------------------------
def _imports(module: Path) -> set[str]:
    """Sibling inference modules ``module`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("verticore.inference."):
            found.add(node.module.split(".")[2])
    return found


def test_inference_modules_import_without_a_cycle():
    graph = {f.stem: _imports(f) - {f.stem} for f in INFERENCE.glob("*.py") if f.stem != "__init__"}
    assert "backends" not in graph["heads"] and "backends" not in graph["loading"] and "backends" not in graph["pooling"]
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join(path + [node]))
        if state.get(node) == 2 or node not in graph:
            return
        state[node] = 1
        for nxt in sorted(graph[node]):
            visit(nxt, path + [node])
        state[node] = 2

    for name in sorted(graph):
        visit(name, [])


@pytest.mark.parametrize("module", ["pooling", "loading", "heads", "backends", "onnx_backend", "component", "protocols"])
def test_each_inference_module_imports_fresh(module):
    import subprocess
    import sys

    code = f"import verticore.inference.{module}"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
