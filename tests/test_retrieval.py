"""verticore.retrieval components, the KnowledgeBase over them, the recommender's models as RankingModels."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from verticore.errors import DataError, VerticoreError
from verticore.evaluation import RankingModel, evaluate_ranking, ranking_metrics, score_matrix_metrics
from verticore.retrieval import (
    RRF,
    BM25Retriever,
    ConvexFusion,
    DenseRetriever,
    FusionCalibrator,
    HybridRetriever,
    RetrievalComponent,
    Retriever,
    fusions,
    retrievers,
    tokenize,
    two_way_fusion,
)

# A small support corpus written for these tests.
KEYS = ["pw", "refund", "phone", "track", "order-4711"]
TEXTS = ["To reset your password, open Settings and choose Forgot password.",
         "Refunds are paid back to the original card within five business days.",
         "Our support team answers the phone from 8am to 8pm on weekdays.",
         "Track your parcel with the tracking number in your shipping email.",
         "Order 4711 ships from the Berlin warehouse."]


def test_bm25_uses_bm25s_analysis_and_round_trips(tmp_path):
    assert tokenize("How do I get refunds for my orders?") == ["get", "refund", "order"]
    r = BM25Retriever()
    r.add(KEYS, TEXTS)
    assert [h.key for h in r.search("refunded to my card", k=2)][0] == "refund"
    assert r.search("order 4711", k=1)[0].key == "order-4711"  # exact tokens win
    assert r.search("zzzz unknown", k=3) == []
    assert [h.key for h in r.search("password", k=5, allow={"refund", "phone"})] == []
    hits = r.search_many(["reset password"], k=2, exclude=["pw"])[0]
    assert "pw" not in [h.key for h in hits]
    assert r.delete(["pw"]) == 1 and "pw" not in r and r.search("password", k=1) == []
    r.save(tmp_path / "bm25")
    again = RetrievalComponent.load(tmp_path / "bm25")
    assert isinstance(again, BM25Retriever) and again.to_dict() == r.to_dict()
    assert json.loads((tmp_path / "bm25" / "component.json").read_text())["type"] == "bm25"
    with pytest.raises(DataError):
        BM25Retriever(stemmer="klingon").tokenize("x")


def test_registries_list_builtins_and_refuse_duplicates():
    assert {"bm25", "dense", "hybrid"} <= set(retrievers.names())
    assert {"rrf", "convex"} <= set(fusions.names())
    assert all(isinstance(cls(), Retriever) for cls in (BM25Retriever, DenseRetriever, HybridRetriever))
    with pytest.raises(VerticoreError, match="already registered"):
        retrievers.register("bm25", DenseRetriever)


def test_fusions_match_their_formulas():
    dense = [("a", 0.9), ("b", 0.5)]
    bm25 = [("b", 10.0), ("c", 2.0)]
    rrf = RRF(k=60).fuse([dense, bm25])
    assert rrf[0].key == "b" and rrf[0].score == pytest.approx(1 / 62 + 1 / 61)
    conv = ConvexFusion([0.5, 0.5]).fuse([dense, bm25], [{"a": 0.9, "b": 0.5, "c": 0.1}, {"b": 10.0, "c": 2.0}])
    assert [h.key for h in conv] == ["b", "a", "c"]
    assert conv[0].score == pytest.approx(0.5 * (0.4 / 0.8) + 0.5 * 1.0)
    assert RRF.from_dict(two_way_fusion("rrf", 0.8).to_dict()).weights == pytest.approx([1.6, 0.4])
    with pytest.raises(DataError):
        two_way_fusion("max", 0.5)


@pytest.fixture(scope="module")
def hybrid(default_embedder):
    h = HybridRetriever(DenseRetriever(default_embedder), BM25Retriever(), dense_weight=0.5)
    h.add(KEYS, TEXTS)
    return h


def test_dense_and_hybrid_search(hybrid, tmp_path, default_embedder):
    assert hybrid.dense.search("I forgot my login secret", k=1)[0].key == "pw"
    hits = hybrid.search("when do I get my money back", k=3)
    assert hits[0].key == "refund" and hits[0].dense_rank == 1
    assert hybrid.search("order 4711", k=1, mode="bm25")[0].bm25_score > 0
    cands = hybrid.collect(["where is my parcel"], k=3)
    assert set(cands[0].bm25_scores) >= {h.key for h in cands[0].dense}
    cal = FusionCalibrator(weights=[0.0, 0.5, 1.0], k=3).calibrate(
        hybrid, hybrid.collect(["where is my parcel", "money back please"], k=3), [{"track"}, {"refund"}])
    assert cal["chosen"]["dev_hit1"] == 1.0 and len(cal["table"]) == 6
    # settings round trip: the dense retriever records its embedder's config, not the object
    cfg = hybrid.to_dict()
    json.dumps(cfg)
    clone = HybridRetriever.from_dict(cfg)
    assert clone.dense.embedder_spec == cfg["settings"]["dense"]["settings"]["embedder"]
    hybrid.dense.save(tmp_path / "dense")
    loaded = DenseRetriever.load(tmp_path / "dense")
    assert len(loaded) == len(KEYS)


def test_score_matrix_metrics_and_include_empty():
    m = score_matrix_metrics([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]], [0, 1, 1], ks=(1, 2))
    assert m["hit@1"] == pytest.approx(2 / 3) and m["mrr"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["hit@2"] == 1.0 and 0 < m["ndcg@1"] <= 1
    rec = {0: ["a"], 1: ["b"]}
    assert ranking_metrics(rec, {0: {"a"}, 1: set()}, k=1)["hit@1"] == 1.0
    assert ranking_metrics(rec, {0: {"a"}, 1: set()}, k=1, include_empty=True)["hit@1"] == 0.5


def test_knowledge_base_opens_a_kb_saved_without_bm25_settings(tmp_path, default_embedder):
    from customer_service.kb import KnowledgeBase

    faq = tmp_path / "faq.csv"
    pd.DataFrame({"question": ["How do I reset my password?", "Where is my parcel?"],
                  "answer": ["Open Settings and choose Forgot password.", "Use the tracking link in your email."]}
                 ).to_csv(faq, index=False)
    kb = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    kb.ingest(faq)
    kb.close()
    cfg_path = tmp_path / "kb" / "kb.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["bm25"]["type"] == "bm25"
    del cfg["bm25"]  # the format before retrieval moved into the core
    cfg_path.write_text(json.dumps(cfg))
    kb = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    assert kb.search("parcel tracking", k=1, mode="bm25")[0].text.startswith("Where is my parcel")
    assert kb.search("forgot my password", k=1)[0].answer.startswith("Open Settings")
    assert json.loads(cfg_path.read_text())["bm25"]["settings"]["stemmer"] == "english"
    kb.close()


def test_recommender_models_are_ranking_models_and_search_items(default_embedder):
    from recommender import EASE, Catalog, Interactions, Popularity, Recommender

    items = [{"item_id": "h1", "title": "Night of Fangs", "description": "A vampire horror film in a castle."},
             {"item_id": "h2", "title": "Blood Moon", "description": "Zombies spread terror through a town."},
             {"item_id": "c1", "title": "Happy Bunny", "description": "A cheerful cartoon for kids about a rabbit."},
             {"item_id": "c2", "title": "Toon Town", "description": "Animated cartoon adventures of talking cats."},
             {"item_id": "d1", "title": "Deep Oceans", "description": "A nature documentary about whales."}]
    cat = Catalog.from_records(items, embedder=default_embedder)
    inter = Interactions.from_dataframe(pd.DataFrame({
        "user_id": ["a", "a", "b", "b", "c"], "item_id": ["h1", "c1", "h1", "h2", "c1"],
        "rating": [5, 5, 5, 5, 5], "timestamp": [1, 2, 1, 2, 1]}), known_items=cat.ids)
    ease = EASE(l2=1.0).fit(inter)
    models = {"popularity": Popularity().fit(inter), "ease": ease,
              "text": Recommender(cat, inter, mode="text"), "hybrid": Recommender(cat, inter, cf=ease, mode="hybrid")}
    relevant = {"a": {"h2"}, "c": {"c2"}}
    for name, model in models.items():
        assert isinstance(model, RankingModel), name
        out = model.recommend_batch(["a", "c", "nobody"], 2)
        assert set(out) == {"a", "c", "nobody"} and "h1" not in out["a"] and "c1" not in out["c"], name
        assert (set(out["nobody"]) == {"h1", "c1"}) if name == "popularity" else (out["nobody"] == []), name
        m = evaluate_ranking(model, relevant, k=2, catalog_size=5)
        assert 0.0 <= m["hit@2"] <= 1.0 and m["users"] == 2
    rec = models["text"]
    assert rec.search_items("Happy Bunny", k=1, mode="bm25")[0].item == "c1"
    assert rec.search_items("films about the sea and whales", k=1, mode="dense")[0].item == "d1"
    assert rec.search_items("cartoon cats", k=1)[0].item == "c2"
    with pytest.raises(DataError):
        rec.search_items("x", mode="nope")
