"""bench/sentiment_recipe_select.py: the dev-only rule that picks the multi-source sentiment recipe."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import BENCH, load_bench_script


def _load():
    return load_bench_script("sentiment_recipe_select")


def _dev(pb_acc: float, multi_f1: tuple[float, float, float], pb_only_f1: tuple[float, float, float]) -> dict:
    sources = ("phrasebank", "semeval2017_headlines", "fiqa2018_posts")
    return {"multi_source": {s: {"accuracy": pb_acc if s == "phrasebank" else 0.7, "macro_f1": f}
                             for s, f in zip(sources, multi_f1)},
            "phrasebank_only": {s: {"accuracy": 0.8, "macro_f1": f} for s, f in zip(sources, pb_only_f1)}}


def test_rule_needs_both_gains_then_prefers_phrasebank_accuracy():
    select = _load()
    candidates = {
        # the best PhraseBank accuracy, but FiQA gains only 4 points: not eligible
        "narrow": select.summarise(_dev(0.90, (0.85, 0.62, 0.44), (0.84, 0.55, 0.40))),
        "lower": select.summarise(_dev(0.85, (0.80, 0.62, 0.55), (0.82, 0.55, 0.40))),
        "higher": select.summarise(_dev(0.87, (0.82, 0.61, 0.50), (0.82, 0.55, 0.40))),
    }
    assert not candidates["narrow"]["eligible"]
    assert candidates["higher"]["eligible"] and candidates["lower"]["eligible"]
    assert select.choose(candidates) == "higher"


def test_rule_breaks_accuracy_ties_on_mean_f1_and_can_choose_nothing():
    select = _load()
    a = select.summarise(_dev(0.8601, (0.80, 0.62, 0.50), (0.82, 0.55, 0.40)))
    b = select.summarise(_dev(0.8604, (0.80, 0.61, 0.50), (0.82, 0.55, 0.40)))
    assert select.choose({"a": a, "b": b}) == "a"  # same accuracy to 0.001; a has the higher mean F1
    none = select.summarise(_dev(0.9, (0.9, 0.56, 0.9), (0.8, 0.55, 0.4)))
    assert select.choose({"none": none}) is None


def test_missing_or_malformed_candidates_are_refused_clearly(tmp_path):
    select = _load()
    with pytest.raises(ValueError, match="missing multi_source.fiqa2018_posts"):
        select.summarise({"phrasebank_only": _dev(0.9, (0.8, 0.6, 0.5), (0.8, 0.5, 0.4))["phrasebank_only"],
                          "multi_source": {"phrasebank": {"accuracy": 0.9, "macro_f1": 0.8},
                                           "semeval2017_headlines": {"macro_f1": 0.6}}})
    proc = subprocess.run([sys.executable, str(BENCH / "sentiment_recipe_select.py"), "no_such_candidate"],
                          capture_output=True, text=True, timeout=120, cwd=Path(BENCH).parent)
    assert proc.returncode == 2 and "no_such_candidate_dev.json not found" in proc.stderr
    assert "Traceback" not in proc.stderr
