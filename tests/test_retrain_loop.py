"""The retrain loop (issue #14): feedback labels -> candidate -> gate -> promote, per app.

Most tests use a fake keyword model (train/predict in microseconds) so they test the loop's
logic, not fine-tuning; the apps' own RetrainableModels are checked for wiring.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from verticore.errors import DataError
from verticore.plugins import AppSpec
from verticore.registry import ModelRegistry
from verticore.registry.loop import Label, LabelSet, RetrainableModel, retrain

TOKENS = [f"tok{i}" for i in range(9)]
CLASSES = ["alpha", "beta", "gamma"]
TRUTH = {t: CLASSES[i % 3] for i, t in enumerate(TOKENS)}


class KeywordModel:
    """Fake RetrainableModel: learns the majority label of each text's first word."""

    primary_metric = "accuracy"
    per_class_floors = None
    default_recipe = {"kind": "keyword"}

    def __init__(self) -> None:
        self.feedback: list[Label] = []
        self.trained = 0

    def collect_labels(self, home, since):
        return LabelSet(list(self.feedback)).since(since)

    def base_data(self, home):  # knows only the first three words
        return LabelSet.from_pairs([f"{t} base" for t in TOKENS[:3]], [TRUTH[t] for t in TOKENS[:3]])

    def fixed_eval_split(self, home):
        return [f"{t} eval {j}" for t in TOKENS for j in range(4)], [TRUTH[t] for t in TOKENS for _ in range(4)]

    def train(self, recipe, texts, labels, out_dir):
        assert recipe.get("kind") == "keyword"  # the production recipe is reused
        self.trained += 1
        votes: dict[str, dict[str, int]] = {}
        for t, y in zip(texts, labels):
            w = t.split()[0]
            votes.setdefault(w, {}).setdefault(y, 0)
            votes[w][y] += 1
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "words.json").write_text(json.dumps({w: max(v, key=v.get) for w, v in votes.items()}))
        return Path(out_dir)

    def predict(self, artifact_dir, texts):
        words = json.loads((Path(artifact_dir) / "words.json").read_text())
        return [words.get(t.split()[0], "alpha") for t in texts]


def _labels(tokens, when: str, *, wrong: bool = False, source: str = "agent_correction") -> list[Label]:
    rng = random.Random(0)
    out = []
    for t in tokens:
        y = TRUTH[t]
        if wrong:
            y = rng.choice([c for c in CLASSES if c != y])
        out.append(Label(f"{t} said {len(out)}", y, source, when))
    return out


@pytest.fixture()
def fake_app():
    model = KeywordModel()
    return AppSpec(name="fake_app", title="Fake", models={"kw": model}), model


def test_fake_model_is_a_retrainable_model():
    assert isinstance(KeywordModel(), RetrainableModel)


def test_good_labels_are_promoted_then_a_poisoned_batch_is_rejected(tmp_path, fake_app):
    spec, model = fake_app
    reg = ModelRegistry(tmp_path / "registry")
    model.feedback += _labels(TOKENS[3:] * 2, "2026-01-01T10:00:00+00:00")
    r = retrain(spec, "kw", home=tmp_path, registry=reg)
    assert r.status == "promoted" and r.promoted, r.message
    assert r.bootstrapped == 1 and r.candidate == 2 and r.production_after == 2
    assert reg.aliases("fake_app", "kw")["production"] == 2
    v2 = reg.get("fake_app", "kw", 2)
    assert v2.parent == 1 and v2.metrics["accuracy"] == 1.0 and v2.eval_split.startswith("fixed:")
    assert v2.recipe["kind"] == "keyword" and v2.recipe["training_data"]["new_labels"] == 12
    gate = reg.read_gate(v2)
    assert gate["result"]["passed"] and gate["result"]["mcnemar"]["p_value"] <= 1 and gate["against"]["version"] == 1
    # a poisoned batch: wrong labels for every word, given later (so they win the conflicts)
    model.feedback += _labels(TOKENS * 3, "2026-01-02T10:00:00+00:00", wrong=True)
    r = retrain(spec, "kw", home=tmp_path, registry=reg)
    assert r.status == "rejected" and not r.promoted and "not promoted" in r.message and "gate failed" in r.message
    assert r.new_labels == 27 and r.candidate == 3
    assert reg.aliases("fake_app", "kw") == {"production": 2, "candidate": 3}
    assert reg.read_gate(reg.get("fake_app", "kw", 3))["result"]["passed"] is False


def test_no_new_feedback_trains_nothing(tmp_path, fake_app):
    spec, model = fake_app
    reg = ModelRegistry(tmp_path / "registry")
    r = retrain(spec, "kw", home=tmp_path, registry=reg)
    assert r.status == "nothing_to_train" and model.trained == 0
    assert r.message.startswith("no new labels for fake_app/kw") and "\n" not in r.message
    model.feedback += _labels(TOKENS[3:], "2026-01-01T10:00:00+00:00")
    assert retrain(spec, "kw", home=tmp_path, registry=reg).promoted
    trained = model.trained
    r = retrain(spec, "kw", home=tmp_path, registry=reg)  # the same labels again: already in production
    assert r.status == "nothing_to_train" and "since production v2" in r.message and model.trained == trained


def test_dry_run_trains_nothing_and_registers_nothing(tmp_path, fake_app):
    spec, model = fake_app
    reg = ModelRegistry(tmp_path / "registry")
    model.feedback += _labels(TOKENS[3:], "2026-01-01T10:00:00+00:00")
    r = retrain(spec, "kw", home=tmp_path, registry=reg, dry_run=True)
    assert r.status == "dry_run" and model.trained == 0 and reg.models() == []
    assert r.new_labels == 6 and r.new_label_sources == {"agent_correction": 6} and r.train_examples == 9
    assert "would train" in r.message and "6 new labels" in r.message


def test_label_rules_duplicates_collapse_latest_wins_agent_beats_automatic():
    t1, t2 = "2026-01-01T10:00:00+00:00", "2026-01-02T10:00:00+00:00"
    labels = LabelSet([
        Label("Where is my order?", "track", "base"),                       # base: no time, loses to feedback
        Label("where is  my ORDER?", "refund", "agent_resolution", t1),
        Label("where is my order?", "track", "agent_correction", t2),      # latest wins
        Label("same text", "x", "agent_correction", t1),
        Label("same text", "x", "agent_resolution", t1),                   # duplicate: collapses
        Label("tie", "auto_label", "model", t1, human=False),
        Label("tie", "agent_label", "agent_correction", t1, human=True),  # same time: a person beats automation
        Label("tie2", "agent_label", "agent_correction", t1, human=True),
        Label("tie2", "auto_label", "model", t1, human=False),
    ]).resolved()
    got = {x.text: x for x in labels}
    assert len(labels) == 4
    assert got["where is my order?"].label == "track" and got["where is my order?"].source == "agent_correction"
    assert got["where is my order?"].time == t2
    assert got["same text"].label == "x"
    assert got["tie"].label == "agent_label" and got["tie2"].label == "agent_label"


def test_unknown_app_or_model_is_a_clear_error(tmp_path, fake_app):
    spec, _ = fake_app
    with pytest.raises(DataError, match="no retrainable model 'nope'.*kw"):
        retrain(spec, "nope", home=tmp_path, registry=tmp_path / "r")
    with pytest.raises(DataError, match="unknown app 'no_such_app'"):
        retrain("no_such_app", "kw", home=tmp_path, registry=tmp_path / "r")
    with pytest.raises(DataError, match="tolerance"):
        retrain(spec, "kw", home=tmp_path, registry=tmp_path / "r", tolerance=-1)


# -- CLI --------------------------------------------------------------------------------------------
def _cli(args, monkeypatch=None, spec=None):
    from verticore.cli import app

    if spec is not None:
        import verticore.plugins as plugins

        monkeypatch.setattr(plugins, "discover_apps", lambda on_error=None: {spec.name: spec})
    return CliRunner().invoke(app, args)


def test_cli_retrain_exit_codes_and_json(tmp_path, monkeypatch, fake_app):
    spec, model = fake_app
    home = ["--home", str(tmp_path)]
    r = _cli(["retrain", "--app", "fake_app", "--model", "kw", *home], monkeypatch, spec)
    assert r.exit_code == 0 and "no new labels" in r.output
    model.feedback += _labels(TOKENS[3:], "2026-01-01T10:00:00+00:00")
    r = _cli(["retrain", "--app", "fake_app", "--model", "kw", "--dry-run", "--json", *home], monkeypatch, spec)
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "dry_run" and model.trained == 0
    r = _cli(["retrain", "--app", "fake_app", "--model", "kw", "--json", *home], monkeypatch, spec)
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["status"] == "promoted" and out["production_after"] == 2
    assert ModelRegistry(tmp_path / "registry").aliases("fake_app", "kw")["production"] == 2
    r = _cli(["retrain", "--app", "fake_app", "--model", "nope", *home], monkeypatch, spec)
    assert r.exit_code == 3 and "no retrainable model" in r.output
    r = _cli(["retrain", "--app", "ghost", "--model", "kw", *home], monkeypatch, spec)
    assert r.exit_code == 3 and "unknown app" in r.output
    assert _cli(["retrain", "--app", "fake_app", *home]).exit_code == 2              # --model missing
    assert _cli(["retrain", "--app", "fake_app", "--model", "kw", "--tolerance", "-1", *home]).exit_code == 2


# -- the apps' RetrainableModels -------------------------------------------------------------------
def test_apps_declare_their_retrainable_models():
    from customer_service.plugin import APP as CS
    from finance_sentiment.plugin import APP as FS
    from verticore.registry.loop import load_retrainable

    assert isinstance(load_retrainable(CS, "intent")[1], RetrainableModel)
    assert isinstance(load_retrainable(FS, "sentiment")[1], RetrainableModel)
    assert isinstance(load_retrainable(FS, "topics")[1], RetrainableModel)
    assert CS.describe()["models"] == {"intent": "customer_service.retrain:IntentRetrainer"}


def _finance_store(home: Path):
    from finance_sentiment.items import NewsItem, ScoredItem
    from finance_sentiment.store import SQLiteStore

    store = SQLiteStore(home / "finance_sentiment" / "monitor.db")
    items = []
    for i, (title, sent) in enumerate([("Acme profit soars on record sales", "negative"),
                                       ("Bolt Bank shares slump after fraud probe", "negative")]):
        s = ScoredItem(NewsItem(f"id{i}", title, published_at=1.7e9 + i, url=f"https://n.example/{i}", source="wire"),
                       f"h{i}")
        s.sentiment, s.sentiment_score = sent, -0.9
        items.append(s)
    store.insert_items(items)
    return store


def test_finance_label_command_stores_an_analyst_label_with_source_and_time(tmp_path, monkeypatch):
    from finance_sentiment.cli import app as fs_app
    from finance_sentiment.retrain import SentimentRetrainer

    _finance_store(tmp_path).close()
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    home = ["--home", str(tmp_path / "finance_sentiment")]
    r = CliRunner().invoke(fs_app, ["label", "id0", "positive", "--by", "ann", "--json", *home])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)
    assert row["label"] == "positive" and row["previous"] == "negative" and row["labelled_by"] == "ann"
    assert row["source"] == "analyst" and row["created_at"].startswith("20") and row["text"].startswith("Acme")
    r = CliRunner().invoke(fs_app, ["label", "id0", "bullish", *home])
    assert r.exit_code == 3 and "not one of" in r.output
    r = CliRunner().invoke(fs_app, ["label", "nope", "neutral", *home])
    assert r.exit_code == 3 and "no item 'nope'" in r.output
    labels = SentimentRetrainer().collect_labels(tmp_path, None)
    assert [(x.label, x.source, x.by) for x in labels] == [("positive", "analyst", "ann")]
    res = retrain("finance_sentiment", "sentiment", home=tmp_path, registry=tmp_path / "registry", dry_run=True)
    assert res.status == "dry_run" and res.new_labels == 1 and res.new_label_sources == {"analyst": 1}


def test_finance_topic_relabels_retrain_the_topic_model(tmp_path, monkeypatch):
    from finance_sentiment.cli import app as fs_app
    from finance_sentiment.retrain import TopicRetrainer
    from verticore.registry import ModelRegistry

    _finance_store(tmp_path).close()
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    home = ["--home", str(tmp_path / "finance_sentiment")]
    r = CliRunner().invoke(fs_app, ["label", "id1", "Legal/Regulatory", "--task", "topic", "--by", "ann", "--json",
                                    *home])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)
    assert row["topic"] == row["label"] == "legal/regulatory" and row["labelled_by"] == "ann"
    r = CliRunner().invoke(fs_app, ["label", "id1", "astrology", "--task", "topic", *home])
    assert r.exit_code == 3 and "not one the topic model knows" in r.output
    r = CliRunner().invoke(fs_app, ["label", "id1", "positive", "--task", "mood", *home])
    assert r.exit_code == 2
    # sentiment and topic labels stay apart
    rm = TopicRetrainer()
    assert [(x.text, x.label) for x in rm.collect_labels(tmp_path, None)] == [
        ("Bolt Bank shares slump after fraud probe", "legal/regulatory")]
    from finance_sentiment.retrain import SentimentRetrainer
    assert len(SentimentRetrainer().collect_labels(tmp_path, None)) == 0
    # one real (tiny) loop: a baseline v1 from the sample topics, then a candidate gated on topic dev macro-F1
    monkeypatch.setattr(TopicRetrainer, "default_recipe", {**TopicRetrainer.default_recipe, "max_steps": 3})
    res = retrain("finance_sentiment", "topics", home=tmp_path, registry=tmp_path / "registry")
    assert res.bootstrapped == 1 and res.candidate == 2 and res.new_labels == 1
    assert res.status in {"promoted", "rejected"} and res.gate["primary"] == "macro_f1"
    reg = ModelRegistry(tmp_path / "registry")
    v2 = reg.get("finance_sentiment", "topics", 2)
    assert v2.parent == 1 and v2.recipe["max_steps"] == 3 and "macro_f1" in v2.metrics
    assert reg.read_gate(v2)["result"]["n"] == len(rm.fixed_eval_split(tmp_path)[0])
    assert reg.aliases("finance_sentiment", "topics")["production"] == (2 if res.promoted else 1)


def test_monitor_page_shows_a_relabel_control_on_the_feed(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parents[1] / "apps" / "finance_sentiment" / "dashboard" / "monitor_page.py"
    store = _finance_store(tmp_path)
    store.add_label(store.find_items("id1")[0], "negative", by="ann")
    store.close()
    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(e.label.startswith("Relabel sentiment") for e in at.expander)
    assert any("1 analyst label(s) stored" in c.value for c in at.caption)
    assert at.button(key="feed_relabel_save").disabled  # nothing picked yet


def test_customer_service_agent_labels_feed_the_intent_model(tmp_path, monkeypatch):
    from customer_service.demo import demo_kb_dir
    from customer_service.retrain import IntentRetrainer
    from customer_service.store import BotStore

    monkeypatch.delenv("CUSTOMER_SERVICE_KB", raising=False)
    kb = demo_kb_dir(tmp_path)
    kb.mkdir(parents=True)
    store = BotStore(kb / "bot.sqlite")
    sid = store.new_session()
    turn = store.add_turn(sid, "my parcel never showed up", "Sorry!", "answered", intent="refund")
    oos = store.add_turn(sid, "what is the weather", "Hm", "answered")
    store.correct_turn(sid, turn, "agent ann", "track_order", ["track_order", "refund"])
    store.correct_turn(sid, oos, "agent ann", "out_of_scope", ["track_order", "refund", "out_of_scope"])
    store.close()
    rm = IntentRetrainer()
    labels = rm.collect_labels(tmp_path, None)
    assert [(x.text, x.label, x.source) for x in labels] == [("my parcel never showed up", "track_order",
                                                              "agent_correction")]
    assert len(rm.base_data(tmp_path)) > 50 and len(rm.fixed_eval_split(tmp_path)[0]) > 20
    r = _cli(["retrain", "--app", "customer_service", "--model", "intent", "--dry-run", "--json",
              "--home", str(tmp_path)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["status"] == "dry_run" and out["new_labels"] == 1 and out["production_before"] is None


@pytest.mark.slow
def test_customer_service_intent_retrain_end_to_end_with_a_tiny_fine_tune(tmp_path, monkeypatch):
    """Real training (a couple of optimiser steps on a slice of the samples): baseline v1, candidate v2
    gated and registered."""
    from customer_service.retrain import IntentRetrainer

    class TinyIntents(IntentRetrainer):
        default_recipe = {**IntentRetrainer.default_recipe, "epochs": 1, "max_steps": 2, "device": "cpu",
                          "batch_size": 8}

        def base_data(self, home):
            return LabelSet(super().base_data(home).items[::4])

        def fixed_eval_split(self, home):
            texts, labels = super().fixed_eval_split(home)
            return texts[::3], labels[::3]

        def collect_labels(self, home, since):
            return LabelSet([Label("where on earth is my parcel", "track_order", "agent_resolution",
                                   "2026-01-01T10:00:00+00:00")]).since(since)

    monkeypatch.delenv("CUSTOMER_SERVICE_KB", raising=False)
    spec = AppSpec(name="customer_service", title="CS", models={"intent": TinyIntents()})
    reg = ModelRegistry(tmp_path / "registry")
    r = retrain(spec, "intent", home=tmp_path, registry=reg)
    assert r.status in {"promoted", "rejected"} and r.bootstrapped == 1 and r.candidate == 2, r.message
    v2 = reg.get("customer_service", "intent", 2)
    assert v2.recipe["max_steps"] == 2 and 0.0 <= v2.metrics["accuracy"] <= 1.0
    assert reg.read_gate(v2)["against"]["version"] == 1
    assert len(TinyIntents().predict(v2.artifact_path, ["where is my order"])) == 1


def test_a_per_class_floor_rejects_a_candidate_that_is_better_on_average(tmp_path, fake_app):
    spec, model = fake_app
    model.per_class_floors = {"gamma": 0.9}
    reg = ModelRegistry(tmp_path / "registry")
    good = [t for t in TOKENS[3:] if TRUTH[t] != "gamma"]
    model.feedback += _labels(good, "2026-01-01T10:00:00+00:00")
    model.feedback += _labels([t for t in TOKENS[3:] if TRUTH[t] == "gamma"], "2026-01-01T10:00:00+00:00", wrong=True)
    r = retrain(spec, "kw", home=tmp_path, registry=reg)
    assert r.status == "rejected" and "class 'gamma' recall" in r.message and "floor" in r.message
    assert r.gate["delta"] > 0 and reg.aliases("fake_app", "kw")["production"] == 1
