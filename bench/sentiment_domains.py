"""Sentiment across domains (issue #15): a PhraseBank-only model against a multi-source model, same recipe,
each scored on every source's fixed test split.

Sources (fixed splits, ``$VERTICORE_DATA``):

* ``phrasebank``: Financial PhraseBank 50Agree (annual-report sentences);
* ``semeval2017_headlines``: SemEval-2017 Task 5 news headlines;
* ``fiqa2018_posts``: FiQA 2018 microblog posts.

The extra sources give one row per (text, target); the text-level models learn one label per distinct
text: the label of the mean target score (the splits' convention: > 0.1 positive, < -0.1 negative),
so a text whose targets disagree becomes neutral.

Rows:

* ``phrasebank_only``: fine-tuned on PhraseBank train, early-stopped on PhraseBank dev;
* ``multi_source``: the same recipe on PhraseBank train plus the two extra train splits, the extra
  sources repeated ``--upsample`` times (they are 5-7x smaller), early-stopped on the union of the
  three dev splits (model selection never sees a test split);
* ``baseline_frozen_lr``: frozen default embeddings + logistic regression on the multi-source
  training set (C picked on the dev union).

The two fine-tuned rows run for every seed of ``--seeds``; each source's figures are the mean over
seeds with the spread (``std``) and the per-seed values; ``artifact`` is the first seed's model.

    python bench/sentiment_domains.py [--seeds 42,43,44] [--upsample 1] [--max-length 64] [--patience 10]
        [--class-weights none|balanced] [--ema-decay D] [--eval-split test|dev] [--out NAME] [--resume] [--quick]

``--eval-split dev`` scores the same rows on the dev splits instead (``NAME_dev.json``): how a recipe is
chosen before its test figures are seen; a later run with ``--resume`` scores the same artifacts on test.

Writes ``bench/results/sentiment_domains.json``:
``{"phrasebank_only": {"phrasebank": {"accuracy", "macro_f1", ...}, "semeval2017_headlines": {...},
"fiqa2018_posts": {...}, "artifact"}, "multi_source": {same}, "baseline_frozen_lr": {same without
artifact}, "target_aware": {"semeval2017_targets": {"target_aware": {...}, "text_level": {...}},
"semeval2017_mixed_targets": {...}}, "seconds"}``.

``target_aware`` (issue #15's entity-level sentiment): one model reading ``target [SEP] text``, trained
with the multi-source recipe on the extra sources' per-target rows (plus PhraseBank with an empty
target), scored on every SemEval test target and on those of headlines whose targets disagree,
against the multi-source text-level model giving each target its text's label.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ARTIFACTS, DATA, RESULTS, print_table, write_result

from finance_sentiment.training import SENTIMENT_MAX_LENGTH
from verticore.errors import DataError

SOURCES = {
    "phrasebank": DATA / "financial_phrasebank" / "splits" / "50Agree",
    "semeval2017_headlines": DATA / "financial_sentiment_extra" / "splits" / "semeval2017_headlines",
    "fiqa2018_posts": DATA / "financial_sentiment_extra" / "splits" / "fiqa2018_posts",
}


def load_split(source: str, split: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(texts, labels) of one source's split, one row per distinct text (the app's own reader:
    per-target rows get the label of their mean score)."""
    from finance_sentiment.training import read_sentiment_split

    path = SOURCES[source] / f"{split}.csv"
    if not path.exists():
        raise DataError(f"{path} not found: set VERTICORE_DATA to the folder holding the fixed splits")
    df = read_sentiment_split(SOURCES[source], split)
    if limit:
        df = df.head(limit)
    return df["text"].astype(str).tolist(), df["label"].astype(str).tolist()


def _evaluate(clf: Any, tests: dict[str, tuple[list[str], list[str]]]) -> dict[str, dict[str, float]]:
    from verticore.evaluation import classification_metrics

    out = {}
    for source, (texts, labels) in tests.items():
        probs = clf.predict_proba(texts)
        pred = [clf.labels[i] for i in probs.argmax(axis=1)]
        m = classification_metrics(labels, pred)
        out[source] = {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4), "n": len(texts)}
    return out


def _finetune(train: tuple[list[str], list[str]], dev: tuple[list[str], list[str]], out: Path, seed: int,
              args: argparse.Namespace) -> Any:
    from verticore import TextClassifier
    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    cfg = ClassifierTrainingConfig(epochs=args.epochs, batch_size=32, learning_rate=args.lr, max_length=args.max_length,
                                   eval_every=args.eval_every, patience=args.patience, seed=seed,
                                   head_init="linear_probe", max_steps=4 if args.quick else None,
                                   class_weights=None if args.class_weights == "none" else args.class_weights,
                                   ema_decay=args.ema_decay)
    if args.resume and _trained_with(out, cfg, len(train[0]), len(dev[0])):
        print(f"reusing {out} (same recipe, seed and data size)")
        return TextClassifier(str(out)), None
    result = train_classifier(*train, *dev, out, cfg)
    return TextClassifier(str(result.artifact_dir)), result


def _trained_with(out: Path, cfg: Any, n_train: int, n_dev: int) -> bool:
    """True when ``out`` holds a finished artifact of this recipe (training config but the device) on
    data of this size: what ``--resume`` reuses instead of training again."""
    import json

    try:
        done = json.loads((out / "training_config.json").read_text(encoding="utf-8"))
        meta = json.loads((out / "verticore.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    want = {k: v for k, v in cfg.to_dict().items() if k != "device"}
    return ({k: done.get(k) for k in want} == want and meta.get("n_train") == n_train and meta.get("n_dev") == n_dev
            and (out / "model.safetensors").is_file())


def _summary(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for source in per_seed[0]:
        row: dict[str, Any] = {}
        for metric in ("accuracy", "macro_f1"):
            values = [r[source][metric] for r in per_seed]
            row[metric] = round(statistics.fmean(values), 4)
            row[f"{metric}_std"] = round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0
            row[f"{metric}_per_seed"] = values
        row["n"] = per_seed[0][source]["n"]
        out[source] = row
    return out


def _frozen_lr(train: tuple[list[str], list[str]], dev: tuple[list[str], list[str]],
               tests: dict[str, tuple[list[str], list[str]]]) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    from verticore import Embedder
    from verticore.evaluation import classification_metrics

    emb = Embedder("default")
    xtr, xdv = emb.encode(train[0], show_progress=True), emb.encode(dev[0])
    best: tuple[float, Any] | None = None
    for c in (0.3, 1.0, 3.0, 10.0, 30.0):
        lr = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(xtr, train[1])
        f1 = classification_metrics(dev[1], lr.predict(xdv).tolist())["macro_f1"]
        if best is None or f1 > best[0]:
            best = (f1, lr)
    assert best is not None
    out: dict[str, Any] = {}
    for source, (texts, labels) in tests.items():
        m = classification_metrics(labels, best[1].predict(emb.encode(texts)).tolist())
        out[source] = {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4), "n": len(texts)}
    out["C"] = float(best[1].C)
    return out


def _target_aware(data: dict[str, Any], text_model_dir: str, seed: int, args: argparse.Namespace,
                  limit: int | None) -> dict[str, Any]:
    """Entity-level sentiment: the app's target-aware model (``finance-sentiment train-targets``:
    ``target [SEP] text`` rows from the extra sources' per-target rows, PhraseBank with an empty
    target), against the text-level multi-source model giving every target of a text the text's
    label. Scored on the SemEval test targets: all of them, and those of texts whose targets disagree."""
    from finance_sentiment.targets import TargetSentimentModel, train_target_sentiment
    from verticore import TextClassifier
    from verticore.evaluation import classification_metrics
    from verticore.io import read_table

    out_dir = (Path(tempfile.gettempdir()) / "sentiment_domains_quick" if args.quick else ARTIFACTS) / \
        f"sentiment_target_aware_seed{seed}"
    train_target_sentiment([SOURCES["phrasebank"], SOURCES["semeval2017_headlines"], SOURCES["fiqa2018_posts"]],
                           out_dir, epochs=args.epochs, learning_rate=args.lr, max_length=args.max_length,
                           upsample=args.upsample, seed=seed, max_steps=4 if args.quick else None)
    df = read_table(SOURCES["semeval2017_headlines"] / "test.csv", ["text", "label", "target"])
    if limit:
        df = df.head(limit)
    targets, texts, labels = (df[c].astype(str).tolist() for c in ("target", "text", "label"))
    aware_pred = [label for label, _ in TargetSentimentModel(out_dir).score(list(zip(targets, texts)))]
    text_clf = TextClassifier(text_model_dir)
    text_pred = [text_clf.labels[i] for i in text_clf.predict_proba(texts).argmax(axis=1)]
    by_text: dict[str, set[str]] = {}
    for t, y in zip(texts, labels):
        by_text.setdefault(t, set()).add(y)
    mixed = [i for i, t in enumerate(texts) if len(by_text[t]) > 1]

    def score(pred: list[str], idx: list[int]) -> dict[str, float]:
        if not idx:
            return {"accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
        m = classification_metrics([labels[i] for i in idx], [pred[i] for i in idx])
        return {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4), "n": len(idx)}

    every = list(range(len(texts)))
    return {"semeval2017_targets": {"target_aware": score(aware_pred, every), "text_level": score(text_pred, every)},
            "semeval2017_mixed_targets": {"target_aware": score(aware_pred, mixed),
                                          "text_level": score(text_pred, mixed)},
            "artifact": str(out_dir), "seed": seed, "input": "TARGET [SEP] TEXT"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="42,43,44", help="comma list of seeds for the two fine-tuned rows")
    ap.add_argument("--upsample", type=int, default=1,
                    help="times the extra sources' training rows are repeated (1: chosen on dev by "
                         "bench/sentiment_recipe_select.py among 1, 2, 3 and 1 without class weights)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=SENTIMENT_MAX_LENGTH, help="tokens per text")
    ap.add_argument("--eval-every", type=int, default=60)
    ap.add_argument("--patience", type=int, default=10,
                    help="evaluations without dev macro-F1 gain before early stopping (10: preferred on the dev "
                         "splits; 4, the app's alerting default, stops the multi-source runs at steps 420-660 of 1,374)")
    ap.add_argument("--class-weights", choices=("balanced", "none"), default="none",
                    help="loss weights per label: balanced (inverse frequency) or none (chosen on dev, as --upsample)")
    ap.add_argument("--ema-decay", type=float, default=None,
                    help="evaluate, select and keep an exponential moving average of the weights (e.g. 0.99); "
                         "default off")
    ap.add_argument("--eval-split", choices=("test", "dev"), default="test",
                    help="split the rows are scored on: dev to choose a recipe without seeing test (writes "
                         "NAME_dev.json; no target-aware model)")
    ap.add_argument("--no-target-aware", action="store_true", help="skip the entity-level (target-aware) model")
    ap.add_argument("--quick", action="store_true", help="smoke run: 60 rows per split, 4 steps, one seed")
    ap.add_argument("--out", default="sentiment_domains",
                    help="result name under bench/results/; also the artifact folders' prefix")
    ap.add_argument("--resume", action="store_true",
                    help="reuse fine-tuned rows' artifacts already trained with this recipe and seed (an interrupted run)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    limit = 60 if args.quick else None
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    data = {s: {split: load_split(s, split, limit) for split in ("train", "dev", "test")} for s in SOURCES}
    tests = {s: data[s][args.eval_split] for s in SOURCES}
    if args.eval_split == "dev":
        args.no_target_aware = True

    def union(split: str, upsample: int = 1) -> tuple[list[str], list[str]]:
        texts: list[str] = []
        labels: list[str] = []
        for s in SOURCES:
            k = 1 if s == "phrasebank" else upsample
            texts += data[s][split][0] * k
            labels += data[s][split][1] * k
        return texts, labels

    rows: dict[str, Any] = {}
    recipes = {"phrasebank_only": (data["phrasebank"]["train"], data["phrasebank"]["dev"]),
               "multi_source": (union("train", args.upsample), union("dev"))}
    for name, (train, dev) in recipes.items():
        per_seed, first = [], None
        for seed in seeds:
            out = (Path(tempfile.gettempdir()) / "sentiment_domains_quick" if args.quick else ARTIFACTS) / \
                f"{args.out}_{name}_seed{seed}"
            clf, _ = _finetune(train, dev, out, seed, args)
            per_seed.append(_evaluate(clf, tests))
            first = first or str(out)
            print(name, seed, {s: per_seed[-1][s]["macro_f1"] for s in SOURCES})
        rows[name] = {**_summary(per_seed), "artifact": first, "train_rows": len(train[0]), "seeds": seeds}
    if args.eval_split == "test":  # its C is picked on dev, so its dev figures would flatter it
        rows["baseline_frozen_lr"] = _frozen_lr(union("train", args.upsample), union("dev"), tests)
    if not args.no_target_aware:
        rows["target_aware"] = _target_aware(data, rows["multi_source"]["artifact"], seeds[0], args, limit)
    elif not args.quick and args.eval_split == "test":  # keep the last measured target-aware block (it says its own recipe) rather than drop it
        from verticore.io import read_json

        prev = RESULTS / f"{args.out}.json"
        if prev.exists() and "target_aware" in (old := read_json(prev)):
            rows["target_aware"] = {**old["target_aware"], "carried_over_from_config": old.get("config")}
    result = {**rows, "seconds": round(time.perf_counter() - t0, 1),
              "config": {"upsample": args.upsample, "epochs": args.epochs, "learning_rate": args.lr,
                         "max_length": args.max_length, "head_init": "linear_probe", "quick": args.quick,
                         "eval_every": args.eval_every, "patience": args.patience,
                         "class_weights": args.class_weights, "eval_split": args.eval_split,
                         "ema_decay": args.ema_decay,
                         "label_rule": "mean target score: > 0.1 positive, < -0.1 negative, else neutral"}}
    print_table(["model"] + [f"{s} acc / F1" for s in SOURCES],
                [[name] + [f"{rows[name][s]['accuracy']:.3f} / {rows[name][s]['macro_f1']:.3f}" for s in SOURCES]
                 for name in ("phrasebank_only", "multi_source", "baseline_frozen_lr") if name in rows])
    if args.quick:
        from verticore.io import atomic_write_json

        print(f"wrote {atomic_write_json(Path(tempfile.gettempdir()) / 'sentiment_domains_quick.json', result)}")
    else:
        write_result(args.out if args.eval_split == "test" else f"{args.out}_dev", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
