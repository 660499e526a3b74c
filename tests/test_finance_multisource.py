"""Multi-source sentiment training (issue #15): several split folders, per-target rows collapsed to
one label per text, extra sources upsampled, model selection on the union of the dev splits."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from finance_sentiment.training import read_sentiment_split, score_label, train_sentiment
from verticore.errors import DataError

REPORT = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn", "Net sales decreased by 5 percent",
          "The company has 120 employees", "Profit before taxes grew strongly", "Sales fell sharply in the quarter",
          "The annual general meeting is held in Helsinki"]
REPORT_Y = ["positive", "negative", "neutral", "positive", "negative", "neutral"]


def _folder(root, name, rows_by_split):
    d = root / name
    d.mkdir()
    for split, rows in rows_by_split.items():
        pd.DataFrame(rows).to_csv(d / f"{split}.csv", index=False)
    return d


def _report_folder(tmp_path):
    rows = [{"text": t, "label": y} for t, y in zip(REPORT, REPORT_Y)]
    return _folder(tmp_path, "phrasebank", {"train": rows, "dev": rows[:3], "test": rows[3:]})


def _headline_folder(tmp_path):
    rows = [  # one row per (text, target), the SemEval/FiQA shape
        {"text": "Acme beats Bolt in chip race", "target": "Acme", "score": 0.8, "label": "positive"},
        {"text": "Acme beats Bolt in chip race", "target": "Bolt", "score": -0.7, "label": "negative"},
        {"text": "Bolt shares slump on probe", "target": "Bolt", "score": -0.9, "label": "negative"},
        {"text": "$ACME to the moon", "target": "ACME", "score": 0.6, "label": "positive"},
        {"text": "Acme holds investor day", "target": "Acme", "score": 0.05, "label": "neutral"},
    ]
    return _folder(tmp_path, "headlines", {"train": rows, "dev": rows[2:], "test": rows[:2]})


def test_per_target_rows_become_one_label_per_text(tmp_path):
    df = read_sentiment_split(_headline_folder(tmp_path), "train")
    assert df["text"].tolist() == ["Acme beats Bolt in chip race", "Bolt shares slump on probe", "$ACME to the moon",
                                   "Acme holds investor day"]
    # the two targets disagree (0.8, -0.7): mean 0.05, neutral at the text level
    assert df["label"].tolist() == ["neutral", "negative", "positive", "neutral"]
    assert [score_label(x) for x in (0.11, 0.1, -0.1, -0.11)] == ["positive", "neutral", "neutral", "negative"]
    assert read_sentiment_split(tmp_path / "headlines", "nope", optional=True) is None


def test_unknown_labels_and_missing_columns_are_clear_errors(tmp_path):
    d = _folder(tmp_path, "bad", {"train": [{"text": "x", "label": "bullish"}]})
    with pytest.raises(DataError, match="bullish"):
        read_sentiment_split(d, "train")
    d2 = _folder(tmp_path, "nolabel", {"train": [{"text": "x"}]})
    with pytest.raises(DataError, match="label"):
        read_sentiment_split(d2, "train")
    with pytest.raises(DataError, match="upsample"):
        train_sentiment([d], tmp_path / "m", upsample=0)


def test_multi_source_training_upsamples_extra_sources_and_selects_on_every_dev_split(tmp_path):
    res = train_sentiment([_report_folder(tmp_path), _headline_folder(tmp_path)], tmp_path / "model", upsample=3,
                          max_steps=2, epochs=1, batch_size=4, show_progress=False)
    m = res.metrics
    assert m["dev"]["n"] == 3 + 3 and m["test"]["n"] == 3 + 1  # selection and test on every source
    assert set(json.loads((res.artifact_dir / "labels.json").read_text())["labels"]) == {"positive", "neutral",
                                                                                          "negative"}


def test_extra_sources_are_repeated_upsample_times(tmp_path, monkeypatch):
    import verticore.finetune as finetune

    seen = {}

    def fake_train(train_texts, train_labels, dev_texts, dev_labels, out_dir, cfg, **kw):
        seen.update(train=list(train_texts), dev=list(dev_texts), test=kw.get("test_texts"), cfg=cfg)
        return "trained"

    monkeypatch.setattr(finetune, "train_classifier", fake_train)
    assert train_sentiment([_report_folder(tmp_path), _headline_folder(tmp_path)], tmp_path / "m", upsample=3,
                           max_length=96) == "trained"
    assert len(seen["train"]) == 6 + 3 * 4 and seen["train"][6:10] == seen["train"][10:14]
    assert len(seen["dev"]) == 3 + 3 and len(seen["test"]) == 3 + 1 and seen["cfg"].max_length == 96


def test_cli_train_takes_several_data_folders(tmp_path):
    from finance_sentiment.cli import app

    out = tmp_path / "cli_model"
    r = CliRunner().invoke(app, ["train", "--data", str(_report_folder(tmp_path)), "--data",
                                 str(_headline_folder(tmp_path)), "--upsample", "2", "--max-steps", "1",
                                 "--batch-size", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "sentiment model written to" in r.output and (out / "labels.json").exists()
    r = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "missing"), "--max-steps", "1"])
    assert r.exit_code == 3 and "not found" in r.output


def _data_root(tmp_path):
    """A ``VERTICORE_DATA`` tree with the multi-source recipe's three folders (tiny copies)."""
    from finance_sentiment.training import MULTI_SOURCE_FOLDERS

    root = tmp_path / "data"
    for rel, make in zip(MULTI_SOURCE_FOLDERS, (_report_folder, _headline_folder, _headline_folder)):
        parent = root / rel
        parent.parent.mkdir(parents=True, exist_ok=True)
        make(tmp_path).rename(parent)
    return root


def test_train_defaults_to_the_multi_source_recipe(tmp_path, monkeypatch):
    import verticore.finetune as finetune
    from finance_sentiment.cli import app
    from finance_sentiment.training import MULTI_SOURCE_UPSAMPLE, multi_source_folders

    root = _data_root(tmp_path)
    assert [f.relative_to(root).parts[-1] for f in multi_source_folders(root)] == [
        "50Agree", "semeval2017_headlines", "fiqa2018_posts"]
    with pytest.raises(DataError, match="VERTICORE_DATA"):
        multi_source_folders(tmp_path / "nowhere")
    seen = {}

    def fake_train(train_texts, train_labels, dev_texts, dev_labels, out_dir, cfg, **kw):
        seen.update(train=list(train_texts), dev=list(dev_texts), cfg=cfg)
        return type("R", (), {"artifact_dir": out_dir, "metrics": {}})()

    monkeypatch.setattr(finetune, "train_classifier", fake_train)
    monkeypatch.setenv("VERTICORE_DATA", str(root))  # settings are re-read from the environment
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "50Agree" in r.output and "fiqa2018_posts" in r.output
    # PhraseBank rows once, each of the two small sources repeated MULTI_SOURCE_UPSAMPLE times
    assert len(seen["train"]) == 6 + 2 * MULTI_SOURCE_UPSAMPLE * 4 and seen["cfg"].max_length == 64
    assert len(seen["dev"]) == 3 + 3 + 3


def test_data_dir_is_verticore_data_else_beside_the_checkout(tmp_path, monkeypatch):
    from verticore.paths import data_dir, repo_root

    monkeypatch.delenv("VERTICORE_DATA", raising=False)
    assert data_dir() == repo_root().parent / "shared" / "data"
    monkeypatch.setenv("VERTICORE_DATA", str(tmp_path))
    assert data_dir() == tmp_path
