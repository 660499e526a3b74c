"""Helpers shared by the finance benches (finance_alerts.py, finance_pipeline.py)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for p in (ROOT / "shared", ROOT / "apps", BENCH):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import DATA, print_table, write_result  # noqa: E402,F401

PHRASEBANK = DATA / "financial_phrasebank" / "splits" / "50Agree"
ARTIFACTS = BENCH / "artifacts"
# the core bench's full fine-tune (bench/finetune_phrasebank.py) first, else this app's own PhraseBank model
CANDIDATES = [BENCH / "results" / "artifacts" / "phrasebank_full", ARTIFACTS / "phrasebank_full",
              ARTIFACTS / "finance_sentiment_phrasebank"]


def _dev_f1(path: Path) -> float:
    try:
        return float(json.loads((path / "metrics.json").read_text())["dev"]["macro_f1"])
    except (OSError, KeyError, ValueError, TypeError):
        return -1.0


def sentiment_artifact(explicit: str | None, quick: bool) -> Path:
    """The PhraseBank sentiment artifact: ``--model``, else the existing candidate with the best dev
    macro-F1 (smoke-run artifacts lose), else train one (``finance_sentiment.training.train_sentiment``;
    ``--quick`` trains only a few steps)."""
    if explicit:
        return Path(explicit)
    found = [c for c in CANDIDATES if (c / "labels.json").exists() and (c / "model.safetensors").exists()]
    if found:
        best = max(found, key=_dev_f1)
        print(f"sentiment model: {best} (dev macro-F1 {_dev_f1(best):.3f})")
        return best
    from finance_sentiment.training import train_sentiment

    out = ARTIFACTS / ("finance_sentiment_quick" if quick else "finance_sentiment_phrasebank")
    if (out / "labels.json").exists():
        return out
    print(f"no sentiment artifact found; training one into {out} ({'quick' if quick else '2 epochs'})")
    train_sentiment(PHRASEBANK, out, epochs=2, learning_rate=8e-5, max_steps=10 if quick else None,
                    limit=300 if quick else None)
    return out


def read_split(name: str):
    from verticore.io import read_table

    return read_table(PHRASEBANK / f"{name}.csv", ["text", "label"])
