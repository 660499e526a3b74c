"""Self-describing artifact directories.

Layout of a classifier artifact (an embedder artifact is a sentence-transformers folder plus
``verticore.json``/``metrics.json``/``README.md``)::

    model.safetensors, config.json     merged weights (LoRA merged for inference)
    tokenizer.json, tokenizer_config.json, vocab.txt ...
    adapter/                           the LoRA adapter (LoRA runs only)
    labels.json                        {"labels": [...], "multi_label": bool, "threshold": float}
    calibration.json                   {"temperature": T} fitted on dev (probabilities are calibrated)
    metrics.json                       dev/test metrics and confusion matrices
    training_config.json               every training argument
    verticore.json                     kind, base model, data fingerprint, versions, created-at
    README.md                          model card
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError, DataError
from .io import atomic_write_json, fsync_dir, pid_alive, read_json
from .text import utc_iso

log = logging.getLogger(__name__)

ARTIFACT_META = "verticore.json"


@dataclass
class LabelSpace:
    """Labels of a classifier (order = logit index)."""

    labels: list[str]
    multi_label: bool = False
    threshold: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        """The ``labels.json`` content."""
        return {"labels": self.labels, "multi_label": self.multi_label, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LabelSpace":
        labels = data.get("labels")
        if not isinstance(labels, list) or not labels:
            raise ArtifactError("labels.json has no 'labels' list")
        return cls([str(x) for x in labels], bool(data.get("multi_label", False)), float(data.get("threshold", 0.5)))

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise DataError(f"unknown label {label!r}; the model knows {self.labels}") from None


@dataclass
class ArtifactMeta:
    kind: str  # "classifier" | "embedder"
    base_model: str
    base_model_name: str
    data_fingerprint: str | None = None
    method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``verticore.json`` content (stamped with the creation time and library versions)."""
        import torch
        import transformers

        return {"format": "verticore-artifact/1", "kind": self.kind, "base_model": self.base_model,
                "base_model_name": self.base_model_name, "data_fingerprint": self.data_fingerprint,
                "method": self.method, "created_at": utc_iso(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__}, **self.extra}


def write_meta(out: Path, meta: ArtifactMeta) -> None:
    atomic_write_json(out / ARTIFACT_META, meta.to_dict())


def read_meta(path: Path) -> dict[str, Any]:
    f = Path(path) / ARTIFACT_META
    if not f.exists():
        return {}
    try:
        return read_json(f, "artifact metadata")
    except DataError as exc:
        raise ArtifactError(str(exc)) from None


def read_labels(path: Path) -> LabelSpace | None:
    """Labels from ``labels.json`` or, for a plain HF checkpoint, from ``config.json``'s id2label."""
    path = Path(path)
    f = path / "labels.json"
    if f.exists():
        try:
            return LabelSpace.from_dict(read_json(f, "labels file"))
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
    cfg = path / "config.json"
    if cfg.exists():
        try:
            data = read_json(cfg, "model config")
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
        id2label = data.get("id2label")
        if id2label:
            labels = [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
            return LabelSpace(labels, data.get("problem_type") == "multi_label_classification")
    return None


def read_temperature(path: Path) -> float:
    f = Path(path) / "calibration.json"
    if not f.exists():
        return 1.0
    try:
        t = float(read_json(f, "calibration file").get("temperature", 1.0))
    except (DataError, TypeError, ValueError) as exc:
        raise ArtifactError(f"calibration.json in {path} is corrupt: {exc}") from None
    return t if t > 0 else 1.0


def check_artifact_dir(path: Path) -> Path:
    """Fail with one line if ``path`` is not a loadable model directory."""
    path = Path(path)
    recover_artifact(path)
    if not path.exists():
        raise ArtifactError(f"model directory not found: {path}")
    if not path.is_dir():
        raise ArtifactError(f"{path} is a file; pass the model directory")
    if not (path / "config.json").exists():
        raise ArtifactError(f"{path} is not a model artifact (config.json missing)")
    if not any((path / w).exists() for w in ("model.safetensors", "pytorch_model.bin")):
        raise ArtifactError(f"{path} has no weights (model.safetensors missing)")
    return path


def read_json_and_tensors(path: Path, config_name: str, weights_name: str,
                          what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a small artifact made of ``config_name`` (JSON) and ``weights_name`` (safetensors).

    Missing, truncated or corrupt files raise :class:`ArtifactError` naming the file; the
    tensors come back as numpy arrays.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    if not (path / config_name).exists() or not (path / weights_name).exists():
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise ArtifactError(f"{path} is not {article} {what} ({config_name} / {weights_name} missing)")
    try:
        cfg = read_json(path / config_name, f"{what} config")
    except DataError as exc:
        raise ArtifactError(str(exc)) from None
    try:
        tensors = load_file(str(path / weights_name))
    except Exception as exc:  # safetensors raises assorted errors on damaged files
        raise ArtifactError(f"{path / weights_name} is corrupt ({type(exc).__name__})") from None
    return cfg, tensors


# -- crash-safe artifact swaps -------------------------------------------------------------
#: a legacy staging folder (no pid in its name) older than this is a dead run's leftover
STALE_STAGING_SECONDS = 3600.0


def staging_prefix(out: Path) -> str:
    """Name prefix of a staging folder for ``out``; it carries the writer's pid so a later run can
    tell a killed run's folder from a live one."""
    return f".{Path(out).name}.{os.getpid()}."


def _old_sibling(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def _staging_re(out: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(out.name)}\.(?:(\d+)\.)?[A-Za-z0-9_]+\.staging$")


def remove_stale_staging(out: str | os.PathLike) -> int:
    """Delete staging folders of ``out`` left by killed runs; returns how many were removed.

    A folder ``.<name>.<pid>.<random>.staging`` is stale when ``pid`` no longer runs (never ours);
    one from older versions (no pid) when it is older than :data:`STALE_STAGING_SECONDS` (a
    staging folder only lives while the final files are written). A ``.<name>.old`` copy is
    removed once ``out`` itself is present.
    """
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return 0
    pat, removed, now = _staging_re(out), 0, time.time()
    for f in parent.iterdir():
        m = pat.match(f.name)
        stale = False
        if m and f.is_dir():
            if m.group(1):
                pid = int(m.group(1))
                stale = pid != os.getpid() and not pid_alive(pid)
            else:
                try:
                    stale = now - f.stat().st_mtime > STALE_STAGING_SECONDS
                except OSError:
                    stale = False
        elif f == _old_sibling(out) and f.is_dir() and out.is_dir():
            stale = True
        if stale:
            shutil.rmtree(f, ignore_errors=True)
            removed += 1
    return removed


def recover_artifact(out: str | os.PathLike) -> bool:
    """Put the previous artifact back at ``out`` if a swap was killed between its two renames.

    Returns True when ``out`` was restored from its ``.<name>.old`` sibling.
    """
    out = Path(out)
    old = _old_sibling(out)
    if out.exists() or not old.is_dir():
        return False
    try:
        os.rename(old, out)
    except OSError as exc:  # e.g. a read-only location: say so rather than "not found" later
        raise ArtifactError(f"{out} is missing after an interrupted update and could not be restored "
                            f"from {old}: {exc.strerror}; rename it back by hand") from None
    fsync_dir(out.parent)
    log.warning("restored %s from %s (an earlier update was interrupted)", out, old.name)
    return True


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under ``root`` (so a rename that publishes it is durable)."""
    root = Path(root)
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in(staged: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Publish the complete folder ``staged`` at ``out``, replacing what is there.

    The staged files are fsynced first. Where the OS can swap two paths atomically (Linux) the old
    and new folders trade places in one step, so ``out`` is always a complete artifact; elsewhere
    the old one is renamed to ``.<name>.old`` first, and :func:`recover_artifact` (run by every
    loader) puts it back if a crash falls between the two renames.
    """
    staged, out = Path(staged), Path(out)
    fsync_tree(staged)
    if out.exists():
        if _exchange(staged, out):  # staged now holds the old artifact
            fsync_dir(out.parent)
            shutil.rmtree(staged, ignore_errors=True)
            return out
        old = _old_sibling(out)
        if old.exists():
            shutil.rmtree(old)
        os.rename(out, old)
        fsync_dir(out.parent)
        os.rename(staged, out)
        fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
        return out
    os.rename(staged, out)
    fsync_dir(out.parent)
    return out
