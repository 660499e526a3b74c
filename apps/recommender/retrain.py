"""The recommender's models in the retrain loop: ``verticore retrain --app recommender --model cf|embedder``.

Feedback is behaviour: the events recorded through ``POST /v1/rec/events`` (or
``Recommender.record_events``) are appended to the state's ``interactions.csv``; the loop counts
those newer than the production version's data and retrains on every interaction but the fixed
split. Both models are :class:`verticore.registry.loop.RetrainableRanker`\\ s gated on the mean
per-user NDCG@10 of the fixed split (paired bootstrap over users, McNemar on hits):

* ``cf``: EASE refitted on the interactions (recipe: ``l2``), scored as a pure CF ranker;
* ``embedder``: the embedder fine-tuned on co-interaction pairs (recipe: the
  :func:`~recommender.training.finetune_on_behaviour` settings), scored as a text-only
  recommender (user profile from the tuned item vectors).

The fixed evaluation split is each user's latest 20% of the bundled sample interactions
(:func:`~recommender.training.holdout_last`), or ``$RECOMMENDER_EVAL`` (a ``user,item`` table);
its pairs are never trained on, even when an event repeats one. The state is the one ``make demo``
prepared under ``$VERTICORE_HOME/recommender/state`` (``home`` is the Verticore home).
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from verticore.errors import DataError
from verticore.registry.loop import Label, LabelSet

EVAL_ENV = "RECOMMENDER_EVAL"
K = 10


class _BehaviourModel:
    """What both recommender models share: the state, its interactions, the fixed split."""

    primary_metric = f"ndcg@{K}"
    default_recipe: dict[str, Any] = {}

    # -- data ---------------------------------------------------------------------------------
    def _state(self, home: Path) -> Path:
        from .demo import demo_dir

        state = demo_dir(Path(home)) / "state"
        if not (state / "recommender.json").exists():
            raise DataError(f"no recommender state in {state}; run `make demo` (or `recommender demo --home "
                            f"{home}`) first")
        return state

    def _interactions(self, home: Path) -> Any:
        from .interactions import Interactions, repair_tail

        f = self._state(home) / "interactions.csv"
        if not f.exists():
            return Interactions.empty()
        repair_tail(f)  # a crash mid-append leaves a torn last line
        return Interactions.from_file(f, allow_empty=True)

    def _catalog(self, home: Path) -> Any:
        from .catalog import Catalog

        return Catalog.load(self._state(home) / "catalog")

    def fixed_eval_split(self, home: Path) -> dict[str, set[str]]:
        key = (str(Path(home).resolve()), os.environ.get(EVAL_ENV, ""))
        cache = self.__dict__.setdefault("_held", {})
        if key not in cache:  # asked several times per retrain: read the sample once
            cache[key] = self._read_eval_split(home)
        return {u: set(items) for u, items in cache[key].items()}

    def _read_eval_split(self, home: Path) -> dict[str, set[str]]:
        from verticore.io import read_table

        from .demo import SAMPLES
        from .interactions import Interactions
        from .training import holdout_last

        if os.environ.get(EVAL_ENV):
            df = read_table(Path(os.environ[EVAL_ENV]), ["user", "item"])
            held: dict[str, set[str]] = {}
            for u, i in zip(df["user"].astype(str), df["item"].astype(str)):
                held.setdefault(u, set()).add(i)
            return held
        known = set(self._catalog(home).ids)
        sample = Interactions.from_file(SAMPLES / "interactions.csv", known_items=known)
        return {u: items for u, items in holdout_last(sample, 0.2)[1].items() if items}

    def _training_part(self, home: Path) -> Any:
        from .interactions import Interactions

        inter = self._interactions(home)
        held = self.fixed_eval_split(home)
        if not len(inter):
            return inter
        df = inter.df
        keep = [item not in held.get(user, ()) for user, item in zip(df["user"], df["item"])]
        return Interactions(df[keep].reset_index(drop=True))

    def collect_events(self, home: Path, since: datetime | None) -> LabelSet:
        from verticore.io import read_table
        from verticore.text import utc_iso

        from .demo import SAMPLES

        inter = self._training_part(home)  # the held-out pairs are never training data, so never "new"
        if not len(inter):
            return LabelSet()
        sample = read_table(SAMPLES / "interactions.csv", ["user_id", "item_id", "timestamp"])
        base = set(zip(sample["user_id"].astype(str), sample["item_id"].astype(str),
                       sample["timestamp"].astype(float).round().astype(int)))
        cut = since.timestamp() if since is not None else None
        out = []
        for u, i, t in zip(inter.df["user"], inter.df["item"], inter.df["timestamp"]):
            if cut is None or float(t) > cut:
                source = "sample" if (str(u), str(i), int(round(float(t)))) in base else "event"
                out.append(Label(str(u), str(i), source, utc_iso(datetime.fromtimestamp(float(t), tz=timezone.utc)), False))
        return LabelSet(out)

    def training_data(self, home: Path) -> dict[str, Any]:
        from verticore.io import fingerprint_texts
        from verticore.text import utc_iso

        part = self._training_part(home)
        if not len(part):
            return {"examples": 0, "fingerprint": fingerprint_texts([], []), "labels_until": None}
        df = part.df
        rows = sorted(zip(df["user"].astype(str), df["item"].astype(str), df["weight"].astype(str)))
        return {"examples": len(df),
                "fingerprint": fingerprint_texts([f"{u}\t{i}" for u, i, _ in rows], [w for *_, w in rows]),
                "labels_until": utc_iso(datetime.fromtimestamp(float(df["timestamp"].max()), tz=timezone.utc),
                                        timespec="microseconds")}

    def _checked_training_part(self, home: Path) -> Any:
        part = self._training_part(home)
        if not len(part):
            raise DataError("no interactions to train on (the state has none outside the fixed evaluation split)")
        return part

    def _score(self, ranked: Mapping[str, Sequence[str]], home: Path, users: Sequence[str]) -> list[float]:
        from verticore.evaluation import per_user_ranking_metrics

        held = self.fixed_eval_split(home)
        per_user = per_user_ranking_metrics(dict(ranked), {u: held.get(u, set()) for u in users}, k=K,
                                            include_empty=True)
        return [per_user[u][self.primary_metric] for u in users]


class CFRetrainer(_BehaviourModel):
    """:class:`verticore.registry.loop.RetrainableRanker` of the recommender's EASE model."""

    default_recipe: dict[str, Any] = {"l2": 20.0}

    def train(self, recipe: Mapping[str, Any], home: Path, out_dir: Path) -> Path:
        from .cf import EASE

        r = {**self.default_recipe, **dict(recipe)}
        EASE(l2=float(r["l2"])).fit(self._checked_training_part(home)).save(out_dir)
        return Path(out_dir)

    def score_users(self, artifact_dir: Path, home: Path, users: Sequence[str]) -> list[float]:
        from .cf import EASE

        ease = EASE.load(artifact_dir)
        part = self._training_part(home)
        ranked = {}
        for u in users:
            history = sorted(part.seen(u)) if part.has_user(u) else []
            ranked[u] = [item for item, _ in ease.recommend(history, K, exclude=history)] if history else []
        return self._score(ranked, home, users)


class EmbedderRetrainer(_BehaviourModel):
    """:class:`verticore.registry.loop.RetrainableRanker` of the behaviour-tuned item embedder."""

    default_recipe: dict[str, Any] = {"window": 3, "max_gap_days": None, "batch_size": 16, "learning_rate": 5e-5,
                                      "max_length": 64, "max_steps": 30, "epochs": 1, "seed": 42}

    def train(self, recipe: Mapping[str, Any], home: Path, out_dir: Path) -> Path:
        from .training import finetune_on_behaviour

        r = {**self.default_recipe, **dict(recipe)}
        res = finetune_on_behaviour(self._checked_training_part(home), self._catalog(home).texts, out_dir,
                                    window=int(r["window"]), max_gap_days=r["max_gap_days"],
                                    batch_size=int(r["batch_size"]), learning_rate=float(r["learning_rate"]),
                                    max_length=int(r["max_length"]), epochs=int(r["epochs"]),
                                    max_steps=None if r["max_steps"] is None else int(r["max_steps"]),
                                    dev_fraction=0.0, seed=int(r["seed"]), show_progress=False)
        return Path(res.artifact_dir)

    def score_users(self, artifact_dir: Path, home: Path, users: Sequence[str]) -> list[float]:
        from verticore import Embedder

        from .catalog import Catalog
        from .recommender import Recommender

        current = self._catalog(home)
        catalog = Catalog.from_records([current.get(i) for i in current.ids], embedder=Embedder(str(artifact_dir)),
                                       template=current.template, id_field=current.id_field)
        rec = Recommender(catalog, self._training_part(home), mode="text")
        ranked = {u: [r.item for r in rec.recommend(u, K, explain=False)] if rec.known_user(u) else []
                  for u in users}
        return self._score(ranked, home, users)
