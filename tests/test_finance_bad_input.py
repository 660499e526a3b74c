"""finance_sentiment bad input (issue #15): other languages and scripts, emoji-only posts, 1 MB articles,
and organisation mentions found by a NER model (discovered entities), all through the pipeline with a
fake classifier, embedder and tagger (no model is loaded)."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from finance_sentiment.config import EntityDiscovery, MonitorConfig, Rule, config_from_dict
from finance_sentiment.entities import EntityExtractor, Watchlist
from finance_sentiment.items import NewsItem, looks_non_english
from finance_sentiment.pipeline import Monitor
from finance_sentiment.scoring import NO_WORDS_PROBABILITIES, SentimentModel
from finance_sentiment.store import SQLiteStore

NOW = 1_750_000_000.0
RULE = Rule("neg", series="entity", window_minutes=60, min_count=4, z_threshold=2.5, min_share=0.5,
            cooldown_minutes=120, resolve_minutes=30)
WATCH = "ticker,name,aliases\nAAPL,Apple Inc.,Apple\nMRD,Meridian Airlines,Meridian\n"
HEADLINES = {"chinese": "苹果公司股价暴跌，投资者担忧需求放缓",
             "arabic": "أسهم أرامكو تتراجع بعد إعلان الأرباح",
             "cyrillic": "Акции Газпрома упали после отчёта о прибыли"}


class NegativeClassifier:
    """Reads every text as clearly negative and counts what it was asked."""

    labels = ["negative", "neutral", "positive"]

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_proba(self, texts, show_progress=False):
        self.calls.append(len(texts))
        return np.tile(np.asarray([[0.9, 0.08, 0.02]], dtype=np.float32), (len(texts), 1))


class HashEmbedder:
    """Deterministic unit vectors from a text hash (distinct titles are never near-duplicates)."""

    dimension = 16
    fingerprint = "hash/1"

    def encode(self, texts, **_):
        out = []
        for t in texts:
            v = np.frombuffer(hashlib.sha256(t.encode()).digest()[:16], dtype=np.uint8).astype(np.float32) - 127.5
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32).reshape(len(out), self.dimension)


class NoTopics:
    version = "none"
    embedder = None

    def assign(self, titles, embeddings=None):
        return [["other"] for _ in titles]


class FakeTagger:
    """Stands in for verticore.TokenClassifier: fixed ORG/PER spans for every text containing their words."""

    SPANS = [("Acme Widgets Ltd", "ORG", 0.97), ("Apple Inc", "ORG", 0.95), ("Jane Doe", "PER", 0.99),
             ("Globex", "ORG", 0.3)]

    def __init__(self) -> None:
        self.seen: list[int] = []

    def predict(self, texts):
        self.seen += [len(t) for t in texts]
        return [[{"text": s, "type": ty, "score": sc, "start": t.find(s), "end": t.find(s) + len(s)}
                 for s, ty, sc in self.SPANS if s in t] for t in texts]


def _monitor(tmp_path, cfg: MonitorConfig | None = None, *, tagger=None, clf=None) -> Monitor:
    cfg = cfg or MonitorConfig(rules=[RULE])
    model = SentimentModel(clf or NegativeClassifier(), version="neg/1", max_sentences=cfg.max_sentences)
    return Monitor(SQLiteStore(tmp_path / "m.db"), model,
                   NoTopics(), Watchlist.from_csv_text(WATCH), cfg, HashEmbedder(), extractor=tagger)


def _burst(titles, t0=NOW - 3600):
    return [{"id": f"b{j}", "title": t, "published_at": t0 + j * 60} for j, t in enumerate(titles)]


# -- other languages and scripts ------------------------------------------------------------------
@pytest.mark.parametrize("script", sorted(HEADLINES))
def test_headline_in_another_script_is_scored_flagged_and_less_confident(script):
    item = NewsItem.from_dict({"title": HEADLINES[script]})
    assert item.meta.get("non_english") is True
    a = SentimentModel(NegativeClassifier()).score([item.title])[0]
    assert a.label == "negative" and a.note and "non-English" in a.note
    assert max(a.probabilities.values()) < 0.9 - 0.2 and abs(sum(a.probabilities.values()) - 1) < 1e-5
    assert a.score == pytest.approx(0.5 * (0.02 - 0.9), abs=1e-5)  # pulled half-way to uniform
    untouched = SentimentModel(NegativeClassifier(), non_english_weight=1.0).score([item.title])[0]
    assert untouched.note is None and untouched.probabilities["negative"] == pytest.approx(0.9)


def test_english_and_accented_latin_text_is_not_flagged():
    for text in ["Apple shares fall 3%", "Société Générale cuts guidance", "Nokia Oyj:n tulos parani", "$AAPL 📉📉"]:
        assert not looks_non_english(text) and "non_english" not in NewsItem.from_dict({"title": text}).meta
    assert not looks_non_english("株")  # under 3 letters: no guess


def test_non_english_items_are_stored_but_kept_out_of_surge_statistics_by_default(tmp_path):
    mon = _monitor(tmp_path)
    res = mon.process(_burst([f"Apple {HEADLINES['chinese']} {j}" for j in range(10)]), now=NOW)
    assert res.accepted == 10 and res.opened == 0
    stored = mon.store.recent_items(limit=20)
    assert len(stored) == 10 and all(r["meta"].get("non_english") for r in stored)
    assert all("non-English" in r["meta"]["sentiment_note"] for r in stored) and all(r["entities"] == ["AAPL"] for r in stored)
    mon.close()
    # the same burst in English alerts; so does the foreign one when the config lets it count
    (tmp_path / "en").mkdir()
    mon = _monitor(tmp_path / "en")
    assert mon.process(_burst([f"Apple shares plunge again {j}" for j in range(10)]), now=NOW).opened == 1
    mon.close()
    (tmp_path / "on").mkdir()
    mon = _monitor(tmp_path / "on", MonitorConfig(rules=[RULE], non_english_in_surges=True))
    assert mon.process(_burst([f"Apple {HEADLINES['cyrillic']} {j}" for j in range(10)]), now=NOW).opened == 1
    mon.close()


# -- emoji-only posts ------------------------------------------------------------------------------
@pytest.mark.parametrize("title", ["🚀🚀🚀", "📉📉 😱😱", "!!! ???", "💰"])
def test_emoji_only_post_is_neutral_with_low_confidence_without_calling_the_model(title):
    item = NewsItem.from_dict({"title": title})
    assert item.title == title and item.meta.get("no_words") is True
    clf = NegativeClassifier()
    model = SentimentModel(clf)
    out = model.score([item.title, "Apple shares plunge"], [item.body, ""])
    assert out[0].label == "neutral" and out[0].probabilities == NO_WORDS_PROBABILITIES and out[0].score == 0.0
    assert "emoji" in out[0].note and out[0].sentences == 0 and out[0].evidence == []
    assert out[1].label == "negative" and clf.calls == [1]  # only the worded item went to the model


def test_emoji_only_posts_through_the_pipeline_never_alert(tmp_path):
    mon = _monitor(tmp_path, MonitorConfig(rules=[Rule("all-neg", series="all", window_minutes=60, min_count=4,
                                                       z_threshold=2.5, min_share=0.3)]))
    res = mon.process(_burst([f"🚀{'🔥' * j}" for j in range(12)]), now=NOW)
    # wordless titles normalise to the same title hash: the first is stored, the rest as its duplicates
    assert res.accepted + res.duplicates == 12 and res.opened == 0
    first = [s for s in res.items if not s.is_duplicate][0]
    assert first.sentiment == "neutral" and "emoji" in first.item.meta["sentiment_note"]
    assert mon.score_text("🚀🚀🚀")["label"] == "neutral"
    mon.close()


# -- 1 MB articles ---------------------------------------------------------------------------------
def test_one_megabyte_article_goes_through_the_pipeline_in_bounded_time_and_evidence(tmp_path):
    sentence = "Meridian Airlines said demand stayed weak in the quarter. "
    body = sentence * (1_000_000 // len(sentence) + 1)
    assert len(body) >= 1_000_000
    clf = NegativeClassifier()
    cfg = MonitorConfig(rules=[RULE], max_sentences=32)
    mon = _monitor(tmp_path, cfg, clf=clf, tagger=FakeTagger())
    t0 = time.perf_counter()
    res = mon.process([{"id": "big", "title": "Meridian Airlines annual report", "body": body, "published_at": NOW - 60}],
                      now=NOW)
    assert time.perf_counter() - t0 < 30
    assert res.accepted == 1 and res.rejected == 0
    row = mon.store.recent_items(limit=1)[0]
    assert len(row["body"]) == cfg.max_body_chars  # truncated at ingest, with a log line
    assert 1 < len(row["evidence"]) <= cfg.max_sentences and sum(clf.calls) <= cfg.max_sentences
    assert row["entities"] == ["MRD"] and row["sentiment"] == "negative"
    assert max(mon.extractor.tagger.seen) <= mon.extractor.max_chars  # the tagger reads a bounded prefix
    mon.close()


# -- organisations found by the NER model ---------------------------------------------------------
def test_discovered_organisations_become_entities_and_watchlist_names_link_to_their_ticker(tmp_path):
    mon = _monitor(tmp_path, tagger=FakeTagger())
    res = mon.process([{"id": "1", "title": "Acme Widgets Ltd sues Apple Inc over patents; Jane Doe comments",
                        "published_at": NOW - 60},
                       {"id": "2", "title": "Globex rumours swirl", "published_at": NOW - 30}], now=NOW)
    assert res.accepted == 2
    rows = {r["item_id"]: r for r in mon.store.recent_items(limit=5)}
    assert rows["1"]["entities"] == ["AAPL", "org:acme widgets"]  # PER is no organisation; Apple Inc is AAPL
    assert rows["1"]["meta"]["discovered_entities"] == [{"key": "org:acme widgets", "text": "Acme Widgets Ltd",
                                                         "kind": "discovered", "score": 0.97}]
    assert rows["2"]["entities"] == []  # Globex's span is below min_score
    assert dict(mon.store.series_keys("entity")).get("org:acme widgets") == 1  # its own trend
    assert mon.score_text("Acme Widgets Ltd wins an order")["entities"] == ["org:acme widgets"]
    mon.close()


def test_discovered_entity_alerts_are_off_by_default_and_on_by_config(tmp_path):
    burst = _burst([f"Acme Widgets Ltd shares plunge {j}" for j in range(10)])
    mon = _monitor(tmp_path, tagger=FakeTagger())
    res = mon.process(burst, now=NOW)
    assert res.opened == 0 and all(s.entities == ["org:acme widgets"] for s in res.items)
    mon.close()
    (tmp_path / "on").mkdir()
    cfg = config_from_dict({"rules": [RULE.__dict__], "discovered_entities": {"alerts": True}})
    mon = _monitor(tmp_path / "on", cfg, tagger=FakeTagger())
    res = mon.process(burst, now=NOW)
    assert res.opened == 1 and res.events[0].alert["series_key"] == "org:acme widgets"
    mon.close()


def test_without_an_extractor_only_the_watchlist_counts(tmp_path):
    mon = _monitor(tmp_path)
    res = mon.process([{"id": "1", "title": "Acme Widgets Ltd sues Apple Inc", "published_at": NOW - 60}], now=NOW)
    assert res.items[0].entities == ["AAPL"] and "discovered_entities" not in res.items[0].item.meta
    assert MonitorConfig().discovered_entities == EntityDiscovery()  # off by default
    mon.close()


def test_extractor_refuses_a_tagger_that_loses_texts():
    class Lossy:
        def predict(self, texts):
            return [[]]

    with pytest.raises(Exception, match="2 texts"):
        EntityExtractor(Lossy(), Watchlist()).extract(["a", "b"])


# -- a silence that ends before it starts ----------------------------------------------------------
# new_silence refuses it; the CLI (exit 3) and API (422) paths are tested in test_finance_alerting.py
# (test_silence_cli_add_list_expire, test_silence_api_scopes_and_errors); here the dashboard's form.
def test_dashboard_refuses_a_silence_that_ends_when_it_starts(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from finance_sentiment.paths import AppPaths

    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    paths = AppPaths.default()
    paths.root.mkdir(parents=True, exist_ok=True)
    SQLiteStore(paths.db).close()
    page = Path(__file__).resolve().parents[1] / "apps" / "finance_sentiment" / "dashboard" / "monitor_page.py"
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    for key, value in {"silence_match": "entity=AAA", "silence_duration": "0s", "silence_author": "ana",
                       "silence_comment": "earnings"}.items():
        at.text_input(key=key).set_value(value)
    at.button[[b.label for b in at.button].index("Add silence")].click().run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "before or when it starts" in errors[0].replace("\\", "") and "\n" not in errors[0]
    store = SQLiteStore(paths.db)
    assert store.list_silences(include_expired=True) == []
    store.close()
