"""Sentence embedder: L2-normalised float32 vectors, length-sorted batches, long texts chunked."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError
from ..io import clean_texts
from ..models import ResolvedModel, resolve_device, resolve_dtype, resolve_model
from .backends import Backend, make_backend
from .chunking import aggregate_mean, chunk_texts, length_sorted_batches, pad_batch
from .component import Component, register_component
from .loading import load_tokenizer


@register_component("Embedder")
class Embedder(Component):
    """Embed texts with a sentence-transformers-style encoder (mean pooling by default).

    Args:
        model: ``"default"``, a model directory or a hub id.
        device: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``...
        batch_size: texts per forward pass.
        max_length: tokens per window; longer texts are split into overlapping windows whose
            embeddings are averaged (never silently truncated).
        backend: ``torch`` (default), ``torch-int8``, ``onnx``, ``onnx-int8`` (see backends).
        dtype: ``auto`` = bf16/fp16 on GPU, fp32 on CPU.
        normalize: L2-normalise the output (cosine = dot product).
        compile: ``torch.compile`` the model (GPU).

    Construction only stores these settings: the model spec is resolved on first need (a hub
    id may mean a download) and weights load in :meth:`warm_up`, called by the first
    :meth:`encode`. ``to_dict``/``from_dict`` and ``save``/``load`` round-trip the settings.
    """

    def __init__(self, model: str = "default", device: str = "auto", batch_size: int = 64, max_length: int = 256,
                 backend: str = "torch", dtype: str = "auto", normalize: bool = True, compile: bool = False) -> None:
        self.model = str(model)
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.backend = backend
        self.dtype = dtype
        self.normalize = normalize
        self.compile = compile
        self._resolved_model: ResolvedModel | None = None
        self._tokenizer = None
        self._backend: Backend | None = None
        self._dim: int | None = None

    def _init_parameters(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "batch_size": self.batch_size,
                "max_length": self.max_length, "backend": self.backend, "dtype": self.dtype,
                "normalize": self.normalize, "compile": self.compile}

    @property
    def _resolved(self) -> ResolvedModel:
        if self._resolved_model is None:
            self._resolved_model = resolve_model(self.model)
        return self._resolved_model

    @property
    def model_path(self) -> Path:
        """Local directory of the model (resolving the spec on first use)."""
        return self._resolved.path

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the weights; a :class:`~verticore.index.VectorIndex` records it."""
        return self._resolved.fingerprint

    @property
    def dimension(self) -> int:
        if self._dim is None:
            import json

            cfg = json.loads((self.model_path / "config.json").read_text(encoding="utf-8"))
            self._dim = int(cfg.get("hidden_size") or cfg.get("dim") or cfg.get("d_model"))
        return self._dim

    # -- heavy state --------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load tokenizer and weights (idempotent)."""
        if self._backend is not None:
            return
        self._tokenizer = load_tokenizer(self.model_path)
        device = resolve_device(self.device)
        dtype = resolve_dtype(device, self.dtype)
        self._max_len = min(self.max_length, getattr(self._tokenizer, "model_max_length", 512) or 512, 512)
        self._backend = make_backend(self.backend, model_dir=self.model_path, head="pool", device=device,
                                     dtype=dtype, compile=self.compile)
        self.resolved_device = device

    @property
    def tokenizer(self):
        self.warm_up()
        return self._tokenizer

    # -- inference ----------------------------------------------------------------------
    def encode(self, texts: Sequence[str] | str, batch_size: int | None = None, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns ``(n, dim)`` float32, L2-normalised when ``normalize``.

        Raises :class:`~verticore.errors.DataError` on empty/whitespace texts.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if not batch:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch = clean_texts(batch)
        self.warm_up()
        chunked = chunk_texts(self._tokenizer, batch, self._max_len)
        out = np.zeros((len(chunked.input_ids), self.dimension), dtype=np.float32)
        lengths = [len(x) for x in chunked.input_ids]
        bs = batch_size or self.batch_size
        pad = self._tokenizer.pad_token_id or 0
        batches = list(length_sorted_batches(lengths, bs))
        for idx in tqdm(batches, desc="embed", unit="batch", disable=not show_progress):
            ids, mask = pad_batch([chunked.input_ids[i] for i in idx], pad)
            out[idx] = self._backend.run(ids, mask)
        if len(chunked.input_ids) != len(batch):
            out = aggregate_mean(out, chunked.owner, len(batch))
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.maximum(norms, 1e-12)
        out = np.ascontiguousarray(out, dtype=np.float32)
        return out[0] if single else out

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def __repr__(self) -> str:
        return f"Embedder(model={self.model!r}, backend={self.backend!r}, device={self.device!r})"


def check_texts_nonempty(texts: Sequence[str]) -> None:
    if not texts:
        raise DataError("no texts given")
