"""Hyperparameter search (issue 14): an Optuna study over train_classifier, selected on dev, reported on test;
the same search through Ray Tune on a local Ray; `verticore finetune --search N`."""
import json

import pytest

# Tiny budgets: each trial is a few optimiser steps on 30 sentences.
SMALL_SPACE = dict(epochs=(1, 1), max_length=(32,), pooling=("mean",), head_init=("random",))


def _splits(df):
    texts, labels = df.text.tolist(), df.label.tolist()
    return (texts, labels), (texts[::3], labels[::3]), (texts[1::3], labels[1::3])


def _base():
    from verticore.finetune import ClassifierTrainingConfig

    return ClassifierTrainingConfig(batch_size=8, max_steps=3, eval_every=3, device="cpu", patience=1)


def _check_search_dir(out, result, n_trials):
    done = [t for t in result.trials if t["state"] == "complete"]
    assert len(result.trials) == n_trials and done
    best = max(done, key=lambda t: t["dev_macro_f1"])
    assert result.best_dev_macro_f1 == best["dev_macro_f1"] and result.best_params == best["params"]
    assert [t["number"] for t in result.trials if t["best"]] == [best["number"]]
    # only the best trial's artifact is kept, at out/best, and it loads
    assert result.best_artifact == out / "best"
    assert sorted(p.name for p in out.iterdir()) == ["best", "trials.json"]
    assert all("artifact" not in t for t in result.trials if not t["best"])
    saved = json.loads((out / "trials.json").read_text())
    assert saved["best"]["params"] == result.best_params and len(saved["trials"]) == n_trials
    from verticore import TextClassifier

    assert TextClassifier(out / "best", device="cpu").predict(["profits rose"])


def test_optuna_search_selects_on_dev_and_reports_test_for_the_best_only(tmp_path, tiny_sentiment):
    from verticore.finetune.search import SearchSpace, search_classifier

    train, dev, test = _splits(tiny_sentiment)
    space = SearchSpace(learning_rate=(1e-6, 3e-4), **SMALL_SPACE)
    res = search_classifier(train, dev, tmp_path / "s", n_trials=2, test=test, space=space, base_config=_base(),
                            seed=0, show_progress=False)
    _check_search_dir(tmp_path / "s", res, 2)
    assert {"accuracy", "macro_f1"} <= set(res.test_metrics)
    # test figures exist for the best trial only; the trials never saw test
    assert all("test" not in t for t in res.trials)
    saved = json.loads((tmp_path / "s" / "trials.json").read_text())
    assert saved["best"]["test"]["accuracy"] == res.test_metrics["accuracy"]
    # seeded TPE: a rerun proposes the same points
    res2 = search_classifier(train, dev, tmp_path / "s2", n_trials=1, space=space, base_config=_base(), seed=0,
                             show_progress=False)
    assert res2.trials[0]["params"] == res.trials[0]["params"] and res2.test_metrics is None


def test_initial_params_are_tried_first(tmp_path, tiny_sentiment):
    from verticore.finetune.search import SearchSpace, search_classifier

    train, dev, _ = _splits(tiny_sentiment)
    start = {"learning_rate": 1e-4, "epochs": 1, "head_init": "random", "pooling": "mean", "max_length": 32}
    res = search_classifier(train, dev, tmp_path / "s", n_trials=1, space=SearchSpace(**SMALL_SPACE),
                            base_config=_base(), initial_params=[start], show_progress=False)
    assert res.trials[0]["params"] == start and res.best_params == start


def _search_interrupted_in_trial_2(tmp_path, tiny_sentiment, monkeypatch, n_trials):
    """Run a seed-0 search into ``tmp_path / "s"`` whose second trial raises KeyboardInterrupt, as
    Ctrl-C in the middle of it would. Returns (train, dev, space, the real trial runner)."""
    from verticore.finetune import search as search_mod
    from verticore.finetune.search import SearchSpace, search_classifier

    train, dev, _ = _splits(tiny_sentiment)
    space = SearchSpace(learning_rate=(1e-6, 3e-4), **SMALL_SPACE)
    real_run, calls = search_mod._run_trial, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(search_mod, "_run_trial", interrupted)
    with pytest.raises(KeyboardInterrupt):
        search_classifier(train, dev, tmp_path / "s", n_trials=n_trials, space=space, base_config=_base(), seed=0,
                          show_progress=False)
    return train, dev, space, real_run


def test_interrupted_search_resumes_from_its_recorded_trials(tmp_path, tiny_sentiment, monkeypatch):
    """A search killed mid-way (here: Ctrl-C in its second trial) keeps trials.json and the incumbent's
    folder; ``resume=True`` tells the recorded trials to a new study and trains only the rest."""
    from verticore.errors import VerticoreError
    from verticore.finetune import search as search_mod
    from verticore.finetune.search import search_classifier

    train, dev, space, real_run = _search_interrupted_in_trial_2(tmp_path, tiny_sentiment, monkeypatch, 3)
    recorded = json.loads((tmp_path / "s" / "trials.json").read_text())["trials"]
    assert len(recorded) == 1 and recorded[0]["state"] == "complete"
    trained: list[int] = []
    monkeypatch.setattr(search_mod, "_run_trial", lambda *a, **k: trained.append(1) or real_run(*a, **k))
    res = search_classifier(train, dev, tmp_path / "s", n_trials=3, space=space, base_config=_base(), seed=0,
                            show_progress=False, resume=True)
    assert len(trained) == 2  # only the rest of the budget
    assert res.trials[0]["params"] == recorded[0]["params"]
    assert res.trials[0]["dev_macro_f1"] == recorded[0]["dev_macro_f1"]
    assert [t["number"] for t in res.trials] == [0, 1, 2]
    _check_search_dir(tmp_path / "s", res, 3)
    # the same seed replays the recorded point: the resumed search proposes what an uninterrupted one does
    whole = search_classifier(train, dev, tmp_path / "w", n_trials=3, space=space, base_config=_base(), seed=0,
                              show_progress=False)
    assert [t["params"] for t in whole.trials] == [t["params"] for t in res.trials]
    # a finished search is not resumed into again
    with pytest.raises(VerticoreError, match="already finished"):
        search_classifier(train, dev, tmp_path / "s", n_trials=3, space=space, base_config=_base(), resume=True)


def test_resume_with_another_seed_keeps_the_recorded_trials(tmp_path, tiny_sentiment, monkeypatch):
    """A resume whose seed does not replay the recorded points adds them to the study as finished
    trials (the sampler learns from them) and trains only the rest of the budget."""
    from verticore.finetune import search as search_mod
    from verticore.finetune.search import search_classifier

    train, dev, space, real_run = _search_interrupted_in_trial_2(tmp_path, tiny_sentiment, monkeypatch, 2)
    recorded = json.loads((tmp_path / "s" / "trials.json").read_text())["trials"]
    monkeypatch.setattr(search_mod, "_replayed_study", lambda *a, **k: None)  # as if the seed differed
    trained: list[int] = []
    monkeypatch.setattr(search_mod, "_run_trial", lambda *a, **k: trained.append(1) or real_run(*a, **k))
    res = search_classifier(train, dev, tmp_path / "s", n_trials=2, space=space, base_config=_base(), seed=7,
                            show_progress=False, resume=True)
    assert len(trained) == 1 and res.trials[0]["params"] == recorded[0]["params"]
    assert [t["number"] for t in res.trials] == [0, 1]
    _check_search_dir(tmp_path / "s", res, 2)


def test_resume_refuses_a_changed_space_or_a_lost_incumbent(tmp_path, tiny_sentiment):
    """Both checks run before any trial trains: a recorded trial over other hyperparameters, and a
    best recorded trial whose kept artifact folder is gone, each stop the resume with a one-line error."""
    from verticore.errors import VerticoreError
    from verticore.finetune.search import SearchSpace, search_classifier

    train, dev, _ = _splits(tiny_sentiment)
    space = SearchSpace(learning_rate=(1e-6, 3e-4), **SMALL_SPACE)
    params = {"learning_rate": 1e-4, "epochs": 1, "head_init": "random", "pooling": "mean", "max_length": 32}
    out = tmp_path / "s"
    out.mkdir()

    def record(row):
        (out / "trials.json").write_text(json.dumps({"trials": [{"number": 0, "state": "complete",
                                                                 "dev_macro_f1": 0.5, **row}]}))

    record({"params": {k: v for k, v in params.items() if k != "pooling"},
            "artifact": str(tmp_path)})  # a search run without pooling in its space
    with pytest.raises(VerticoreError, match="other hyperparameters"):
        search_classifier(train, dev, out, n_trials=2, space=space, base_config=_base(), resume=True,
                          show_progress=False)
    record({"params": params, "artifact": str(out / "trials" / "trial_000")})  # never written: the folder is gone
    with pytest.raises(VerticoreError, match="artifact .* is missing"):
        search_classifier(train, dev, out, n_trials=2, space=space, base_config=_base(), resume=True,
                          show_progress=False)
    assert not list((out / "trials").glob("*"))  # nothing trained


def test_space_covers_the_issue_hyperparameters_and_lora_rank():
    import optuna

    from verticore.finetune import ClassifierTrainingConfig
    from verticore.finetune.search import SearchSpace, config_for

    full = SearchSpace().suggest(optuna.create_study().ask(), "full")
    assert set(full) == {"learning_rate", "epochs", "head_init", "pooling", "max_length"}
    assert 1e-5 <= full["learning_rate"] <= 3e-4 and 2 <= full["epochs"] <= 8
    lora = SearchSpace().suggest(optuna.create_study().ask(), "lora")
    assert 4 <= lora["lora_r"] <= 32
    cfg = config_for(ClassifierTrainingConfig(method="lora"), lora)
    assert cfg.method_config().r == lora["lora_r"] and cfg.max_length == lora["max_length"]


def test_cli_finetune_search(tmp_path, tiny_sentiment):
    from typer.testing import CliRunner

    from verticore.cli import app

    tiny_sentiment[["text", "label"]].to_csv(tmp_path / "train.csv", index=False)
    tiny_sentiment[["text", "label"]].iloc[::3].to_csv(tmp_path / "dev.csv", index=False)
    out = tmp_path / "search"
    r = CliRunner().invoke(app, ["finetune", "--train", str(tmp_path / "train.csv"), "--dev", str(tmp_path / "dev.csv"),
                                 "--test", str(tmp_path / "dev.csv"), "--out", str(out), "--search", "2",
                                 "--max-steps", "2", "--batch-size", "8", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "trials.json").read_text())
    assert len(saved["trials"]) == 2 and saved["best"]["test"] is not None
    assert sorted(p.name for p in out.iterdir()) == ["best", "trials.json"]
    assert "best dev macro-F1" in r.output
    again = CliRunner().invoke(app, ["finetune", "--train", str(tmp_path / "train.csv"), "--dev",
                                     str(tmp_path / "dev.csv"), "--out", str(out), "--search", "2", "--resume",
                                     "--max-steps", "2", "--batch-size", "8", "--device", "cpu"])
    assert again.exit_code != 0 and "already finished" in again.output
    usage = CliRunner().invoke(app, ["finetune", "--train", str(tmp_path / "train.csv"), "--dev",
                                     str(tmp_path / "dev.csv"), "--out", str(tmp_path / "o"), "--resume"])
    assert usage.exit_code == 2 and "--search" in usage.output


def test_cli_distributed_without_search_is_a_usage_error(tmp_path):
    from typer.testing import CliRunner

    from verticore.cli import app

    r = CliRunner().invoke(app, ["finetune", "--train", "x.csv", "--dev", "x.csv", "--out", str(tmp_path / "o"),
                                 "--distributed", "ray"])
    assert r.exit_code == 2 and "--search" in r.output


@pytest.mark.slow
@pytest.mark.timeout(420)  # two Ray trials; a busy 2-core machine needs more than 3 minutes
def test_ray_tune_search_on_local_ray(tmp_path, tiny_sentiment):
    ray = pytest.importorskip("ray", reason="the optional 'ray' extra is not installed")
    pytest.importorskip("ray.tune", reason="Ray Tune is not installed")
    from verticore.finetune.search import SearchSpace, search_classifier

    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 object_store_memory=200 * 1024 * 1024)
    except Exception as exc:  # e.g. a sandbox without /dev/shm: the search itself is not at fault
        pytest.skip(f"local Ray could not start here: {exc}")
    try:
        train, dev, test = _splits(tiny_sentiment)
        res = search_classifier(train, dev, tmp_path / "r", n_trials=2, test=test, space=SearchSpace(**SMALL_SPACE),
                                base_config=_base(), seed=0, backend="ray", show_progress=False)
    finally:
        ray.shutdown()
    assert res.backend == "ray"
    _check_search_dir(tmp_path / "r", res, 2)
    assert res.test_metrics is not None
