"""The LangChain VectorStore over verticore.retrieval (dense, BM25, hybrid) and its as_retriever()."""
from __future__ import annotations

import pytest
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever

from verticore.errors import DataError
from verticore.integrations.langchain import VerticoreEmbeddings, VerticoreRetriever, VerticoreVectorStore

TEXTS = ["To reset your password, open Settings and choose Forgot password.",
         "Refunds are paid back to the original card within five business days.",
         "Order 4711 ships from the Berlin warehouse.",
         "Track your parcel with the tracking number in your shipping email."]
META = [{"topic": "account"}, {"topic": "billing"}, {"topic": "shipping"}, {"topic": "shipping"}]


def test_vector_store_modes_filters_and_as_retriever(default_embedder):
    store = VerticoreVectorStore.from_texts(TEXTS, default_embedder, META, mode="hybrid", score_key="score")
    assert isinstance(store, VectorStore)
    assert store.similarity_search("I forgot my password", k=1)[0].page_content == TEXTS[0]
    assert store.similarity_search("order 4711", k=1, mode="bm25")[0].id == "2"
    docs = store.similarity_search("where is my package", k=3, filter={"topic": "shipping"})
    assert {d.metadata["topic"] for d in docs} == {"shipping"} and "score" in docs[0].metadata
    assert "score" not in store.get_by_ids(["0"])[0].metadata
    retriever = store.as_retriever(search_kwargs={"k": 2})
    assert isinstance(retriever, VectorStoreRetriever)
    assert retriever.invoke("money back to my card")[0].page_content == TEXTS[1]
    assert store.similarity_search_with_relevance_scores("refund", k=1)[0][1] <= 1.0
    ids = store.add_texts(["Gift cards cannot be exchanged for cash."], [{"topic": "billing"}])
    assert store.similarity_search("turn a gift card into cash", k=1)[0].id == ids[0]
    store.delete(ids)
    assert store.get_by_ids(ids) == [] and ids[0] not in store.index
    with pytest.raises(DataError):
        store.similarity_search("  ")


def test_vector_store_with_langchain_embeddings_and_retriever_shares_it(default_embedder):
    emb = VerticoreEmbeddings(default_embedder)
    store = VerticoreVectorStore.from_texts(TEXTS, emb, META)
    assert store.embeddings is emb
    assert store.similarity_search("parcel tracking", k=1)[0].page_content == TEXTS[3]
    r = VerticoreRetriever.from_texts(TEXTS, metadatas=META, embedder=default_embedder, k=1)
    assert isinstance(r.vectorstore, VerticoreVectorStore) and r.vectorstore.docs is r.docs
