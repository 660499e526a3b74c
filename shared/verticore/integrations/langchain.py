"""LangChain interop: Verticore embeddings and vector search as LangChain components.

* :class:`VerticoreEmbeddings` -- a ``langchain_core.embeddings.Embeddings`` over a Verticore
  :class:`~verticore.inference.Embedder` (fine-tuned or the default model).
* :class:`VerticoreRetriever` -- a ``langchain_core.retrievers.BaseRetriever`` over a
  :class:`~verticore.index.VectorIndex`, an embedder and a key -> ``Document`` store, with ``k``
  and an optional metadata filter (also per call: ``retriever.invoke(q, k=3, filter={...})``).

Example::

    retriever = VerticoreRetriever.from_texts(texts, metadatas=[{"topic": t} for t in topics])
    docs = retriever.invoke("how do I reset my password?", filter={"topic": "account"})
    docs[0].metadata["score"]   # cosine similarity of the best hit
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
    from pydantic import ConfigDict, field_validator
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

    @field_validator("docs", mode="before")
    @classmethod
    def _to_documents(cls, value: Any) -> dict[str, Document]:
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

    def add_texts(self, texts: Sequence[str], metadatas: Sequence[Mapping[str, Any]] | None = None,
                  ids: Sequence[str] | None = None) -> list[str]:
        """Embed and add more texts (keys must be new); returns their ids."""
        from ..io import clean_texts

        texts = clean_texts(texts)
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        if ids is None:
            start = len(self.docs)
            ids = []
            while len(ids) < len(texts):
                if str(start) not in self.docs and str(start) not in self.index:
                    ids.append(str(start))
                start += 1
        ids = [str(i) for i in ids]
        if len(metadatas) != len(texts) or len(ids) != len(texts):
            raise DataError(f"got {len(texts)} texts, {len(metadatas)} metadatas and {len(ids)} ids")
        if texts:
            self.index.add(ids, _encode(self.embedder, texts))
            for i, t, m in zip(ids, texts, metadatas):
                self.docs[i] = Document(page_content=t, metadata=dict(m or {}), id=i)
        return ids

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None, filter: Any = None, **_: Any) -> list[Document]:
        if not isinstance(query, str) or not query.strip():
            raise DataError("query is empty")
        k = int(k if k is not None else self.k)
        flt = filter if filter is not None else self.filter
        allow: Iterable[str] | None = None
        if flt:
            if not callable(flt) and not isinstance(flt, Mapping):
                raise DataError("filter must be a dict {field: value} or a callable metadata -> bool")
            allow = [key for key, doc in self.docs.items() if _matches(doc.metadata, flt)]
            if not allow:
                return []
            if len(allow) == len(self.docs):
                allow = None
        hits = self.index.search_one(_encode_query(self.embedder, query), k=k, allow=allow)
        out: list[Document] = []
        for hit in hits:
            doc = self.docs.get(hit.key)
            if doc is None:
                raise DataError(f"index key {hit.key!r} has no document in the retriever's store")
            if self.score_key:
                doc = doc.model_copy(update={"metadata": {**doc.metadata, self.score_key: hit.score}})
            out.append(doc)
        return out


__all__ = ["VerticoreEmbeddings", "VerticoreRetriever"]
