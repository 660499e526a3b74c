"""How far apart are the multi-source sentiment recipes on test, really? (issue #15)

The recipes of ``bench/sentiment_domains.py`` are chosen on dev (``bench/sentiment_recipe_select.py``);
this script chooses nothing. It reads the test results already written for each candidate
(``bench/results/NAME.json``), reloads every seed's saved model of both rows, predicts each source's
test split once, and resamples the test texts (bootstrap, paired across rows and seeds) to say how
much of the gap between a recipe and the targets is the test sets' own sampling noise:

* PhraseBank test accuracy of each multi-source row (mean over seeds): 95% interval and the share of
  resamples at or above ``--threshold`` (the issue's 0.86);
* the same accuracy minus the reference candidate's (``--reference``, the dev-chosen recipe), paired;
* the macro-F1 gain of the multi-source row over its own PhraseBank-only row on SemEval and FiQA,
  with 95% intervals and the share of resamples reaching ``--min-gain`` (the issue's 5 points).

    python bench/sentiment_test_spread.py NAME [NAME ...] [--reference sentiment_domains] [--resamples 10000]

Writes ``bench/results/sentiment_test_spread.json``: ``{"resamples", "threshold", "min_gain",
"reference", "n": {source: texts}, "candidates": {NAME: {"phrasebank_accuracy": {"mean", "ci95",
"share_at_or_above_threshold"}, "accuracy_minus_reference": {"mean", "ci95"}, "semeval_gain": {"mean",
"ci95", "share_at_or_above_min_gain"}, "fiqa_gain": {same}}}}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from verticore.registry.gate import macro_f1_resamples

SOURCES = ("phrasebank", "semeval2017_headlines", "fiqa2018_posts")
ROWS = ("multi_source", "phrasebank_only")


def _interval(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]


def spread(truth: dict[str, np.ndarray], preds: dict[str, dict[str, dict[str, np.ndarray]]], reference: str,
           n_labels: int, resamples: int = 10000, threshold: float = 0.86, min_gain: float = 0.05,
           seed: int = 0) -> dict[str, Any]:
    """Bootstrap summary of candidates' test figures.

    ``truth[source]`` holds the test labels as label indices; ``preds[name][row][source]`` the
    predictions of each seed (shape ``(seeds, n)``) of row ``multi_source`` or ``phrasebank_only``.
    One set of resampled test indices per source is shared by every candidate, row and seed, so the
    differences are paired. ValueError when ``reference`` is not a candidate or a shape disagrees.
    """
    if reference not in preds:
        raise ValueError(f"reference {reference!r} is not among the candidates {sorted(preds)}")
    rng = np.random.default_rng(seed)
    idx = {s: rng.integers(0, len(truth[s]), size=(resamples, len(truth[s]))) for s in SOURCES}
    for name, rows in preds.items():
        for row in ROWS:
            for s in SOURCES:
                if rows[row][s].ndim != 2 or rows[row][s].shape[1] != len(truth[s]):
                    raise ValueError(f"{name}.{row}.{s}: predictions of shape {rows[row][s].shape} for "
                                     f"{len(truth[s])} test texts")

    def boot_acc(p: np.ndarray) -> np.ndarray:  # mean over seeds of each resample's accuracy
        right = (p == truth["phrasebank"]).mean(0)  # share of seeds right, per text
        return right[idx["phrasebank"]].mean(1)

    def f1(p: np.ndarray, s: str, rows: np.ndarray) -> np.ndarray:  # mean over seeds, per resample row
        return np.mean([macro_f1_resamples(truth[s], seed_pred, rows, n_labels, skip_absent=True)
                        for seed_pred in p], axis=0)

    ref_acc = boot_acc(preds[reference]["multi_source"]["phrasebank"])
    out: dict[str, Any] = {}
    for name, rows in preds.items():
        acc = boot_acc(rows["multi_source"]["phrasebank"])
        point = float((rows["multi_source"]["phrasebank"] == truth["phrasebank"]).mean())
        ref_point = float((preds[reference]["multi_source"]["phrasebank"] == truth["phrasebank"]).mean())
        entry: dict[str, Any] = {
            "phrasebank_accuracy": {"mean": round(point, 4), "ci95": _interval(acc),
                                    "share_at_or_above_threshold": round(float((acc >= threshold).mean()), 4)},
            "accuracy_minus_reference": {"mean": round(point - ref_point, 4), "ci95": _interval(acc - ref_acc)},
        }
        for key, s in (("semeval_gain", "semeval2017_headlines"), ("fiqa_gain", "fiqa2018_posts")):
            gain = f1(rows["multi_source"][s], s, idx[s]) - f1(rows["phrasebank_only"][s], s, idx[s])
            whole = np.arange(len(truth[s]))[None, :]  # the test split itself: the point figure
            point_gain = float(f1(rows["multi_source"][s], s, whole)[0] - f1(rows["phrasebank_only"][s], s, whole)[0])
            entry[key] = {"mean": round(point_gain, 4), "ci95": _interval(gain),
                          "share_at_or_above_min_gain": round(float((gain >= min_gain).mean()), 4)}
        out[name] = entry
    return out


def _seed_artifacts(result: dict[str, Any], row: str) -> list[Path]:
    """Every seed's model folder of one row: the result names the first seed's, the others differ only
    in the seed."""
    first, seeds = result[row]["artifact"], result[row]["seeds"]
    return [Path(first.replace(f"seed{seeds[0]}", f"seed{s}")) for s in seeds]


def main(argv: list[str] | None = None) -> int:
    from common import RESULTS, print_table, write_result  # the bench folder's helpers (run as a script)
    from sentiment_domains import load_split

    from verticore import TextClassifier
    from verticore.io import read_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="candidate test results (bench/results/NAME.json)")
    ap.add_argument("--reference", default="sentiment_domains", help="the dev-chosen candidate (paired differences)")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--threshold", type=float, default=0.86, help="PhraseBank accuracy target")
    ap.add_argument("--min-gain", type=float, default=0.05, help="macro-F1 gain target on SemEval and FiQA")
    args = ap.parse_args(argv)
    if args.reference not in args.names:
        args.names.append(args.reference)
    results = {}
    for name in args.names:  # every result checked before any data or model is loaded
        path = RESULTS / f"{name}.json"
        if not path.exists():
            ap.error(f"{path} not found: run bench/sentiment_domains.py --out {name} first")
        results[name] = read_json(path)
        if (split := results[name].get("config", {}).get("eval_split", "test")) != "test":
            ap.error(f"{path} was scored on {split}, not test")
        missing = [str(f) for row in ROWS for f in _seed_artifacts(results[name], row) if not f.is_dir()]
        if missing:
            ap.error(f"the models of {name} are needed: {', '.join(missing)} not found")
    tests = {s: load_split(s, "test") for s in SOURCES}
    labels = sorted({y for _, ys in tests.values() for y in ys})
    index = {y: i for i, y in enumerate(labels)}
    truth = {s: np.array([index[y] for y in ys]) for s, (_, ys) in tests.items()}
    preds: dict[str, Any] = {}
    for name, result in results.items():
        preds[name] = {}
        for row in ROWS:
            per_source: dict[str, list[np.ndarray]] = {s: [] for s in SOURCES}
            for folder in _seed_artifacts(result, row):
                clf = TextClassifier(str(folder))
                for s, (texts, _) in tests.items():
                    per_source[s].append(np.array([index[clf.labels[i]] for i in clf.predict_proba(texts).argmax(1)]))
            preds[name][row] = {s: np.stack(v) for s, v in per_source.items()}
    out = spread(truth, preds, args.reference, len(labels), args.resamples, args.threshold, args.min_gain)
    print_table(["candidate", "PB acc [95%]", f"P(acc>={args.threshold})", "vs reference [95%]",
                 "SemEval gain [95%]", "FiQA gain [95%]"],
                [[n, f"{c['phrasebank_accuracy']['mean']:.3f} {c['phrasebank_accuracy']['ci95']}",
                  f"{c['phrasebank_accuracy']['share_at_or_above_threshold']:.2f}",
                  f"{c['accuracy_minus_reference']['mean']:+.3f} {c['accuracy_minus_reference']['ci95']}",
                  f"{c['semeval_gain']['mean']:+.3f} {c['semeval_gain']['ci95']}",
                  f"{c['fiqa_gain']['mean']:+.3f} {c['fiqa_gain']['ci95']}"] for n, c in out.items()])
    write_result("sentiment_test_spread", {"resamples": args.resamples, "threshold": args.threshold,
                                           "min_gain": args.min_gain, "reference": args.reference,
                                           "n": {s: len(truth[s]) for s in SOURCES}, "labels": labels,
                                           "candidates": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
