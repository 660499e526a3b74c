"""LangChain interop with real langchain-core objects and the default embedder."""
from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever

from verticore.errors import DataError
from verticore.index import VectorIndex
from verticore.integrations.langchain import VerticoreEmbeddings, VerticoreRetriever

# A small corpus written by the project for this test.
TEXTS = [
    "To reset your password, open Settings, choose Security and click 'Forgot password'.",
    "Refunds are paid back to the original card within five business days.",
    "Our support team is available by phone from 8am to 8pm on weekdays.",
    "Shares of the company rose 12% after quarterly profit beat expectations.",
    "The central bank kept interest rates unchanged at its latest meeting.",
    "You can track your parcel with the tracking number in your shipping email.",
]
META = [{"topic": "account"}, {"topic": "billing"}, {"topic": "support"},
        {"topic": "markets"}, {"topic": "markets"}, {"topic": "shipping"}]


@pytest.fixture(scope="module")
def retriever(default_embedder):
    return VerticoreRetriever.from_texts(TEXTS, metadatas=META, embedder=default_embedder, k=3)


def test_embeddings_interface(default_embedder):
    emb = VerticoreEmbeddings(default_embedder)
    assert isinstance(emb, Embeddings)
    docs = emb.embed_documents(TEXTS[:2])
    q = emb.embed_query("how do I change my password")
    assert isinstance(docs, list) and len(docs) == 2 and all(isinstance(x, float) for x in docs[0])
    assert len(docs[0]) == len(q) == 384
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-4)
    assert float(np.dot(q, docs[0])) > float(np.dot(q, docs[1]))
    assert emb.embed_documents([]) == []
    assert emb.fingerprint == default_embedder.fingerprint


def test_retriever_finds_right_document(retriever, default_embedder):
    assert isinstance(retriever, BaseRetriever)
    assert retriever.index.model_fingerprint == default_embedder.fingerprint
    cases = {
        "I forgot my password, how can I reset it?": 0,
        "when will I get my money back": 1,
        "stock price jumped on strong earnings": 3,
        "where is my package": 5,
    }
    for query, want in cases.items():
        docs = retriever.invoke(query)
        assert isinstance(docs[0], Document) and len(docs) == 3
        assert docs[0].page_content == TEXTS[want], query
        assert docs[0].id == str(want)
        assert docs[0].metadata["score"] >= docs[1].metadata["score"]


def test_retriever_filter_and_k(retriever):
    docs = retriever.invoke("interest rates decision", filter={"topic": "markets"}, k=5)
    assert [d.metadata["topic"] for d in docs] == ["markets", "markets"]
    assert docs[0].page_content == TEXTS[4]
    docs = retriever.invoke("reset password", filter={"topic": ["billing", "shipping"]}, k=1)
    assert len(docs) == 1 and docs[0].metadata["topic"] in {"billing", "shipping"}
    assert retriever.invoke("anything", filter={"topic": "none"}) == []
    docs = retriever.invoke("phone support hours", filter=lambda m: m["topic"] != "support")
    assert all(d.metadata["topic"] != "support" for d in docs)
    # the stored documents are not mutated by the score
    assert "score" not in retriever.docs["0"].metadata
    with pytest.raises(DataError, match="empty"):
        retriever.invoke("   ")


def test_retriever_over_existing_index_and_langchain_embeddings(default_embedder):
    emb = VerticoreEmbeddings(default_embedder)
    vectors = np.asarray(emb.embed_documents(TEXTS), dtype=np.float32)
    index = VectorIndex(384, factory="HNSW32", model_fingerprint=emb.fingerprint)
    keys = [f"faq-{i}" for i in range(len(TEXTS))]
    index.add(keys, vectors)
    store = {k: (t, m) for k, t, m in zip(keys, TEXTS, META)}
    r = VerticoreRetriever(index=index, embedder=emb, docs=store, k=2, score_key=None)
    docs = r.invoke("my refund has not arrived")
    assert docs[0].id == "faq-1" and "score" not in docs[0].metadata
    new_ids = r.add_texts(["Gift cards cannot be exchanged for cash."], [{"topic": "billing"}])
    assert r.invoke("can I turn a gift card into cash", k=1)[0].id == new_ids[0]
