"""Lexical retrieval: BM25 through ``bm25s`` with its own tokenizer and a PyStemmer (Snowball) stemmer."""
from __future__ import annotations

import threading
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError
from .base import RetrievalComponent, RetrievalHit, check_k, retrievers

#: Stop words of customer questions (``stopwords="question"``): bm25s' English list keeps "how",
#: "do", "i", "my"... For ranking that list is better (on the Bitext bench "where"/"how" separate
#: intents: hit@1 0.945 vs 0.932), but for picking the content words of a question
#: (:func:`tokenize`, answer-sentence overlap) the question words are noise.
QUESTION_STOPWORDS: tuple[str, ...] = tuple("""a an and are as at be but by for from has have how i if in into is it
its me my of on or our so that the their them then there these they this to was we were what when where which who
why will with you your can do does did am im i'm i've please would could should""".split())
#: bm25s' own word pattern: runs of two or more word characters.
DEFAULT_SPLITTER = r"(?u)\b\w\w+\b"


def _stemmer(language: str | None):
    if not language:
        return None
    import Stemmer  # PyStemmer: Snowball stemmers in C

    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise DataError(f"unknown stemmer language {language!r}; choose one of {Stemmer.algorithms()}") from None


@retrievers.decorator("bm25")
class BM25Retriever(RetrievalComponent):
    """BM25 over keyed texts (``bm25s``), rebuilt lazily after :meth:`add` / :meth:`delete`.

    Args:
        k1, b: BM25 term-frequency saturation and length normalisation.
        method: the bm25s variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
        stopwords: ``"en"`` (bm25s' English list), ``"question"`` (:data:`QUESTION_STOPWORDS`), a list, or None.
        stemmer: a Snowball language for PyStemmer (``"english"``) or None.
        splitter: the regex that finds words in lower-cased text.

    Building the index from thousands of short texts takes milliseconds, so the index lives in
    memory and callers that own the texts (a knowledge base's SQLite) rebuild it on load.
    """

    kind = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                 stopwords: str | Sequence[str] | None = "en", stemmer: str | None = "english",
                 splitter: str = DEFAULT_SPLITTER) -> None:
        self.k1 = float(k1)
        self.b = float(b)
        self.method = str(method)
        self.stopwords = list(stopwords) if isinstance(stopwords, (list, tuple)) else stopwords
        self.stemmer = stemmer
        self.splitter = str(splitter)
        self._texts: dict[str, str] = {}
        self._keys: list[str] = []
        self._pos: dict[str, int] = {}
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.RLock()

    def settings(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "method": self.method, "stopwords": self.stopwords,
                "stemmer": self.stemmer, "splitter": self.splitter}

    # -- analysis -----------------------------------------------------------------------
    def _new_tokenizer(self):
        from bm25s.tokenization import Tokenizer

        stop = list(QUESTION_STOPWORDS) if self.stopwords == "question" else self.stopwords
        return Tokenizer(lower=True, splitter=self.splitter, stopwords=stop or None, stemmer=_stemmer(self.stemmer))

    def warm_up(self) -> None:
        self._state()

    def tokenize(self, text: str) -> list[str]:
        """The index terms of ``text``: lower-cased words minus stop words, stemmed."""
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._new_tokenizer()
            tok = self._tokenizer
            stop = set(tok.stopwords or ())
            words = [w for w in tok.splitter(str(text).lower()) if w and w not in stop]
            return [tok.stemmer(w) for w in words] if tok.stemmer is not None else words

    # -- content ------------------------------------------------------------------------
    def add(self, keys: Sequence[str], texts: Sequence[str]) -> None:
        """Add or replace texts under ``keys`` (the index is rebuilt on the next search)."""
        keys, texts = [str(k) for k in keys], [str(t) for t in texts]
        if len(keys) != len(texts):
            raise DataError(f"got {len(keys)} keys but {len(texts)} texts")
        with self._lock:
            self._texts.update(zip(keys, texts))
            self._model = None

    def set_texts(self, keys: Sequence[str], texts: Sequence[str]) -> None:
        """Replace the whole corpus (keeps the given order, which decides ties)."""
        with self._lock:
            self._texts = {}
            self.add(keys, texts)

    def delete(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` (unknown keys are ignored); returns how many were removed."""
        with self._lock:
            n = sum(self._texts.pop(str(k), None) is not None for k in keys)
            if n:
                self._model = None
            return n

    def clear(self) -> None:
        with self._lock:
            self._texts = {}
            self._model = None

    @property
    def keys(self) -> list[str]:
        """Keys in index order (the order of :meth:`scores`)."""
        return self._state()[1]

    def __len__(self) -> int:
        return len(self._texts)

    def __contains__(self, key: object) -> bool:
        return key in self._texts

    def _state(self):
        with self._lock:
            if self._model is None:
                import bm25s

                self._keys = list(self._texts)
                self._pos = {k: i for i, k in enumerate(self._keys)}
                self._tokenizer = self._new_tokenizer()
                model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
                if self._keys:
                    ids = self._tokenizer.tokenize([self._texts[k] for k in self._keys], update_vocab=True,
                                                   return_as="ids", show_progress=False)
                    model.index((ids, self._tokenizer.get_vocab_dict()), show_progress=False)
                self._model = model
            return self._model, self._keys, self._pos, self._tokenizer

    # -- scoring ------------------------------------------------------------------------
    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed text for ``query``, in :attr:`keys` order (0 = no shared term)."""
        with self._lock:
            model, keys, _, tok = self._state()
            if not keys:
                return np.zeros(0, dtype=np.float32)
            ids = tok.tokenize([str(query)], update_vocab=False, return_as="ids", show_progress=False,
                               allow_empty=False)[0]
            if not ids:
                return np.zeros(len(keys), dtype=np.float32)
            return np.asarray(model.get_scores(list(ids)), dtype=np.float32)

    def position(self, key: str) -> int | None:
        """Index of ``key`` in :attr:`keys` (None when absent)."""
        return self._state()[2].get(key)

    def allow_mask(self, allow: Iterable[str] | None) -> np.ndarray | None:
        """Boolean mask over :attr:`keys` for an allow-list (None = everything allowed)."""
        if allow is None:
            return None
        allowed = set(allow)
        keys = self.keys
        return np.fromiter((k in allowed for k in keys), dtype=bool, count=len(keys))

    def top(self, scores: np.ndarray, k: int, mask: np.ndarray | None = None,
            exclude: str | None = None) -> list[RetrievalHit]:
        """The best ``k`` positive scores (outside ``exclude``, inside ``mask``) as hits, best first."""
        keys = self.keys
        if not len(keys):
            return []
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        want = min(k + (1 if exclude is not None else 0), len(keys))
        part = np.argpartition(-scores, want - 1)[:want]
        part = part[np.argsort(-scores[part], kind="stable")]
        hits = [RetrievalHit(keys[i], float(scores[i])) for i in part if scores[i] > 0 and keys[i] != exclude]
        return hits[:k]

    def search(self, query: str, k: int = 10, allow: Iterable[str] | None = None) -> list[RetrievalHit]:
        """Top ``k`` texts for ``query`` (only texts sharing a term with it)."""
        return self.search_many([query], k=k, allow=allow)[0]

    def search_many(self, queries: Sequence[str], k: int = 10, allow: Iterable[str] | None = None,
                    exclude: Sequence[str | None] | None = None) -> list[list[RetrievalHit]]:
        """:meth:`search` for a batch; ``exclude`` drops one key per query (leave-one-out)."""
        k = check_k(k)
        skip = list(exclude) if exclude is not None else [None] * len(queries)
        mask = self.allow_mask(allow)
        return [self.top(self.scores(q), k, mask, skip[i]) for i, q in enumerate(queries)]


def tokenize(text: str) -> list[str]:
    """Content words of a question: lower-cased ASCII words and numbers, question stop words out, Snowball stems."""
    return _QUESTION_ANALYZER.tokenize(text)


_QUESTION_ANALYZER = BM25Retriever(stopwords="question", splitter=r"[a-z0-9]+")

__all__ = ["BM25Retriever", "QUESTION_STOPWORDS", "DEFAULT_SPLITTER", "tokenize"]
