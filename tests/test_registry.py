"""Model registry and promotion gate (issue #14 groundwork): immutable versions, atomic aliases,
kill-safe registration and promotion, the statistical gate, hot reload via watch(), the CLI."""
from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from verticore.errors import ArtifactError, DataError
from verticore.registry import (
    GateResult,
    ModelRegistry,
    ModelVersion,
    compare,
    compare_correctness,
    mcnemar_exact,
    paired_bootstrap_ci,
)

ROOT = Path(__file__).resolve().parents[1]
APP, MODEL = "customer_service", "intent"


def make_artifact(tmp_path: Path, name: str, payload: str = "w") -> Path:
    """A tiny fake artifact: a folder with a config, 'weights' and a nested file."""
    d = tmp_path / "src" / name
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"name": name}))
    (d / "model.safetensors").write_bytes((payload * 64).encode())
    (d / "sub" / "labels.json").write_text('{"labels": ["a", "b"]}')
    return d


def register(reg: ModelRegistry, tmp_path: Path, name: str, acc: float = 0.9, model: str = MODEL, **kw) -> ModelVersion:
    return reg.register(APP, model, make_artifact(tmp_path, f"{model}-{name}", name), data_fingerprint=f"sha256:{name}",
                        recipe={"lr": 1e-4, "epochs": 3, **kw.pop("recipe", {})},
                        metrics={"accuracy": acc, "macro_f1": acc - 0.05}, eval_split=kw.pop("eval_split", "intent-eval-v1"),
                        created_by="tester", **kw)


@pytest.fixture()
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _run_child(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT / "apps")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=60)


# -- versions -----------------------------------------------------------------------------------
def test_register_list_get_and_versions_are_immutable(reg, tmp_path):
    v1 = register(reg, tmp_path, "one")
    v2 = register(reg, tmp_path, "two", parent=1)
    assert [v.version for v in reg.versions(APP, MODEL)] == [1, 2]
    assert (v1.version, v1.parent, v2.parent) == (1, None, 1)
    assert v1.path == reg.root / APP / MODEL / "versions" / "0001"
    rec = json.loads((v2.path / "version.json").read_text())
    assert rec["data_fingerprint"] == "sha256:two" and rec["eval_split"] == "intent-eval-v1"
    assert rec["recipe"]["epochs"] == 3 and rec["metrics"]["accuracy"] == 0.9 and rec["created_by"] == "tester"
    assert set(rec["files"]) == {"config.json", "model.safetensors", "sub/labels.json"}
    assert ModelVersion.from_dict(rec, v2.path) == v2
    for ref in (2, "2", "v2", "0002"):
        assert reg.get(APP, MODEL, ref).version == 2
    # the registry holds a copy: rewriting the source does not touch the version; its files are read-only
    (tmp_path / "src" / f"{MODEL}-one" / "model.safetensors").write_bytes(b"changed")
    reg.verify(reg.get(APP, MODEL, 1))
    assert not (v1.artifact_path / "model.safetensors").stat().st_mode & stat.S_IWUSR
    # the same number twice is refused, and a number is never reused
    with pytest.raises(DataError, match=r"v2 already exists or was used before; versions are immutable"):
        register(reg, tmp_path, "again", version=2)
    with pytest.raises(DataError, match="has no version 7"):
        register(reg, tmp_path, "orphan", parent=7)
    assert register(reg, tmp_path, "three", version=5).version == 5
    assert register(reg, tmp_path, "four").version == 6
    # hard-linked instead of copied: same inode, and the caller's file keeps its mode
    v7 = register(reg, tmp_path, "linked", link=True)
    src = tmp_path / "src" / f"{MODEL}-linked" / "model.safetensors"
    assert (v7.artifact_path / "model.safetensors").stat().st_ino == src.stat().st_ino
    assert src.stat().st_mode & stat.S_IWUSR


def test_register_bad_input_is_one_line(reg, tmp_path):
    art = make_artifact(tmp_path, "x")
    with pytest.raises(ArtifactError, match="artifact not found"):
        reg.register(APP, MODEL, tmp_path / "nope", data_fingerprint="f", recipe={}, metrics={}, eval_split="e")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="has no files"):
        reg.register(APP, MODEL, tmp_path / "empty", data_fingerprint="f", recipe={}, metrics={}, eval_split="e")
    with pytest.raises(DataError, match="eval_split must be a non-empty string"):
        reg.register(APP, MODEL, art, data_fingerprint="f", recipe={}, metrics={}, eval_split=" ")
    with pytest.raises(DataError, match="JSON-serialisable"):
        reg.register(APP, MODEL, art, data_fingerprint="f", recipe={"x": object()}, metrics={}, eval_split="e")
    with pytest.raises(DataError, match="invalid app name"):
        reg.register("../etc", MODEL, art, data_fingerprint="f", recipe={}, metrics={}, eval_split="e")
    assert reg.versions(APP, MODEL) == []


def test_promote_rollback_history(reg, tmp_path):
    for n in ("one", "two", "three"):
        register(reg, tmp_path, n)
    with pytest.raises(DataError, match="has no alias 'production'"):
        reg.get(APP, MODEL, "production")
    reg.promote(APP, MODEL, 1, by="ada", reason="first")
    reg.promote(APP, MODEL, 3, alias="candidate", by="ci")
    reg.promote(APP, MODEL, 2, by="bob", reason="better")
    assert reg.aliases(APP, MODEL) == {"production": 2, "candidate": 3}
    assert reg.get(APP, MODEL, "production").version == 2
    assert reg.rollback(APP, MODEL, by="ada", reason="regression").version == 1
    assert reg.aliases(APP, MODEL)["production"] == 1
    hist = reg.history(APP, MODEL)
    assert [(h["action"], h["alias"], h["from"], h["to"], h["by"]) for h in hist] == [
        ("promote", "production", None, 1, "ada"), ("promote", "candidate", None, 3, "ci"),
        ("promote", "production", 1, 2, "bob"), ("rollback", "production", 2, 1, "ada")]
    assert hist[-1]["reason"] == "regression" and all(h["ts"] for h in hist)
    with pytest.raises(DataError, match=r"production \(v1\) has no earlier version to roll back to"):
        reg.rollback(APP, MODEL)
    assert reg.aliases(APP, MODEL)["production"] == 1


def test_promote_unknown_foreign_and_corrupt_versions_leave_production(reg, tmp_path):
    register(reg, tmp_path, "one")
    register(reg, tmp_path, "two")
    other = register(reg, tmp_path, "s1", model="sentiment")
    reg.promote(APP, MODEL, 1)
    with pytest.raises(DataError, match=r"^customer_service/intent has no version 9 \(versions: 1, 2\)$"):
        reg.promote(APP, MODEL, 9)
    with pytest.raises(DataError, match="is a version of customer_service/sentiment, not of customer_service/intent"):
        reg.promote(APP, MODEL, other)
    # a version folder copied over from another model is not a version of this one
    import shutil

    shutil.copytree(other.path, reg.root / APP / MODEL / "versions" / "0003")
    with pytest.raises(ArtifactError, match="holds customer_service/sentiment v1, not customer_service/intent v3"):
        reg.promote(APP, MODEL, 3)
    # damaged weights: refused by the SHA-256 check
    f = reg.get(APP, MODEL, 2).artifact_path / "model.safetensors"
    f.chmod(0o644)
    f.write_bytes(b"x" * f.stat().st_size)
    with pytest.raises(ArtifactError, match=r"v2 is corrupt: artifact/model.safetensors does not match its SHA-256"):
        reg.promote(APP, MODEL, 2)
    # a loader smoke test that fails also refuses
    with pytest.raises(ArtifactError, match="does not load: bad weights"):
        reg.promote(APP, MODEL, 1, alias="candidate", check=lambda p: (_ for _ in ()).throw(ValueError("bad weights")))
    assert reg.aliases(APP, MODEL) == {"production": 1}
    reg.verify(reg.get(APP, MODEL, "production"))


def test_rollback_skips_corrupt_or_pruned_versions(reg, tmp_path):
    for n in ("one", "two", "three"):
        register(reg, tmp_path, n)
    for n in (1, 2, 3):
        reg.promote(APP, MODEL, n)
    (reg.get(APP, MODEL, 2).artifact_path / "config.json").chmod(0o644)
    (reg.get(APP, MODEL, 2).artifact_path / "config.json").unlink()
    assert reg.rollback(APP, MODEL).version == 1
    assert "skipped v2" in reg.history(APP, MODEL)[-1]["reason"]


def test_concurrent_readers_always_see_a_complete_version(reg, tmp_path):
    register(reg, tmp_path, "one")
    register(reg, tmp_path, "two")
    reg.promote(APP, MODEL, 1)
    seen, errors, stop = set(), [], threading.Event()

    def reader() -> None:
        r = ModelRegistry(reg.root)
        while not stop.is_set():
            try:
                v = r.get(APP, MODEL, "production")
                r.verify(v, full=False)
                seen.add(v.version)
            except Exception as exc:  # any failure means a reader saw a half-switched alias
                errors.append(repr(exc))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(20):
            reg.promote(APP, MODEL, 2 if i % 2 == 0 else 1)
    finally:
        stop.set()
        t.join()
    assert errors == [] and seen <= {1, 2} and seen


# -- crashes --------------------------------------------------------------------------------------
def test_kill_during_alias_write_keeps_previous_complete_production(reg, tmp_path):
    register(reg, tmp_path, "one")
    register(reg, tmp_path, "two")
    reg.promote(APP, MODEL, 1)
    p = _run_child(f"""
        import os
        from verticore.registry import ModelRegistry
        real = os.replace
        def replace(a, b):
            if str(b).endswith("aliases.json"):
                os._exit(9)   # killed after the new alias file is written, before it is renamed in
            real(a, b)
        os.replace = replace
        ModelRegistry({str(reg.root)!r}).promote({APP!r}, {MODEL!r}, 2, by="killed")
    """)
    assert p.returncode == 9, p.stderr
    v = reg.get(APP, MODEL, "production")
    assert v.version == 1
    reg.verify(v)
    assert [h["to"] for h in reg.history(APP, MODEL)] == [1]
    assert reg.promote(APP, MODEL, 2).version == 2  # the next promotion works and clears nothing it needs


def test_kill_between_alias_switch_and_log_is_reconciled(reg, tmp_path):
    register(reg, tmp_path, "one")
    register(reg, tmp_path, "two")
    reg.promote(APP, MODEL, 1)
    p = _run_child(f"""
        import os
        import verticore.registry.store as store
        store._append_line = lambda *a, **k: os._exit(9)   # killed after the alias moved, before the log line
        store.ModelRegistry({str(reg.root)!r}).promote({APP!r}, {MODEL!r}, 2, by="killed")
    """)
    assert p.returncode == 9, p.stderr
    assert reg.get(APP, MODEL, "production").version == 2  # the switch itself is complete
    assert reg.rollback(APP, MODEL).version == 1
    assert [(h["action"], h["to"]) for h in reg.history(APP, MODEL)] == [("promote", 1), ("recovered", 2),
                                                                         ("rollback", 1)]


def test_sigkill_during_registration_leaves_no_version_and_is_cleaned(reg, tmp_path):
    register(reg, tmp_path, "one")
    art = make_artifact(tmp_path, "big", "b")
    p = _run_child(f"""
        import os, shutil, signal
        import verticore.registry.store as store
        n = 0
        real = shutil.copy2
        def copy2(s, d, **k):
            global n
            n += 1
            if n == 2:
                os.kill(os.getpid(), signal.SIGKILL)   # killed half-way through copying the files
            return real(s, d, **k)
        shutil.copy2 = copy2
        store.ModelRegistry({str(reg.root)!r}).register({APP!r}, {MODEL!r}, {str(art)!r}, data_fingerprint="f",
                                                     recipe={{}}, metrics={{}}, eval_split="intent-eval-v1")
    """)
    assert p.returncode == -9, p.stderr
    vdir = reg.root / APP / MODEL / "versions"
    assert [d.name for d in vdir.iterdir() if d.name.endswith(".staging")]  # the dead run's leftover
    assert [v.version for v in reg.versions(APP, MODEL)] == [1] and reg.incomplete(APP, MODEL) == []
    v2 = register(reg, tmp_path, "two")
    assert v2.version == 2 and not [d for d in vdir.iterdir() if d.name.startswith(".")]


def test_half_written_version_is_ignored_reported_and_pruned(reg, tmp_path, caplog):
    register(reg, tmp_path, "one")
    reg.promote(APP, MODEL, 1)
    vdir = reg.root / APP / MODEL / "versions"
    (vdir / "0002" / "artifact").mkdir(parents=True)  # version.json never written
    (vdir / "0002" / "artifact" / "model.safetensors").write_bytes(b"half")
    (vdir / "0003").mkdir()
    (vdir / "0003" / "version.json").write_text('{"format": "verticore-registry-version/1", "app"')  # torn
    assert [v.version for v in reg.versions(APP, MODEL)] == [1]
    bad = {b.name: b.reason for b in reg.incomplete(APP, MODEL)}
    assert set(bad) == {"0002", "0003"} and "version.json missing" in bad["0002"] and "corrupt" in bad["0003"]
    assert "ignoring incomplete version" in caplog.text
    with pytest.raises(ArtifactError, match=r"^customer_service/intent v2 is incomplete or corrupt: version.json missing"):
        reg.promote(APP, MODEL, 2)
    assert reg.aliases(APP, MODEL) == {"production": 1}
    assert register(reg, tmp_path, "four").version == 4  # numbers of broken folders are not reused
    assert reg.prune(APP, MODEL, keep=10) == ["0002", "0003"]
    assert reg.incomplete(APP, MODEL) == []


def test_read_only_registry_gives_one_line_and_reads_still_work(reg, tmp_path, monkeypatch):
    register(reg, tmp_path, "one")
    register(reg, tmp_path, "two")
    reg.promote(APP, MODEL, 1)
    mdir = reg.root / APP / MODEL
    probe = mdir / ".probe"
    mdir.chmod(0o555)
    (mdir / "versions").chmod(0o555)
    try:
        try:
            probe.write_text("x")
            probe.unlink()
            real_readonly = False  # root ignores the mode bits: simulate the read-only disk instead
        except PermissionError:
            real_readonly = True
        if not real_readonly:
            import verticore.registry.store as store

            def refuse(path, *a, **k):
                raise OSError(errno.EROFS, "Read-only file system", str(path))

            monkeypatch.setattr(store, "atomic_write_json", refuse)
            monkeypatch.setattr(store.tempfile, "mkdtemp", lambda *a, dir=None, **k: refuse(dir))
        with pytest.raises(ArtifactError) as exc:
            reg.promote(APP, MODEL, 2)
        msg = str(exc.value)
        assert "\n" not in msg and "is not writable" in msg and "nothing was changed" in msg
        with pytest.raises(ArtifactError, match="cannot register a version: the model registry .* is not writable"):
            register(reg, tmp_path, "three")
        assert reg.aliases(APP, MODEL) == {"production": 1}
        assert [v.version for v in reg.versions(APP, MODEL)] == [1, 2]
        reg.verify(reg.get(APP, MODEL, "production"))
    finally:
        (mdir / "versions").chmod(0o755)
        mdir.chmod(0o755)


# -- diff, prune ------------------------------------------------------------------------------------
def test_diff_shows_metrics_side_by_side_and_recipe_changes(reg, tmp_path):
    register(reg, tmp_path, "one", acc=0.80)
    register(reg, tmp_path, "two", acc=0.85, recipe={"lr": 5e-5, "warmup": 10})
    d = reg.diff(APP, MODEL, 1, 2)
    assert d["metrics"]["accuracy"]["a"] == 0.80 and d["metrics"]["accuracy"]["delta"] == pytest.approx(0.05)
    assert d["recipe"] == {"lr": {"a": 1e-4, "b": 5e-5}, "warmup": {"a": None, "b": 10}}
    assert d["same_eval_split"] and not d["same_data"]


def test_prune_keeps_newest_aliased_and_rollback_target(reg, tmp_path):
    for i in range(6):
        register(reg, tmp_path, f"v{i}")
    reg.promote(APP, MODEL, 1)
    reg.promote(APP, MODEL, 2)  # production v2, rollback target v1
    reg.promote(APP, MODEL, 3, alias="candidate")
    with pytest.raises(DataError, match="--keep must be a whole number >= 0"):
        reg.prune(APP, MODEL, keep=-1)
    assert reg.prune(APP, MODEL, keep=1) == ["0004", "0005"]
    assert [v.version for v in reg.versions(APP, MODEL)] == [1, 2, 3, 6]
    assert reg.rollback(APP, MODEL).version == 1
    assert register(reg, tmp_path, "next").version == 7  # pruned numbers are not handed out again


# -- gate ----------------------------------------------------------------------------------------------
def test_mcnemar_exact_matches_hand_computation():
    # discordant pairs: candidate-only right b=1, production-only right c=6 (+ 5 ties)
    cand = [1] * 1 + [0] * 6 + [1] * 3 + [0] * 2
    prod = [0] * 1 + [1] * 6 + [1] * 3 + [0] * 2
    m = mcnemar_exact(cand, prod)
    # two-sided exact: 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * (1 + 7) / 128
    assert (m.candidate_only, m.production_only) == (1, 6) and m.p_value == pytest.approx(16 / 128)
    m = mcnemar_exact([1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1])
    assert m.p_value == pytest.approx(2 * (1 + 8 + 28 + 56) / 256)  # b=3, c=5
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]).p_value == 1.0  # no discordant pair
    from verticore.registry.gate import _binom_two_sided

    binom = pytest.importorskip("scipy.stats").binom
    for b, c in [(40, 60), (4900, 5100), (12000, 12900)]:  # exact integers, and the log-space path above 20000
        assert _binom_two_sided(b, c) == pytest.approx(2 * binom.cdf(b, b + c, 0.5), rel=1e-6)


def test_paired_bootstrap_is_seeded_and_brackets_the_delta():
    rng = np.random.default_rng(1)
    cand, prod = rng.random(300) < 0.8, rng.random(300) < 0.7
    a = paired_bootstrap_ci(cand, prod, n_boot=500, seed=7)
    assert a == paired_bootstrap_ci(cand, prod, n_boot=500, seed=7)
    assert a != paired_bootstrap_ci(cand, prod, n_boot=500, seed=8)
    assert a[0] < cand.mean() - prod.mean() < a[1]
    y = rng.choice(list("abc"), 300)
    pc = np.where(rng.random(300) < 0.8, y, "a")
    pp = np.where(rng.random(300) < 0.6, y, "b")
    r1 = compare(y, pc, pp, primary="macro_f1", n_boot=300, seed=3)
    assert r1.to_dict() == compare(y, pc, pp, primary="macro_f1", n_boot=300, seed=3).to_dict()
    from verticore.evaluation import classification_metrics

    labels = ["a", "b", "c"]
    assert r1.candidate == pytest.approx(classification_metrics(y, pc, labels=labels)["macro_f1"])
    assert r1.production == pytest.approx(classification_metrics(y, pp, labels=labels)["macro_f1"])
    assert r1.ci_low < r1.delta < r1.ci_high and r1.passed
    assert GateResult.from_dict(json.loads(json.dumps(r1.to_dict()))) == r1


def test_gate_rules_tolerance_floors_and_bad_input():
    y = ["a"] * 10 + ["b"] * 10
    prod = ["a"] * 10 + ["b"] * 10
    worse = ["a"] * 10 + ["b"] * 9 + ["a"]  # one error: accuracy 0.95
    r = compare(y, worse, prod, n_boot=200)
    assert not r.passed and r.reason.startswith("gate failed: accuracy 0.9500 vs production 1.0000")
    assert "\n" not in r.reason and "McNemar p=1" in r.reason
    assert compare(y, worse, prod, tolerance=0.05, n_boot=200).passed
    r = compare(y, worse, prod, tolerance=0.05, floors={"b": 0.95}, n_boot=200)
    assert not r.passed and r.floor_failures == ["class 'b' recall 0.9000 < floor 0.9500"]
    assert "class 'b' recall 0.9000 < floor 0.9500" in r.reason and "\n" not in r.reason
    assert compare(y, worse, prod, tolerance=0.05, floors={"*": 0.9}, n_boot=200).passed
    r = compare_correctness([1] * 19 + [0], [1] * 20, tolerance=0.1, y_true=y, floors=0.95, n_boot=100)
    assert not r.passed and r.floor_failures == ["class 'b' recall 0.9000 < floor 0.9500"]
    with pytest.raises(DataError, match="the evaluation split is empty"):
        compare([], [], [])
    with pytest.raises(DataError, match="the evaluation split is empty"):
        compare_correctness([], [])
    with pytest.raises(DataError, match="20 true labels but 19 predictions"):
        compare(y, worse[:-1], prod)
    with pytest.raises(DataError, match="class absent from the evaluation split"):
        compare(y, worse, prod, floors={"zzz": 0.5})
    with pytest.raises(DataError, match="unknown primary metric"):
        compare(y, worse, prod, primary="auc")


def test_failed_gate_refuses_promotion_and_leaves_production(reg, tmp_path):
    register(reg, tmp_path, "one")
    register(reg, tmp_path, "two")
    register(reg, tmp_path, "three")
    register(reg, tmp_path, "other-split", eval_split="intent-eval-v2")
    with pytest.raises(DataError, match="no production version to compare with"):
        reg.gate(APP, MODEL, 2, y_true=["a"], candidate_pred=["a"], production_pred=["a"])
    reg.promote(APP, MODEL, 1)
    y = ["a"] * 30 + ["b"] * 30
    prod = list(y)
    bad = ["a"] * 30 + ["a"] * 12 + ["b"] * 18  # class b recall 0.6
    r = reg.gate(APP, MODEL, 2, y_true=y, candidate_pred=bad, production_pred=prod, tolerance=0.01, n_boot=200)
    assert not r.passed
    stored = json.loads((reg.get(APP, MODEL, 2).path / "gate.json").read_text())
    assert stored["against"] == {"alias": "production", "version": 1} and stored["result"]["reason"] == r.reason
    assert stored["result"]["mcnemar"]["production_only"] == 12 and stored["result"]["ci_high"] <= 0
    with pytest.raises(DataError) as exc:
        reg.promote(APP, MODEL, 2)
    assert str(exc.value) == f"{APP}/{MODEL} v2 not promoted: {r.reason}"
    assert reg.aliases(APP, MODEL) == {"production": 1}
    with pytest.raises(DataError, match="no gate result against production v1"):
        reg.promote(APP, MODEL, 3, require_gate=True)
    ok = reg.gate(APP, MODEL, 3, y_true=y, candidate_pred=prod, production_pred=prod, floors={"*": 0.9}, n_boot=50)
    assert ok.passed and reg.promote(APP, MODEL, 3, require_gate=True).version == 3
    assert reg.promote(APP, MODEL, 2, force=True, reason="override").version == 2  # a human may override
    with pytest.raises(DataError, match="scored on evaluation split 'intent-eval-v2' but .* on 'intent-eval-v1'"):
        reg.gate(APP, MODEL, 4, y_true=y, candidate_pred=prod, production_pred=prod)


# -- watch ------------------------------------------------------------------------------------------------
def test_watch_picks_up_promotion_without_restart_and_in_flight_keeps_old(reg, tmp_path):
    register(reg, tmp_path, "one")
    register(reg, tmp_path, "two")
    register(reg, tmp_path, "three")
    reg.promote(APP, MODEL, 1)
    now = [0.0]
    loads: list[str] = []

    def loader(path: Path) -> dict:
        name = json.loads((path / "config.json").read_text())["name"]
        if name.endswith("three"):
            raise ValueError("broken weights")
        loads.append(name)
        return {"name": name}

    h = ModelRegistry(reg.root).watch(APP, MODEL, loader=loader, interval=5.0)
    h._clock = lambda: now[0]  # a fake clock: the reload cadence is deterministic
    in_flight = h.get()
    assert in_flight == {"name": "intent-one"} and h.version.version == 1
    reg.promote(APP, MODEL, 2)
    assert h.get() is in_flight  # within the check interval: no stat, same object
    now[0] = 6.0
    new = h.get()
    assert new == {"name": "intent-two"} and h.version.version == 2
    assert in_flight == {"name": "intent-one"}  # the in-flight holder still has the old, intact object
    now[0] = 12.0
    assert h.get() is new and loads == ["intent-one", "intent-two"]  # unchanged alias: no reload
    reg.promote(APP, MODEL, 3, force=True)
    now[0] = 18.0
    assert h.get() is new and "broken weights" in h.last_error  # a bad version never replaces a good one
    reg.rollback(APP, MODEL)
    now[0] = 24.0
    assert h.get() is new and h.last_error is None
    with pytest.raises(DataError, match="has no alias 'candidate'"):
        reg.watch(APP, MODEL, loader=loader, alias="candidate").get()


# -- CLI and MLflow -------------------------------------------------------------------------------------------
def test_cli_models_commands_json_and_errors(reg, tmp_path, capsys):
    from verticore.cli import app as cli_app
    from verticore.cli import main

    register(reg, tmp_path, "one", acc=0.8)
    register(reg, tmp_path, "two", acc=0.9)
    register(reg, tmp_path, "three")
    runner = CliRunner()
    r = ["--registry", str(reg.root), "--json"]

    def run(*args: str) -> object:
        res = runner.invoke(cli_app, ["models", *args, *r])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    assert run("promote", APP, MODEL, "1", "--by", "ada") == {"app": APP, "model": MODEL, "alias": "production",
                                                              "from": None, "to": 1}
    assert run("promote", APP, MODEL, "2", "--reason", "better")["to"] == 2
    assert run("list") == [{"app": APP, "model": MODEL, "versions": 3, "latest": 3, "aliases": {"production": 2}}]
    listed = run("list", APP, MODEL)
    assert [v["version"] for v in listed["versions"]] == [1, 2, 3] and listed["versions"][1]["aliases"] == ["production"]
    shown = run("show", APP, MODEL, "production")
    assert shown["version"] == 2 and shown["integrity"] == "ok" and shown["promotions"][0]["reason"] == "better"
    assert run("diff", APP, MODEL, "1", "2")["metrics"]["accuracy"]["delta"] == pytest.approx(0.1)
    assert run("rollback", APP, MODEL) == {"app": APP, "model": MODEL, "alias": "production", "from": 2, "to": 1}
    assert run("prune", APP, MODEL, "--keep", "1")["removed"] == ["0002"]  # rolled-back v2 is not protected
    res = runner.invoke(cli_app, ["models", "list", APP, MODEL, "--registry", str(reg.root)])
    assert res.exit_code == 0 and "[production]" in res.stdout
    with pytest.raises(SystemExit) as exc:
        main(["models", "promote", APP, MODEL, "9", "--registry", str(reg.root)])
    err = capsys.readouterr().err
    assert exc.value.code == 3 and err == f"error: {APP}/{MODEL} has no version 9 (versions: 1, 3)\n"


def test_mlflow_is_optional_and_used_when_present(reg, tmp_path, monkeypatch):
    import types

    from verticore.registry import tracking

    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed: registering still works
    v = register(reg, tmp_path, "one")
    assert tracking.log_version(reg, v) is False
    calls: list[tuple[str, object]] = []

    class Run:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    fake = types.SimpleNamespace(set_tracking_uri=lambda u: calls.append(("uri", u)),
                                 set_experiment=lambda n: calls.append(("experiment", n)),
                                 start_run=lambda run_name: calls.append(("run", run_name)) or Run(),
                                 set_tags=lambda t: calls.append(("tags", t)),
                                 log_params=lambda p: calls.append(("params", p)),
                                 log_metrics=lambda m: calls.append(("metrics", m)))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    register(reg, tmp_path, "two")
    got = dict(calls)
    assert got["uri"].startswith("file://") and got["uri"].endswith("/registry/mlruns")
    assert got["experiment"] == f"{APP}/{MODEL}" and got["run"] == "v2"
    assert got["params"] == {"lr": "0.0001", "epochs": "3"} and got["metrics"]["accuracy"] == 0.9
