"""Entity-level (target-aware) sentiment (issue #15): a headline good for one company and bad for another
counts as negative only in the company it is bad for; a tiny real model trains on per-target rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_finance_bad_input import HashEmbedder, NegativeClassifier, NoTopics
from typer.testing import CliRunner

from finance_sentiment.config import MonitorConfig, Rule
from finance_sentiment.entities import Watchlist
from finance_sentiment.pipeline import Monitor
from finance_sentiment.scoring import SentimentModel
from finance_sentiment.store import SQLiteStore
from finance_sentiment.targets import (
    SEPARATOR,
    TargetSentimentModel,
    read_target_rows,
    target_input,
    train_target_sentiment,
)
from verticore.errors import DataError

NOW = 1_750_000_000.0
WATCH = "ticker,name,aliases\nACM,Acme Corp,Acme\nBLT,Bolt Industries,Bolt\n"
RULE = Rule("neg", series="entity", window_minutes=60, min_count=4, z_threshold=2.5, min_share=0.5,
            cooldown_minutes=120, resolve_minutes=30)


class WinnerLoser:
    """Fake target-aware classifier: positive for the company named before "beats", negative for the other."""

    labels = ["negative", "neutral", "positive"]

    def __init__(self) -> None:
        self.inputs: list[str] = []

    def predict_proba(self, texts, show_progress=False):
        self.inputs += list(texts)
        out = []
        for x in texts:
            target, text = x.split(SEPARATOR, 1)
            winner = text.split(" beats ")[0]
            out.append([0.05, 0.1, 0.85] if target.split()[0] in winner else [0.85, 0.1, 0.05])
        return np.asarray(out, dtype=np.float32)


def _monitor(tmp_path, target=None):
    return Monitor(SQLiteStore(tmp_path / "m.db"), SentimentModel(NegativeClassifier(), version="neg/1"), NoTopics(),
                   Watchlist.from_csv_text(WATCH), MonitorConfig(rules=[RULE]), HashEmbedder(),
                   target_sentiment=target)


def _burst():
    return [{"id": f"b{j}", "title": f"Acme beats Bolt to contract number {j}", "published_at": NOW - 3600 + j * 60}
            for j in range(6)]


def test_target_input_and_model_score():
    assert target_input("  Acme   Corp ", "x") == "Acme Corp [SEP] x"
    clf = WinnerLoser()
    model = TargetSentimentModel(clf, version="wl/1")
    got = model.score([("Acme Corp", "Acme beats Bolt"), ("Bolt Industries", "Acme beats Bolt")])
    assert [g[0] for g in got] == ["positive", "negative"] and got[0][1] == pytest.approx(0.8)
    assert model.score([]) == []

    class NoPositive:
        labels = ["neg", "pos"]

    with pytest.raises(DataError, match="positive and negative"):
        TargetSentimentModel(NoPositive())


def test_each_company_counts_the_headline_with_its_own_label(tmp_path):
    clf = WinnerLoser()
    mon = _monitor(tmp_path, TargetSentimentModel(clf, version="wl/1"))
    res = mon.process(_burst(), now=NOW)
    item = res.items[0]
    assert item.sentiment == "negative"  # the text-level model reads every title as negative
    assert item.entity_sentiment == {"ACM": {"label": "positive", "score": pytest.approx(0.8)},
                                     "BLT": {"label": "negative", "score": pytest.approx(-0.8)}}
    assert len(clf.inputs) == 12  # one batch: two companies x six items
    alerts = mon.store.list_alerts()
    assert [a["series_key"] for a in alerts] == ["BLT"]  # Acme's series saw good news
    stored = mon.store.recent_items(1)[0]
    assert stored["meta"]["entity_sentiment"]["BLT"]["label"] == "negative"
    mon.close()


def test_without_a_target_model_both_companies_alert(tmp_path):
    mon = _monitor(tmp_path)
    mon.process(_burst(), now=NOW)
    assert sorted(a["series_key"] for a in mon.store.list_alerts()) == ["ACM", "BLT"]
    mon.close()


def test_one_company_items_are_not_sent_to_the_target_model(tmp_path):
    clf = WinnerLoser()
    mon = _monitor(tmp_path, TargetSentimentModel(clf, version="wl/1"))
    res = mon.process([{"id": "a", "title": "Acme beats estimates", "published_at": NOW - 60}], now=NOW)
    assert clf.inputs == [] and res.items[0].entity_sentiment == {}
    mon.close()


def _folder(root, name, rows):
    d = root / name
    d.mkdir()
    for split in ("train", "dev"):
        pd.DataFrame(rows).to_csv(d / f"{split}.csv", index=False)
    return d


def test_training_rows_and_a_tiny_real_model(tmp_path):
    per_target = _folder(tmp_path, "semeval", [
        {"text": "Acme beats Bolt", "target": "Acme", "label": "positive", "score": 0.7},
        {"text": "Acme beats Bolt", "target": "Bolt", "label": "negative", "score": -0.6},
        {"text": "Bolt holds meeting", "target": "Bolt", "label": "neutral", "score": 0.0}])
    text_level = _folder(tmp_path, "phrasebank", [{"text": "Profit rose", "label": "positive"},
                                                  {"text": "Sales fell", "label": "negative"},
                                                  {"text": "The meeting is in May", "label": "neutral"}])
    x, y = read_target_rows(per_target, "train")
    assert x[:2] == ["Acme [SEP] Acme beats Bolt", "Bolt [SEP] Acme beats Bolt"] and y[:2] == ["positive", "negative"]
    assert read_target_rows(text_level, "train")[0][0] == " [SEP] Profit rose"
    assert read_target_rows(text_level, "test", optional=True) is None
    res = train_target_sentiment([text_level, per_target], tmp_path / "model", upsample=2, max_steps=2, batch_size=4,
                                 show_progress=False)
    model = TargetSentimentModel(res.artifact_dir)
    got = model.score([("Acme", "Acme beats Bolt"), ("Bolt", "Acme beats Bolt")])
    assert len(got) == 2 and all(label in {"positive", "neutral", "negative"} for label, _ in got)
    assert model.to_dict()["init_parameters"]["classifier"] == str(res.artifact_dir)


def test_cli_train_targets(tmp_path):
    from finance_sentiment.cli import app

    d = _folder(tmp_path, "semeval", [{"text": "Acme beats Bolt", "target": "Acme", "label": "positive"},
                                      {"text": "Acme beats Bolt", "target": "Bolt", "label": "negative"},
                                      {"text": "Bolt holds meeting", "target": "Bolt", "label": "neutral"}])
    r = CliRunner().invoke(app, ["train-targets", "--data", str(d), "--max-steps", "1", "--batch-size", "2",
                                 "--home", str(tmp_path / "fs")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "fs" / "models" / "target_sentiment" / "labels.json").exists()
    bad = _folder(tmp_path, "bad", [{"text": "x", "target": "A", "label": "bullish"}])
    r = CliRunner().invoke(app, ["train-targets", "--data", str(bad), "--max-steps", "1", "--home", str(tmp_path / "fs")])
    assert r.exit_code == 3 and "bullish" in r.output
