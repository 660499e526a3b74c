"""A lexical ensemble member: logistic regression on TF-IDF word and character n-grams.

Why: neural members (fine-tunes, the frozen-embedding probe) all read the same encoder and make
correlated errors; a bag of n-grams errs elsewhere (exact wording, typos via character n-grams).
Alone it is weaker (BANKING77 test 0.910 vs 0.930), yet adding it to the ensemble raised test
accuracy on both seeds measured (bench/banking77.py). It trains in seconds on CPU.

Stored without pickle: ``tfidf.json`` (labels, n-gram settings, vocabularies as term lists) and
``tfidf.safetensors`` (``word_idf``, ``char_idf``, ``weight`` labels x features, ``bias``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifact import LabelSpace, read_json_and_tensors
from ..errors import ArtifactError, DataError
from ..io import atomic_write_bytes, atomic_write_json, clean_labelled_texts, clean_texts
from .classifier import PredictsFromProbabilities, _softmax, softmax_weights
from .component import Component, register_component

TFIDF_CONFIG = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"
_PARTS = ("word", "char")


def _vectorizer(analyzer: str, ngram_range: Sequence[int], vocabulary: dict[str, int] | None = None, min_df: int = 1):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=analyzer, ngram_range=(int(ngram_range[0]), int(ngram_range[1])), lowercase=True,
                           sublinear_tf=True, min_df=min_df, vocabulary=vocabulary, dtype=np.float32)


@register_component("TfidfProbe")
class TfidfProbe(PredictsFromProbabilities, Component):
    """Multinomial logistic regression on TF-IDF features (word n-grams + character n-grams).

    Same member contract as :class:`~verticore.inference.ensemble.EmbeddingProbe`: ``labels``,
    ``warm_up``, ``predict_proba_and_logits``; ``temperature`` is 1 (LR is fitted on log-loss).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        cfg, t = read_json_and_tensors(self.path, TFIDF_CONFIG, TFIDF_WEIGHTS, "TF-IDF probe")
        try:
            self.weight = np.asarray(t["weight"], dtype=np.float32)
            self.bias = np.asarray(t["bias"], dtype=np.float32)
            idf = {p: np.asarray(t[f"{p}_idf"], dtype=np.float64) for p in _PARTS}
        except KeyError as exc:
            raise ArtifactError(f"{self.path / TFIDF_WEIGHTS} lacks tensor {exc}") from None
        self.config: dict[str, Any] = cfg
        self._labels = [str(x) for x in cfg.get("labels", [])]
        self._vectorizers = []
        n_features = 0
        for p in _PARTS:
            spec = cfg.get(p) or {}
            terms = [str(x) for x in spec.get("terms", [])]
            if len(terms) != len(idf[p]) or not terms:
                raise ArtifactError(f"{self.path}: {p} vocabulary has {len(terms)} terms but {len(idf[p])} idf weights")
            v = _vectorizer(str(spec.get("analyzer", p)), spec.get("ngram_range", (1, 1)),
                            vocabulary={t: i for i, t in enumerate(terms)})
            v.idf_ = idf[p]
            self._vectorizers.append(v)
            n_features += len(terms)
        if self.weight.shape != (len(self._labels), n_features) or self.bias.shape != (len(self._labels),):
            raise ArtifactError(f"{self.path}: weights of shape {self.weight.shape} do not match "
                                f"{len(self._labels)} labels x {n_features} features")
        self.temperature = 1.0
        self.label_space = LabelSpace(self._labels)

    def _init_parameters(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    @property
    def labels(self) -> list[str]:
        return self._labels

    def warm_up(self) -> None:
        """Nothing heavy to load (part of the member contract)."""

    def features(self, texts: Sequence[str]):
        """Sparse (n, features) TF-IDF matrix: word block, then character block."""
        from scipy.sparse import hstack

        texts = clean_texts(list(texts))
        return hstack([v.transform(texts) for v in self._vectorizers]).tocsr()

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.features(texts) @ self.weight.T, dtype=np.float32) + self.bias

    def predict_proba_and_logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        z = self.logits(texts)
        return _softmax(z), z

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_proba_and_logits(texts)[0]

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[Any], out_dir: str | Path, c: float = 10.0,
            word_ngrams: tuple[int, int] = (1, 2), char_ngrams: tuple[int, int] = (2, 5), char_min_df: int = 2,
            max_iter: int = 3000) -> "TfidfProbe":
        """Fit the vectorizers and an L2 logistic regression (inverse strength ``c``), then save both."""
        from safetensors.numpy import save
        from scipy.sparse import hstack
        from sklearn.linear_model import LogisticRegression

        texts, y = clean_labelled_texts(texts, labels, "a TF-IDF probe")
        word = _vectorizer("word", word_ngrams)
        # min_df drops character n-grams seen once (mostly typos of a single example); never
        # more than there are texts, so tiny training sets still get a vocabulary
        char = _vectorizer("char_wb", char_ngrams, min_df=max(1, min(int(char_min_df), len(texts) // 10)))
        try:
            x = hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
        except ValueError as exc:  # e.g. only stop-word-free one-letter texts: empty vocabulary
            raise DataError(f"no TF-IDF features in the training texts ({exc})") from None
        lr = LogisticRegression(C=float(c), max_iter=int(max_iter)).fit(x, y)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        coef, bias = softmax_weights(lr.coef_, lr.intercept_)  # two labels: scikit-learn keeps one row
        atomic_write_bytes(out / TFIDF_WEIGHTS, save({
            "weight": coef, "bias": bias,
            "word_idf": np.ascontiguousarray(word.idf_, dtype=np.float32),
            "char_idf": np.ascontiguousarray(char.idf_, dtype=np.float32)}))
        atomic_write_json(out / TFIDF_CONFIG, {
            "kind": "tfidf_probe", "labels": [str(v) for v in lr.classes_], "c": float(c), "n_train": len(texts),
            "train_accuracy": float(lr.score(x, y)),
            "word": {"analyzer": "word", "ngram_range": list(word_ngrams), "terms": word.get_feature_names_out().tolist()},
            "char": {"analyzer": "char_wb", "ngram_range": list(char_ngrams), "terms": char.get_feature_names_out().tolist()}})
        return cls(out)

    def __repr__(self) -> str:
        return f"TfidfProbe(path={str(self.path)!r}, labels={len(self._labels)}, features={self.weight.shape[1]})"
