"""Running services follow the registry's ``production`` alias without a restart (issue #14): the
customer-service bot's intent model and the finance monitor's sentiment model. With v1 in production,
promoting v2 makes the next request use v2 on the same bot / monitor object, a request already running
finishes on v1, and without a production version (or with a broken one) the folder model is kept.
The models are small fakes that read a marker file from their registry artifact (nothing is trained)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from customer_service import bot as bot_module
from customer_service.bot import Bot
from customer_service.intents import IntentResult
from customer_service.kb import KnowledgeBase
from customer_service.store import BotStore
from customer_service.templates import TemplateSet
from verticore.registry.store import ModelRegistry

SAMPLES = Path(__file__).resolve().parents[1] / "apps" / "customer_service" / "samples"
QUESTION = "How long does standard delivery take?"


def _register(reg: ModelRegistry, tmp_path: Path, app: str, model: str, marker: str, **files: str) -> int:
    art = tmp_path / f"{app}-{model}-{marker}"
    art.mkdir()
    (art / "marker.txt").write_text(marker)
    for name, text in files.items():
        (art / name).write_text(text)
    return reg.register(app, model, art, data_fingerprint=f"sha256:{marker}", recipe={}, metrics={"accuracy": 0.9},
                        eval_split="fixed:1").version


# -- customer service: the intent model -------------------------------------------------------------
class MarkerIntents:
    """Stands in for IntentModel: every question is the intent named in the artifact's marker file."""

    loaded: list[str] = []

    def __init__(self, artifact_dir, device: str = "auto", embedder=None) -> None:
        self.artifact_dir = Path(artifact_dir)
        self.intent = (self.artifact_dir / "marker.txt").read_text()
        self.labels = [self.intent]
        self.on_classify = None
        MarkerIntents.loaded.append(self.intent)

    def classify(self, text, embedding=None):
        if self.on_classify:
            self.on_classify()
        return IntentResult(self.intent, 0.97, [(self.intent, 0.97)], False, 0.97)

    def warm_up(self) -> None:
        pass


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory, default_embedder) -> Path:
    d = tmp_path_factory.mktemp("hot_kb")
    kb = KnowledgeBase(d, embedder=default_embedder)
    kb.ingest_dir(SAMPLES / "kb", show_progress=False)
    kb.close()
    return d


@pytest.fixture
def bot_dir(kb_dir, tmp_path, monkeypatch) -> Path:
    """The shared KB with its own bot.sqlite and a bot.json naming a folder intent model."""
    import shutil

    d = tmp_path / "bot"
    shutil.copytree(kb_dir, d)
    folder = d / "intents"
    folder.mkdir()
    (folder / "marker.txt").write_text("folder_intent")
    (d / "bot.json").write_text('{"intents": "intents"}')
    monkeypatch.setattr(bot_module, "IntentModel", MarkerIntents)
    MarkerIntents.loaded = []
    return d


def test_bot_follows_promotions_without_a_restart(bot_dir, tmp_path, default_embedder):
    reg = ModelRegistry(tmp_path / "registry")
    v1 = _register(reg, tmp_path, "customer_service", "intent", "intent_v1")
    v2 = _register(reg, tmp_path, "customer_service", "intent", "intent_v2")
    reg.promote("customer_service", "intent", v1)
    bot = Bot.open(bot_dir, embedder=default_embedder, registry=reg, watch_interval=0)
    try:
        assert bot.intent_handle is not None and bot.intent_handle.version.version == v1
        assert bot.ask(QUESTION).intent == "intent_v1"
        assert "intent_v1" in bot.intent_labels()

        # a promotion while a question is being answered: that answer stays on v1, the next one is v2's
        bot.intents.on_classify = lambda: reg.promote("customer_service", "intent", v2, force=True)
        assert bot.ask(QUESTION).intent == "intent_v1"
        assert reg.aliases("customer_service", "intent")["production"] == v2
        assert bot.ask(QUESTION).intent == "intent_v2"
        assert bot.intent_handle.version.version == v2

        reg.rollback("customer_service", "intent")
        assert bot.ask(QUESTION).intent == "intent_v1"
        assert MarkerIntents.loaded.count("intent_v1") == 2  # reloaded on rollback, not on every question
    finally:
        bot.close()


def test_bot_uses_its_folder_without_a_production_version(bot_dir, tmp_path, default_embedder):
    reg = ModelRegistry(tmp_path / "registry")
    _register(reg, tmp_path, "customer_service", "intent", "intent_v1")  # registered, never promoted
    bot = Bot.open(bot_dir, embedder=default_embedder, registry=reg, watch_interval=0)
    try:
        assert bot.intent_handle is None and bot.ask(QUESTION).intent == "folder_intent"
    finally:
        bot.close()
    reg.promote("customer_service", "intent", 1)
    for kwargs in ({"registry": False}, {"registry": reg, "intents": bot_dir / "intents"}):  # opted out / explicit
        bot = Bot.open(bot_dir, embedder=default_embedder, watch_interval=0, **kwargs)
        try:
            assert bot.intent_handle is None and bot.ask(QUESTION).intent == "folder_intent"
        finally:
            bot.close()


def test_bot_keeps_its_folder_when_production_does_not_load(bot_dir, tmp_path, default_embedder, caplog):
    reg = ModelRegistry(tmp_path / "registry")
    v1 = _register(reg, tmp_path, "customer_service", "intent", "intent_v1")
    reg.promote("customer_service", "intent", v1)
    (reg.get("customer_service", "intent", v1).artifact_path / "marker.txt").chmod(0o644)
    (reg.get("customer_service", "intent", v1).artifact_path / "marker.txt").unlink()  # damaged after promotion
    bot = Bot.open(bot_dir, embedder=default_embedder, registry=reg, watch_interval=0)
    try:
        assert bot.intent_handle is None and bot.ask(QUESTION).intent == "folder_intent"
        assert "not following the registry" in caplog.text
    finally:
        bot.close()


def test_a_bot_built_in_code_can_follow_the_registry(kb_dir, tmp_path, default_embedder, monkeypatch):
    monkeypatch.setattr(bot_module, "IntentModel", MarkerIntents)
    reg = ModelRegistry(tmp_path / "registry")
    kb = KnowledgeBase(kb_dir, embedder=default_embedder)
    bot = Bot(kb, None, TemplateSet(), store=BotStore(tmp_path / "bot.sqlite"))
    try:
        assert bot.follow_registry(reg, interval=0) is False and bot.intents is None
        reg.promote("customer_service", "intent", _register(reg, tmp_path, "customer_service", "intent", "intent_v1"))
        assert bot.follow_registry(reg, interval=0) is True and bot.ask(QUESTION).intent == "intent_v1"
        bot.intents = None  # setting a model by hand stops following
        assert bot.intent_handle is None and bot.ask(QUESTION).intent is None
    finally:
        bot.close()


# -- finance sentiment: the monitor's sentiment model -------------------------------------------------
class MarkerClassifier:
    """Reads every text as the polarity named in the artifact's marker file."""

    labels = ["negative", "neutral", "positive"]
    ROWS = {"negative": [0.9, 0.08, 0.02], "positive": [0.02, 0.08, 0.9]}

    def __init__(self, polarity: str) -> None:
        self.polarity = polarity

    def predict_proba(self, texts, show_progress=False):
        return np.tile(np.asarray([self.ROWS[self.polarity]], dtype=np.float32), (len(texts), 1))


class HashEmbedder:
    dimension = 16
    fingerprint = "hash/1"

    def __init__(self, *args, **kwargs) -> None:
        pass

    def encode(self, texts, **_):
        out = []
        for t in texts:
            v = np.frombuffer(hashlib.sha256(t.encode()).digest()[:16], dtype=np.uint8).astype(np.float32) - 127.5
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32).reshape(len(out), self.dimension)

    def warm_up(self) -> None:
        pass


@pytest.fixture
def fake_sentiment_load(monkeypatch):
    """``SentimentModel.load`` of a marker artifact (a folder with ``marker.txt``), recording each load."""
    from finance_sentiment.scoring import SentimentModel

    loads: list[str] = []

    def load(cls, artifact_dir, *, device=None, batch_size=None, max_sentences=None, backend=None, **overrides):
        polarity = (Path(artifact_dir) / "marker.txt").read_text()
        loads.append(polarity)
        return cls(MarkerClassifier(polarity), version=overrides.get("version", f"folder-{polarity}"))

    monkeypatch.setattr(SentimentModel, "load", classmethod(load))
    return loads


def test_monitor_follows_promotions_without_a_restart(tmp_path, fake_sentiment_load, monkeypatch):
    import verticore
    from finance_sentiment.pipeline import Monitor

    monkeypatch.setattr(verticore, "Embedder", HashEmbedder)  # Monitor.open's embedder: no model download/load
    reg = ModelRegistry(tmp_path / "registry")
    v1 = _register(reg, tmp_path, "finance_sentiment", "sentiment", "negative")
    v2 = _register(reg, tmp_path, "finance_sentiment", "sentiment", "positive")
    reg.promote("finance_sentiment", "sentiment", v1)
    home = tmp_path / "fin"  # no models/sentiment folder at all: the registry's production is enough
    home.mkdir()
    mon = Monitor.open(home, registry=reg, watch_interval=0)
    try:
        assert mon.sentiment_handle is not None
        first = mon.score_text("Meridian Airlines reports quarterly results.")
        assert first["label"] == "negative" and first["model_version"] == f"sentiment/registry-v{v1}"
        reg.promote("finance_sentiment", "sentiment", v2, force=True)
        second = mon.score_text("Meridian Airlines reports quarterly results.")
        assert second["label"] == "positive" and second["model_version"] == f"sentiment/registry-v{v2}"
        res = mon.process([{"id": "n1", "title": "Apple opens a new campus", "published_at": 1_750_000_000.0}],
                          now=1_750_000_100.0)
        assert [(s.sentiment, s.model_version) for s in res.items] == [("positive", f"sentiment/registry-v{v2}")]
        assert fake_sentiment_load == ["negative", "positive"]  # one load per promotion, none per request
    finally:
        mon.close()


def test_monitor_batch_in_flight_finishes_on_its_model(tmp_path, fake_sentiment_load):
    from finance_sentiment.config import MonitorConfig
    from finance_sentiment.entities import Watchlist
    from finance_sentiment.pipeline import Monitor, registry_sentiment_loader
    from finance_sentiment.scoring import SentimentModel
    from finance_sentiment.store import SQLiteStore

    class NoTopics:
        version = "none"
        embedder = None

        def assign(self, titles, embeddings=None):
            return [["other"] for _ in titles]

    reg = ModelRegistry(tmp_path / "registry")
    v1 = _register(reg, tmp_path, "finance_sentiment", "sentiment", "negative")
    v2 = _register(reg, tmp_path, "finance_sentiment", "sentiment", "positive")
    mon = Monitor(SQLiteStore(tmp_path / "m.db"), SentimentModel(MarkerClassifier("negative"), version="folder/1"),
                  NoTopics(), Watchlist(), MonitorConfig(), HashEmbedder())
    try:
        assert mon.follow_registry(reg, registry_sentiment_loader(), interval=0) is False  # none in production
        assert mon.sentiment.version == "folder/1"
        reg.promote("finance_sentiment", "sentiment", v1)
        assert mon.follow_registry(reg, registry_sentiment_loader(), interval=0) is True
        model = mon.sentiment
        original_score = model.score

        def score_then_promote(titles, bodies=None):  # the promotion lands while this batch is scored
            reg.promote("finance_sentiment", "sentiment", v2, force=True)
            return original_score(titles, bodies)

        model.score = score_then_promote
        first = mon.process([{"id": "a", "title": "Helix Pharma results", "published_at": 1_750_000_000.0}],
                            now=1_750_000_100.0)
        second = mon.process([{"id": "b", "title": "Aurora Bank results", "published_at": 1_750_000_000.0}],
                             now=1_750_000_100.0)
        assert [(s.sentiment, s.model_version) for s in first.items] == [("negative", f"sentiment/registry-v{v1}")]
        assert [(s.sentiment, s.model_version) for s in second.items] == [("positive", f"sentiment/registry-v{v2}")]
    finally:
        mon.close()
