"""The retrain loop for rankers (issue #14): recorded events -> refit -> per-user NDCG gate -> promote.

A fake ranker checks the loop's decisions exactly; the recommender's own ``cf`` and ``embedder``
models run for real on the fast demo state.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from verticore.errors import DataError
from verticore.evaluation import per_user_ranking_metrics, ranking_metrics
from verticore.plugins import AppSpec
from verticore.registry import ModelRegistry
from verticore.registry.gate import compare_scores
from verticore.registry.loop import Label, LabelSet, RetrainableRanker, retrain

USERS = [f"u{i}" for i in range(30)]


class FakeRanker:
    """Recommends, for every user, the items its training events say are popular; the eval split
    holds item "good" for every user."""

    primary_metric = "ndcg@10"
    default_recipe = {"kind": "popular"}

    def __init__(self) -> None:
        self.events: list[Label] = []

    def collect_events(self, home, since):
        return LabelSet(list(self.events)).since(since)

    def fixed_eval_split(self, home):
        return {u: {"good"} for u in USERS}

    def training_data(self, home):
        return {"examples": len(self.events), "fingerprint": str(len(self.events)),
                "labels_until": LabelSet(list(self.events)).latest_time()}

    def train(self, recipe, home, out_dir):
        counts: dict[str, int] = {}
        for e in self.events:
            counts[e.label] = counts.get(e.label, 0) + 1
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        top = sorted(counts, key=lambda i: (-counts[i], i))[:10]
        (Path(out_dir) / "top.json").write_text(json.dumps(top))
        return Path(out_dir)

    def score_users(self, artifact_dir, home, users):
        top = json.loads((Path(artifact_dir) / "top.json").read_text())
        per_user = per_user_ranking_metrics({u: top for u in users}, self.fixed_eval_split(home), k=10)
        return [per_user[u]["ndcg@10"] for u in users]


def _events(items, when):
    return [Label(u, i, "event", when, False) for u in USERS[:5] for i in items]


@pytest.fixture()
def fake():
    model = FakeRanker()
    return AppSpec(name="fake_rec", title="Fake recommender", models={"pop": model}), model


def test_per_user_metrics_average_to_the_ranking_metrics():
    rec = {"a": ["x", "y", "z"], "b": ["q", "x"], "c": []}
    rel = {"a": {"y"}, "b": {"x", "w"}, "c": {"x"}, "d": set()}
    per = per_user_ranking_metrics(rec, rel, k=2)
    assert list(per) == ["a", "b", "c"]
    assert per["a"]["ndcg@2"] == pytest.approx(1 / np.log2(3)) and per["c"]["hit@2"] == 0.0
    mean = ranking_metrics(rec, rel, k=2)
    for key in ("ndcg@2", "recall@2", "hit@2", "mrr"):
        assert mean[key] == pytest.approx(np.mean([p[key] for p in per.values()]))


def test_compare_scores_gates_on_the_mean_with_a_paired_ci():
    good = compare_scores([1.0] * 20 + [0.0] * 10, [0.5] * 30, primary="ndcg@10", tolerance=0.01)
    assert good.passed and good.delta == pytest.approx(1 / 6) and good.ci_low <= good.delta <= good.ci_high
    assert good.mcnemar.candidate_only == 0 and good.mcnemar.production_only == 10  # hits: score > 0
    bad = compare_scores([0.0] * 30, [0.4] * 30, primary="ndcg@10", tolerance=0.01)
    assert not bad.passed and "worse than production" in bad.reason and bad.primary == "ndcg@10"
    with pytest.raises(DataError, match="same fixed evaluation split"):
        compare_scores([1.0], [1.0, 0.0], primary="ndcg@10")
    with pytest.raises(DataError, match="finite"):
        compare_scores([float("nan")], [1.0], primary="ndcg@10")


def test_ranker_loop_promotes_better_rejects_worse_and_skips_without_events(tmp_path, fake):
    app, model = fake
    reg = ModelRegistry(tmp_path / "registry")
    assert isinstance(model, RetrainableRanker)
    model.events = _events(["meh", "meh", "good"], "2026-01-01T00:00:00+00:00")
    first = retrain(app, "pop", home=tmp_path, registry=reg)
    assert first.promoted and first.production_after == 1 and first.gate is None
    again = retrain(app, "pop", home=tmp_path, registry=reg)
    assert again.status == "nothing_to_train" and "no new events" in again.message
    # events that make "good" the most popular item: better NDCG, promoted
    model.events += _events(["good"] * 3, "2026-01-02T00:00:00+00:00")
    better = retrain(app, "pop", home=tmp_path, registry=reg)
    assert better.promoted and better.gate["delta"] > 0 and better.gate["primary"] == "ndcg@10"
    assert reg.read_gate(reg.get("fake_rec", "pop", 2))["result"]["n"] == len(USERS)
    # a flood of other items pushes "good" out of the top 10: rejected, production stays v2
    model.events += _events([f"spam{i}" for i in range(12)] * 5, "2026-01-03T00:00:00+00:00")
    worse = retrain(app, "pop", home=tmp_path, registry=reg)
    assert worse.status == "rejected" and "production stays v2" in worse.message
    assert reg.aliases("fake_rec", "pop") == {"production": 2, "candidate": 3}
    dry = retrain(app, "pop", home=tmp_path, registry=reg, dry_run=True)
    assert dry.status == "dry_run" and dry.new_labels == 300  # rejected events stay "new since production"
    assert reg.get("fake_rec", "pop", 3).recipe["training_data"]["new_labels"] == 300


# -- the recommender's models, for real ----------------------------------------------------------
@pytest.fixture()
def rec_home(tmp_path, tmp_path_factory):
    from streamlit_harness import prepared_demo_home

    base = prepared_demo_home(tmp_path_factory, only=("recommender",))
    shutil.copytree(base / "recommender", tmp_path / "recommender")
    return tmp_path


def test_recommender_declares_cf_and_embedder_rankers():
    from recommender.plugin import APP
    from verticore.registry.loop import load_retrainable

    for name in ("cf", "embedder"):
        assert isinstance(load_retrainable(APP, name)[1], RetrainableRanker)


def test_recommender_cf_retrain_learns_from_recorded_events(rec_home):
    from recommender.recommender import Recommender
    from recommender.retrain import CFRetrainer

    reg = ModelRegistry(rec_home / "registry")
    rm = CFRetrainer()
    held = rm.fixed_eval_split(rec_home)
    assert held and all(items for items in held.values())
    part = rm._training_part(rec_home)
    assert not any(i in held.get(u, ()) for u, i in zip(part.df["user"], part.df["item"]))  # split never trained on
    dry = retrain("recommender", "cf", home=rec_home, registry=reg, dry_run=True)
    assert dry.status == "dry_run" and dry.train_examples == len(part)
    v1 = retrain("recommender", "cf", home=rec_home, registry=reg)
    assert v1.promoted and v1.metrics["users"] == len(held) and 0 <= v1.metrics["ndcg@10"] <= 1
    assert retrain("recommender", "cf", home=rec_home, registry=reg).status == "nothing_to_train"
    # events through the app's own API path (fsynced to the state's interactions.csv)
    state = rec_home / "recommender" / "state"
    rec = Recommender.load(state)
    users = sorted(held)[:6]
    items = rec.catalog.ids[:4]
    n = rec.record_events([{"user": u, "item": i, "event": "like"} for u in users for i in items],
                          persist_to=state / "interactions.csv", now=time.time())
    assert n == len(users) * len(items)
    v2 = retrain("recommender", "cf", home=rec_home, registry=reg)
    assert v2.new_labels == n and v2.new_label_sources == {"event": n}
    assert v2.status in {"promoted", "rejected"} and v2.gate["n"] == len(held)
    version = reg.get("recommender", "cf", 2)
    assert version.parent == 1 and version.recipe["l2"] == 20.0
    assert reg.aliases("recommender", "cf")["production"] == (2 if v2.promoted else 1)


def test_recommender_embedder_retrain_runs_a_behaviour_finetune(rec_home, monkeypatch):
    from recommender.retrain import EmbedderRetrainer

    monkeypatch.setattr(EmbedderRetrainer, "default_recipe", {**EmbedderRetrainer.default_recipe, "max_steps": 2})
    reg = ModelRegistry(rec_home / "registry")
    res = retrain("recommender", "embedder", home=rec_home, registry=reg)
    assert res.promoted and res.candidate == 1
    v1 = reg.get("recommender", "embedder", 1)
    assert (v1.artifact_path / "config.json").exists() or any(v1.artifact_path.iterdir())
    assert v1.recipe["max_steps"] == 2 and 0 <= v1.metrics["ndcg@10"] <= 1


def test_recommender_retrain_without_a_state_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no recommender state"):
        retrain("recommender", "cf", home=tmp_path, registry=tmp_path / "registry")


def test_recommender_api_serves_a_promoted_cf_version_without_a_restart(rec_home):
    from fastapi.testclient import TestClient

    from recommender.api import create_app
    from recommender.cf import EASE
    from recommender.recommender import Recommender
    from verticore.serving import ServingSettings

    state = rec_home / "recommender" / "state"
    reg = ModelRegistry(rec_home / "registry")
    v1 = retrain("recommender", "cf", home=rec_home, registry=reg)
    assert v1.promoted
    rec = Recommender.load(state)
    assert rec.follow_registry(reg, interval=0.0) == {"cf": 1}
    client = TestClient(create_app(rec, settings=ServingSettings(insecure_no_auth=True, usage_db=rec_home / "u.db",
                                                                 access_log=False)))
    served_v1 = rec.cf
    user = sorted(rec.interactions.users)[0]
    assert client.get(f"/recommend/{user}").status_code == 200
    # a second version (a very different l2) promoted by hand: the next request serves it
    out = rec_home / "ease_v2"
    EASE(l2=5000.0).fit(rec.interactions).save(out)
    v2 = reg.register("recommender", "cf", out, data_fingerprint="x", recipe={"l2": 5000.0},
                      metrics={"ndcg@10": 0.0}, eval_split=reg.get("recommender", "cf", 1).eval_split)
    reg.promote("recommender", "cf", v2, force=True, reason="test")
    client.get(f"/recommend/{user}")
    assert rec.cf is not served_v1 and rec.cf.l2 == 5000.0
    reg.rollback("recommender", "cf")
    assert rec.sync_models() and rec.cf.l2 == 20.0
