"""Token classification (NER) inference: entity spans with character offsets.

Texts are split into words (:func:`split_words`), each word is tagged by its first sub-token
(the word-level convention the model was trained with), and IOB2 tags are merged into entity
spans ``{"text", "type", "start", "end", "score"}`` with ``text[start:end] == entity.text``.
Texts longer than the model window are cut into overlapping windows; each token keeps the
prediction of the window in which it sits most centrally (most context on both sides).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..artifact import LabelSpace, check_artifact_dir, read_labels, read_meta
from ..errors import ArtifactError, DataError, VerticoreError
from ..evaluation import entity_f1  # noqa: F401  (re-exported: metrics live in verticore.evaluation)
from ..models import resolve_device, resolve_dtype, resolve_model
from .backends import Backend, make_backend
from .chunking import length_sorted_batches, pad_batch, special_tokens
from .component import Component, register_component

#: Words as CoNLL-2003 tokenises them: letters/digits joined by . ' & / - stay one word
#: (U.S., 1996-08-22, O'Neill, AT&T), common abbreviations keep their period (Inc., Mr.); any
#: other non-space character is a word of its own.
WORD_RE = re.compile(r"\b(?:Inc|Corp|Ltd|Co|Bros|Mr|Mrs|Ms|Dr|St|Jr|Sr|Gen|Gov|Sen|Rep|Prof)\.(?!\w)"
                     r"|\w+(?:[.'\u2019&/-]\w+)*(?:(?<=\.\w)\.)?|\S")
#: Backends that can run a token-classification head (the ONNX export bakes in a sequence head).
TOKEN_BACKENDS = ("torch", "torch-int8")
#: How a model sees letter case. An uncased tokenizer (all-MiniLM-L6-v2's) reads "Apple" and "apple"
#: alike, and capitals are NER's strongest surface cue; ``token_type`` gives every sub-token of a word
#: that starts with a capital BERT's token type 1 (its second segment embedding), other tokens type 0.
CASE_FEATURES = ("none", "token_type")


def case_type_ids(words: Sequence[str], word_ids: Sequence[int | None]) -> list[int]:
    """Token types of the ``token_type`` case feature: 1 for sub-tokens of a capitalised word, else 0
    (special tokens included)."""
    return [0 if w is None else int(words[w][:1].isupper()) for w in word_ids]


@dataclass
class Entity:
    """One entity: ``text == source[start:end]``; ``score`` is the mean word probability."""

    text: str
    type: str
    start: int
    end: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "type": self.type, "start": self.start, "end": self.end, "score": self.score}


# -- IOB2 tags, spans and entity-level F1 ------------------------------------------------------
def parse_tag(tag: Any, where: str = "tag") -> tuple[str, str | None]:
    """``"B-PER"`` -> ``("B", "PER")``, ``"O"`` -> ``("O", None)``; anything else is a DataError."""
    if tag == "O":
        return "O", None
    if isinstance(tag, str) and len(tag) > 2 and tag[:2] in ("B-", "I-") and tag[2:].strip() == tag[2:]:
        return tag[0], tag[2:]
    raise DataError(f"{where}: {tag!r} is not an IOB2 tag (use O, B-TYPE or I-TYPE)")


def iob2_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity spans ``(type, start, end)`` (word indices, end exclusive) in conlleval/seqeval
    conventions: an entity starts at ``B-X`` or at an ``I-X`` that does not continue an ``X``."""
    spans: list[tuple[str, int, int]] = []
    cur: str | None = None
    start = 0
    for i, tag in enumerate(tags):
        prefix, typ = parse_tag(tag, f"tag #{i}")
        if cur is not None and (prefix != "I" or typ != cur):
            spans.append((cur, start, i))
            cur = None
        if prefix != "O" and cur is None:
            cur, start = typ, i
    if cur is not None:
        spans.append((cur, start, len(tags)))
    return spans


# -- windows over long texts ---------------------------------------------------------------------
def window_starts(n: int, body: int, stride: int) -> list[int]:
    """Starts of windows of ``body`` tokens covering ``n`` tokens, consecutive windows sharing
    ``stride`` tokens; the last window ends exactly at ``n``."""
    if n <= body:
        return [0]
    step = body - stride
    starts = list(range(0, n - body + 1, step))
    if starts[-1] + body < n:
        starts.append(n - body)
    return starts


def most_central(starts: Sequence[int], body: int, n: int) -> np.ndarray:
    """For each of ``n`` tokens, the index of the window (of those starting at ``starts``) in
    which it is farthest from a cut edge. A text boundary is not a cut, so the first and last
    windows count their outer side as unlimited context."""
    best = np.full(n, -1, dtype=np.int64)
    score = np.full(n, -1, dtype=np.int64)
    pos = np.arange(n)
    for k, s in enumerate(starts):
        e = min(s + body, n)
        t = pos[s:e]
        left = t - s if s > 0 else np.full(len(t), n)
        right = e - 1 - t if e < n else np.full(len(t), n)
        c = np.minimum(left, right)
        better = c > score[s:e]
        best[s:e][better] = k
        score[s:e][better] = c[better]
    return best


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of ``text`` (see :data:`WORD_RE`)."""
    return [m.span() for m in WORD_RE.finditer(text)]


# -- the tagger ---------------------------------------------------------------------------------------
class WordTagger:
    """Tags pre-split words with a token-classification model behind a :class:`Backend`.

    Shared by :class:`TokenClassifier` and the training loop (dev evaluation), so both use the
    exact same windowing and word-level aggregation.
    """

    def __init__(self, tokenizer, backend: Backend, labels: Sequence[str], max_length: int = 256,
                 stride: int = 64, batch_size: int = 32, case_feature: str = "none") -> None:
        if case_feature not in CASE_FEATURES:
            raise ArtifactError(f"unknown case feature {case_feature!r}; known: {list(CASE_FEATURES)}")
        if not getattr(tokenizer, "is_fast", False):
            raise ArtifactError("token classification needs a fast (Rust) tokenizer for word alignment")
        self.tokenizer, self.backend, self.labels = tokenizer, backend, list(labels)
        self.prefix, self.suffix = special_tokens(tokenizer)
        self.body = max_length - len(self.prefix) - len(self.suffix)
        if self.body < 2:
            raise VerticoreError(f"max_length {max_length} leaves no room for text")
        self.stride = max(0, min(stride, self.body // 2))
        self.batch_size = batch_size
        self.case_feature = case_feature

    def tag(self, words: Sequence[Sequence[str]]) -> tuple[list[list[str]], list[np.ndarray]]:
        """IOB2 tags and their probabilities, one per word, for each list of words."""
        rows = [list(w) for w in words]
        tags: list[list[str]] = [[] for _ in rows]
        probs: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in rows]
        todo = [i for i, r in enumerate(rows) if r]
        if not todo:
            return tags, probs
        enc = self.tokenizer([rows[i] for i in todo], is_split_into_words=True, add_special_tokens=False,
                             truncation=False, verbose=False)
        windows: list[list[int]] = []
        window_types: list[list[int]] = []  # token types per window (case feature)
        owner: list[tuple[int, int]] = []  # (row in todo, window start)
        plans = []
        cased = self.case_feature == "token_type"
        for j in range(len(todo)):
            ids = enc["input_ids"][j]
            types = case_type_ids(rows[todo[j]], enc.word_ids(j)) if cased else []
            starts = window_starts(len(ids), self.body, self.stride)
            plans.append(starts)
            for s in starts:
                windows.append(self.prefix + ids[s : s + self.body] + self.suffix)
                if cased:
                    window_types.append([0] * len(self.prefix) + types[s : s + self.body] + [0] * len(self.suffix))
                owner.append((j, s))
        n_labels = len(self.labels)
        win_logits: list[np.ndarray | None] = [None] * len(windows)
        pad = self.tokenizer.pad_token_id or 0
        for idx in length_sorted_batches([len(w) for w in windows], self.batch_size):
            ids, mask = pad_batch([windows[i] for i in idx], pad)
            if cased:
                out = self.backend.run(ids, mask, token_type_ids=pad_batch([window_types[i] for i in idx], 0)[0])
            else:
                out = self.backend.run(ids, mask)
            if out.ndim != 3 or out.shape[2] != n_labels:
                raise ArtifactError(f"model outputs shape {out.shape} but labels.json lists {n_labels} labels per token")
            for r, i in enumerate(idx):
                win_logits[i] = out[r, len(self.prefix) : len(windows[i]) - len(self.suffix)]
        w = 0
        for j, i in enumerate(todo):
            n = len(enc["input_ids"][j])
            starts = plans[j]
            choice = most_central(starts, self.body, n)
            logits = np.zeros((n, n_labels), dtype=np.float32)
            for k, s in enumerate(starts):
                sel = np.flatnonzero(choice == k)
                logits[sel] = win_logits[w + k][sel - s]
            w += len(starts)
            first = np.full(len(rows[i]), -1, dtype=np.int64)
            for t, wid in enumerate(enc.word_ids(j)):
                if wid is not None and first[wid] < 0:
                    first[wid] = t
            word_logits = np.where((first >= 0)[:, None], logits[np.maximum(first, 0)], 0.0)
            z = word_logits - word_logits.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            best = p.argmax(1)
            # A word the tokenizer drops entirely (control characters) is outside any entity.
            tags[i] = [self.labels[b] if first[k] >= 0 else "O" for k, b in enumerate(best)]
            probs[i] = np.where(first >= 0, p.max(1), 1.0).astype(np.float32)
        return tags, probs


def entities_from_tags(text: str, spans: Sequence[tuple[int, int]], tags: Sequence[str],
                       probs: Sequence[float]) -> list[Entity]:
    """Merge word tags into :class:`Entity` objects with character offsets into ``text``."""
    out = []
    for typ, a, b in iob2_spans(tags):
        start, end = spans[a][0], spans[b - 1][1]
        out.append(Entity(text[start:end], typ, start, end, float(np.mean(probs[a:b]))))
    return out


@register_component("TokenClassifier")
class TokenClassifier(Component):
    """Load a token-classification artifact (from :func:`verticore.finetune.train_token_classifier`,
    or any HF token-classification checkpoint with IOB2 labels) and find entities.

    ``predict`` takes raw text and returns :class:`Entity` spans (empty or whitespace-only text
    gives no entities); ``predict_words`` tags text that is already split into words (CoNLL
    style). Backends: ``torch`` (fp32 on CPU, bf16/fp16 on GPU) and ``torch-int8`` (CPU).

    Construction stores the settings and reads the artifact's labels; tokenizer and weights
    load in :meth:`warm_up`, called by the first prediction.
    """

    def __init__(self, model: str | Path, device: str = "auto", batch_size: int = 32, max_length: int = 256,
                 stride: int = 64, backend: str = "torch", dtype: str = "auto") -> None:
        if backend not in TOKEN_BACKENDS:
            raise VerticoreError(f"backend {backend!r} cannot run a token classifier; use one of {list(TOKEN_BACKENDS)}")
        self.model = str(model)
        self.device, self.batch_size, self.max_length, self.stride = device, int(batch_size), int(max_length), int(stride)
        self.backend, self.dtype = backend, dtype
        self.model_path = check_artifact_dir(resolve_model(self.model).path)
        space = read_labels(self.model_path)
        if space is None:
            raise ArtifactError(f"{self.model_path} has no labels.json or id2label: not a token classifier")
        for i, label in enumerate(space.labels):
            try:
                parse_tag(label, f"label #{i}")
            except DataError as exc:
                raise ArtifactError(f"{self.model_path}: {exc}") from None
        self.label_space: LabelSpace = space
        self.meta = read_meta(self.model_path)
        self.case_feature = str(self.meta.get("case_feature", "none"))
        if self.case_feature not in CASE_FEATURES:
            raise ArtifactError(f"{self.model_path}: unknown case_feature {self.case_feature!r} in verticore.json; "
                                f"known: {list(CASE_FEATURES)}")
        self._tagger: WordTagger | None = None

    @property
    def labels(self) -> list[str]:
        return self.label_space.labels

    @property
    def entity_types(self) -> list[str]:
        return sorted({parse_tag(l)[1] for l in self.labels if l != "O"})

    def _init_parameters(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "batch_size": self.batch_size, "max_length": self.max_length,
                "stride": self.stride, "backend": self.backend, "dtype": self.dtype}

    def warm_up(self) -> None:
        """Load tokenizer and weights (done on first use)."""
        if self._tagger is not None:
            return
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        except Exception as exc:
            raise ArtifactError(f"could not load tokenizer from {self.model_path}: {str(exc).splitlines()[0][:200]}") from None
        device = resolve_device(self.device)
        max_len = min(self.max_length, getattr(tokenizer, "model_max_length", 512) or 512, 512)
        model = load_token_model(self.model_path, resolve_dtype(device, self.dtype) if self.backend == "torch" else None)
        backend = make_backend(self.backend, model_dir=self.model_path, head="logits", device=device,
                               pooling="mean", model=model)
        self._tagger = WordTagger(tokenizer, backend, self.labels, max_len, self.stride, self.batch_size,
                                  case_feature=self.case_feature)
        self.resolved_device = device

    def predict_words(self, words: Sequence[Sequence[str]]) -> list[list[str]]:
        """IOB2 tags for texts already split into words (one tag per word)."""
        return self.predict_words_with_scores(words)[0]

    def predict_words_with_scores(self, words: Sequence[Sequence[str]]) -> tuple[list[list[str]], list[np.ndarray]]:
        """IOB2 tags and the probability of each chosen tag."""
        rows = _check_word_rows(words, "input")
        self.warm_up()
        return self._tagger.tag(rows)

    def predict(self, texts: str | Sequence[str]) -> list[Entity] | list[list[Entity]]:
        """Entities in one text (a list of :class:`Entity`) or in each of a list of texts."""
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        for i, t in enumerate(batch):
            if not isinstance(t, str):
                raise DataError(f"text #{i} is {type(t).__name__}, not a string")
        spans = [split_words(t) for t in batch]
        if any(spans):
            self.warm_up()
            tags, probs = self._tagger.tag([[t[a:b] for a, b in s] for t, s in zip(batch, spans)])
        else:
            tags, probs = [[] for _ in batch], [[] for _ in batch]
        out = [entities_from_tags(t, s, g, p) for t, s, g, p in zip(batch, spans, tags, probs)]
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"TokenClassifier(model={self.model!r}, types={self.entity_types})"


def _check_word_rows(words: Sequence[Sequence[str]], what: str) -> list[list[str]]:
    rows = []
    for i, row in enumerate(words):
        if isinstance(row, str):
            raise DataError(f"{what} row {i} is a string; pass a list of words")
        row = list(row)
        for k, w in enumerate(row):
            if not isinstance(w, str) or not w.strip():
                raise DataError(f"{what} row {i}, word {k}: {w!r} is not a non-empty word")
        rows.append(row)
    return rows


def load_token_model(model_dir: Path, dtype=None):
    """``AutoModelForTokenClassification`` from ``model_dir``; damage is an :class:`ArtifactError`."""
    from transformers import AutoModelForTokenClassification

    try:
        return AutoModelForTokenClassification.from_pretrained(str(model_dir), **({"dtype": dtype} if dtype is not None else {}))
    except Exception as exc:  # safetensors and transformers raise assorted types on bad files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"could not load token-classification weights from {model_dir}: {msg[:200]}") from None
