"""PII redaction with the NER pass (issue #15): how many person names and places does ``redact_pii``
remove, and how often does it redact customer questions that hold none?

* **Removal**: every CoNLL-2003 test sentence (``eng.testb``; tokens joined by spaces) goes through
  ``customer_service.guardrails.redact_pii`` with the NER pass (a token-classifier artifact,
  ``--ner``, default the one ``bench/ner.py`` trains) and with the pattern rules alone. A gold
  ``PER`` / ``LOC`` entity counts as removed when its text no longer occurs in the redacted sentence
  (a partly removed name, e.g. the surname left, is not removed).
* **False redactions**: the Bitext customer-support questions (``queries.csv``, no real names or
  places) through the same two settings; the share of questions changed at all, and the share
  changed by the NER pass (a ``[NAME]`` / ``[ADDRESS]`` placeholder appears).

Writes ``bench/results/pii.json``: ``{"conll_test": {"PER": {"entities", "removed", "removed_share",
"patterns_only_share"}, "LOC": {...}}, "bitext_queries": {"n", "changed_share",
"ner_redacted_share", "patterns_only_changed_share", "examples"}, "ner_model", "seconds"}``.

    python bench/pii.py [--ner DIR] [--min-score 0.5] [--limit N]
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from common import ARTIFACTS, DATA, print_table, write_result

from verticore.errors import DataError

TYPES = ("PER", "LOC")


def entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(type, surface text) of every entity of a BIO-tagged sentence (IOB1 and IOB2 both read)."""
    out: list[tuple[str, str]] = []
    cur_type, cur_words = None, []
    for word, tag in zip(tokens, tags):
        prefix, _, typ = tag.partition("-")
        if tag == "O" or (prefix == "B") or typ != cur_type:
            if cur_type:
                out.append((cur_type, " ".join(cur_words)))
            cur_type, cur_words = (typ, [word]) if tag != "O" else (None, [])
        else:
            cur_words.append(word)
    if cur_type:
        out.append((cur_type, " ".join(cur_words)))
    return out


def _removed(surface: str, redacted: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(surface) + r"(?!\w)", redacted) is None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ner", type=Path, default=ARTIFACTS / "ner-full", help="token-classifier artifact (bench/ner.py)")
    ap.add_argument("--min-score", type=float, default=0.5, help="NER span score threshold")
    ap.add_argument("--limit", type=int, default=None, help="first N sentences / questions only (smoke runs)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if not (args.ner / "labels.json").exists() and not (args.ner / "config.json").exists():
        raise DataError(f"no NER model in {args.ner}: train one with `python bench/ner.py` or pass --ner DIR")
    from customer_service.guardrails import configure_pii_ner, redact_pii
    from verticore.finetune import read_conll
    from verticore.io import read_table

    t0 = time.perf_counter()
    ner = configure_pii_ner(args.ner, min_score=args.min_score, device=args.device)
    configure_pii_ner(None)  # the process-wide setting stays off; the bench passes ner= per call
    tokens, tags = read_conll(DATA / "conll2003" / "eng.testb")
    if args.limit:
        tokens, tags = tokens[: args.limit], tags[: args.limit]
    counts = {t: {"entities": 0, "removed": 0, "patterns_only_removed": 0} for t in TYPES}
    for words, row in zip(tokens, tags):
        ents = [(t, s) for t, s in entities(words, row) if t in TYPES]
        if not ents:
            continue
        text = " ".join(words)
        with_ner, patterns = redact_pii(text, ner=ner), redact_pii(text)
        for typ, surface in ents:
            counts[typ]["entities"] += 1
            counts[typ]["removed"] += _removed(surface, with_ner)
            counts[typ]["patterns_only_removed"] += _removed(surface, patterns)
    conll = {t: {**c, "removed_share": round(c["removed"] / c["entities"], 4) if c["entities"] else None,
                 "patterns_only_share": round(c["patterns_only_removed"] / c["entities"], 4) if c["entities"] else None}
             for t, c in counts.items()}
    queries = read_table(DATA / "bitext_customer_support" / "splits" / "queries.csv", ["question"])["question"]
    queries = [str(q) for q in queries][: args.limit]
    changed = ner_hits = pattern_changed = 0
    examples = []
    for q in queries:
        out = redact_pii(q, ner=ner)
        changed += out != q
        pattern_changed += redact_pii(q) != q
        if "[NAME]" in out or "[ADDRESS]" in out:
            ner_hits += 1
            if len(examples) < 10:
                examples.append({"question": q, "redacted": out})
    n = len(queries)
    bitext = {"n": n, "changed_share": round(changed / n, 4), "ner_redacted_share": round(ner_hits / n, 4),
              "patterns_only_changed_share": round(pattern_changed / n, 4), "examples": examples}
    result = {"conll_test": conll, "bitext_queries": bitext, "ner_model": str(args.ner), "min_score": args.min_score,
              "seconds": round(time.perf_counter() - t0, 1),
              "rule": "an entity is removed when its text no longer occurs in the redacted sentence"}
    print_table(["CoNLL test", "entities", "removed (NER)", "patterns only"],
                [[t, c["entities"], c["removed_share"], c["patterns_only_share"]] for t, c in conll.items()])
    print(f"Bitext questions: {n}; changed {bitext['changed_share']:.4f} (NER placeholders "
          f"{bitext['ner_redacted_share']:.4f}; patterns only {bitext['patterns_only_changed_share']:.4f})")
    if args.limit:
        print("(--limit: smoke run, result not written)")
    else:
        write_result("pii", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
