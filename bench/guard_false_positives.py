"""False-positive rate of the customer-service prompt-injection guard on real customer queries.

Every Bitext customer-support instruction is a benign customer message, so every one the guard
flags is a false positive. The reference responses (what a KB built from this set would hold)
are checked too, for information: the bot no longer filters KB passages with the guard.

    python bench/guard_false_positives.py          # prints a table, writes bench/results/guard_false_positives.json
"""
from __future__ import annotations

import csv
import sys
import time

from common import DATA, print_table, write_result

from customer_service.guardrails import detect_injection

CSV = DATA / "bitext_customer_support" / "Bitext_Sample_Customer_Support_Training_Dataset.csv"


def main() -> int:
    """Run the guard over every Bitext instruction (and response); print and save the rates."""
    if not CSV.exists():
        print(f"dataset not found: {CSV}", file=sys.stderr)
        return 2
    with CSV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    queries = [r["instruction"] for r in rows if r["instruction"].strip()]
    answers = [r["response"] for r in rows if r["response"].strip()]
    t0 = time.perf_counter()
    flagged_q = [(q, detect_injection(q)) for q in queries]
    flagged_q = [(q, hit) for q, hit in flagged_q if hit]
    us_per_query = (time.perf_counter() - t0) / max(len(queries), 1) * 1e6
    flagged_a = [a for a in answers if detect_injection(a)]
    result = {
        "dataset": "Bitext customer support (4,514-row release), all instructions",
        "queries": len(queries),
        "flagged": len(flagged_q),
        "false_positive_rate": len(flagged_q) / max(len(queries), 1),
        "examples": [{"text": q[:200], "match": hit} for q, hit in flagged_q[:20]],
        "kb_answers": len(answers),
        "kb_answers_flagged": len(flagged_a),
        "kb_answers_flag_rate": len(flagged_a) / max(len(answers), 1),
        "us_per_query": round(us_per_query, 2),
    }
    print_table(["text set", "n", "flagged", "rate"], [
        ["customer queries", len(queries), len(flagged_q), f"{result['false_positive_rate']:.4%}"],
        ["KB answers (not filtered by the bot)", len(answers), len(flagged_a), f"{result['kb_answers_flag_rate']:.4%}"],
    ])
    for ex in result["examples"]:
        print(f"  flagged: {ex['text']!r} ({ex['match']!r})")
    write_result("guard_false_positives", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
