"""LangChain interop: Verticore embeddings and vector search as LangChain components.

* :class:`VerticoreEmbeddings` -- a ``langchain_core.embeddings.Embeddings`` over a Verticore
  :class:`~verticore.inference.Embedder` (fine-tuned or the default model).
* :class:`VerticoreVectorStore` -- a ``langchain_core.vectorstores.VectorStore`` over the core
  retrievers (:mod:`verticore.retrieval`): dense, BM25 or both fused (``mode``), with metadata
  filters; ``as_retriever()`` gives LangChain's ``VectorStoreRetriever``.
* :class:`VerticoreRetriever` -- a ``BaseRetriever`` over a :class:`VerticoreVectorStore` built
  from an existing :class:`~verticore.index.VectorIndex`, an embedder and a key -> ``Document``
  mapping, with ``k`` and a metadata filter (also per call: ``retriever.invoke(q, k=3, filter={...})``).

Example::

    store = VerticoreVectorStore.from_texts(texts, metadatas=[{"topic": t} for t in topics], mode="hybrid")
    docs = store.as_retriever(search_kwargs={"k": 3}).invoke("how do I reset my password?")
    docs = store.similarity_search("reset password", k=2, filter={"topic": "account"})
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import DataError

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
    from pydantic import ConfigDict, PrivateAttr, field_validator
except ImportError:  # pragma: no cover - optional dependency
    raise ImportError("verticore.integrations.langchain needs langchain-core: pip install langchain-core") from None

MetadataFilter = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]


def _default_embedder():
    from ..inference import Embedder

    return Embedder("default")


def _encode(embedder: Any, texts: list[str]) -> np.ndarray:
    """Embed with a Verticore Embedder (``encode``) or any LangChain ``Embeddings``."""
    if hasattr(embedder, "encode"):
        return np.asarray(embedder.encode(texts), dtype=np.float32).reshape(len(texts), -1)
    if hasattr(embedder, "embed_documents"):
        return np.asarray(embedder.embed_documents(texts), dtype=np.float32).reshape(len(texts), -1)
    raise DataError(f"{type(embedder).__name__} is not an embedder (needs encode() or embed_documents())")


def _encode_query(embedder: Any, text: str) -> np.ndarray:
    if hasattr(embedder, "encode"):
        return np.asarray(embedder.encode([text]), dtype=np.float32).reshape(-1)
    if hasattr(embedder, "embed_query"):
        return np.asarray(embedder.embed_query(text), dtype=np.float32).reshape(-1)
    raise DataError(f"{type(embedder).__name__} is not an embedder (needs encode() or embed_query())")


class VerticoreEmbeddings(Embeddings):
    """LangChain ``Embeddings`` backed by a Verticore :class:`~verticore.inference.Embedder`.

    Args:
        embedder: an ``Embedder`` (default: the default model, loaded on first use).
    """

    def __init__(self, embedder: Any = None) -> None:
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = _default_embedder()
        return self._embedder

    @property
    def fingerprint(self) -> str | None:
        """The wrapped model's fingerprint (what a :class:`VectorIndex` records)."""
        return getattr(self.embedder, "fingerprint", None)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents: one ``list[float]`` per text (L2-normalised)."""
        texts = list(texts)
        if not texts:
            return []
        return self.embedder.encode(texts).astype(float).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query text."""
        return np.asarray(self.embedder.encode([text]), dtype=float)[0].tolist()


class _EmbeddingsEncoder:
    """A LangChain ``Embeddings`` seen as a Verticore encoder (``encode``, ``dimension``, ``fingerprint``)."""

    def __init__(self, embeddings: Any) -> None:
        self.embeddings = embeddings
        self.fingerprint = getattr(embeddings, "fingerprint", None)
        self.model = type(embeddings).__name__
        self._dim: int | None = None

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        out = _encode(self.embeddings, list(texts))
        self._dim = out.shape[1]
        return out

    @property
    def dimension(self) -> int:
        if self._dim is None:
            self._dim = len(self.embeddings.embed_query("dimension probe"))
        return self._dim


def _as_encoder(embedder: Any) -> Any:
    """A Verticore Embedder (unwrapped from :class:`VerticoreEmbeddings`) or an adapted LangChain one."""
    if embedder is None:
        return _default_embedder()
    if isinstance(embedder, VerticoreEmbeddings):
        return embedder.embedder
    return embedder if hasattr(embedder, "encode") else _EmbeddingsEncoder(embedder)


def _to_documents(value: Any) -> dict[str, Document]:
    if not isinstance(value, Mapping):
        raise DataError("docs must be a dict key -> Document (or (text, metadata))")
    out: dict[str, Document] = {}
    for key, doc in value.items():
        if isinstance(doc, Document):
            out[str(key)] = doc if doc.id is not None else doc.model_copy(update={"id": str(key)})
        elif isinstance(doc, str):
            out[str(key)] = Document(page_content=doc, metadata={}, id=str(key))
        elif isinstance(doc, (tuple, list)) and len(doc) == 2:
            out[str(key)] = Document(page_content=str(doc[0]), metadata=dict(doc[1] or {}), id=str(key))
        else:
            raise DataError(f"document {key!r} must be a Document, a string or (text, metadata)")
    return out


def _matches(metadata: Mapping[str, Any], flt: MetadataFilter) -> bool:
    if callable(flt):
        return bool(flt(metadata))
    for field, want in flt.items():
        if field not in metadata:
            return False
        have = metadata[field]
        if isinstance(want, (list, tuple, set, frozenset)):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


class VerticoreVectorStore(VectorStore):
    """LangChain vector store over Verticore's retrievers.

    Args:
        embedding: a Verticore ``Embedder``, :class:`VerticoreEmbeddings` or any LangChain
            ``Embeddings`` (default: the default model).
        mode: ``"dense"`` (default), ``"bm25"`` or ``"hybrid"`` (both, fused).
        dense_weight / fusion: the hybrid's fusion (weighted RRF by default, or ``"convex"``).
        index: an existing :class:`~verticore.index.VectorIndex` built by ``embedding``.
        documents: key -> ``Document`` (or ``(text, metadata)``) for the keys already in ``index``.

    Search results are copies; with ``score_key`` the copy's metadata carries the score.
    """

    def __init__(self, embedding: Any = None, *, mode: str = "dense", dense_weight: float = 0.5,
                 fusion: str = "rrf", index: Any = None, documents: Mapping[str, Any] | None = None,
                 score_key: str | None = None) -> None:
        from ..retrieval import MODES, BM25Retriever, DenseRetriever, HybridRetriever

        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}; use one of {list(MODES)}")
        self.mode = mode
        self.score_key = score_key
        self._embedding = embedding
        self.retriever = HybridRetriever(DenseRetriever(_as_encoder(embedding), index=index), BM25Retriever(),
                                         method=fusion, dense_weight=dense_weight)
        self.docs: dict[str, Document] = _to_documents(documents or {})
        if self.docs:
            self.retriever.bm25.add(list(self.docs), [d.page_content for d in self.docs.values()])

    @property
    def embeddings(self) -> Embeddings | None:
        e = self._embedding
        return e if isinstance(e, Embeddings) else VerticoreEmbeddings(self.retriever.dense.embedder)

    @property
    def index(self) -> Any:
        """The dense retriever's :class:`~verticore.index.VectorIndex`."""
        return self.retriever.dense.index

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                  **kwargs: Any) -> list[str]:
        """Embed and index ``texts`` (new ids, or replacing the documents of given ``ids``)."""
        from ..io import clean_texts

        texts = clean_texts(list(texts))
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        if ids is None:
            ids, n = [], len(self.docs)
            while len(ids) < len(texts):
                if str(n) not in self.docs and str(n) not in self.retriever.dense:
                    ids.append(str(n))
                n += 1
        ids = [str(i) for i in ids]
        if len(metadatas) != len(texts) or len(ids) != len(texts):
            raise DataError(f"got {len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids")
        if texts:
            self.retriever.add(ids, texts, show_progress=bool(kwargs.get("show_progress", False)))
            for i, t, m in zip(ids, texts, metadatas):
                self.docs[i] = Document(page_content=t, metadata=dict(m or {}), id=i)
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Remove documents by id (all of them when ``ids`` is None)."""
        keys = list(self.docs) if ids is None else [str(i) for i in ids]
        self.retriever.delete(keys)
        for key in keys:
            self.docs.pop(key, None)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [self.docs[str(i)] for i in ids if str(i) in self.docs]

    def _allow(self, flt: Any) -> list[str] | None:
        if not flt:
            return None
        if not callable(flt) and not isinstance(flt, Mapping):
            raise DataError("filter must be a dict {field: value} or a callable metadata -> bool")
        return [key for key, doc in self.docs.items() if _matches(doc.metadata, flt)]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Any = None, mode: str | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """Top ``k`` documents with their scores (cosine in dense mode, BM25 or fused otherwise)."""
        if not isinstance(query, str) or not query.strip():
            raise DataError("query is empty")
        allow = self._allow(filter)
        if allow is not None and not allow:
            return []
        hits = self.retriever.search(query, k=int(k), allow=allow, mode=mode or self.mode)
        out = []
        for hit in hits:
            doc = self.docs.get(hit.key)
            if doc is None:
                raise DataError(f"index key {hit.key!r} has no document in the store")
            if self.score_key:
                doc = doc.model_copy(update={"metadata": {**doc.metadata, self.score_key: hit.score}})
            out.append((doc, float(hit.score)))
        return out

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter: Any = None,
                                    **kwargs: Any) -> list[Document]:
        allow = self._allow(filter)
        if allow is not None and not allow:
            return []
        hits = self.retriever.dense.search_vectors(np.asarray(embedding, np.float32), k=int(k), allow=allow)[0]
        return [self.docs[h.key] for h in hits if h.key in self.docs]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: max(0.0, min(1.0, float(score)))  # cosine of normalised vectors

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Any = None, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> "VerticoreVectorStore":
        """Embed and index ``texts`` (``kwargs`` go to the constructor: ``mode``, ``dense_weight``...)."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


class VerticoreRetriever(BaseRetriever):
    """LangChain retriever over a :class:`~verticore.index.VectorIndex`.

    Attributes:
        index: the vector index (keys are document ids).
        embedder: Verticore ``Embedder`` or any LangChain ``Embeddings`` used for queries; it must
            be the model that built the index.
        docs: key -> ``Document`` (``(text, metadata)`` tuples and plain strings are converted).
        k: documents returned per query.
        filter: metadata filter: ``{field: value}`` (equality) or ``{field: [v1, v2]}`` (any of),
            all fields must match; or a callable ``metadata -> bool``. ``invoke(..., filter=...)``
            overrides it for one call.
        score_key: metadata field the score is written to in the returned copies (None: no score).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    embedder: Any
    docs: dict[str, Document]
    k: int = 4
    filter: Any = None
    score_key: str | None = "score"
    _store: Any = PrivateAttr(default=None)

    @field_validator("docs", mode="before")
    @classmethod
    def _to_documents(cls, value: Any) -> dict[str, Document]:
        return _to_documents(value)

    def model_post_init(self, __context: Any) -> None:
        # the documents live in the store (one dict, shared): the store's BM25 side indexes them too
        self._store = VerticoreVectorStore(self.embedder, index=self.index, documents=self.docs)
        self.docs = self._store.docs

    @classmethod
    def from_texts(cls, texts: Sequence[str], metadatas: Sequence[Mapping[str, Any]] | None = None,
                   embedder: Any = None, ids: Sequence[str] | None = None, *, k: int = 4, factory: str = "Flat",
                   metric: str = "ip", show_progress: bool = False, **kwargs: Any) -> "VerticoreRetriever":
        """Embed ``texts`` (default model unless ``embedder`` is given), index them and wrap them.

        ``ids`` default to ``"0"``, ``"1"``...; ``kwargs`` go to the retriever (``filter``, ``score_key``).
        """
        from ..index import VectorIndex
        from ..io import clean_texts

        texts = clean_texts(texts)
        if not texts:
            raise DataError("from_texts needs at least one text")
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(texts))]
        if len(metadatas) != len(texts) or len(ids) != len(texts):
            raise DataError(f"got {len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids")
        embedder = embedder if embedder is not None else _default_embedder()
        base = embedder.embedder if isinstance(embedder, VerticoreEmbeddings) else embedder
        if hasattr(base, "encode"):
            vectors = np.asarray(base.encode(texts, show_progress=show_progress), dtype=np.float32)
        else:
            vectors = _encode(base, texts)
        index = VectorIndex(vectors.shape[1], metric=metric, factory=factory,
                            model_fingerprint=getattr(base, "fingerprint", None))
        index.add(ids, vectors)
        docs = {i: Document(page_content=t, metadata=dict(m or {}), id=i) for i, t, m in zip(ids, texts, metadatas)}
        return cls(index=index, embedder=base, docs=docs, k=k, **kwargs)

    @property
    def vectorstore(self) -> VerticoreVectorStore:
        """The :class:`VerticoreVectorStore` behind this retriever."""
        return self._store

    def add_texts(self, texts: Sequence[str], metadatas: Sequence[Mapping[str, Any]] | None = None,
                  ids: Sequence[str] | None = None) -> list[str]:
        """Embed and add more texts (keys must be new); returns their ids."""
        return self._store.add_texts(list(texts), None if metadatas is None else list(metadatas),
                                     ids=None if ids is None else list(ids))

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None, filter: Any = None, **_: Any) -> list[Document]:
        k = int(k if k is not None else self.k)
        flt = filter if filter is not None else self.filter
        self._store.score_key = self.score_key
        return self._store.similarity_search(query, k=k, filter=flt, mode="dense")


__all__ = ["VerticoreEmbeddings", "VerticoreVectorStore", "VerticoreRetriever"]
