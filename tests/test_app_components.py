"""The apps' models follow the core component contract (verticore.inference.component):
settings-only construction, warm_up for heavy state, to_dict/from_dict, save/load of the config,
and registration under an app-qualified type name so ``Component.from_dict`` rebuilds them.

Artifacts here are stubs (a config.json with labels and an empty weights file): construction
must never read the weights, and warm_up is observed through a patched ``TextClassifier.warm_up``."""
import json

import numpy as np
import pandas as pd
import pytest

from customer_service.intents import IntentModel, load_intent_model
from finance_sentiment.scoring import SentimentModel, TopicModel
from recommender.cf import EASE, Popularity
from recommender.interactions import Interactions
from recommender.recommender import Recommender
from recommender.rerank import Reranker, mmr, popularity_prior
from verticore import ArtifactError, Component, DataError, TextClassifier, VerticoreError
from verticore.inference.component import COMPONENT_FILE, COMPONENTS

SENTIMENT_LABELS = ["negative", "neutral", "positive"]


def _stub_artifact(path, labels):
    """A classifier artifact whose JSON is real and whose weights file is empty: loading it would fail."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"id2label": {str(i): lab for i, lab in enumerate(labels)}}))
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture
def warm_ups(monkeypatch):
    """Records which TextClassifier artifacts were warmed up (instead of loading weights)."""
    calls = []
    monkeypatch.setattr(TextClassifier, "warm_up", lambda self: calls.append(self.model))
    return calls


def _round_trip(component, tmp_path):
    """to_dict -> JSON -> from_dict, and save -> load, give equal settings; returns the loaded one."""
    data = component.to_dict()
    assert json.loads(json.dumps(data)) == data
    rebuilt = type(component).from_dict(data)
    assert type(rebuilt) is type(component) and rebuilt.to_dict() == data
    assert Component.from_dict(data).to_dict() == data  # rebuilt by its registered type name
    f = component.save(tmp_path / "cfg")
    assert f.name == COMPONENT_FILE and json.loads(f.read_text()) == data
    loaded = type(component).load(tmp_path / "cfg")
    assert loaded.to_dict() == data
    return loaded


def test_app_models_are_registered_under_app_qualified_names():
    for name, cls in [("finance_sentiment.SentimentModel", SentimentModel), ("finance_sentiment.TopicModel", TopicModel),
                      ("customer_service.IntentModel", IntentModel), ("recommender.EASE", EASE),
                      ("recommender.Popularity", Popularity), ("recommender.Reranker", Reranker),
                      ("recommender.Recommender", Recommender)]:
        assert COMPONENTS.get(name) is cls and issubclass(cls, Component)


def test_sentiment_model_from_settings_round_trips_and_loads_nothing_until_warm_up(tmp_path, warm_ups):
    art = _stub_artifact(tmp_path / "sent", SENTIMENT_LABELS)
    model = SentimentModel.from_settings(art, device="cpu", batch_size=7, max_sentences=9, title_weight=3.0)
    assert warm_ups == [] and model.classifier._backend is None
    params = model.to_dict()["init_parameters"]
    assert params["classifier"]["type"] == "TextClassifier"
    assert params["classifier"]["init_parameters"]["batch_size"] == 7
    assert (params["max_sentences"], params["title_weight"]) == (9, 3.0)
    assert params["version"].startswith("sentiment/sent@")
    loaded = _round_trip(model, tmp_path)
    assert warm_ups == []
    loaded.warm_up()
    assert warm_ups == [str(art)]
    # a path is accepted in place of a classifier object
    assert SentimentModel(str(art)).classifier.labels == SENTIMENT_LABELS and warm_ups == [str(art)]


def test_sentiment_model_load_opens_an_artifact_or_a_saved_config_with_overrides(tmp_path, warm_ups):
    art = _stub_artifact(tmp_path / "sent", SENTIMENT_LABELS)
    from_artifact = SentimentModel.load(art, device="cpu", batch_size=5, max_sentences=4)
    assert isinstance(from_artifact.classifier, TextClassifier) and from_artifact.classifier.batch_size == 5
    assert from_artifact.max_sentences == 4 and from_artifact.classifier.device == "cpu"
    from_artifact.save(tmp_path / "cfg")
    again = SentimentModel.load(tmp_path / "cfg", batch_size=11, max_sentences=6, title_weight=1.0)
    assert (again.classifier.batch_size, again.classifier.device) == (11, "cpu")
    assert (again.max_sentences, again.title_weight) == (6, 1.0) and warm_ups == []
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / COMPONENT_FILE).write_text("{not json")
    with pytest.raises(ArtifactError):
        SentimentModel.load(tmp_path / "bad")


def test_sentiment_model_keeps_working_with_a_fake_classifier_which_is_not_serialisable():
    class Fake:
        labels = ["pos", "neg", "neu"]

        def predict_proba(self, texts):
            return np.tile([0.7, 0.1, 0.2], (len(texts), 1))

    model = SentimentModel(Fake(), version="fake/1")
    model.warm_up()  # nothing to load: no error
    assert model.score(["Shares jumped."])[0].label == "positive"
    with pytest.raises(VerticoreError, match="not JSON-serialisable"):
        model.to_dict()


def test_topic_model_round_trips_with_nested_embedder_and_classifier(tmp_path, warm_ups, monkeypatch):
    from verticore import Embedder

    encoded = []
    monkeypatch.setattr(Embedder, "warm_up", lambda self: encoded.append("warm"))
    monkeypatch.setattr(Embedder, "encode", lambda self, texts, **kw: encoded.append(list(texts))
                        or np.eye(len(texts), 4, dtype=np.float32))
    art = _stub_artifact(tmp_path / "topics", ["earnings", "other"])
    emb = Embedder("default", device="cpu", batch_size=3)
    topics = {"earnings": "profit, revenue", "legal": "lawsuit, fine"}
    tm = TopicModel(emb, topics, classifier=str(art), threshold=0.3, margin=0.1, max_topics=3)
    assert tm.zero_shot_topics == ["legal"] and encoded == [] and warm_ups == []
    params = tm.to_dict()["init_parameters"]
    assert params["embedder"]["type"] == "Embedder" and params["classifier"]["type"] == "TextClassifier"
    assert params["topics"] == topics and (params["threshold"], params["margin"], params["max_topics"]) == (0.3, 0.1, 3)
    loaded = _round_trip(tm, tmp_path)
    assert loaded.embedder.batch_size == 3 and loaded.classifier.device == "cpu"  # the embedder's device
    assert encoded == [] and warm_ups == []
    loaded.warm_up()
    assert encoded[0] == "warm" and encoded[1][0] == "legal" and warm_ups == [str(art)]
    # the original call style still works; a plain path is a saved config
    assert TopicModel.load(emb, topics, tmp_path / "nowhere").classifier is None
    assert TopicModel.load(tmp_path / "cfg", threshold=0.5).threshold == 0.5
    with pytest.raises(ArtifactError):
        TopicModel.load(tmp_path / "nowhere")


def test_intent_model_round_trips_and_warms_up_on_demand(tmp_path, warm_ups):
    art = _stub_artifact(tmp_path / "intents", ["balance", "card_lost"])
    (art / "oos.json").write_text(json.dumps({"method": "max_prob", "threshold": 0.4}))
    model = IntentModel(art, device="cpu")
    assert model.labels == ["balance", "card_lost"] and model.threshold == 0.4 and warm_ups == []
    assert model.to_dict() == {"type": "customer_service.IntentModel",
                               "init_parameters": {"artifact_dir": str(art), "device": "cpu", "embedder": None}}
    loaded = _round_trip(model, tmp_path)
    assert loaded.threshold == 0.4 and warm_ups == []
    loaded.warm_up()
    assert warm_ups == [str(art)]
    # IntentModel.load / load_intent_model open the artifact itself or a saved config
    assert IntentModel.load(art).artifact_dir == art and load_intent_model(tmp_path / "cfg").device == "cpu"


def _interactions():
    df = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u3"], "item_id": ["a", "b", "b", "c", "a"]})
    return Interactions.from_dataframe(df)


def test_cf_models_round_trip_settings_and_ease_keeps_its_fitted_state(tmp_path):
    pop = Popularity(half_life_days=30)
    assert pop.to_dict() == {"type": "recommender.Popularity", "init_parameters": {"half_life_days": 30.0}}
    _round_trip(pop, tmp_path / "pop")
    with pytest.raises(ArtifactError):
        Popularity.load(tmp_path / "nothing")
    ease = EASE(l2=3.0, implicit=False)
    assert ease.to_dict() == {"type": "recommender.EASE", "init_parameters": {"l2": 3.0, "implicit": False}}
    unfitted = _round_trip(ease, tmp_path / "ease_cfg")
    assert unfitted.B is None
    fitted = EASE(l2=1.0).fit(_interactions())
    fitted.save(tmp_path / "ease")
    meta = json.loads((tmp_path / "ease" / "ease.json").read_text())
    assert meta["component"] == fitted.to_dict()
    back = EASE.load(tmp_path / "ease")
    assert back.to_dict() == fitted.to_dict() and np.allclose(back.B, fitted.B) and back.items == fitted.items
    # an older save without the component dict still opens
    del meta["component"]
    (tmp_path / "ease" / "ease.json").write_text(json.dumps(meta))
    assert EASE.load(tmp_path / "ease").l2 == 1.0


def test_reranker_round_trips_and_matches_the_plain_functions(tmp_path):
    rr = Reranker(diversity=0.4, prior=0.2)
    _round_trip(rr, tmp_path)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(8, 4)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = rng.normal(size=8)
    assert Reranker().rerank(scores, 3, vectors=lambda: vecs)[0] == list(np.argsort(-scores, kind="stable")[:3])
    assert Reranker(diversity=0.5).rerank(scores, 3, vectors=lambda: vecs)[0] == mmr(scores, vecs, 3, 0.5)
    prior = popularity_prior([str(i) for i in range(8)], {"0": 10.0, "1": 1.0})
    _, blended = Reranker(prior=1.0).rerank(scores, 3, vectors=lambda: vecs, popularity=lambda: prior)
    assert np.allclose(blended, 3.0 * prior)


def test_recommender_settings_round_trip_with_state_passed_in(tmp_path):
    class StubCatalog:  # the recommender's constructor only stores the catalog
        embedder = None

    inter = _interactions()
    ease = EASE(l2=1.0).fit(inter)
    rec = Recommender(StubCatalog(), inter, cf=ease, mode="hybrid", alpha=0.8, n_interests=2,
                      alpha_tuning={"alpha": 0.8, "skipped": None})
    data = rec.to_dict()
    assert data["type"] == "recommender.Recommender"
    assert data["init_parameters"]["alpha"] == 0.8 and data["init_parameters"]["mode"] == "hybrid"
    assert "catalog" not in data["init_parameters"] and "cf" not in data["init_parameters"]
    rebuilt = Recommender.from_dict(json.loads(json.dumps(data)), catalog=StubCatalog(), interactions=inter, cf=ease)
    assert rebuilt.to_dict() == data
    rebuilt.warm_up()  # an embedder-less catalog: nothing to load
    with pytest.raises(DataError, match="catalog"):
        Recommender.from_dict(data)
