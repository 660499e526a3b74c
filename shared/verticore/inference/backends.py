"""Execution backends for encoder models.

A backend turns padded ``(input_ids, attention_mask)`` int64 arrays into float32 outputs:
pooled sentence vectors (``head="pool"``) or classification logits (``head="logits"``).
Backends are registered by name so new ones (ONNX Runtime, int8, ...) plug in without
touching the embedder or classifier.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..errors import ArtifactError, VerticoreError
from ..registries import Registry
from .loading import load_torch_model
from .pooling import pool, pooling_mode


class Backend(Protocol):
    """Runs padded int64 ``(input_ids, attention_mask)`` and returns float32 outputs. Token
    classifiers with a case feature also pass ``token_type_ids`` (only the torch backends take it)."""

    device: str

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


BackendFactory = Callable[..., Backend]

#: Every backend by name. Third-party backends arrive through the ``verticore.backends``
#: entry-point group (a module that calls :func:`register_backend`, or a factory object).
BACKENDS: Registry[BackendFactory] = Registry("backend", "verticore.backends")

#: Built-in backends that need an optional dependency: imported on first lookup, skipped when
#: the dependency is missing (an ImportError leaves their names unregistered).
_OPTIONAL_BACKEND_MODULES = ("verticore.inference.onnx_backend",)


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator: make a backend factory available under ``name`` (a taken name is refused)."""
    return BACKENDS.decorator(name)


def available_backends() -> list[str]:
    """Names of every backend that can be made here (optional ones only when importable)."""
    _load_optional_backends()
    return BACKENDS.names()


def make_backend(name: str, **kwargs) -> Backend:
    """Instantiate backend ``name`` (see :func:`available_backends`)."""
    _load_optional_backends()
    return BACKENDS.get(name)(**kwargs)


def _load_optional_backends() -> None:
    for module in _OPTIONAL_BACKEND_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            pass


@register_backend("torch")
class TorchBackend:
    """Plain PyTorch: fp32 on CPU, bf16/fp16 on GPU, optional ``torch.compile``."""

    def __init__(self, model_dir: Path, head: str = "pool", device: str = "cpu", dtype=None,
                 compile: bool = False, pooling: str | None = None, num_threads: int | None = None, model=None):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = device
        self.head = head
        self.pooling = pooling or pooling_mode(model_dir)
        self.model = model if model is not None else load_torch_model(model_dir, head, dtype)
        self.model.eval().to(device)
        if compile:
            self.model = torch.compile(self.model, dynamic=True)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray,
            token_type_ids: np.ndarray | None = None) -> np.ndarray:
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            extra = {} if token_type_ids is None else {"token_type_ids": torch.from_numpy(token_type_ids).to(self.device)}
            if self.head == "pool":
                out = self.model(input_ids=ids, attention_mask=mask, **extra)
                res = pool(out.last_hidden_state, mask, self.pooling)
            else:
                res = self.model(input_ids=ids, attention_mask=mask, **extra).logits
            return res.float().cpu().numpy()


@register_backend("torch-int8")
class TorchInt8Backend(TorchBackend):
    """CPU dynamic int8 quantisation of the Linear layers (``torch.ao.quantization``)."""

    def __init__(self, model_dir: Path, head: str = "pool", device: str = "cpu", **kwargs):
        import torch

        if device != "cpu":
            raise VerticoreError("backend torch-int8 runs on CPU only; use backend torch on GPU")
        kwargs.pop("dtype", None)
        super().__init__(model_dir, head=head, device="cpu", **kwargs)
        # Per-channel weight scales: on all-MiniLM-L6-v2 this roughly halves the int8 error of
        # per-tensor scales, but the result still misses the cosine >= 0.99 bar (see bench/throughput.py).
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)


#: Backend that ``auto`` uses on CPU when onnxruntime is importable. Chosen from
#: bench/throughput.py: the fastest backend that keeps cosine >= 0.99 to fp32 embeddings and
#: >= 99% argmax agreement on real sentences (2,000 PhraseBank sentences: onnx-int8 embeds at
#: 1.62x SentenceTransformer.encode with cosine_min 0.9968, classifies at 3.12x the HF pipeline
#: with 99.75% argmax agreement). The default backend stays ``torch`` (exact fp32).
AUTO_CPU_BACKEND = "onnx-int8"


def onnxruntime_available() -> bool:
    """True when onnxruntime can be imported (the ONNX backends are registered)."""
    _load_optional_backends()
    return "onnx" in BACKENDS


@register_backend("auto")
def auto_backend(model_dir: Path, head: str = "pool", device: str = "cpu", dtype=None, compile: bool = False,
                 **kwargs) -> Backend:
    """``torch`` on GPU/MPS (bf16/fp16, optional compile); on CPU :data:`AUTO_CPU_BACKEND` when
    onnxruntime is installed, falling back to ``torch`` when the model cannot be exported."""
    if device == "cpu" and onnxruntime_available():
        try:
            return make_backend(AUTO_CPU_BACKEND, model_dir=model_dir, head=head, device=device, **kwargs)
        except ArtifactError as exc:
            warnings.warn(f"{exc}; falling back to the torch backend", stacklevel=2)
    return TorchBackend(model_dir, head=head, device=device, dtype=dtype, compile=compile, **kwargs)


__all__ = ["AUTO_CPU_BACKEND", "BACKENDS", "Backend", "BackendFactory", "TorchBackend", "TorchInt8Backend",
           "available_backends", "load_torch_model", "make_backend", "onnxruntime_available", "pool", "pooling_mode",
           "register_backend"]
