"""Bad input for the model registry beyond tests/test_registry.py (issue #14): refused actions on
unknown models create nothing, a version of another app, damaged records (manifest, format, missing or
truncated files, gate.json, aliases.json), rollback / gate / prune on a read-only disk, and promotions
killed with SIGKILL at several points: the alias always names a complete version that still loads,
a watching service keeps serving, and the next promotion works and clears the debris."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from verticore.errors import ArtifactError, DataError
from verticore.registry.store import ModelRegistry, ModelVersion

ROOT = Path(__file__).resolve().parents[1]
APP, MODEL = "customer_service", "intent"


def _artifact(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "src" / name
    (d / "sub").mkdir(parents=True)
    (d / "weights.bin").write_bytes(name.encode() * 256)
    (d / "sub" / "labels.json").write_text('{"labels": ["a", "b"]}')
    return d


def _register(reg: ModelRegistry, tmp_path: Path, name: str, app: str = APP, model: str = MODEL) -> ModelVersion:
    return reg.register(app, model, _artifact(tmp_path, f"{app}-{model}-{name}"), data_fingerprint=f"sha256:{name}",
                        recipe={"epochs": 1}, metrics={"accuracy": 0.9}, eval_split="fixed:1", created_by="tester")


def _load(path: Path) -> bytes:
    """What a service's loader reads: every artifact file must be there."""
    return (path / "weights.bin").read_bytes() + (path / "sub" / "labels.json").read_bytes()


@pytest.fixture()
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# -- unknown and foreign --------------------------------------------------------------------------------
def test_refused_actions_on_an_unknown_model_create_nothing(reg):
    for action in (lambda: reg.promote(APP, MODEL, 1), lambda: reg.promote(APP, MODEL, "v1"),
                   lambda: reg.promote(APP, MODEL, "production"), lambda: reg.rollback(APP, MODEL),
                   lambda: reg.get(APP, MODEL, "candidate"), lambda: reg.diff(APP, MODEL, 1, 2)):
        with pytest.raises(DataError) as exc:
            action()
        assert _one_line(exc).startswith(f"{APP}/{MODEL} has no ")
    assert reg.prune(APP, MODEL, keep=1) == []
    assert not reg.root.exists() and reg.models() == []  # nothing was created by the refusals


@pytest.mark.parametrize("ref,match", [(True, "invalid version True"), (0, "has no version 0"),
                                       (-3, "has no version -3"), ("v99", "has no version 99"),
                                       ("staging", "has no alias 'staging' \\(aliases: production -> v1\\)"),
                                       ("../0001", "invalid alias name"), ("", "invalid alias name")])
def test_promote_unknown_version_references(reg, tmp_path, ref, match):
    _register(reg, tmp_path, "one")
    reg.promote(APP, MODEL, 1)
    with pytest.raises(DataError, match=match) as exc:
        reg.promote(APP, MODEL, ref)
    _one_line(exc)
    assert reg.aliases(APP, MODEL) == {"production": 1}


def test_promote_refuses_invalid_names_and_a_version_of_another_app(reg, tmp_path):
    _register(reg, tmp_path, "one")
    reg.promote(APP, MODEL, 1)
    foreign = _register(reg, tmp_path, "x", app="finance_sentiment", model=MODEL)  # same model name, other app
    with pytest.raises(DataError, match="is a version of finance_sentiment/intent, not of customer_service/intent"):
        reg.promote(APP, MODEL, foreign)
    for app, model, alias in (("../etc", MODEL, "production"), (APP, "a/b", "production"), (APP, MODEL, "pro duction")):
        with pytest.raises(DataError, match="invalid (app|model|alias) name") as exc:
            reg.promote(app, model, 1, alias)
        _one_line(exc)
    assert reg.aliases(APP, MODEL) == {"production": 1}
    assert reg.models() == [("customer_service", "intent"), ("finance_sentiment", "intent")]


# -- corrupt and half-written ---------------------------------------------------------------------------
def _rewrite(path: Path, text: str) -> None:
    path.chmod(0o644)
    path.write_text(text)


@pytest.mark.parametrize("damage,match", [
    ("empty_manifest", "no valid file manifest"),
    ("wrong_format", "not a verticore-registry-version/1 record"),
    ("missing_key", "version record is incomplete"),
    ("missing_file", "artifact/sub/labels.json is missing"),
    ("truncated_file", "artifact/weights.bin has 10 bytes"),
    ("no_artifact", "artifact/.* is missing"),
])
def test_a_damaged_version_is_refused_with_one_line_and_production_stays(reg, tmp_path, damage, match):
    import shutil

    _register(reg, tmp_path, "one")
    v2 = _register(reg, tmp_path, "two")
    reg.promote(APP, MODEL, 1)
    record = json.loads((v2.path / "version.json").read_text())
    if damage == "empty_manifest":
        _rewrite(v2.path / "version.json", json.dumps({**record, "files": {}}))
    elif damage == "wrong_format":
        _rewrite(v2.path / "version.json", json.dumps({**record, "format": "something-else/9"}))
    elif damage == "missing_key":
        _rewrite(v2.path / "version.json", json.dumps({k: v for k, v in record.items() if k != "eval_split"}))
    elif damage == "missing_file":
        (v2.artifact_path / "sub" / "labels.json").unlink()
    elif damage == "truncated_file":
        _rewrite(v2.artifact_path / "weights.bin", "x" * 10)
    else:
        shutil.rmtree(v2.artifact_path)
    with pytest.raises((DataError, ArtifactError), match=match) as exc:
        reg.promote(APP, MODEL, 2)
    _one_line(exc)
    assert reg.aliases(APP, MODEL) == {"production": 1}
    reg.verify(reg.get(APP, MODEL, "production"))
    assert _load(reg.get(APP, MODEL, "production").artifact_path)


def test_corrupt_gate_file_refuses_promotion_until_gated_again(reg, tmp_path):
    _register(reg, tmp_path, "one")
    v2 = _register(reg, tmp_path, "two")
    reg.promote(APP, MODEL, 1)
    (v2.path / "gate.json").write_text('{"against": {"version": 1}, "result": {"passed": tr')  # torn
    with pytest.raises(ArtifactError, match="gate.json is corrupt .*run the gate again$") as exc:
        reg.promote(APP, MODEL, 2)
    _one_line(exc)
    assert reg.aliases(APP, MODEL) == {"production": 1}
    y = ["a", "b"] * 10
    assert reg.gate(APP, MODEL, 2, y_true=y, candidate_pred=y, production_pred=y, n_boot=50).passed
    assert reg.promote(APP, MODEL, 2).version == 2


def test_damaged_alias_file_is_rebuilt_from_the_log(reg, tmp_path, caplog):
    for name in ("one", "two", "three"):
        _register(reg, tmp_path, name)
    reg.promote(APP, MODEL, 1)
    reg.promote(APP, MODEL, 2)
    reg.promote(APP, MODEL, 3, "candidate")
    (reg.model_dir(APP, MODEL) / "aliases.json").write_text('{"format": "verticore-registry-aliases/1", "alia')
    assert reg.aliases(APP, MODEL) == {"production": 2, "candidate": 3}
    assert "rebuilding the aliases" in caplog.text
    assert reg.rollback(APP, MODEL).version == 1  # the rebuilt rollback chain works, and is written back
    assert json.loads((reg.model_dir(APP, MODEL) / "aliases.json").read_text())["aliases"]["production"]["version"] == 1


# -- read-only disk -------------------------------------------------------------------------------------
def test_rollback_gate_and_prune_on_a_read_only_disk(reg, tmp_path, monkeypatch):
    import verticore.registry.store as store

    for name in ("one", "two", "three"):
        _register(reg, tmp_path, name)
    reg.promote(APP, MODEL, 1)
    reg.promote(APP, MODEL, 2)
    before = sorted(p.relative_to(reg.root).as_posix() for p in reg.root.rglob("*"))

    def refuse(path, *a, **k):  # the disk was remounted read-only (mode bits do not stop root, so simulate)
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(store, "atomic_write_json", refuse)
    monkeypatch.setattr(store, "_append_line", refuse)
    monkeypatch.setattr(store.os, "rename", refuse)
    y = ["a", "b"] * 10
    for what, action in (("roll back", lambda: reg.rollback(APP, MODEL)),
                         ("store the gate result", lambda: reg.gate(APP, MODEL, 3, y_true=y, candidate_pred=y,
                                                                     production_pred=y, n_boot=50)),
                         ("prune", lambda: reg.prune(APP, MODEL, keep=0)),
                         ("promote", lambda: reg.promote(APP, MODEL, 3, force=True))):
        with pytest.raises(ArtifactError) as exc:
            action()
        msg = _one_line(exc)
        assert msg.startswith(f"cannot {what}") and "is not writable" in msg and "nothing was changed" in msg
    monkeypatch.undo()
    assert sorted(p.relative_to(reg.root).as_posix() for p in reg.root.rglob("*")) == before
    # reads (what a running service does) still work
    assert reg.aliases(APP, MODEL) == {"production": 2}
    handle = reg.watch(APP, MODEL, _load, interval=0)
    assert handle.get() and handle.version.version == 2


# -- killed promotions ----------------------------------------------------------------------------------
CHILD = """
import os, signal, tempfile
import verticore.registry.store as store

POINT = {point!r}


def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)


if POINT == "verifying":  # hashing the target's files, under the registry lock
    store.file_sha256 = die
elif POINT == "alias_half_written":  # the new aliases.json temp file is half on disk
    real_mkstemp, real_fdopen, alias_fds = tempfile.mkstemp, os.fdopen, set()

    def mkstemp(*a, **k):
        fd, path = real_mkstemp(*a, **k)
        if "aliases.json" in os.path.basename(path):
            alias_fds.add(fd)
        return fd, path

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            os.fsync(self.fh.fileno())
            die()

    def fdopen(fd, *a, **k):
        fh = real_fdopen(fd, *a, **k)
        return HalfWriter(fh) if fd in alias_fds else fh

    tempfile.mkstemp, os.fdopen = mkstemp, fdopen
elif POINT == "before_rename":  # the new alias file is complete but not yet renamed into place
    real_replace = os.replace
    os.replace = lambda a, b: die() if str(b).endswith("aliases.json") else real_replace(a, b)
elif POINT == "before_log":  # the alias moved, its history line is not written
    store._append_line = die

store.ModelRegistry({root!r}).promote({app!r}, {model!r}, 2, by="killed", force=True)
"""


@pytest.mark.parametrize("point,expected", [("verifying", 1), ("alias_half_written", 1), ("before_rename", 1),
                                            ("before_log", 2)])
def test_sigkill_mid_promotion_leaves_the_alias_on_a_complete_version(reg, tmp_path, point, expected):
    _register(reg, tmp_path, "one")
    _register(reg, tmp_path, "two")
    reg.promote(APP, MODEL, 1)
    service = reg.watch(APP, MODEL, _load, interval=0)  # a running service following production
    assert service.version.version == 1

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT / "apps")])}
    code = textwrap.dedent(CHILD).format(point=point, root=str(reg.root), app=APP, model=MODEL)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == -9, p.stderr  # really killed at the patched point, not finished

    mdir = reg.model_dir(APP, MODEL)
    json.loads((mdir / "aliases.json").read_text())  # the alias file itself is never torn
    production = reg.get(APP, MODEL, "production")
    assert production.version == expected
    reg.verify(production, full=True)
    assert service.get() == _load(production.artifact_path) and service.version.version == expected
    assert service.last_error is None
    if point == "alias_half_written":
        assert [f.name for f in mdir.iterdir() if f.name.endswith(".tmp")]  # the dead writer's half file

    # the lock died with the child: the next writer goes on at once, clears the debris and logs what it finds
    target = 1 if expected == 2 else 2
    assert reg.promote(APP, MODEL, target, force=True).version == target
    assert not [f.name for f in mdir.iterdir() if f.name.endswith(".tmp")]
    assert reg.incomplete(APP, MODEL) == []
    assert [h["to"] for h in reg.history(APP, MODEL)][-1] == target
    if point == "before_log":
        assert [h["action"] for h in reg.history(APP, MODEL)] == ["promote", "recovered", "promote"]
    else:
        assert [(h["action"], h["to"]) for h in reg.history(APP, MODEL)] == [("promote", 1), ("promote", 2)]
    assert service.get() == _load(reg.get(APP, MODEL, target).artifact_path)
