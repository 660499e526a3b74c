"""Learning-loop bench (issue #14): does the retrain loop improve a model from feedback, and does
its gate stop a poisoned batch?

BANKING77 fixed splits (``$VERTICORE_DATA/banking77/splits``): the production model starts from
``--start-per-intent`` labelled examples per intent (10 by default, 770 in all) drawn from the
training split. Each of ``--rounds`` rounds adds ``--per-round`` "feedback" labels drawn (without
replacement) from the rest of the training split, each timed and sourced as an agent's handoff
resolution, and then calls :func:`verticore.registry.loop.retrain`, exactly what
``verticore retrain`` runs: collect the labels since production, train a candidate with the
production recipe on old + new data, score it on the fixed **dev** split, gate it against
production (tolerance ``--tolerance`` on accuracy, McNemar + paired bootstrap stored on the
version) and promote only if the gate passes. Test accuracy is measured after every round for the
report only; the loop never sees the test split.

A final round adds ``--per-round`` labels whose intents are shuffled among themselves (a poisoned
batch: same texts an agent might send, wrong intents). Expected: accuracy rises every promoted
round and the poisoned candidate is rejected.

Recipes (``--recipe``): ``probe`` (default; frozen default-embedder vectors + multinomial logistic
regression, the ensemble's ``embedding_probe`` member: a full loop runs in minutes on 2 CPU cores)
or ``finetune`` (the core fine-tune the bot's intent model uses, early-stopped on dev; about an
hour on 2 CPU cores).

    python bench/learning_loop.py [--recipe probe|finetune] [--quick]

Writes ``bench/results/learning_loop.json``::

    {"rounds": [{"round", "n_labels", "dev_accuracy", "test_accuracy", "promoted", ...}],
     "poisoned": {"promoted", "dev_accuracy_candidate", "dev_accuracy_production", ...},
     "start_test_accuracy", "final_test_accuracy", "seconds", ...}
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from common import DATA, print_table, write_result

from verticore.errors import DataError
from verticore.inference.embedder import Embedder
from verticore.plugins import AppSpec
from verticore.registry import ModelRegistry
from verticore.registry.loop import Label, LabelSet, retrain

SPLITS = DATA / "banking77" / "splits"
START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


class CachedEmbedder(Embedder):
    """The default embedder with a text -> vector cache, so each round encodes only texts it has not seen
    (the vectors are the embedder's own; caching changes speed, not results)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str] | str, batch_size: int | None = None,
               show_progress: bool = False) -> np.ndarray:
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        missing = [t for t in dict.fromkeys(batch) if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, super().encode(missing, batch_size, show_progress)))
        out = np.stack([self._cache[t] for t in batch]) if batch else np.zeros((0, self.dimension), np.float32)
        return out[0] if single else out


class Banking77Intents:
    """A :class:`~verticore.registry.loop.RetrainableModel` over BANKING77: base data = the starting
    labels, feedback = what the bench hands in round by round, fixed evaluation split = dev."""

    primary_metric = "accuracy"
    per_class_floors = None

    def __init__(self, base: LabelSet, dev: tuple[list[str], list[str]], recipe: str, embedder: CachedEmbedder,
                 quick: bool) -> None:
        self.base, self.dev, self.embedder, self.quick = base, dev, embedder, quick
        self.feedback = LabelSet()
        self.default_recipe: dict[str, Any] = (
            {"kind": "embedding_probe", "c": 10.0} if recipe == "probe" else
            {"kind": "finetune", "epochs": 2 if quick else 8, "batch_size": 32, "learning_rate": 1e-4,
             "max_length": 64, "patience": 3, "seed": 42, "head_init": "linear_probe"})

    def collect_labels(self, home: Path, since: datetime | None) -> LabelSet:
        return self.feedback.since(since)

    def base_data(self, home: Path) -> LabelSet:
        return self.base

    def fixed_eval_split(self, home: Path) -> tuple[list[str], list[str]]:
        return self.dev

    def train(self, recipe: Mapping[str, Any], texts: Sequence[str], labels: Sequence[str], out_dir: Path) -> Path:
        if recipe["kind"] == "embedding_probe":
            from verticore.inference.ensemble import EmbeddingProbe

            EmbeddingProbe.fit(texts, labels, out_dir, embedder=self.embedder, c=float(recipe["c"]))
            return Path(out_dir)
        from verticore.finetune import ClassifierTrainingConfig, train_classifier

        cfg = ClassifierTrainingConfig(epochs=int(recipe["epochs"]), batch_size=int(recipe["batch_size"]),
                                       learning_rate=float(recipe["learning_rate"]),
                                       max_length=int(recipe["max_length"]), patience=int(recipe["patience"]),
                                       seed=int(recipe["seed"]), head_init=str(recipe["head_init"]),
                                       max_steps=20 if self.quick else None, device="auto")
        result = train_classifier(list(texts), list(labels), *self.dev, out_dir, cfg, show_progress=True)
        return Path(result.artifact_dir)

    def predict(self, artifact_dir: Path, texts: Sequence[str]) -> list[str]:
        from verticore.inference.ensemble import PROBE_CONFIG, EmbeddingProbe

        if (Path(artifact_dir) / PROBE_CONFIG).exists():
            clf: Any = EmbeddingProbe(artifact_dir, embedder=self.embedder)
        else:
            from verticore import TextClassifier

            clf = TextClassifier(str(artifact_dir), device="auto")
        probs = clf.predict_proba(list(texts))
        return [clf.labels[i] for i in np.asarray(probs).argmax(axis=1)]


def _read(split: str, limit: int | None) -> tuple[list[str], list[str]]:
    from verticore.io import read_table

    path = SPLITS / f"{split}.csv"
    if not path.exists():
        raise DataError(f"{path} not found: set VERTICORE_DATA to the folder holding banking77/splits")
    df = read_table(path, ["text", "label"])
    if limit:
        df = df.iloc[:limit]
    return df["text"].astype(str).tolist(), df["label"].astype(str).tolist()


def _accuracy(model: Banking77Intents, artifact: Path, data: tuple[list[str], list[str]]) -> float:
    pred = model.predict(artifact, data[0])
    return float(np.mean([p == y for p, y in zip(pred, data[1])]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", choices=["probe", "finetune"], default="probe",
                    help="what each round trains (default probe: frozen embeddings + logistic regression)")
    ap.add_argument("--start-per-intent", type=int, default=10, help="labelled examples per intent at the start")
    ap.add_argument("--rounds", type=int, default=5, help="feedback rounds before the poisoned one")
    ap.add_argument("--per-round", type=int, default=1000, help="feedback labels added per round")
    ap.add_argument("--tolerance", type=float, default=0.01, help="gate tolerance on dev accuracy")
    ap.add_argument("--seed", type=int, default=0, help="seed of the label draws and the bootstrap")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 3 per intent, 2 rounds of 150, 300 dev/test; writes /tmp/learning_loop_quick.json")
    ap.add_argument("--out", default="learning_loop", help="result name under bench/results/")
    args = ap.parse_args(argv)
    if args.quick:
        args.start_per_intent, args.rounds, args.per_round = 3, 2, 150
    t0 = time.perf_counter()
    train = _read("train", None)
    dev = _read("dev", 300 if args.quick else None)
    test = _read("test", 300 if args.quick else None)
    rng = random.Random(args.seed)
    by_intent: dict[str, list[int]] = {}
    for i, y in enumerate(train[1]):
        by_intent.setdefault(y, []).append(i)
    start_idx = [i for y in sorted(by_intent) for i in rng.sample(by_intent[y], args.start_per_intent)]
    chosen = set(start_idx)
    pool = [i for i in range(len(train[0])) if i not in chosen]
    rng.shuffle(pool)
    need = args.per_round * (args.rounds + 1)
    if len(pool) < need:
        raise DataError(f"the training split has {len(pool)} unused rows, {need} are needed")
    base = LabelSet([Label(train[0][i], train[1][i], "base", None, True) for i in start_idx])

    embedder = CachedEmbedder()
    if not args.quick:
        print(f"encoding {len(train[0]) + len(dev[0]) + len(test[0])} texts once (cached for every round)")
        embedder.encode(train[0] + dev[0] + test[0], show_progress=True)
    model = Banking77Intents(base, dev, args.recipe, embedder, args.quick)
    app = AppSpec(name="banking77_bench", title="BANKING77 learning-loop bench", models={"intent": model})

    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="verticore-learning-loop-") as work:
        registry = ModelRegistry(Path(work) / "registry")

        def production_artifact() -> Path:
            return registry.get("banking77_bench", "intent", "production").artifact_path

        start_test: float | None = None
        for r in range(1, args.rounds + 2):
            poisoned = r == args.rounds + 1
            batch = pool[(r - 1) * args.per_round: r * args.per_round]
            intents = [train[1][i] for i in batch]
            if poisoned:
                rng.shuffle(intents)  # same texts, intents shuffled among them
            when = START + timedelta(days=r)
            model.feedback = model.feedback + LabelSet(
                [Label(train[0][i], y, "agent_resolution", (when + timedelta(seconds=k)).isoformat(), True, "agent")
                 for k, (i, y) in enumerate(zip(batch, intents))])
            result = retrain(app, "intent", home=work, registry=registry, tolerance=args.tolerance, seed=args.seed)
            if result.bootstrapped is not None and start_test is None:
                v1 = registry.get("banking77_bench", "intent", result.bootstrapped)
                start_test = _accuracy(model, v1.artifact_path, test)
                print(f"production v1 (base data, {len(base)} labels): test accuracy {start_test:.4f}")
            cand = registry.get("banking77_bench", "intent", result.candidate)
            gate = result.gate or {}
            row = {"round": r, "n_labels": result.train_examples, "new_labels": result.new_labels,
                   "dev_accuracy": round(float(result.metrics["accuracy"]), 4),
                   "dev_accuracy_production": round(float(gate.get("production", float("nan"))), 4),
                   "test_accuracy": round(_accuracy(model, cand.artifact_path, test), 4),
                   "promoted": result.promoted, "gate_delta": round(float(gate.get("delta", 0.0)), 4),
                   "gate_ci": [round(float(gate.get("ci_low", 0.0)), 4), round(float(gate.get("ci_high", 0.0)), 4)],
                   "mcnemar_p": gate.get("mcnemar", {}).get("p_value"), "message": result.message,
                   "poisoned": poisoned}
            print(result.message)
            rounds.append(row)
        final_test = _accuracy(model, production_artifact(), test)
        history = registry.history("banking77_bench", "intent")

    clean, bad = [x for x in rounds if not x["poisoned"]], rounds[-1]
    promoted_tests = [start_test] + [x["test_accuracy"] for x in clean if x["promoted"]]
    out = {"rounds": [{k: v for k, v in x.items() if k != "poisoned"} for x in clean],
           "poisoned": {"promoted": bad["promoted"], "dev_accuracy_candidate": bad["dev_accuracy"],
                        "dev_accuracy_production": bad["dev_accuracy_production"],
                        "test_accuracy_candidate": bad["test_accuracy"], "n_labels": bad["n_labels"],
                        "gate_delta": bad["gate_delta"], "gate_ci": bad["gate_ci"], "mcnemar_p": bad["mcnemar_p"],
                        "message": bad["message"]},
           "start_test_accuracy": round(float(start_test or 0.0), 4), "final_test_accuracy": round(final_test, 4),
           "rises_every_promoted_round": all(b > a for a, b in zip(promoted_tests, promoted_tests[1:])),
           "seconds": round(time.perf_counter() - t0, 1),
           "config": {"recipe": model.default_recipe, "start_per_intent": args.start_per_intent,
                      "rounds": args.rounds, "per_round": args.per_round, "tolerance": args.tolerance,
                      "seed": args.seed, "quick": args.quick, "dev": len(dev[0]), "test": len(test[0]),
                      "promotions": sum(1 for h in history if h.get("alias") == "production")}}
    print_table(["round", "labels", "dev acc", "prod dev acc", "test acc", "promoted"],
                [[x["round"], x["n_labels"], f"{x['dev_accuracy']:.4f}", f"{x['dev_accuracy_production']:.4f}",
                  f"{x['test_accuracy']:.4f}", x["promoted"]] for x in rounds])
    print(f"start test accuracy {out['start_test_accuracy']:.4f} -> final {out['final_test_accuracy']:.4f}; "
          f"poisoned batch promoted: {bad['promoted']}")
    if args.quick:  # smoke runs never overwrite the measured result
        from verticore.io import atomic_write_json

        print(f"wrote {atomic_write_json(Path(tempfile.gettempdir()) / 'learning_loop_quick.json', out)}")
    else:
        write_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
