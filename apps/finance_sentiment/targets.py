"""Entity-level (target-aware) sentiment (issue #15).

A headline naming two companies can be good news for one and bad for the other ("Acme wins the
contract Bolt lost"). A target-aware classifier reads ``"<company> [SEP] <text>"`` (one BERT segment
pair) and gives the sentiment *for that company*. The monitor uses it, when one is installed, for
items naming two or more watched companies: each company's series then counts the item with its own
label (``ScoredItem.entity_sentiment``), while the item keeps its text-level label everywhere else.

Training data: the per-target rows of the SemEval-2017 headlines and FiQA posts splits
(``text,target,label``), plus text-level rows (PhraseBank) with an empty target standing for "the
text as a whole" (:func:`train_target_sentiment`, ``finance-sentiment train-targets``).
``bench/sentiment_domains.py`` measures it against the text-level model on the SemEval targets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from verticore.errors import DataError
from verticore.inference.component import Component, register_component
from verticore.inference.protocols import Classifier
from verticore.io import read_table

SEPARATOR = " [SEP] "


def target_input(target: str, text: str) -> str:
    """What the target-aware model reads: the target, the tokenizer's separator, the text."""
    return f"{' '.join(str(target).split())}{SEPARATOR}{text}"


def read_target_rows(folder: str | Path, split: str, *, optional: bool = False) -> tuple[list[str], list[str]] | None:
    """(model inputs, labels) of one split: one row per (text, target) where the table has a ``target``
    column, else one row per text with an empty target. ``optional``: a missing split gives None."""
    from .training import SENTIMENT_LABELS

    f = Path(folder) / f"{split}.csv"
    if optional and not f.exists():
        return None
    df = read_table(f, ["text", "label"], allow_empty=optional)
    if df.empty:
        return None
    targets = df["target"].fillna("").astype(str) if "target" in df.columns else [""] * len(df)
    labels = df["label"].astype(str).str.strip().str.lower().tolist()
    bad = sorted(set(labels) - set(SENTIMENT_LABELS))
    if bad:
        raise DataError(f"{f} has label {bad[0]!r}; expected positive/neutral/negative")
    return [target_input(g, t) for g, t in zip(targets, df["text"].astype(str))], labels


@register_component("finance_sentiment.TargetSentimentModel")
class TargetSentimentModel(Component):
    """Sentiment towards one target in a text: ``score([(target, text), ...])`` gives
    ``(label, P(positive) - P(negative))`` per pair. ``classifier``: a core :class:`~verticore.Classifier`
    or the path of a classifier artifact trained on :func:`target_input` rows."""

    def __init__(self, classifier: Classifier | str | Path, *, version: str | None = None) -> None:
        from .scoring import _classifier_version, _open_classifier

        if isinstance(classifier, (str, Path)):
            classifier = _open_classifier(classifier)
        self.classifier = classifier
        self.version = version if version is not None else _classifier_version(classifier, "target_sentiment")
        missing = {"positive", "negative"} - set(map(str, classifier.labels))
        if missing:
            raise DataError(f"a target sentiment model needs positive and negative labels; it has {classifier.labels}")

    def _init_parameters(self) -> dict[str, Any]:
        path = getattr(self.classifier, "model_path", None) or getattr(self.classifier, "path", None)
        return {"classifier": str(path) if path is not None else None, "version": self.version}

    def warm_up(self) -> None:
        """Load the classifier's weights now."""
        warm_up = getattr(self.classifier, "warm_up", None)
        if callable(warm_up):
            warm_up()

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, float]]:
        """``(label, score)`` for each ``(target, text)``."""
        if not pairs:
            return []
        probs = self.classifier.predict_proba([target_input(g, t) for g, t in pairs])
        labels = [str(x) for x in self.classifier.labels]
        pos, neg = labels.index("positive"), labels.index("negative")
        return [(labels[int(row.argmax())], float(row[pos] - row[neg])) for row in probs]


def train_target_sentiment(data_dirs: Sequence[str | Path], out_dir: str | Path, *, epochs: int = 6,
                           batch_size: int = 32, learning_rate: float = 1e-4, max_steps: int | None = None,
                           max_length: int = 64, upsample: int = 1, seed: int = 42, show_progress: bool = True,
                           limit: int | None = None, eval_every: int | None = 60) -> Any:
    """Fine-tune a target-aware sentiment model on split folders (``train.csv``, ``dev.csv``,
    optional ``test.csv``): folders with a ``target`` column give one row per (text, target), others
    one row per text with an empty target. Rows of every folder after the first are repeated
    ``upsample`` times. Model selection on the union of the dev splits (every ``eval_every`` steps;
    ``None``: every epoch). ``limit``: only the first N rows of each split of each folder."""
    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    if not data_dirs:
        raise DataError("no training data folder given")
    rows: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "dev": ([], []), "test": ([], [])}
    for i, folder in enumerate(data_dirs):
        for split in rows:
            got = read_target_rows(folder, split, optional=split == "test")
            if got is None:
                continue
            if limit:
                got = (got[0][:limit], got[1][:limit])
            k = upsample if split == "train" and i else 1
            rows[split][0].extend(got[0] * k)
            rows[split][1].extend(got[1] * k)
    cfg = ClassifierTrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                   max_length=max_length, max_steps=max_steps, seed=seed, eval_every=eval_every, patience=4)
    test = rows["test"] if rows["test"][0] else (None, None)
    return train_classifier(*rows["train"], *rows["dev"], out_dir, cfg, test_texts=test[0], test_labels=test[1],
                            show_progress=show_progress)
