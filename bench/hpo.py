"""Hyperparameter search on Financial PhraseBank 50Agree (fixed splits): 12 Optuna trials selected on dev
macro-F1 (the first trial is the default recipe) against the default recipe trained once; test is scored for
the best trial and the default only.

Writes ``bench/results/hpo.json``::

    {"best": {"params", "dev_macro_f1", "test_accuracy", "test_macro_f1"},
     "default": {same}, "trials": [one row per trial], "seconds"}

``--resume`` continues an interrupted run (the search records every finished trial in
``ARTIFACTS/hpo/search/trials.json``): the trained default is reused, the recorded trials count against
the budget, and ``seconds`` includes the time they took.

``--quick`` is a smoke run (2 trials on small subsets, a few steps) written to /tmp/hpo_quick.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

from common import ARTIFACTS, DATA, RESULTS, print_table  # also puts shared/ on sys.path

from verticore.finetune import ClassifierTrainingConfig, train_classifier  # noqa: E402
from verticore.finetune.search import SearchSpace, search_classifier  # noqa: E402
from verticore.io import atomic_write_json, read_json, read_table  # noqa: E402

SEARCHED = ("learning_rate", "epochs", "head_init", "pooling", "max_length")


def load(split_dir: Path, name: str, limit: int | None):
    df = read_table(split_dir / f"{name}.csv", ["text", "label"])
    return df.head(limit) if limit else df


def pair(df) -> tuple[list[str], list[str]]:
    return df.text.tolist(), df.label.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "financial_phrasebank")
    ap.add_argument("--trials", type=int, default=12, help="search budget")
    ap.add_argument("--seed", type=int, default=42, help="sampler seed")
    ap.add_argument("--eval-every", type=int, default=60, help="dev evaluations every N steps (all runs alike)")
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run: reuse the trained default and the trials recorded in "
                         "ARTIFACTS/hpo/search/trials.json, train only the rest of the budget")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 trials, 80/40/40 rows, 4 steps each; writes /tmp/hpo_quick.json")
    args = ap.parse_args()
    limit, max_steps, eval_every = (80, 4, 2) if args.quick else (None, None, args.eval_every)
    n_trials = 2 if args.quick else args.trials
    split = args.data / "splits" / "50Agree"
    tr, dv, te = (load(split, n, 40 if args.quick and n != "train" else limit) for n in ("train", "dev", "test"))
    print(f"Financial PhraseBank 50Agree: train {len(tr)}, dev {len(dv)}, test {len(te)}; {n_trials} trials")
    base = ClassifierTrainingConfig(batch_size=32, eval_every=eval_every, patience=args.patience, max_steps=max_steps,
                                    seed=42)
    work = Path(tempfile.mkdtemp(prefix="hpo_quick_")) if args.quick else ARTIFACTS / "hpo"
    t0 = time.time()

    # The default recipe (the config defaults), trained once on the same schedule.
    before = 0.0  # seconds spent by the interrupted run(s) that --resume continues
    if args.resume and (work / "default" / "metrics.json").is_file():
        metrics = read_json(work / "default" / "metrics.json")
        before += float(metrics.get("train_seconds", 0.0))
        print(f"reusing the default recipe's artifact {work / 'default'}")
    else:
        metrics = train_classifier(*pair(tr), *pair(dv), work / "default", base, test_texts=te.text.tolist(),
                                   test_labels=te.label.tolist()).metrics
    default_row = {"params": {k: getattr(base, k) for k in SEARCHED} | {"pooling": metrics["pooling"],
                                                                         "head_init": metrics["head_init"]},
                   "dev_macro_f1": metrics["dev"]["macro_f1"],
                   "test_accuracy": metrics["test"]["accuracy"],
                   "test_macro_f1": metrics["test"]["macro_f1"]}
    trials_file = work / "search" / "trials.json"
    if args.resume and trials_file.is_file():
        before += sum(float(t.get("seconds", 0.0)) for t in read_json(trials_file).get("trials", []))

    space = SearchSpace(epochs=(1, 2)) if args.quick else SearchSpace()
    found = search_classifier(pair(tr), pair(dv), work / "search", n_trials=n_trials, test=pair(te), space=space,
                              base_config=dataclasses.replace(base), seed=args.seed,
                              initial_params=[default_row["params"]],  # the search starts from the default
                              resume=args.resume)
    best_row = {"params": found.best_params, "dev_macro_f1": found.best_dev_macro_f1,
                "test_accuracy": found.test_metrics["accuracy"], "test_macro_f1": found.test_metrics["macro_f1"]}
    result = {"best": best_row, "default": default_row, "trials": found.trials,
              "seconds": round(time.time() - t0 + before, 1), "resumed": args.resume}
    rows = [[name, f"{r['dev_macro_f1']:.4f}", f"{r['test_accuracy']:.4f}", f"{r['test_macro_f1']:.4f}"]
            for name, r in (("default", default_row), ("best of search", best_row))]
    print_table(["recipe", "dev macro-F1", "test acc", "test macro-F1"], rows)
    print("best params:", found.best_params)
    out = Path("/tmp/hpo_quick.json") if args.quick else RESULTS / "hpo.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")
    if args.quick:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
