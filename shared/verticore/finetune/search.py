"""Hyperparameter search for the classifier recipe (``verticore finetune --search N``).

An Optuna study (seeded TPE) over :class:`SearchSpace` (learning rate, epochs, head init,
pooling, max length, LoRA rank); every trial is one :func:`train_classifier` run into its own
folder, scored on dev macro-F1 (the artifact's metrics). The best trial's artifact becomes
``out_dir/best`` and is then scored on test: test is reported, never used for selection.
Non-best trial folders are removed; the trial table is ``out_dir/trials.json`` (rewritten
atomically after every trial). ``backend="ray"`` runs the same objective and space through Ray
Tune (``OptunaSearch``) on the cluster at ``RAY_ADDRESS``, or on a local Ray when none is set.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError, VerticoreError
from ..io import atomic_write_json
from .config import ClassifierTrainingConfig

log = logging.getLogger(__name__)
LabelLike = str | Sequence[str]
Split = tuple[Sequence[str], Sequence[LabelLike]]
BACKENDS = ("optuna", "ray")
METRIC = "dev_macro_f1"


@dataclass(frozen=True)
class SearchSpace:
    """The searched hyperparameters; a one-element choice (or an equal-bounds range) pins a value.

    ``learning_rate`` is the full fine-tune's (log scale); with ``method="lora"`` the adapters'
    ``lora_learning_rate`` and ``lora_r`` are searched instead. ``pooling`` choices are the
    trainer's: ``mean`` (masked mean) or ``native`` (the architecture's [CLS] pooler).
    """

    learning_rate: tuple[float, float] = (1e-5, 3e-4)
    lora_learning_rate: tuple[float, float] = (1e-4, 3e-3)
    epochs: tuple[int, int] = (2, 8)
    head_init: tuple[str, ...] = ("random", "linear_probe")
    pooling: tuple[str, ...] = ("mean", "native")
    max_length: tuple[int, ...] = (64, 128)
    lora_r: tuple[int, int] = (4, 32)

    def suggest(self, trial: Any, method: str) -> dict[str, Any]:
        """Draw one point from an Optuna ``trial`` (define-by-run; also what Ray's ``OptunaSearch`` calls)."""
        params: dict[str, Any] = {}
        if method == "lora":
            params["lora_learning_rate"] = trial.suggest_float("lora_learning_rate", *self.lora_learning_rate, log=True)
            params["lora_r"] = trial.suggest_int("lora_r", *self.lora_r, log=True)
        else:
            params["learning_rate"] = trial.suggest_float("learning_rate", *self.learning_rate, log=True)
        params["epochs"] = trial.suggest_int("epochs", *self.epochs)
        params["head_init"] = trial.suggest_categorical("head_init", list(self.head_init))
        params["pooling"] = trial.suggest_categorical("pooling", list(self.pooling))
        params["max_length"] = trial.suggest_categorical("max_length", list(self.max_length))
        return params


def config_for(base: ClassifierTrainingConfig, params: dict[str, Any]) -> ClassifierTrainingConfig:
    """``base`` with a trial's ``params`` applied (LoRA options go to ``method_args``)."""
    core = {k: v for k, v in params.items() if k in ("learning_rate", "epochs", "head_init", "pooling", "max_length")}
    method_args = dict(base.method_args)
    if "lora_r" in params:
        method_args["r"] = params["lora_r"]
    if "lora_learning_rate" in params:
        method_args["learning_rate"] = params["lora_learning_rate"]
    return dataclasses.replace(base, method_args=method_args, **core)


@dataclass
class SearchResult:
    """What a search found: the best trial (its params, dev macro-F1, artifact, test metrics) and every trial."""

    best_params: dict[str, Any]
    best_dev_macro_f1: float
    best_artifact: Path
    test_metrics: dict[str, Any] | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    trials_path: Path | None = None
    backend: str = "optuna"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "metric": METRIC,
                "best": {"params": self.best_params, METRIC: self.best_dev_macro_f1,
                         "artifact": str(self.best_artifact), "test": self.test_metrics},
                "trials": self.trials, "seconds": self.seconds}


def _run_trial(train: Split, dev: Split, cfg: ClassifierTrainingConfig, trial_dir: Path) -> dict[str, Any]:
    """Train one trial (no test data: selection sees dev only) and return its table row fields."""
    from .classifier import train_classifier

    t0 = time.time()
    res = train_classifier(train[0], train[1], dev[0], dev[1], trial_dir, cfg, show_progress=False)
    return {METRIC: float(res.metrics["dev"]["macro_f1"]), "dev_accuracy": res.metrics["dev"].get("accuracy"),
            "best_step": res.metrics.get("best_step"), "seconds": round(time.time() - t0, 2),
            "artifact": str(res.artifact_dir)}


def evaluate_on_test(artifact: Path, test: Split, device: str = "auto") -> dict[str, Any]:
    """Metrics of the artifact at ``artifact`` on the ``test`` split (labels unseen in training are an error)."""
    from ..artifact import read_labels
    from ..inference.classifier import TextClassifier
    from ..io import clean_labels, clean_texts
    from .classifier import _encode_targets, split_metrics

    space = read_labels(artifact)
    if space is None:
        raise VerticoreError(f"{artifact} has no label space; is it a classifier artifact?")
    texts = clean_texts(test[0], what="test text")
    if len(texts) != len(test[1]):
        raise DataError("test texts and labels differ in length")
    y = _encode_targets(clean_labels(test[1], space.multi_label, "test"), space, "test data")
    clf = TextClassifier(artifact, device=device)
    return split_metrics(space, y, clf.predict_proba(texts))


def _remove(path: str | Path | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def search_classifier(
    train: Split,
    dev: Split,
    out_dir: str | Path,
    n_trials: int = 12,
    test: Split | None = None,
    space: SearchSpace | None = None,
    base_config: ClassifierTrainingConfig | None = None,
    seed: int = 42,
    backend: str = "optuna",
    show_progress: bool = True,
    max_concurrent: int = 2,
    initial_params: Sequence[dict[str, Any]] = (),
    resume: bool = False,
) -> SearchResult:
    """Search hyperparameters of :func:`train_classifier`, selecting on dev macro-F1.

    Args:
        train, dev: ``(texts, labels)`` pairs (dev selects the trial and calibrates its model).
        out_dir: search folder: ``best/`` (the best artifact), ``trials.json``, ``trials/`` (in progress).
        n_trials: trials to run (the budget).
        test: optional ``(texts, labels)`` scored once, on the best artifact only.
        space: what is searched (:class:`SearchSpace` defaults).
        base_config: every other training option (its ``seed`` trains every trial alike).
        seed: the sampler's seed (TPE), so a rerun proposes the same trials.
        backend: ``optuna`` (in this process, sequential) or ``ray`` (Ray Tune trials).
        max_concurrent: Ray trials running at once.
        initial_params: points tried first, before the sampler's (e.g. the default recipe, so the search
            cannot end below it on dev); each counts against ``n_trials``.
        resume: continue an interrupted search in ``out_dir`` (optuna backend): the trials recorded in
            its ``trials.json`` (rewritten after every trial) count against ``n_trials``, their best
            kept artifact stays the incumbent, and only the rest of the budget is trained. With the
            same ``seed`` and ``initial_params`` the sampler replays the recorded points, so the
            search goes on exactly as an uninterrupted one would; otherwise it learns from them and
            samples on with another seed.
    """
    if backend not in BACKENDS:
        raise VerticoreError(f"unknown search backend {backend!r}; choose one of {list(BACKENDS)}")
    if n_trials < 1:
        raise VerticoreError(f"a search needs at least one trial, got n_trials={n_trials}")
    space = space or SearchSpace()
    base = base_config or ClassifierTrainingConfig()
    out = Path(out_dir)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if resume and backend != "optuna":
        raise VerticoreError("resume needs the optuna backend (Ray Tune keeps its own experiment state)")
    if backend == "ray":
        trials = _search_ray(train, dev, out, n_trials, space, base, seed, max_concurrent, list(initial_params))
    else:
        trials = _search_optuna(train, dev, out, n_trials, space, base, seed, show_progress, list(initial_params),
                                resume)
    done = [t for t in trials if t.get("state") == "complete"]
    if not done:
        raise VerticoreError(f"no trial of the search completed; see {out / 'trials.json'}")
    best = max(done, key=lambda t: (t[METRIC], -t["number"]))  # ties: the earlier trial
    for t in trials:  # only the best trial's folder is kept
        if t is not best:
            _remove(t.pop("artifact", None))
    from ..artifact import swap_in

    best_artifact = swap_in(Path(best.pop("artifact")), out / "best")
    best["artifact"] = str(best_artifact)
    for t in trials:
        t["best"] = t is best
    _remove(out / "trials")
    test_metrics = evaluate_on_test(best_artifact, test, base.device) if test is not None else None
    result = SearchResult(best_params=best["params"], best_dev_macro_f1=best[METRIC], best_artifact=best_artifact,
                          test_metrics=test_metrics, trials=trials, seconds=round(time.time() - t0, 1),
                          trials_path=out / "trials.json", backend=backend)
    atomic_write_json(out / "trials.json", result.to_dict())
    return result


def _search_optuna(train: Split, dev: Split, out: Path, n_trials: int, space: SearchSpace,
                   base: ClassifierTrainingConfig, seed: int, show_progress: bool,
                   initial_params: list[dict[str, Any]], resume: bool = False) -> list[dict[str, Any]]:
    try:
        import optuna
    except ImportError:
        raise VerticoreError("a hyperparameter search needs Optuna: pip install 'verticore[hpo]'") from None
    from tqdm.auto import tqdm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials, incumbent = _recorded_trials(out, space, base.method) if resume else ([], None)
    # the same seed re-proposing the recorded points in order: that study, told their recorded results,
    # goes on exactly as an uninterrupted run would have
    study = _replayed_study(seed, initial_params, trials, space, base.method)  # no trials: a new study
    if study is None:  # other seed or initial points: the sampler learns from them, then moves on elsewhere
        study = _new_study(seed + len(trials), [p for p in initial_params if all(t["params"] != p for t in trials)])
        dists = _distributions(space, base.method)
        for row in trials:
            study.add_trial(optuna.trial.create_trial(
                params=row["params"], distributions=dists,
                **({"value": row[METRIC]} if row.get("state") == "complete" else
                   {"state": optuna.trial.TrialState.FAIL})))
    bar = tqdm(total=n_trials, initial=min(len(trials), n_trials), desc="search (optuna)", unit="trial",
               disable=not show_progress)
    for _ in range(n_trials - len(trials)):
        trial = study.ask()
        params = space.suggest(trial, base.method)
        row: dict[str, Any] = {"number": trial.number, "params": params}
        try:
            row.update(_run_trial(train, dev, config_for(base, params), out / "trials" / f"trial_{trial.number:03d}"))
        except (VerticoreError, ValueError, RuntimeError) as exc:  # a bad point fails, the search goes on
            log.warning("trial %d failed: %s", trial.number, exc)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            row.update(state="failed", error=str(exc))
        else:
            study.tell(trial, row[METRIC])
            row["state"] = "complete"
            # keep one trial folder on disk: the incumbent
            if incumbent is None or row[METRIC] > incumbent[METRIC]:
                if incumbent is not None:
                    _remove(incumbent.pop("artifact"))
                incumbent = row
            else:
                _remove(row.pop("artifact"))
        trials.append(row)
        atomic_write_json(out / "trials.json", {"backend": "optuna", "metric": METRIC, "trials": trials})
        bar.update(1)
        if incumbent is not None:
            bar.set_postfix({"best dev F1": f"{incumbent[METRIC]:.4f}"})
    bar.close()
    return trials


def _new_study(seed: int, initial_params: Sequence[dict[str, Any]]) -> Any:
    import optuna

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for params in initial_params:
        study.enqueue_trial(params)
    return study


def _tell(study: Any, trial: Any, row: dict[str, Any]) -> None:
    import optuna

    if row.get("state") == "complete":
        study.tell(trial, row[METRIC])
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _distributions(space: SearchSpace, method: str) -> dict[str, Any]:
    """The space's Optuna distributions, exactly as :meth:`SearchSpace.suggest` draws them."""
    import optuna

    probe = optuna.create_study().ask()
    space.suggest(probe, method)
    return probe.distributions


def _replayed_study(seed: int, initial_params: Sequence[dict[str, Any]], rows: list[dict[str, Any]],
                    space: SearchSpace, method: str) -> Any:
    """A study seeded with ``seed`` (after ``initial_params``) told the recorded rows, when it proposes
    exactly the recorded points in order given their results; ``None`` when it does not."""
    study = _new_study(seed, initial_params)
    for row in rows:
        trial = study.ask()
        if space.suggest(trial, method) != row["params"]:
            return None
        _tell(study, trial, row)
    return study


def _recorded_trials(out: Path, space: SearchSpace, method: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of an interrupted search's ``trials.json`` and the incumbent (the best complete row,
    whose artifact folder the search kept); nothing recorded: a fresh start."""
    from ..io import read_json

    path = out / "trials.json"
    if not path.exists():
        return [], None
    data = read_json(path, "search trials file")
    if "best" in data:
        raise VerticoreError(f"the search in {out} already finished (its trials.json names the best trial); "
                             f"use another folder for a new search")
    rows = [dict(r) for r in data.get("trials", [])]
    names = set(_distributions(space, method))
    for row in rows:
        if set(row.get("params", {})) != names:
            raise VerticoreError(f"{path}: trial {row.get('number')} searched other hyperparameters "
                                 f"({sorted(row.get('params', {}))}); resume with the same space and method")
    done = [r for r in rows if r.get("state") == "complete"]
    incumbent = max(done, key=lambda r: r[METRIC]) if done else None
    if incumbent is not None and not Path(incumbent.get("artifact", "")).is_dir():
        raise VerticoreError(f"{path}: the best recorded trial's artifact {incumbent.get('artifact')} is missing; "
                             f"cannot resume this search")
    log.info("resuming the search in %s after %d recorded trials", out, len(rows))
    return rows, incumbent


def _ray_trainable(config: dict[str, Any], train: Split, dev: Split, base: ClassifierTrainingConfig,
                   trials_dir: str) -> None:
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    row = _run_trial(train, dev, config_for(base, config), Path(trials_dir) / f"trial_{trial_id}")
    tune.report(row)


def _suggest(trial: Any, space: SearchSpace, method: str) -> dict[str, Any]:
    return space.suggest(trial, method)


def _search_ray(train: Split, dev: Split, out: Path, n_trials: int, space: SearchSpace,
                base: ClassifierTrainingConfig, seed: int, max_concurrent: int,
                initial_params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        import ray
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as exc:
        raise VerticoreError(f"--distributed ray needs Ray Tune (pip install 'verticore[ray]'): {exc}") from None
    import optuna

    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # the cluster named by RAY_ADDRESS
        else:
            ray.init(num_cpus=max(2, max_concurrent), include_dashboard=False, log_to_driver=False)
        started = True
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Ray checkpoints the searcher with pickle: the define-by-run space must be a module-level callable
        define_by_run = functools.partial(_suggest, space=space, method=base.method)
        searcher = OptunaSearch(space=define_by_run, metric=METRIC, mode="max",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                points_to_evaluate=initial_params or None)
        trainable = tune.with_parameters(_ray_trainable, train=(list(train[0]), list(train[1])),
                                         dev=(list(dev[0]), list(dev[1])), base=base,
                                         trials_dir=str((out / "trials").resolve()))
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n_trials,
                                        max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name="search", storage_path=str((out / "ray").resolve()), verbose=0),
        )
        grid = tuner.fit()
        trials = []
        for number, res in enumerate(grid):
            params = {k: v for k, v in (res.config or {}).items()}
            row: dict[str, Any] = {"number": number, "params": params}
            if res.error is None and res.metrics and METRIC in res.metrics:
                row.update({k: res.metrics.get(k) for k in (METRIC, "dev_accuracy", "best_step", "seconds",
                                                               "artifact")}, state="complete")
            else:
                row.update(state="failed", error=str(res.error))
            trials.append(row)
        return trials
    finally:
        if started:
            ray.shutdown()
        _remove(out / "ray")


__all__ = ["SearchSpace", "SearchResult", "search_classifier", "config_for", "evaluate_on_test", "BACKENDS"]
