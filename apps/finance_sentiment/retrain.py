"""The monitor's models in the retrain loop (``verticore retrain --app finance_sentiment --model sentiment|topics``).

Labels are analysts' relabels of items in the monitor (``finance-sentiment label ITEM LABEL`` or
the relabel control on the dashboard feed), stored in the ``labels`` table of ``monitor.db``; the
labelled text is the item's headline. Base data: ``$FINANCE_SENTIMENT_BASE_DATA`` (a
``text,label`` table, e.g. PhraseBank's train split) or the training part of the bundled sample
headlines; fixed evaluation split: ``$FINANCE_SENTIMENT_EVAL`` or the dev part of those headlines
(every 5th row, :func:`finance_sentiment.training.split_sample`). The recipe is
:func:`~finance_sentiment.training.train_sample_sentiment`'s.

The topic model learns the same way from topic relabels (``finance-sentiment label ITEM TOPIC
--task topic``, the ``topic_labels`` table): base data ``$FINANCE_TOPICS_BASE_DATA`` (a
``text,label`` table) or the training part of the sample headlines' ``topic`` column, fixed
evaluation split ``$FINANCE_TOPICS_EVAL`` or their dev part, recipe
:func:`~finance_sentiment.training.train_topics`'s.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from verticore.registry.loop import Label, LabelSet

BASE_ENV = "FINANCE_SENTIMENT_BASE_DATA"
EVAL_ENV = "FINANCE_SENTIMENT_EVAL"
TOPICS_BASE_ENV = "FINANCE_TOPICS_BASE_DATA"
TOPICS_EVAL_ENV = "FINANCE_TOPICS_EVAL"


def _paths(home: Path) -> Any:
    from verticore.paths import app_home

    from .paths import APP_DIR_NAME, AppPaths

    return AppPaths(app_home(APP_DIR_NAME, Path(home)))


def _pairs(env: str, part: int, column: str = "sentiment") -> tuple[list[str], list[str]]:
    from verticore.io import read_table

    from .paths import SAMPLES
    from .training import split_sample

    if os.environ.get(env):
        df = read_table(Path(os.environ[env]), ["text", "label"])
        return df["text"].astype(str).tolist(), df["label"].astype(str).tolist()
    parts = split_sample(SAMPLES / "headlines.csv", column)
    return list(parts[part]), list(parts[part + 1])


class SentimentRetrainer:
    """:class:`verticore.registry.loop.RetrainableModel` of the monitor's sentiment classifier."""

    primary_metric = "macro_f1"
    per_class_floors: float | Mapping[str, float] | None = None
    default_recipe: dict[str, Any] = {"epochs": 4, "batch_size": 16, "learning_rate": 8e-5, "max_length": 64,
                                      "patience": 3, "max_steps": None, "seed": 42}
    #: what this model learns: the sample headlines' column, the labels table, the env overrides
    column, base_env, eval_env = "sentiment", BASE_ENV, EVAL_ENV

    def _rows(self, store: Any) -> list[dict[str, Any]]:
        return store.list_labels()

    def collect_labels(self, home: Path, since: datetime | None) -> LabelSet:
        from .store import SQLiteStore

        db = _paths(Path(home)).db
        if not db.exists():
            return LabelSet()
        store = SQLiteStore(db)
        try:
            rows = self._rows(store)
        finally:
            store.close()
        return LabelSet([Label(r["text"], r["label"], r["source"], r["created_at"], True, r["labelled_by"])
                         for r in rows]).since(since)

    def base_data(self, home: Path) -> LabelSet:
        texts, labels = _pairs(self.base_env, 0, self.column)
        return LabelSet.from_pairs(texts, labels, source="base")

    def fixed_eval_split(self, home: Path) -> tuple[list[str], list[str]]:
        return _pairs(self.eval_env, 2, self.column)

    def train(self, recipe: Mapping[str, Any], texts: Sequence[str], labels: Sequence[str], out_dir: Path) -> Path:
        from verticore.finetune import ClassifierTrainingConfig, train_classifier

        r = {**self.default_recipe, **dict(recipe)}
        dev_texts, dev_labels = self.fixed_eval_split(Path("."))
        cfg = ClassifierTrainingConfig(epochs=int(r["epochs"]), batch_size=int(r["batch_size"]),
                                       learning_rate=float(r["learning_rate"]), max_length=int(r["max_length"]),
                                       patience=int(r["patience"]), seed=int(r["seed"]),
                                       max_steps=None if r["max_steps"] is None else int(r["max_steps"]),
                                       device=str(r.get("device", "auto")))
        result = train_classifier(list(texts), list(labels), dev_texts, dev_labels, Path(out_dir), cfg,
                                  show_progress=False)
        return Path(result.artifact_dir)

    def predict(self, artifact_dir: Path, texts: Sequence[str]) -> list[str]:
        return _classifier_predict(artifact_dir, texts)

    def current_artifact(self, home: Path) -> Path | None:
        """The sentiment model the monitor in ``home`` uses today, if trained."""
        p = _paths(Path(home)).sentiment_model
        return p if p.is_dir() and any(p.iterdir()) else None


class TopicRetrainer(SentimentRetrainer):
    """:class:`verticore.registry.loop.RetrainableModel` of the monitor's topic classifier: the same loop
    over analysts' topic relabels (``topic_labels``), gated on macro-F1 of the topic dev split."""

    column, base_env, eval_env = "topic", TOPICS_BASE_ENV, TOPICS_EVAL_ENV

    def _rows(self, store: Any) -> list[dict[str, Any]]:
        return [{**r, "label": r["topic"]} for r in store.list_topic_labels()]

    def current_artifact(self, home: Path) -> Path | None:
        """The topic model the monitor in ``home`` uses today, if trained."""
        p = _paths(Path(home)).topic_model
        return p if p.is_dir() and any(p.iterdir()) else None


def known_topics(paths: Any) -> list[str]:
    """The topics an analyst may label with: the monitor's topic model's labels (``paths``: its
    :class:`~finance_sentiment.paths.AppPaths`), or the bundled sample's topics before one is trained."""
    from verticore.artifact import read_labels

    space = read_labels(paths.topic_model) if paths.topic_model.is_dir() else None
    if space is not None:
        return [str(x) for x in space.labels]
    return sorted(set(_pairs(TOPICS_BASE_ENV, 0, "topic")[1]))


def _classifier_predict(artifact_dir: Path, texts: Sequence[str]) -> list[str]:
    from verticore import load_classifier

    clf = load_classifier(Path(artifact_dir), device="cpu")
    probs = clf.predict_proba(list(texts))
    return [clf.labels[i] for i in probs.argmax(axis=1)]
