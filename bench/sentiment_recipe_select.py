"""Choose the multi-source sentiment recipe on the dev splits only (issue #15), by a rule fixed before
any candidate's test figures are read.

Each candidate is a ``bench/sentiment_domains.py --eval-split dev --out NAME`` result
(``bench/results/NAME_dev.json``: the PhraseBank-only and multi-source rows of one recipe, 3 seeds,
scored on every source's dev split). The rule mirrors the issue's targets:

1. keep the candidates whose multi-source row beats their own PhraseBank-only row by >= 5 points of
   macro-F1 (mean over seeds) on both the SemEval headlines and the FiQA posts dev splits;
2. of those, choose the highest mean PhraseBank dev accuracy;
3. ties (within 0.001) go to the higher mean of the three sources' dev macro-F1.

Caveat the rule cannot remove: both rows pick their checkpoints on the dev splits they are scored on
here, so dev figures flatter every row a little; the rule compares candidates, not absolute targets.

    python bench/sentiment_recipe_select.py sentiment_domains sentiment_domains_upsample1 ...

Writes ``bench/results/sentiment_recipe_selection.json``: ``{"rule", "candidates": {NAME: {"config",
"phrasebank_acc", "semeval_gain", "fiqa_gain", "mean_macro_f1", "eligible"}}, "chosen"}``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

RULE = ("eligible: multi-source beats its own PhraseBank-only row by >= 0.05 dev macro-F1 on SemEval headlines and "
        "on FiQA posts (means over seeds); chosen: highest mean PhraseBank dev accuracy, ties (0.001) to the higher "
        "mean of the three dev macro-F1s")
MIN_GAIN = 0.05


def summarise(dev: dict[str, Any]) -> dict[str, Any]:
    """The rule's figures for one candidate's ``NAME_dev.json``; ValueError when it lacks a row or source."""
    sources = ("phrasebank", "semeval2017_headlines", "fiqa2018_posts")
    missing = [f"{row}.{src}" for row in ("multi_source", "phrasebank_only") for src in sources
               if not isinstance(dev.get(row), dict) or "macro_f1" not in dev[row].get(src, {})]
    if missing:
        raise ValueError(f"not a sentiment_domains.py --eval-split dev result: missing {', '.join(missing)}")
    multi, pb_only = dev["multi_source"], dev["phrasebank_only"]
    semeval = multi["semeval2017_headlines"]["macro_f1"] - pb_only["semeval2017_headlines"]["macro_f1"]
    fiqa = multi["fiqa2018_posts"]["macro_f1"] - pb_only["fiqa2018_posts"]["macro_f1"]
    mean_f1 = sum(multi[s]["macro_f1"] for s in ("phrasebank", "semeval2017_headlines", "fiqa2018_posts")) / 3
    return {"config": dev.get("config", {}), "phrasebank_acc": multi["phrasebank"]["accuracy"],
            "phrasebank_acc_per_seed": multi["phrasebank"].get("accuracy_per_seed"),
            "semeval_gain": round(semeval, 4), "fiqa_gain": round(fiqa, 4), "mean_macro_f1": round(mean_f1, 4),
            "eligible": semeval >= MIN_GAIN and fiqa >= MIN_GAIN}


def choose(candidates: dict[str, dict[str, Any]]) -> str | None:
    """The chosen candidate's name under :data:`RULE`, or None when none is eligible."""
    eligible = [(round(c["phrasebank_acc"], 3), c["mean_macro_f1"], name)
                for name, c in candidates.items() if c["eligible"]]
    return max(eligible)[2] if eligible else None


def main(argv: list[str] | None = None) -> int:
    from common import RESULTS, print_table, write_result  # the bench folder's helpers (run as a script)

    from verticore.io import read_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="+", help="candidate result names (each has bench/results/NAME_dev.json)")
    args = ap.parse_args(argv)
    candidates = {}
    for name in args.names:
        path = RESULTS / f"{name}_dev.json"
        if not path.exists():
            ap.error(f"{path} not found: run bench/sentiment_domains.py --eval-split dev --out {name} first")
        try:
            candidates[name] = summarise(read_json(path))
        except ValueError as exc:
            ap.error(f"{path}: {exc}")
    chosen = choose(candidates)
    print_table(["candidate", "PB dev acc", "SemEval gain", "FiQA gain", "mean F1", "eligible"],
                [[n, f"{c['phrasebank_acc']:.4f}", f"{c['semeval_gain']:+.3f}", f"{c['fiqa_gain']:+.3f}",
                  f"{c['mean_macro_f1']:.4f}", "yes" if c["eligible"] else "no"] for n, c in candidates.items()])
    print(f"chosen: {chosen}")
    write_result("sentiment_recipe_selection", {"rule": RULE, "candidates": candidates, "chosen": chosen})
    return 0


if __name__ == "__main__":
    sys.exit(main())
