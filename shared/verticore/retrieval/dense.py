"""Dense retrieval: a Verticore :class:`~verticore.inference.Embedder` over a :class:`~verticore.index.VectorIndex`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import DataError
from .base import RetrievalComponent, RetrievalHit, check_k, retrievers


def _embedder_spec(embedder: Any) -> Any:
    """JSON form of an embedder: its init config when it has one, else its model name."""
    for attr in ("to_dict", "to_config"):
        fn = getattr(embedder, attr, None)
        if callable(fn):
            try:
                return fn()
            except Exception:  # an object without a usable config: fall back to its name
                break
    return str(getattr(embedder, "model", embedder))


@retrievers.decorator("dense")
class DenseRetriever(RetrievalComponent):
    """Nearest neighbours of the query embedding among embedded texts.

    Args:
        embedder: a model spec (``"default"``, a path, an ``Embedder`` config dict) or an object
            with ``encode(texts) -> (n, dim)`` (a Verticore ``Embedder``); created on first use.
        metric / factory: of the :class:`~verticore.index.VectorIndex` built when none is attached.
        index: an existing index to search (runtime state, not part of the settings).
    """

    kind = "dense"

    def __init__(self, embedder: Any = "default", metric: str = "ip", factory: str = "Flat", *,
                 index: Any = None) -> None:
        self._embedder = None if isinstance(embedder, (str, dict)) else embedder
        self.embedder_spec = embedder if isinstance(embedder, (str, dict)) else _embedder_spec(embedder)
        self.metric = str(metric)
        self.factory = str(factory)
        self._index = index

    def settings(self) -> dict[str, Any]:
        return {"embedder": self.embedder_spec, "metric": self.metric, "factory": self.factory}

    @property
    def embedder(self) -> Any:
        """The embedding model (created from the spec on first use)."""
        if self._embedder is None:
            from ..inference import Embedder

            spec = self.embedder_spec
            if isinstance(spec, dict) and callable(getattr(Embedder, "from_dict", None)) and "type" in spec:
                self._embedder = Embedder.from_dict(spec)
            elif isinstance(spec, dict):
                self._embedder = Embedder(**spec)
            else:
                self._embedder = Embedder(str(spec))
        return self._embedder

    @property
    def index(self) -> Any:
        """The vector index (an empty one recording the embedder's fingerprint until texts are added)."""
        if self._index is None:
            from ..index import VectorIndex

            self._index = VectorIndex(int(self.embedder.dimension), metric=self.metric, factory=self.factory,
                                      model_fingerprint=getattr(self.embedder, "fingerprint", None))
        return self._index

    @index.setter
    def index(self, value: Any) -> None:
        self._index = value

    def warm_up(self) -> None:
        warm = getattr(self.embedder, "warm_up", None)
        if callable(warm):
            warm()
        _ = self.index

    # -- content ------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` as ``(n, dim)`` float32."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, int(self.embedder.dimension)), np.float32)
        try:
            out = self.embedder.encode(texts, show_progress=show_progress)
        except TypeError:  # encoders without a progress option
            out = self.embedder.encode(texts)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def add(self, keys: Sequence[str], texts: Sequence[str], show_progress: bool = False) -> None:
        """Embed ``texts`` and add or replace them under ``keys``."""
        keys = [str(k) for k in keys]
        if len(keys) != len(texts):
            raise DataError(f"got {len(keys)} keys but {len(texts)} texts")
        if keys:
            self.add_vectors(keys, self.encode(texts, show_progress=show_progress))

    def add_vectors(self, keys: Sequence[str], vectors: Any) -> None:
        """Add or replace precomputed vectors under ``keys``."""
        self.index.upsert([str(k) for k in keys], vectors)

    def delete(self, keys: Iterable[str]) -> int:
        """Remove ``keys`` (unknown keys are ignored); returns how many were removed."""
        present = [str(k) for k in keys if str(k) in self.index]
        if present:
            self.index.delete(present)
        return len(present)

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else 0

    def __contains__(self, key: object) -> bool:
        return self._index is not None and key in self._index

    # -- search -------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, allow: Iterable[str] | None = None) -> list[RetrievalHit]:
        """Top ``k`` texts nearest to ``query``."""
        return self.search_many([query], k=k, allow=allow)[0]

    def search_many(self, queries: Sequence[str], k: int = 10, allow: Iterable[str] | None = None,
                    exclude: Sequence[str | None] | None = None, query_vectors: Any = None,
                    show_progress: bool = False) -> list[list[RetrievalHit]]:
        """:meth:`search` for a batch (queries embedded in one pass unless ``query_vectors`` is given);
        ``exclude`` drops one key per query (leave-one-out)."""
        k = check_k(k)
        n = len(queries) if query_vectors is None else len(query_vectors)
        if n == 0 or len(self) == 0:
            return [[] for _ in range(n)]
        qv = self.encode(queries, show_progress) if query_vectors is None else np.asarray(query_vectors, np.float32)
        return self.search_vectors(qv, k, allow=allow, exclude=exclude)

    def search_vectors(self, query_vectors: Any, k: int = 10, allow: Iterable[str] | None = None,
                       exclude: Sequence[str | None] | None = None) -> list[list[RetrievalHit]]:
        """Search with query embeddings of shape ``(n, dim)``."""
        k = check_k(k)
        qv = np.asarray(query_vectors, dtype=np.float32)
        if qv.ndim == 1:
            qv = qv[None, :]
        if len(self) == 0:
            return [[] for _ in range(len(qv))]
        skip = list(exclude) if exclude is not None else [None] * len(qv)
        extra = 1 if exclude is not None else 0
        hits = self.index.search(qv, k=min(k + extra, len(self)), allow=allow)
        return [[RetrievalHit(h.key, float(h.score)) for h in hs if h.key != skip[i]][:k] for i, hs in enumerate(hits)]

    def similarities(self, query_vector: Any, keys: Sequence[str]) -> dict[str, float]:
        """Exact similarity (inner product with the stored vectors) of ``keys`` to one query embedding."""
        keys = [k for k in keys if k in self.index]
        if not keys:
            return {}
        vecs = self.index.reconstruct(keys)
        q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        return {key: float(v @ q) for key, v in zip(keys, vecs)}

    # -- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the settings and, when one exists, the index (``directory/index``)."""
        d = super().save(directory)
        if self._index is not None:
            self._index.save(d / "index")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "DenseRetriever":
        """Rebuild the retriever (and its index, refused if another embedder built it)."""
        retriever = super().load(directory)
        if not isinstance(retriever, DenseRetriever):
            raise DataError(f"{directory} holds a {type(retriever).__name__}, not a DenseRetriever")
        idx = Path(directory) / "index"
        if (idx / "index.json").exists():
            from ..index import VectorIndex

            retriever._index = VectorIndex.load(idx, expected_fingerprint=retriever.embedder.fingerprint)
        return retriever


__all__ = ["DenseRetriever"]
