"""bench/sentiment_test_spread.py: bootstrap intervals for the sentiment candidates' test figures."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from bench_scripts import BENCH, load_bench_script
from sklearn.metrics import f1_score

from verticore.registry.gate import macro_f1_resamples


def _load():
    return load_bench_script("sentiment_test_spread")


def test_vectorised_macro_f1_matches_sklearn_row_by_row():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 3, size=(50, 40)), rng.integers(0, 3, size=(50, 40))
    y_pred[0] = 0  # a row predicting one label only: absent labels still count when in the truth
    y_true[1], y_pred[1] = y_true[1] % 2, y_pred[1] % 2  # label 2 in neither: left out of the mean, as sklearn
    # the core's resampled macro-F1 (shared with the promotion gate), each row its own "resample"
    flat_true, flat_pred = y_true.ravel(), y_pred.ravel()
    rows = np.arange(y_true.size).reshape(y_true.shape)
    ours = macro_f1_resamples(flat_true, flat_pred, rows, 3, skip_absent=True)
    ref = [f1_score(t, p, average="macro", zero_division=0) for t, p in zip(y_true, y_pred)]
    assert np.allclose(ours, ref)


def _case(n: int = 60, seeds: int = 3):
    rng = np.random.default_rng(2)
    truth = {s: rng.integers(0, 3, n) for s in ("phrasebank", "semeval2017_headlines", "fiqa2018_posts")}
    wrong = {s: (t + 1) % 3 for s, t in truth.items()}
    noisy = {s: np.where(rng.random(n) < 0.8, t, (t + 1) % 3) for s, t in truth.items()}

    def rows(multi, pb_only):
        return {"multi_source": {s: np.stack([multi[s]] * seeds) for s in truth},
                "phrasebank_only": {s: np.stack([pb_only[s]] * seeds) for s in truth}}

    preds = {"perfect": rows(truth, wrong), "noisy": rows(noisy, noisy)}
    return truth, preds, noisy


def test_spread_is_paired_and_reports_thresholds():
    spread = _load()
    truth, preds, noisy = _case()
    out = spread.spread(truth, preds, reference="noisy", n_labels=3, resamples=500, threshold=0.86)
    perfect, ref = out["perfect"], out["noisy"]
    assert perfect["phrasebank_accuracy"] == {"mean": 1.0, "ci95": [1.0, 1.0], "share_at_or_above_threshold": 1.0}
    assert perfect["semeval_gain"]["mean"] == 1.0 and perfect["semeval_gain"]["share_at_or_above_min_gain"] == 1.0
    # the reference against itself: zero difference on every resample (paired), zero gain
    assert ref["accuracy_minus_reference"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    assert ref["fiqa_gain"]["ci95"] == [0.0, 0.0] and ref["fiqa_gain"]["share_at_or_above_min_gain"] == 0.0
    acc = float((noisy["phrasebank"] == truth["phrasebank"]).mean())
    lo, hi = ref["phrasebank_accuracy"]["ci95"]
    assert lo < acc < hi and hi - lo > 0.05  # 60 texts: a wide interval around the point figure
    assert perfect["accuracy_minus_reference"]["mean"] == pytest.approx(1.0 - acc, abs=1e-4)


def test_spread_refuses_an_unknown_reference_and_mismatched_predictions():
    spread = _load()
    truth, preds, _ = _case()
    with pytest.raises(ValueError, match="reference 'missing'"):
        spread.spread(truth, preds, reference="missing", n_labels=3, resamples=10)
    preds["noisy"]["multi_source"]["phrasebank"] = preds["noisy"]["multi_source"]["phrasebank"][:, :-1]
    with pytest.raises(ValueError, match="noisy.multi_source.phrasebank"):
        spread.spread(truth, preds, reference="noisy", n_labels=3, resamples=10)


def test_seed_artifacts_follow_the_first_seed_folder():
    spread = _load()
    result = {"multi_source": {"artifact": "/x/run_multi_source_seed42", "seeds": [42, 43]}}
    assert [p.name for p in spread._seed_artifacts(result, "multi_source")] == ["run_multi_source_seed42",
                                                                                "run_multi_source_seed43"]


@pytest.mark.parametrize("name, message", [("no_such_candidate", "no_such_candidate.json not found"),
                                           ("sentiment_domains_upsample1_dev", "was scored on dev, not test")])
def test_cli_refuses_missing_or_dev_results_before_loading_anything(name, message):
    proc = subprocess.run([sys.executable, str(BENCH / "sentiment_test_spread.py"), name],
                          capture_output=True, text=True, timeout=120, cwd=BENCH.parent)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr
