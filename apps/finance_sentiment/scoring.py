"""Models of the monitor: article-level sentiment with per-sentence evidence, and topics
(a trained classifier and/or zero-shot assignment by embedding similarity to topic descriptions)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from verticore.errors import ArtifactError, DataError
from verticore.inference.component import COMPONENT_FILE, Component, register_component
from verticore.inference.protocols import Classifier
from verticore.io import read_json

from .items import SentenceEvidence, has_words, looks_non_english
from .text import split_sentences

log = logging.getLogger("finance_sentiment")

SENTIMENTS = ("negative", "neutral", "positive")
_ALIASES = {"negative": "negative", "neg": "negative", "bearish": "negative", "label_0": None,
            "neutral": "neutral", "neu": "neutral", "positive": "positive", "pos": "positive", "bullish": "positive"}


def artifact_version(path: str | Path, kind: str) -> str:
    """A readable model version for stored items: ``kind/<dir name>@<created_at>``."""
    from verticore.artifact import read_meta

    path = Path(path)
    meta = read_meta(path)
    stamp = meta.get("created_at") or ""
    fp = (meta.get("data_fingerprint") or "")[:8]
    return f"{kind}/{path.name}@{stamp}" + (f"#{fp}" if fp else "")


@dataclass
class ArticleSentiment:
    """Sentiment of one item. ``score`` = P(positive) - P(negative) in [-1, 1]."""

    label: str
    score: float
    probabilities: dict[str, float]
    evidence: list[SentenceEvidence] = field(default_factory=list)
    sentences: int = 1
    note: str | None = None  # why the result is low-confidence (non-English text, nothing to read)


# an item with no letter or digit (emoji/symbol-only post) is not sent to the model: neutral, low confidence
NO_WORDS_PROBABILITIES = {"negative": 0.25, "neutral": 0.5, "positive": 0.25}
NO_WORDS_NOTE = "no words to score (emoji or symbols only): neutral with low confidence"
NON_ENGLISH_NOTE = "text looks non-English: the English model's confidence is lowered"


@register_component("finance_sentiment.SentimentModel")
class SentimentModel(Component):
    """Positive / neutral / negative for news items of any length.

    A short item (one sentence) is classified as is. A longer one is split into sentences
    (``max_sentences`` at most; enormous articles are capped with a log line); each sentence is
    classified (sentences longer than the model window are chunked by the core classifier) and
    the article's probabilities are the mean of its sentences' probabilities, with the title
    counted ``title_weight`` times. Every sentence's label and score is kept as evidence.

    Bad input: an item with no letter or digit (emoji-only) is not classified; it gets
    :data:`NO_WORDS_PROBABILITIES` (neutral, low confidence) and a ``note``. An item that looks
    non-English (:func:`~finance_sentiment.items.looks_non_english`) is classified, then its
    probabilities are pulled towards uniform by ``non_english_weight`` (1 = unchanged; the label
    stays, the score and confidence shrink), with a ``note``.

    ``classifier`` is any :class:`~verticore.Classifier` (tests pass a fake) or the path of a
    classifier artifact, opened as a core ``TextClassifier`` (construction reads its labels only;
    weights load in :meth:`warm_up` or on the first :meth:`score`). With a core component as
    classifier, ``to_dict``/``save`` nest its settings; ``from_dict``/``load`` rebuild it.
    """

    def __init__(self, classifier: Classifier | str | Path, *, version: str | None = None, max_sentences: int = 64,
                 title_weight: float = 2.0, non_english_weight: float = 0.5) -> None:
        if isinstance(classifier, (str, Path)):
            classifier = _open_classifier(classifier)
        self.classifier = classifier
        self.version = version if version is not None else _classifier_version(classifier, "sentiment")
        self.max_sentences = int(max_sentences)
        self.title_weight = float(title_weight)
        if not 0.0 <= float(non_english_weight) <= 1.0:
            raise ArtifactError(f"non_english_weight must be in [0, 1] (got {non_english_weight})")
        self.non_english_weight = float(non_english_weight)
        mapping = {}
        for i, lab in enumerate(classifier.labels):
            canon = _ALIASES.get(str(lab).strip().lower())
            if canon is None:
                raise ArtifactError(f"sentiment model label {lab!r} is not positive/neutral/negative; "
                                    f"labels are {list(classifier.labels)}")
            mapping[canon] = i
        missing = [s for s in SENTIMENTS if s not in mapping]
        if missing:
            raise ArtifactError(f"sentiment model has no {missing[0]!r} label; labels are {list(classifier.labels)}")
        self._index = [mapping[s] for s in SENTIMENTS]

    def _init_parameters(self) -> dict[str, Any]:
        return {"classifier": self.classifier, "version": self.version, "max_sentences": self.max_sentences,
                "title_weight": self.title_weight, "non_english_weight": self.non_english_weight}

    def warm_up(self) -> None:
        """Load the classifier's weights now instead of on the first :meth:`score` (idempotent)."""
        _warm(self.classifier)

    @classmethod
    def from_settings(cls, artifact: str | Path, *, device: str = "auto", batch_size: int = 64,
                      backend: str = "torch", max_sentences: int = 64, title_weight: float = 2.0,
                      version: str | None = None, non_english_weight: float = 0.5) -> "SentimentModel":
        """A model over the classifier artifact at ``artifact``, from settings only (no weights load)."""
        return cls(_open_classifier(artifact, device=device, batch_size=batch_size, backend=backend),
                   version=version, max_sentences=max_sentences, title_weight=title_weight,
                   non_english_weight=non_english_weight)

    @classmethod
    def load(cls, artifact_dir: str | Path, *, device: str | None = None, batch_size: int | None = None,
             max_sentences: int | None = None, backend: str | None = None, **overrides: Any) -> "SentimentModel":
        """Open a directory: a saved config (``component.json``, see :meth:`save`) or a classifier
        artifact written by ``finance-sentiment train`` / ``verticore.finetune``.

        ``device``, ``batch_size`` and ``backend`` override the classifier's settings,
        ``max_sentences`` and ``overrides`` (``title_weight``, ``version``) the model's.
        """
        d = Path(artifact_dir)
        clf_overrides = {k: v for k, v in (("device", device), ("batch_size", batch_size), ("backend", backend))
                         if v is not None}
        if max_sentences is not None:
            overrides["max_sentences"] = max_sentences
        if (d / COMPONENT_FILE).exists():
            return cls.from_dict(_with_nested_overrides(_read_config(d), "classifier", clf_overrides), **overrides)
        return cls.from_settings(d, **clf_overrides, **overrides)

    def _proba(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 3), dtype=np.float32)
        p = np.asarray(self.classifier.predict_proba(list(texts)), dtype=np.float32)
        return p[:, self._index]

    def score(self, titles: Sequence[str], bodies: Sequence[str] | None = None) -> list[ArticleSentiment]:
        """Score items given their titles (and optional bodies); one :class:`ArticleSentiment` each."""
        bodies = list(bodies) if bodies is not None else [""] * len(titles)
        units: list[str] = []
        owners: list[tuple[int, float]] = []
        n_sent: list[int] = []
        for i, (title, body) in enumerate(zip(titles, bodies)):
            if not has_words(f"{title} {body[:5_000]}"):
                n_sent.append(0)  # nothing the model could read
                continue
            sents = [title] if title else []
            if body:
                body_sents = split_sentences(body)
                limit = max(self.max_sentences - len(sents), 0)
                if len(body_sents) > limit:
                    log.warning("item %r: %d sentences, scoring the first %d", title[:60], len(body_sents), limit)
                    body_sents = body_sents[:limit]
                sents += [s for s in body_sents if s != title]
            if not sents:
                sents = [body[:2000] or "(empty)"]
            n_sent.append(len(sents))
            for j, s in enumerate(sents):
                units.append(s)
                owners.append((i, self.title_weight if (j == 0 and title and len(sents) > 1) else 1.0))
        probs = self._proba(units)
        out: list[ArticleSentiment] = []
        pos = 0
        for i, n in enumerate(n_sent):
            if n == 0:
                out.append(ArticleSentiment("neutral", 0.0, dict(NO_WORDS_PROBABILITIES), [], 0, NO_WORDS_NOTE))
                continue
            block = probs[pos:pos + n]
            w = np.asarray([owners[pos + j][1] for j in range(n)], dtype=np.float32)
            agg = (block * w[:, None]).sum(axis=0) / w.sum()
            evidence = []
            if n > 1:
                for j in range(n):
                    pj = block[j]
                    k = int(np.argmax(pj))
                    evidence.append(SentenceEvidence(units[pos + j], SENTIMENTS[k], float(pj[2] - pj[0]), float(pj[k])))
            note = None
            if self.non_english_weight < 1.0 and looks_non_english(f"{titles[i]} {bodies[i][:5_000]}"):
                agg = self.non_english_weight * agg + (1.0 - self.non_english_weight) / 3.0
                note = NON_ENGLISH_NOTE
            k = int(np.argmax(agg))
            out.append(ArticleSentiment(SENTIMENTS[k], float(agg[2] - agg[0]),
                                        {s: float(v) for s, v in zip(SENTIMENTS, agg)}, evidence, n, note))
            pos += n
        return out


@register_component("finance_sentiment.TopicModel")
class TopicModel(Component):
    """Topic assignment: a trained (multi- or single-label) classifier for the topics it knows, plus
    zero-shot assignment by embedding similarity for every configured topic it does not know.

    Zero-shot: each topic description is split on commas into phrases; a text's similarity to a
    topic is its best cosine similarity to any of the phrases (and the topic name). Topics at or
    above ``threshold`` and within ``margin`` of the best are assigned (``max_topics`` at most);
    a text with none gets ``other``.

    ``classifier`` is a :class:`~verticore.Classifier`, the path of a classifier artifact (opened
    as a core ``TextClassifier`` on the embedder's device) or None. Construction stores settings;
    :meth:`warm_up` loads the embedder and classifier and embeds the topic phrases (otherwise done
    on first use).
    """

    def __init__(self, embedder: Any, topics: dict[str, str], *, classifier: Classifier | str | Path | None = None,
                 threshold: float = 0.25, margin: float = 0.05, max_topics: int = 2, classifier_threshold: float = 0.5,
                 version: str | None = None) -> None:
        if not topics and classifier is None:
            raise ArtifactError("no topics configured and no topic classifier given")
        if isinstance(classifier, (str, Path)):
            classifier = _open_classifier(classifier, device=getattr(embedder, "device", "auto"))
        self.embedder = embedder
        self.topics = dict(topics)
        self.classifier = classifier
        self.threshold = float(threshold)
        self.margin = float(margin)
        self.max_topics = int(max_topics)
        self.classifier_threshold = float(classifier_threshold)
        known = set(classifier.labels) if classifier is not None else set()
        self.zero_shot_topics = [t for t in self.topics if t not in known and t != "other"]
        self.version = version or ("zero-shot" if classifier is None else "classifier")
        self._proto: np.ndarray | None = None
        self._proto_owner: np.ndarray | None = None

    def _init_parameters(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "topics": self.topics, "classifier": self.classifier,
                "threshold": self.threshold, "margin": self.margin, "max_topics": self.max_topics,
                "classifier_threshold": self.classifier_threshold, "version": self.version}

    def warm_up(self) -> None:
        """Load the embedder and classifier and embed the zero-shot topic phrases (idempotent)."""
        _warm(self.embedder)
        if self.classifier is not None:
            _warm(self.classifier)
        self._prototypes()

    @classmethod
    def load(cls, embedder: Any, topics: dict[str, str] | None = None, artifact_dir: str | Path | None = None,
             **kwargs: Any) -> "TopicModel":
        """``load(embedder, topics, artifact_dir)``: zero-shot only, or with the trained classifier at
        ``artifact_dir`` when it exists. ``load(config_dir)``: the config :meth:`save` wrote there
        (``kwargs`` override its settings)."""
        if topics is None and isinstance(embedder, (str, Path)):
            d = Path(embedder)
            if not (d / COMPONENT_FILE).exists():
                raise ArtifactError(f"no topic model config in {d} ({COMPONENT_FILE} missing)")
            return cls.from_dict(_read_config(d), **kwargs)
        if topics is None:
            raise DataError("TopicModel.load needs topics (or a directory holding a saved config)")
        clf = None
        version = "zero-shot"
        if artifact_dir is not None and (Path(artifact_dir) / "labels.json").exists():
            clf = _open_classifier(artifact_dir, device=getattr(embedder, "device", "auto"))
            version = artifact_version(artifact_dir, "topics") + "+zero-shot"
        return cls(embedder, topics, classifier=clf, version=version, **kwargs)

    def add_topic(self, name: str, description: str) -> None:
        """Add (or redefine) a zero-shot topic: no training needed."""
        self.topics[name] = description
        if name not in self.zero_shot_topics and (self.classifier is None or name not in self.classifier.labels):
            self.zero_shot_topics.append(name)
        self._proto = None

    def _prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        if self._proto is None:
            phrases, owner = [], []
            for ti, t in enumerate(self.zero_shot_topics):
                parts = [t.replace("&", " and ").replace("/", " or ")] + [p.strip() for p in self.topics[t].split(",") if p.strip()]
                phrases += parts
                owner += [ti] * len(parts)
            if phrases:
                self._proto = np.asarray(self.embedder.encode(phrases), dtype=np.float32)
            else:
                self._proto = np.zeros((0, 1), dtype=np.float32)
            self._proto_owner = np.asarray(owner, dtype=np.int64)
        return self._proto, self._proto_owner  # type: ignore[return-value]

    def zero_shot_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, len(zero_shot_topics))`` best-phrase cosine similarity."""
        proto, owner = self._prototypes()
        if len(self.zero_shot_topics) == 0 or len(embeddings) == 0:
            return np.zeros((len(embeddings), len(self.zero_shot_topics)), dtype=np.float32)
        sims = np.asarray(embeddings, dtype=np.float32) @ proto.T
        out = np.full((len(embeddings), len(self.zero_shot_topics)), -1.0, dtype=np.float32)
        for ti in range(len(self.zero_shot_topics)):
            out[:, ti] = sims[:, owner == ti].max(axis=1)
        return out

    def assign(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> list[list[str]]:
        """Topics per text (never empty: ``["other"]`` when nothing fits)."""
        texts = list(texts)
        if not texts:
            return []
        result: list[list[str]] = [[] for _ in texts]
        if self.classifier is not None:
            probs = np.asarray(self.classifier.predict_proba(texts))
            labels = list(self.classifier.labels)
            for i, p in enumerate(probs):
                order = np.argsort(-p)
                chosen = [labels[j] for j in order[: self.max_topics] if p[j] >= self.classifier_threshold]
                if not chosen and not getattr(self.classifier, "multi_label", False):
                    chosen = [labels[int(order[0])]]
                result[i] = [c for c in chosen if c != "other"]
        if self.zero_shot_topics:
            if embeddings is None:
                embeddings = np.asarray(self.embedder.encode(texts), dtype=np.float32)
            scores = self.zero_shot_scores(embeddings)
            for i, row in enumerate(scores):
                best = float(row.max())
                if best < self.threshold:
                    continue
                order = np.argsort(-row)
                picks = [self.zero_shot_topics[j] for j in order[: self.max_topics]
                         if row[j] >= self.threshold and row[j] >= best - self.margin]
                for t in picks:
                    if t not in result[i] and len(result[i]) < self.max_topics:
                        result[i].append(t)
        return [r or ["other"] for r in result]


def _open_classifier(path: str | Path, **settings: Any) -> Classifier:
    """A core classifier over the artifact (or ensemble) at ``path``: reads its labels, loads no weights."""
    from verticore import load_classifier

    return load_classifier(str(path), max_length=128, **settings)


def _classifier_version(classifier: Any, kind: str) -> str:
    """``artifact_version`` of a classifier opened from an artifact directory, else ``unknown``."""
    path = getattr(classifier, "model_path", None) or getattr(classifier, "path", None)
    if path is not None and Path(path).is_dir():
        return artifact_version(path, kind)
    return "unknown"


def _warm(component: Any) -> None:
    warm_up = getattr(component, "warm_up", None)
    if callable(warm_up):
        warm_up()


def _read_config(directory: Path) -> dict[str, Any]:
    try:
        return read_json(directory / COMPONENT_FILE, "component config")
    except DataError as exc:
        raise ArtifactError(str(exc)) from None


def _with_nested_overrides(data: dict[str, Any], key: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``overrides`` applied to the nested component dict under ``key`` (when there is one)."""
    nested = (data.get("init_parameters") or {}).get(key)
    if not overrides or not isinstance(nested, dict) or "init_parameters" not in nested:
        return data
    params = dict(data["init_parameters"])
    params[key] = {**nested, "init_parameters": {**nested["init_parameters"], **overrides}}
    return {**data, "init_parameters": params}
