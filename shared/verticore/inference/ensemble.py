"""Classifier ensembles: several fine-tuned classifiers plus a linear probe on frozen embeddings.

Why: on BANKING77 one fine-tuned all-MiniLM-L6-v2 reaches 0.930 test accuracy and a logistic
regression on its frozen sentence embeddings 0.927, but their errors differ; the average of
their calibrated probabilities is more accurate than any member (bench/banking77.py). The
probe costs one embedding pass, or none: open the ensemble with ``embedder=`` (the instance a
search index already uses; shared only when its weights match the probe's) and pass that
embedder's vectors as ``embeddings=`` to :meth:`ClassifierEnsemble.predict_proba_and_logits`.

Layout of an ensemble directory::

    ensemble.json      {"kind": "classifier_ensemble", "labels": [...], "members": [{"path", "kind", "weight"}]}
    member0/ ...       a TextClassifier artifact (train_classifier output)
    probe/             an EmbeddingProbe: probe.json + probe.safetensors (no pickle)
    tfidf/             a TfidfProbe: tfidf.json + tfidf.safetensors (no pickle)

:func:`load_classifier` opens either a plain classifier artifact or an ensemble directory;
both expose ``labels``, ``predict``, ``predict_proba`` and ``predict_proba_and_logits``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..artifact import LabelSpace, read_json_and_tensors
from ..errors import ArtifactError, DataError, VerticoreError
from ..io import atomic_write_bytes, atomic_write_json, clean_labelled_texts, clean_texts, read_json
from ..registries import Registry
from .classifier import PredictsFromProbabilities, TextClassifier, _softmax, softmax_weights
from .component import Component, register_component

ENSEMBLE_FILE = "ensemble.json"
PROBE_CONFIG = "probe.json"
PROBE_WEIGHTS = "probe.safetensors"


@register_component("EmbeddingProbe")
class EmbeddingProbe(PredictsFromProbabilities, Component):
    """A linear softmax classifier on frozen (L2-normalised) sentence embeddings.

    This is the "frozen embeddings + logistic regression" model as a saved, reloadable artifact:
    ``probe.safetensors`` holds ``weight`` (labels x dim) and ``bias``; ``probe.json`` the labels
    and the embedder spec and fingerprint it was fitted on. Loading it against other weights
    fails with a clear message instead of returning wrong probabilities.

    Construction reads the small probe files (no encoder weights: the embedder loads them on
    first use); ``embedder`` may be a shared :class:`~verticore.Embedder` instance.
    """

    def __init__(self, path: str | Path, embedder: Any = None, device: str = "auto") -> None:
        from .embedder import Embedder

        self.path = Path(path)
        self.device = device
        self._embedder_given = embedder
        cfg, tensors = read_json_and_tensors(self.path, PROBE_CONFIG, PROBE_WEIGHTS, "embedding probe")
        try:
            self.weight = np.asarray(tensors["weight"], dtype=np.float32)
            self.bias = np.asarray(tensors["bias"], dtype=np.float32)
        except KeyError as exc:
            raise ArtifactError(f"{self.path / PROBE_WEIGHTS} lacks tensor {exc}") from None
        self.config: dict[str, Any] = cfg
        self._labels = [str(x) for x in cfg.get("labels", [])]
        if self.weight.shape[0] != len(self._labels) or self.bias.shape != (len(self._labels),):
            raise ArtifactError(f"{self.path}: weights for {self.weight.shape[0]} labels but probe.json lists {len(self._labels)}")
        self.embedder = embedder if embedder is not None else Embedder(str(cfg.get("embedder", "default")), device=device)
        want = cfg.get("embedder_fingerprint")
        if want and self.embedder.fingerprint != want:
            raise ArtifactError(f"{self.path} was fitted on embeddings of {cfg.get('embedder')!r} (fingerprint {want}); "
                                f"the embedder given has other weights ({self.embedder.fingerprint})")
        if self.weight.shape[1] != self.embedder.dimension:
            raise ArtifactError(f"{self.path} expects {self.weight.shape[1]}-d embeddings, the embedder gives {self.embedder.dimension}")
        self.temperature = 1.0
        self.label_space = LabelSpace(self._labels)

    def _init_parameters(self) -> dict[str, Any]:
        return {"path": str(self.path), "embedder": self._embedder_given, "device": self.device}

    @property
    def labels(self) -> list[str]:
        return self._labels

    def warm_up(self) -> None:
        """Load the embedder's weights."""
        self.embedder.warm_up()

    def logits(self, texts: Sequence[str] | None = None, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Logits from texts, or from precomputed embeddings of the same embedder (no second encode)."""
        if embeddings is None:
            embeddings = self.embedder.encode(clean_texts(list(texts or [])))
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.weight.shape[1]:
            raise DataError(f"embeddings must have shape (n, {self.weight.shape[1]}), got {x.shape}")
        return x @ self.weight.T + self.bias

    def predict_proba_and_logits(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        z = self.logits(texts, embeddings)
        return _softmax(z), z

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        return self.predict_proba_and_logits(texts, embeddings)[0]

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[Any], out_dir: str | Path, embedder: Any = "default",
            c: float = 10.0, max_iter: int = 2000, show_progress: bool = False) -> "EmbeddingProbe":
        """Fit multinomial logistic regression (L2, inverse strength ``c``) on frozen embeddings and save it."""
        from safetensors.numpy import save
        from sklearn.linear_model import LogisticRegression

        from .embedder import Embedder

        texts, y = clean_labelled_texts(texts, labels, "an embedding probe")
        emb = embedder if isinstance(embedder, Embedder) else Embedder(str(embedder))
        x = emb.encode(texts, show_progress=show_progress)
        lr = LogisticRegression(C=float(c), max_iter=int(max_iter))
        lr.fit(x, y)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        weight, bias = softmax_weights(lr.coef_, lr.intercept_)  # two labels: scikit-learn keeps one row
        atomic_write_bytes(out / PROBE_WEIGHTS, save({"weight": weight, "bias": bias}))
        atomic_write_json(out / PROBE_CONFIG, {"kind": "embedding_probe", "labels": [str(v) for v in lr.classes_],
                                               "embedder": emb.model, "embedder_fingerprint": emb.fingerprint,
                                               "dim": int(x.shape[1]), "c": float(c), "n_train": len(texts),
                                               "train_accuracy": float(lr.score(x, y))})
        return cls(out, embedder=emb)


def _probe_fingerprint(path: Path) -> str | None:
    try:
        return read_json(path / PROBE_CONFIG, "embedding probe config").get("embedder_fingerprint")
    except DataError:
        return None  # EmbeddingProbe reports the broken file itself


def _load_embedding_probe(path: Path, device: str, max_length: int, classifier_kwargs: dict[str, Any],
                          embedder: Any = None) -> "EmbeddingProbe":
    # share the caller's embedder (one model in memory, one encode per query) only when its
    # weights are the ones the probe was fitted on; otherwise the probe loads its own
    fp = _probe_fingerprint(path)
    shared = embedder if embedder is not None and fp and getattr(embedder, "fingerprint", None) == fp else None
    return EmbeddingProbe(path, embedder=shared, device=device)


def _load_fine_tuned(path: Path, device: str, max_length: int, classifier_kwargs: dict[str, Any],
                     embedder: Any = None) -> TextClassifier:
    return TextClassifier(str(path), device=device, max_length=max_length, **classifier_kwargs)


def _load_tfidf_probe(path: Path, device: str, max_length: int, classifier_kwargs: dict[str, Any],
                      embedder: Any = None) -> Any:
    from .lexical import TfidfProbe

    return TfidfProbe(path)


MemberLoader = Callable[..., Any]

#: Member kinds an ``ensemble.json`` may list: kind -> loader(path, device, max_length,
#: classifier_kwargs, embedder). Third-party kinds arrive through the ``verticore.ensemble_members``
#: entry-point group or :func:`register_member_kind`; a taken kind is refused.
MEMBER_KINDS: Registry[MemberLoader] = Registry("ensemble member kind", "verticore.ensemble_members")
MEMBER_KINDS.register("classifier", _load_fine_tuned)
MEMBER_KINDS.register("embedding_probe", _load_embedding_probe)
MEMBER_KINDS.register("tfidf_probe", _load_tfidf_probe)


def register_member_kind(kind: str, loader: MemberLoader) -> MemberLoader:
    """Register a new ensemble member kind. ``loader(path, device, max_length, classifier_kwargs,
    embedder)`` returns an :class:`~verticore.inference.protocols.EnsembleMember` (``labels``,
    ``temperature``, ``warm_up()``, ``predict_proba_and_logits(texts)``)."""
    return MEMBER_KINDS.register(str(kind), loader)


def _load_member(path: Path, kind: str, device: str, max_length: int, classifier_kwargs: dict[str, Any],
                 embedder: Any = None) -> Any:
    try:
        loader = MEMBER_KINDS.get(kind)
    except VerticoreError:
        raise ArtifactError(f"unknown ensemble member kind {kind!r} (one of {MEMBER_KINDS.names()})") from None
    return loader(path, device, max_length, classifier_kwargs, embedder)


@register_component("ClassifierEnsemble")
class ClassifierEnsemble(PredictsFromProbabilities, Component):
    """Weighted average of the calibrated probabilities of several classifiers over one label set.

    ``predict_proba_and_logits`` also returns the weighted mean of the members' temperature-scaled
    logits, which energy-based out-of-scope scores need (an average of probabilities has no
    meaningful free energy).

    ``embedder``: an :class:`~verticore.Embedder` that probe members may share (see the module
    docstring); :attr:`embedder` is then that instance, and its vectors can be passed to
    :meth:`predict_proba_and_logits` instead of encoding the texts again.
    """

    aggregation = "ensemble_mean_of_probabilities"

    def __init__(self, path: str | Path, device: str = "auto", max_length: int = 256, embedder: Any = None,
                 **classifier_kwargs: Any) -> None:
        self.path = Path(path)
        self.device = device
        self.max_length = int(max_length)
        self.classifier_kwargs = dict(classifier_kwargs)
        self._embedder_given = embedder
        f = self.path / ENSEMBLE_FILE
        if not f.exists():
            raise ArtifactError(f"{self.path} is not a classifier ensemble ({ENSEMBLE_FILE} missing)")
        try:
            cfg = read_json(f, "ensemble config")
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
        specs = cfg.get("members") or []
        if not specs:
            raise ArtifactError(f"{f} lists no members")
        self.config: dict[str, Any] = cfg
        self.members: list[Any] = []
        self.weights: list[float] = []
        for spec in specs:
            rel = Path(str(spec.get("path", "")))
            if rel.is_absolute() or ".." in rel.parts:
                raise ArtifactError(f"ensemble member paths must stay inside {self.path}: {rel}")
            if not (self.path / rel).is_dir():
                raise ArtifactError(f"ensemble member {rel} listed in {f} is missing (not found in {self.path})")
            self.members.append(_load_member(self.path / rel, str(spec.get("kind", "classifier")), device, max_length,
                                             classifier_kwargs, embedder))
            self.weights.append(float(spec.get("weight", 1.0)))
        if min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ArtifactError(f"{f}: member weights must be >= 0 and not all 0")
        self._labels = [str(x) for x in (cfg.get("labels") or self.members[0].labels)]
        self._columns = []
        for m in self.members:
            if set(m.labels) != set(self._labels):
                raise ArtifactError(f"ensemble member {getattr(m, 'path', getattr(m, 'model', '?'))} has other labels than {f}")
            pos = {lab: i for i, lab in enumerate(m.labels)}
            self._columns.append(np.array([pos[lab] for lab in self._labels]))
        self.temperature = 1.0  # members are calibrated individually
        self.multi_label = False
        self.label_space = LabelSpace(self._labels, False)

    def _init_parameters(self) -> dict[str, Any]:
        return {"path": str(self.path), "device": self.device, "max_length": self.max_length,
                "embedder": self._embedder_given, **self.classifier_kwargs}

    @property
    def labels(self) -> list[str]:
        return self._labels

    @property
    def embedder(self) -> Any:
        """The embedder all probe members use, if they share one (else None): vectors from it
        may be passed as ``embeddings=``."""
        probes = [m for m in self.members if isinstance(m, EmbeddingProbe)]
        if probes and all(p.embedder is probes[0].embedder for p in probes):
            return probes[0].embedder
        return None

    def warm_up(self) -> None:
        """Load every member's heavy state."""
        for m in self.members:
            m.warm_up()

    def member_probabilities(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each member's calibrated probabilities, columns in the ensemble's label order."""
        return [m.predict_proba_and_logits(texts)[0][:, cols] for m, cols in zip(self.members, self._columns)]

    def predict_proba_and_logits(self, texts: Sequence[str],
                                 embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(weighted mean of member probabilities, weighted mean of member scaled logits).

        ``embeddings``: vectors of ``texts`` from :attr:`embedder`, reused by the probe members.
        """
        texts = clean_texts(list(texts))
        if embeddings is not None:
            if self.embedder is None:
                raise DataError("this ensemble was not opened with a shared embedder; pass texts only")
            if len(embeddings) != len(texts):
                raise DataError(f"{len(texts)} texts but {len(embeddings)} embeddings")
        total = sum(self.weights)
        probs = np.zeros((len(texts), len(self._labels)), dtype=np.float64)
        logits = np.zeros_like(probs)
        for m, cols, w in zip(self.members, self._columns, self.weights):
            if embeddings is not None and isinstance(m, EmbeddingProbe):
                p, z = m.predict_proba_and_logits(texts, embeddings=embeddings)
            else:
                p, z = m.predict_proba_and_logits(texts)
            probs += (w / total) * p[:, cols]
            logits += (w / total) * (z[:, cols] / m.temperature)
        return probs.astype(np.float32), logits.astype(np.float32)

    def predict_proba(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.predict_proba_and_logits(texts)[0]

    @staticmethod
    def write(out_dir: str | Path, members: Sequence[tuple[str, str, float]], labels: Sequence[str],
              metrics: dict[str, Any] | None = None) -> Path:
        """Write ``ensemble.json`` for members ``(relative path, kind, weight)`` already inside ``out_dir``."""
        out = Path(out_dir)
        atomic_write_json(out / ENSEMBLE_FILE, {"kind": "classifier_ensemble", "labels": [str(x) for x in labels],
                                                "members": [{"path": p, "kind": k, "weight": float(w)} for p, k, w in members],
                                                "metrics": metrics or {}})
        return out

    def __repr__(self) -> str:
        return f"ClassifierEnsemble(path={str(self.path)!r}, members={len(self.members)}, labels={len(self._labels)})"


def load_classifier(path: str | Path, device: str = "auto", max_length: int = 256, embedder: Any = None,
                    **classifier_kwargs: Any) -> TextClassifier | ClassifierEnsemble:
    """Open a classifier artifact or an ensemble directory (``ensemble.json``).

    ``classifier_kwargs`` (``backend``, ``batch_size``, ...) go to every :class:`TextClassifier`;
    ``embedder`` may be shared by an ensemble's probe members (ignored by a single classifier).
    """
    p = Path(path)
    if (p / ENSEMBLE_FILE).exists():
        return ClassifierEnsemble(p, device=device, max_length=max_length, embedder=embedder, **classifier_kwargs)
    return TextClassifier(str(path), device=device, max_length=max_length, **classifier_kwargs)
