"""The intent model in the retrain loop (``verticore retrain --app customer_service --model intent``).

Labels come from agents (``labelled_examples`` in the bot's ``bot.sqlite``): the intent an agent
resolves a handoff ticket with (``agent_resolution``) and an agent's correction of a thumbs-down
answer (``agent_correction``); questions labelled ``out_of_scope`` are left out (they are not an
intent the classifier learns). The base data is the bundled ``samples/intents_train.csv``; the
fixed evaluation split is ``samples/intents_dev.csv`` (or ``$CUSTOMER_SERVICE_INTENTS_EVAL``, a
``text,label`` table). The recipe is the demo's (``customer-service train-intents``): the core
fine-tune with early stopping and OOS calibration on that split, as the demo model was trained.
"""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from verticore.registry.loop import Label, LabelSet

SAMPLES = Path(__file__).resolve().parent / "samples"
EVAL_ENV = "CUSTOMER_SERVICE_INTENTS_EVAL"


def _table(path: Path, cols: list[str]) -> Any:
    from verticore.io import read_table

    return read_table(path, cols)


def classifier_predict(artifact_dir: Path, texts: Sequence[str]) -> list[str]:
    """The top label of a core classifier artifact (single model or ensemble) for each text."""
    from verticore import load_classifier

    clf = load_classifier(Path(artifact_dir), device="cpu")
    probs = clf.predict_proba(list(texts))
    return [clf.labels[i] for i in probs.argmax(axis=1)]


class IntentRetrainer:
    """:class:`verticore.registry.loop.RetrainableModel` of the bot's intent classifier."""

    primary_metric = "accuracy"
    per_class_floors: float | Mapping[str, float] | None = None
    default_recipe: dict[str, Any] = {"epochs": 12, "batch_size": 16, "learning_rate": 1e-4, "max_length": 64,
                                      "patience": 3, "max_steps": None, "ensemble": False, "seed": 42}

    def _db(self, home: Path) -> Path:
        from .plugin import bot_directory

        return bot_directory(home) / "bot.sqlite"

    def collect_labels(self, home: Path, since: datetime | None) -> LabelSet:
        from .store import OUT_OF_SCOPE_LABEL, BotStore

        db = self._db(Path(home))
        if not db.exists():
            return LabelSet()
        store = BotStore(db)
        try:
            rows = store.labelled_examples()
        finally:
            store.close()
        labels = LabelSet([Label(r["text"], r["intent"], r["source"], r["created_at"], True, r.get("agent"))
                           for r in rows if r["intent"] != OUT_OF_SCOPE_LABEL])
        return labels.since(since)

    def base_data(self, home: Path) -> LabelSet:
        df = _table(SAMPLES / "intents_train.csv", ["text", "label"])
        return LabelSet.from_pairs(df["text"].astype(str), df["label"].astype(str), source="base")

    def fixed_eval_split(self, home: Path) -> tuple[list[str], list[str]]:
        df = _table(Path(os.environ.get(EVAL_ENV) or SAMPLES / "intents_dev.csv"), ["text", "label"])
        return df["text"].astype(str).tolist(), df["label"].astype(str).tolist()

    def train(self, recipe: Mapping[str, Any], texts: Sequence[str], labels: Sequence[str], out_dir: Path) -> Path:
        from verticore.finetune import ClassifierTrainingConfig

        from .intents import train_intent_model

        r = {**self.default_recipe, **dict(recipe)}
        dev_texts, dev_labels = self.fixed_eval_split(Path("."))
        oos_file = SAMPLES / "oos_dev.csv"
        oos = _table(oos_file, ["text"])["text"].astype(str).tolist() if oos_file.exists() else None
        cfg = ClassifierTrainingConfig(epochs=int(r["epochs"]), batch_size=int(r["batch_size"]),
                                       learning_rate=float(r["learning_rate"]), max_length=int(r["max_length"]),
                                       patience=int(r["patience"]), seed=int(r["seed"]),
                                       max_steps=None if r["max_steps"] is None else int(r["max_steps"]),
                                       device=str(r.get("device", "auto")))
        model, _ = train_intent_model(list(texts), list(labels), dev_texts, dev_labels, Path(out_dir), cfg,
                                      oos_dev_texts=oos, show_progress=False, ensemble=bool(r["ensemble"]))
        return Path(model.artifact_dir)

    def predict(self, artifact_dir: Path, texts: Sequence[str]) -> list[str]:
        return classifier_predict(artifact_dir, texts)

    def current_artifact(self, home: Path) -> Path | None:
        """The intent model the bot in ``home`` uses today (``bot.json``'s ``intents``), if any."""
        from verticore.io import read_json

        from .plugin import bot_directory

        config = bot_directory(Path(home)) / "bot.json"
        if not config.exists():
            return None
        rel = read_json(config, "bot config").get("intents")
        if not rel:
            return None
        p = Path(rel) if Path(rel).is_absolute() else config.parent / rel
        return p.resolve() if p.exists() else None
