"""Text classifier inference: calibrated probabilities, top-k, long texts chunked and averaged."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..artifact import LabelSpace, check_artifact_dir, read_labels, read_meta, read_temperature
from ..errors import ArtifactError
from ..io import clean_texts
from ..models import resolve_device, resolve_dtype, resolve_model
from .backends import Backend, make_backend
from .chunking import aggregate_mean, chunk_texts, length_sorted_batches, pad_batch
from .component import Component, register_component
from .loading import load_tokenizer


@dataclass
class Prediction:
    """One text's prediction.

    ``label`` is the argmax (single-label); for multi-label models ``labels`` lists every label
    whose probability clears the threshold. ``chunks > 1`` means the text was longer than the
    model window and ``aggregation`` says how chunk probabilities were combined.
    """

    label: str
    score: float
    probabilities: dict[str, float]
    top_k: list[tuple[str, float]]
    labels: list[str] = field(default_factory=list)
    chunks: int = 1
    aggregation: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "probabilities": self.probabilities,
                "top_k": [{"label": l, "score": s} for l, s in self.top_k], "labels": self.labels,
                "chunks": self.chunks, "aggregation": self.aggregation}


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def softmax_weights(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(labels x features)`` and bias of a fitted scikit-learn logistic regression, one
    row per class so that a softmax over ``x @ W.T + b`` gives its probabilities.

    On two classes scikit-learn keeps a single row ``z`` (the log-odds of the second class);
    ``softmax(-z/2, z/2)`` equals ``sigmoid(z)``, so the rows become ``-coef/2`` and ``coef/2``.
    """
    coef, intercept = np.asarray(coef, dtype=np.float32), np.asarray(intercept, dtype=np.float32).reshape(-1)
    if coef.shape[0] == 1:
        coef, intercept = np.vstack([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    return np.ascontiguousarray(coef, dtype=np.float32), np.ascontiguousarray(intercept, dtype=np.float32)


def prediction_from_probabilities(space: LabelSpace, p: np.ndarray, top_k: int, chunks: int = 1,
                                  aggregation: str = "none") -> Prediction:
    """One :class:`Prediction` from a row of probabilities over ``space.labels``."""
    labels = space.labels
    order = np.argsort(-p)
    best = int(order[0])
    top = [(labels[int(i)], float(p[int(i)])) for i in order[: max(1, top_k)]]
    chosen = [labels[i] for i in range(len(p)) if p[i] >= space.threshold] if space.multi_label else [labels[best]]
    return Prediction(label=labels[best], score=float(p[best]), probabilities={l: float(v) for l, v in zip(labels, p)},
                      top_k=top, labels=chosen, chunks=chunks, aggregation=aggregation)


class PredictsFromProbabilities:
    """``predict`` for a classifier that has ``label_space`` and ``predict_proba`` (the probes,
    the ensemble): same :class:`Prediction` contract as :meth:`TextClassifier.predict`."""

    label_space: LabelSpace
    #: how a :class:`Prediction`'s probabilities were obtained
    aggregation: str = "none"

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def predict(self, texts: Sequence[str] | str, top_k: int = 3, show_progress: bool = False) -> list[Prediction] | Prediction:
        """Predict labels. A single string returns one :class:`Prediction`, a list returns a list."""
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if not batch:
            return []
        preds = [prediction_from_probabilities(self.label_space, p, top_k, aggregation=self.aggregation)
                 for p in self.predict_proba(batch)]
        return preds[0] if single else preds


@register_component("TextClassifier")
class TextClassifier(Component):
    """Load a fine-tuned classifier artifact (or any HF sequence-classification checkpoint).

    Probabilities are temperature-scaled with the temperature fitted on the dev set at
    training time (``calibration.json``), so a 0.9 means about 90% right.

    Construction stores the settings and reads the artifact's small JSON description (labels,
    calibration, metadata), so a wrong path fails at once; tokenizer and weights load in
    :meth:`warm_up`, called by the first prediction.
    """

    def __init__(self, model: str, device: str = "auto", batch_size: int = 64, max_length: int = 256,
                 backend: str = "torch", dtype: str = "auto", compile: bool = False) -> None:
        self.model = str(model)
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.backend = backend
        self.dtype = dtype
        self.compile = compile
        resolved = resolve_model(self.model)
        self.model_path = check_artifact_dir(resolved.path)
        space = read_labels(self.model_path)
        if space is None:
            raise ArtifactError(f"{self.model_path} has no labels.json or id2label: not a classifier")
        self.label_space: LabelSpace = space
        self.temperature = read_temperature(self.model_path)
        self.meta = read_meta(self.model_path)
        self._tokenizer = None
        self._backend: Backend | None = None

    @classmethod
    def from_model(cls, path: str | Path, model: Any, tokenizer: Any, device: str, max_length: int) -> "TextClassifier":
        """A classifier over an artifact directory whose weights are already in memory.

        The trainer uses it to calibrate through the exact inference path (chunking, batching)
        without reloading what it just saved: ``model`` is the in-memory transformers model of
        ``path``, run in fp32 on the resolved ``device``, chunking at ``max_length`` tokens.
        """
        from .backends import TorchBackend

        clf = cls(str(path), device=device, max_length=max_length)
        clf._attach(tokenizer, TorchBackend(Path(path), head="logits", device=device, model=model), device)
        return clf

    def _attach(self, tokenizer: Any, backend: Backend, device: str) -> None:
        """Install the heavy state (what :meth:`warm_up` loads, or what :meth:`from_model` is given)."""
        self._tokenizer = tokenizer
        self._max_len = min(self.max_length, getattr(tokenizer, "model_max_length", 512) or 512, 512)
        self._backend = backend
        self.resolved_device = device

    def _init_parameters(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "batch_size": self.batch_size,
                "max_length": self.max_length, "backend": self.backend, "dtype": self.dtype, "compile": self.compile}

    @property
    def labels(self) -> list[str]:
        return self.label_space.labels

    @property
    def multi_label(self) -> bool:
        return self.label_space.multi_label

    def warm_up(self) -> None:
        """Load tokenizer and weights (idempotent)."""
        if self._backend is not None:
            return
        tokenizer = load_tokenizer(self.model_path)
        device = resolve_device(self.device)
        self._attach(tokenizer, make_backend(self.backend, model_dir=self.model_path, head="logits", device=device,
                                             dtype=resolve_dtype(device, self.dtype), compile=self.compile), device)

    def predict_logits(self, texts: Sequence[str], show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Raw per-text logits (chunk logits averaged) and chunk counts."""
        probs, counts, logits = self._run(texts, show_progress)
        return logits, counts

    def _run(self, texts: Sequence[str], show_progress: bool):
        texts = clean_texts(list(texts))
        self.warm_up()
        chunked = chunk_texts(self._tokenizer, texts, self._max_len)
        n_labels = len(self.labels)
        logits = np.zeros((len(chunked.input_ids), n_labels), dtype=np.float32)
        pad = self._tokenizer.pad_token_id or 0
        batches = list(length_sorted_batches([len(x) for x in chunked.input_ids], self.batch_size))
        for idx in tqdm(batches, desc="classify", unit="batch", disable=not show_progress):
            ids, mask = pad_batch([chunked.input_ids[i] for i in idx], pad)
            out = self._backend.run(ids, mask)
            if out.shape[1] != n_labels:
                raise ArtifactError(f"model outputs {out.shape[1]} logits but labels.json lists {n_labels} labels")
            logits[idx] = out
        if self.multi_label:
            chunk_probs = 1.0 / (1.0 + np.exp(-logits / self.temperature))
        else:
            chunk_probs = _softmax(logits / self.temperature)
        counts = chunked.chunks_per_text()
        if len(chunked.input_ids) != len(texts):
            probs = aggregate_mean(chunk_probs, chunked.owner, len(texts))
            text_logits = aggregate_mean(logits, chunked.owner, len(texts))
        else:
            probs, text_logits = chunk_probs, logits
        return probs, counts, text_logits

    def predict_proba(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """``(n, n_labels)`` calibrated probabilities (mean over chunks for long texts)."""
        return self._run(texts, show_progress)[0]

    def predict_proba_and_logits(self, texts: Sequence[str], show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and raw logits from one forward pass (out-of-scope scoring needs both)."""
        probs, _, logits = self._run(texts, show_progress)
        return probs, logits

    def predict(self, texts: Sequence[str] | str, top_k: int = 3, show_progress: bool = False) -> list[Prediction] | Prediction:
        """Predict labels. A single string returns one :class:`Prediction`, a list returns a list."""
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if not batch:
            return []
        probs, counts, _ = self._run(batch, show_progress)
        preds = [self._to_prediction(p, int(c), top_k) for p, c in zip(probs, counts)]
        return preds[0] if single else preds

    def _to_prediction(self, p: np.ndarray, chunks: int, top_k: int) -> Prediction:
        return prediction_from_probabilities(self.label_space, p, top_k, chunks,
                                             "mean_of_chunk_probabilities" if chunks > 1 else "none")

    def __repr__(self) -> str:
        return f"TextClassifier(model={self.model!r}, labels={self.labels})"
