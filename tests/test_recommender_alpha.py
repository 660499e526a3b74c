"""Recommender hybrid weight: `recommender build` tunes alpha on a time holdout and stores it (issue 12)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "apps" / "recommender" / "samples"


def _cli(argv: list[str]) -> None:
    from recommender.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


@pytest.fixture(scope="module")
def tuned_state(tmp_path_factory):
    state = tmp_path_factory.mktemp("rec_alpha") / "state"
    _cli(["build", "--items", str(SAMPLES / "items.csv"), "--interactions", str(SAMPLES / "interactions.csv"),
          "--min-rating", "4", "--state", str(state)])
    return state


def test_holdout_last_holds_out_the_latest_items_of_users_with_enough_history():
    from recommender.interactions import Interactions
    from recommender.training import holdout_last

    df = pd.DataFrame({"user": ["u1"] * 5 + ["u2"] * 2, "item": ["a", "b", "c", "d", "e", "a", "b"],
                       "weight": 1.0, "timestamp": [5, 1, 2, 3, 4, 1, 2]})
    fit, held = holdout_last(Interactions.from_dataframe(df), 0.2)
    assert held == {"u1": {"a"}}  # the latest by time (timestamp 5), not the last row read
    assert sorted(fit.seen("u1")) == ["b", "c", "d", "e"] and fit.seen("u2") == {"a", "b"}


def test_build_tunes_alpha_on_the_sample_data_and_stores_it(tuned_state, capsys):
    from recommender.recommender import Recommender
    from recommender.training import ALPHA_GRID

    cfg = json.loads((tuned_state / "recommender.json").read_text())["init_parameters"]
    tuning = cfg["alpha_tuning"]
    scores = {float(a): s for a, s in tuning["scores"].items()}
    assert sorted(scores) == sorted(ALPHA_GRID)
    assert tuning["metric"] == "ndcg@10" and tuning["users"] > 0
    assert cfg["alpha"] == tuning["alpha"]
    assert scores[cfg["alpha"]] == max(scores.values())  # the holdout metric at the chosen alpha is the grid max
    rec = Recommender.load(tuned_state)
    assert rec.alpha == cfg["alpha"] and rec.alpha_tuning == tuning and rec.mode == "hybrid"
    _cli(["recommend", "user01", "-k", "3", "--state", str(tuned_state), "--json"])
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_explicit_alpha_overrides_and_skips_tuning(tuned_state, tmp_path, capsys):
    state = tmp_path / "state"
    _cli(["build", "--items", str(SAMPLES / "items.csv"), "--interactions", str(SAMPLES / "interactions.csv"),
          "--alpha", "0.7", "--state", str(state)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["alpha"] == 0.7 and out["alpha_tuning"] is None
    cfg = json.loads((state / "recommender.json").read_text())["init_parameters"]
    assert cfg["alpha"] == 0.7 and cfg["alpha_tuning"] is None
    with pytest.raises(SystemExit) as e:  # outside [0, 1]: a usage error
        _cli(["build", "--items", str(SAMPLES / "items.csv"), "--alpha", "1.5", "--state", str(tmp_path / "s2")])
    assert e.value.code == 2


def test_tune_alpha_matches_a_manual_grid_search(tuned_state):
    from recommender.cf import EASE
    from recommender.recommender import Recommender
    from recommender.training import holdout_last, tune_alpha
    from verticore.evaluation import ranking_metrics

    rec = Recommender.load(tuned_state)
    tuned = tune_alpha(rec.catalog, rec.interactions, grid=(0.0, 1.0), max_users=20)
    fit, held = holdout_last(rec.interactions)
    users = [u for u in held][:20]
    ease = EASE(l2=200.0).fit(fit)
    for a in (0.0, 1.0):
        r = Recommender(rec.catalog, fit, cf=ease, mode="hybrid", alpha=a)
        recs = {u: [x.item for x in r.recommend(u, 10, explain=False)] for u in users}
        assert tuned.scores[a] == pytest.approx(ranking_metrics(recs, {u: held[u] for u in users})["ndcg@10"])
    assert tuned.alpha == max(tuned.scores, key=tuned.scores.__getitem__)


def test_too_little_history_falls_back_to_the_default_with_a_warning(tmp_path, capsys):
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,description\na,Ghost Ship,ghosts\nb,Haunted Hotel,ghosts\nc,Bunny Hop,cartoon\n",
                     encoding="utf-8")
    inter = tmp_path / "inter.csv"
    inter.write_text("user,item,rating,timestamp\nu1,a,5,1\nu1,b,5,2\nu2,c,5,1\n", encoding="utf-8")
    _cli(["build", "--items", str(items), "--interactions", str(inter), "--state", str(tmp_path / "s")])
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["alpha"] == 0.5 and "skipped" in out["alpha_tuning"]
    assert "alpha not tuned" in captured.err
