"""Training the monitor's models with the core (``verticore.finetune``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from verticore.errors import DataError
from verticore.io import read_table

from .paths import SAMPLES

SENTIMENT_LABELS = ("positive", "neutral", "negative")

#: The default sentiment recipe is multi-source (issue #15): Financial PhraseBank 50Agree sentences,
#: SemEval-2017 Task 5 headlines and FiQA 2018 posts (fixed splits under ``$VERTICORE_DATA``), the two
#: small sources' training rows repeated 3 times, texts cut at 64 tokens, model selection on the
#: union of the dev splits. Chosen on the dev splits; measured by ``bench/sentiment_domains.py --upsample 3
#: --class-weights balanced`` (``bench/results/sentiment_domains_upsample3.json``).
MULTI_SOURCE_FOLDERS = ("financial_phrasebank/splits/50Agree",
                        "financial_sentiment_extra/splits/semeval2017_headlines",
                        "financial_sentiment_extra/splits/fiqa2018_posts")
MULTI_SOURCE_UPSAMPLE = 3
SENTIMENT_MAX_LENGTH = 64
#: Evaluations (every 60 steps) without dev gain before early stopping, chosen for alerting on the
#: alert bench's dev streams (bench/finance_alerts.py --seeds 1,2): the seed-42 model trained with 4 read
#: more of the negative items as negative (negative-share recall 0.975 vs 0.875 with patience 10), though
#: patience 10 scores higher on the sentiment dev splits (bench/sentiment_domains.py runs 10).
SENTIMENT_PATIENCE = 4
#: The bundled miniature of the three sources (written for the demo; see its README).
SAMPLE_SENTIMENT_SOURCES = tuple(SAMPLES / "sentiment_sources" / name for name in ("reports", "headlines", "posts"))


def multi_source_folders(data_root: str | Path | None = None) -> list[Path]:
    """The split folders of the default multi-source recipe under ``data_root`` (default:
    :func:`verticore.paths.data_dir`). A missing folder is a
    :class:`DataError` saying how to point at the data."""
    from verticore.paths import data_dir

    root = Path(data_root) if data_root is not None else data_dir()
    folders = [Path(root) / rel for rel in MULTI_SOURCE_FOLDERS]
    missing = [f for f in folders if not (f / "train.csv").is_file()]
    if missing:
        raise DataError(f"{missing[0]} has no train.csv: set VERTICORE_DATA to the folder holding the fixed splits "
                        f"(financial_phrasebank/, financial_sentiment_extra/) or pass --data")
    return folders


def score_label(score: float, margin: float = 0.1) -> str:
    """The label of a sentiment score in [-1, 1]: the fixed splits' convention (> 0.1 positive, < -0.1 negative)."""
    return "positive" if score > margin else "negative" if score < -margin else "neutral"


def read_sentiment_split(folder: str | Path, split: str, *, optional: bool = False) -> Any:
    """One split (``train``/``dev``/``test``) of a sentiment source as a ``text,label`` frame, one row per
    distinct text. Sources with a ``target`` and ``score`` per row (SemEval-2017 headlines, FiQA posts:
    one row per company a text names) become text-level rows labelled by the mean target score (so a
    text whose targets disagree is neutral). ``optional``: a missing or empty file gives None."""
    f = Path(folder) / f"{split}.csv"
    if optional and not f.exists():
        return None
    df = read_table(f, ["text", "label"], allow_empty=optional)
    if df.empty:
        if optional:
            return None
        raise DataError(f"{f} has no rows")
    if {"score", "target"} <= set(df.columns):
        import pandas as pd

        df = df.assign(score=pd.to_numeric(df["score"], errors="coerce"))
        if df["score"].isna().any():
            raise DataError(f"{f}: row {int(df['score'].isna().to_numpy().argmax()) + 2} has no numeric score")
        df = df.groupby("text", sort=False, as_index=False)["score"].mean()
        df["label"] = [score_label(float(v)) for v in df["score"]]
    bad = sorted(set(df["label"].astype(str)) - set(SENTIMENT_LABELS))
    if bad:
        raise DataError(f"{f} has label {bad[0]!r}; expected positive/neutral/negative")
    return df[["text", "label"]].reset_index(drop=True)


def train_sentiment(data_dir: str | Path | Sequence[str | Path], out_dir: str | Path, *, method: str = "full",
                    epochs: int = 6, batch_size: int = 32, learning_rate: float | None = None,
                    max_steps: int | None = None, limit: int | None = None, show_progress: bool = True,
                    seed: int = 42, upsample: int = MULTI_SOURCE_UPSAMPLE, max_length: int = SENTIMENT_MAX_LENGTH,
                    eval_every: int | None = 60) -> Any:
    """Fine-tune the sentiment model on one or more split folders with ``train.csv``/``dev.csv``[/``test.csv``]
    (columns ``text,label``, labels positive/neutral/negative; or ``text,score,target`` rows, see
    :func:`read_sentiment_split`), e.g. Financial PhraseBank 50Agree plus the SemEval headlines and
    FiQA posts splits. With several folders (multi-source) the training rows of every folder after
    the first are repeated ``upsample`` times (the extra sources are small) and model selection uses
    the union of the dev splits; test metrics are on the union of the test splits.

    The defaults are the multi-source recipe (:data:`MULTI_SOURCE_FOLDERS`, upsample 3) on top of
    the recipe of ``bench/finetune_phrasebank.py`` (LP-FT, mean-pooled head, 6 epochs at lr 1e-4,
    64 tokens, dev macro-F1 every ``eval_every`` steps, ``None``: once per epoch; early stopping after
    :data:`SENTIMENT_PATIENCE` evaluations without gain)."""
    import pandas as pd

    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    folders = [Path(data_dir)] if isinstance(data_dir, (str, Path)) else [Path(d) for d in data_dir]
    if not folders:
        raise DataError("no training data folder given")
    if upsample < 1:
        raise DataError(f"upsample must be at least 1, got {upsample}")
    parts: dict[str, list[Any]] = {"train": [], "dev": [], "test": []}
    for i, folder in enumerate(folders):
        for split in parts:
            df = read_sentiment_split(folder, split, optional=split == "test")
            if df is None:
                continue
            if limit:
                df = df.head(limit)
            parts[split].append(pd.concat([df] * upsample, ignore_index=True) if split == "train" and i else df)
    train, dev = (pd.concat(parts[k], ignore_index=True) for k in ("train", "dev"))
    test = pd.concat(parts["test"], ignore_index=True) if parts["test"] else None
    cfg = ClassifierTrainingConfig(method=method, epochs=epochs, batch_size=batch_size, max_steps=max_steps, seed=seed,
                                   max_length=max_length, learning_rate=1e-4, lora_learning_rate=8e-4,
                                   eval_every=eval_every, patience=SENTIMENT_PATIENCE)
    if learning_rate is not None:
        cfg.learning_rate = learning_rate
        cfg.lora_learning_rate = learning_rate
    return train_classifier(list(train["text"]), list(train["label"]), list(dev["text"]), list(dev["label"]), out_dir,
                            cfg, test_texts=list(test["text"]) if test is not None else None,
                            test_labels=list(test["label"]) if test is not None else None, show_progress=show_progress)


def split_sample(path: str | Path, label_col: str, dev_every: int = 5) -> tuple[list[str], list[str], list[str], list[str]]:
    """Deterministic train/dev split of a bundled sample table (every ``dev_every``-th row is dev)."""
    df = read_table(path, ["text", label_col])
    tr_x, tr_y, dv_x, dv_y = [], [], [], []
    for i, (t, y) in enumerate(zip(df["text"], df[label_col])):
        (dv_x if i % dev_every == dev_every - 1 else tr_x).append(t)
        (dv_y if i % dev_every == dev_every - 1 else tr_y).append(y)
    return tr_x, tr_y, dv_x, dv_y


def train_topics(out_dir: str | Path, data: str | Path | None = None, *, epochs: int = 4, max_steps: int | None = None,
                 batch_size: int = 16, show_progress: bool = True, seed: int = 42) -> Any:
    """Fine-tune the topic classifier on a ``text,topic`` table (default: the bundled sample headlines)."""
    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    tr_x, tr_y, dv_x, dv_y = split_sample(data or SAMPLES / "headlines.csv", "topic")
    cfg = ClassifierTrainingConfig(epochs=epochs, batch_size=batch_size, max_steps=max_steps, seed=seed, max_length=64,
                                   learning_rate=8e-5, patience=3)
    return train_classifier(tr_x, tr_y, dv_x, dv_y, out_dir, cfg, show_progress=show_progress)


def train_sample_sentiment(out_dir: str | Path, *, epochs: int = 6, max_steps: int | None = None, batch_size: int = 16,
                           show_progress: bool = True, seed: int = 42, rows: int | None = None) -> Any:
    """The demo's sentiment model: the multi-source recipe (:func:`train_sentiment`) on the bundled
    miniature sources (:data:`SAMPLE_SENTIMENT_SOURCES`: report sentences, headlines, posts). They are
    of similar size, so nothing is repeated; dev macro-F1 is checked every epoch. ``rows``: only the
    first N rows of each split of each source (tiny runs in tests)."""
    return train_sentiment(list(SAMPLE_SENTIMENT_SOURCES), out_dir, epochs=epochs, batch_size=batch_size,
                           max_steps=max_steps, limit=rows, show_progress=show_progress, seed=seed, upsample=1,
                           eval_every=None)
