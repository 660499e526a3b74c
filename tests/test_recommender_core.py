"""Library tests for the recommender app (tiny catalog, default model, no network)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from recommender import (
    EASE,
    Catalog,
    Interactions,
    Popularity,
    Recommender,
    co_interaction_pairs,
    decay_weights,
    interleave,
    mmr,
    multi_interest,
    render_template,
)
from verticore.errors import ArtifactError, DataError, IndexMismatchError

ITEMS = [
    {"item_id": "h1", "title": "Night of Fangs", "description": "A vampire horror film set in a haunted castle.", "tags": ["horror", "vampire"], "genre": "Horror"},
    {"item_id": "h2", "title": "Blood Moon", "description": "Zombies spread terror through a small town.", "tags": ["horror", "zombie"], "genre": "Horror"},
    {"item_id": "h3", "title": "Ghost House", "description": "A scary ghost story in an abandoned house.", "tags": "horror|ghost", "genre": "Horror"},
    {"item_id": "h4", "title": "The Slasher", "description": "A masked killer stalks teenagers at a summer camp.", "tags": ["horror"], "genre": "Horror"},
    {"item_id": "c1", "title": "Happy Bunny", "description": "A cheerful cartoon for kids about a rabbit.", "tags": ["cartoon", "kids"], "genre": "Animation"},
    {"item_id": "c2", "title": "Toon Town", "description": "Animated cartoon adventures of talking cats.", "tags": ["cartoon"], "genre": "Animation"},
    {"item_id": "c3", "title": "Puppy Pals", "description": "An animated cartoon about puppies for children.", "tags": ["cartoon"], "genre": "Animation"},
    {"item_id": "c4", "title": "Robot Friends", "description": "A family cartoon about friendly robots.", "tags": ["cartoon", "family"], "genre": "Animation"},
    {"item_id": "d1", "title": "Market Crash", "description": "A documentary about the 2008 stock market crash.", "tags": ["finance"], "genre": "Documentary"},
    {"item_id": "d2", "title": "Deep Oceans", "description": "A nature documentary about whales and the deep sea.", "tags": ["nature"], "genre": "Documentary"},
]

INTER = pd.DataFrame({
    "user_id": ["both", "both", "both", "both", "hor", "hor", "hor", "kid", "kid", "kid", "doc"],
    "item_id": ["h1", "c1", "h2", "c2", "h1", "h2", "h3", "c1", "c2", "c3", "d1"],
    "rating": [5, 5, 4, 5, 5, 4, 5, 5, 5, 4, 5],
    "timestamp": [1, 2, 3, 4, 1, 2, 3, 1, 2, 3, 1],
})


@pytest.fixture(scope="module")
def catalog(default_embedder):
    return Catalog.from_records(ITEMS, embedder=default_embedder)


@pytest.fixture(scope="module")
def inter(catalog):
    return Interactions.from_dataframe(INTER, known_items=catalog.ids)


@pytest.fixture(scope="module")
def rec(catalog, inter):
    return Recommender(catalog, inter, cf=EASE(l2=1.0).fit(inter), mode="text")


# -- templates & catalog -----------------------------------------------------------------------
def test_render_template_handles_missing_and_list_fields():
    assert render_template("{title}. {description} Tags: {tags}", {"title": "A", "tags": ["x", "y"]}) == "A. Tags: x, y"
    assert render_template("{title}. {description} Tags: {tags}", {"title": "A"}) == "A."
    assert render_template("{title}. {description} Tags: {tags}", {}) == ""
    with pytest.raises(DataError):
        render_template("{a.b}", {})


def test_catalog_skips_duplicates_and_empty_texts_with_counted_warning(default_embedder, caplog):
    recs = ITEMS[:3] + [{"item_id": "h1", "title": "Dup"}, {"item_id": "e", "title": " ", "description": ""},
                        {"title": "no id"}]
    with caplog.at_level(logging.WARNING):
        cat = Catalog(embedder=default_embedder)
        report = cat.upsert(recs)
    assert len(cat) == 3 and report.added == 3
    assert report.skipped == {"duplicate id": 1, "empty text": 1, "missing id": 1}
    assert "skipped 3 item(s)" in caplog.text
    assert cat.get("h1")["title"] == "Night of Fangs"  # the first wins


def test_empty_catalog_and_unknown_item_errors(default_embedder):
    with pytest.raises(DataError, match="empty"):
        Catalog.from_records([{"item_id": "x", "title": ""}], embedder=default_embedder)
    with pytest.raises(DataError, match="empty"):
        Catalog.from_dataframe(pd.DataFrame(), embedder=default_embedder)
    cat = Catalog(embedder=default_embedder)
    with pytest.raises(DataError, match="empty"):
        cat.search_vectors(np.zeros((1, 384), np.float32), 3)
    with pytest.raises(DataError, match="unknown item"):
        cat.get("nope")


def test_catalog_incremental_updates_and_persistence(default_embedder, tmp_path):
    cat = Catalog.from_records(ITEMS[:4], embedder=default_embedder)
    v_before = cat.vectors(["h1"])[0].copy()
    r = cat.upsert([{"item_id": "h1", "title": "Night of Fangs", "description": "A cheerful cartoon about bunnies.",
                     "tags": ["cartoon"]}, dict(ITEMS[1], genre="Scary"), ITEMS[4]])
    assert (r.added, r.updated, r.unchanged) == (1, 1, 1)
    assert len(cat) == len(cat.index) == 5
    assert not np.allclose(cat.vectors(["h1"])[0], v_before)  # re-embedded
    assert cat.get("h2")["genre"] == "Scary"  # metadata-only change kept
    assert cat.remove(["h4"]) == 1 and "h4" not in cat and len(cat.index) == 4
    with pytest.raises(DataError):
        cat.remove(["nope"])
    cat.save(tmp_path / "cat")
    loaded = Catalog.load(tmp_path / "cat", embedder=default_embedder)
    assert loaded.ids == cat.ids and loaded.texts == cat.texts
    np.testing.assert_allclose(loaded.vectors(cat.ids), cat.vectors(cat.ids), atol=1e-6)
    with pytest.raises(ArtifactError):
        Catalog.load(tmp_path / "missing", embedder=default_embedder)


def test_catalog_refuses_index_from_another_model(default_embedder, tmp_path):
    import json

    cat = Catalog.from_records(ITEMS[:2], embedder=default_embedder)
    cat.save(tmp_path / "cat")
    meta = json.loads((tmp_path / "cat" / "catalog.json").read_text())
    meta["model_fingerprint"] = "sha256:someothermodel"
    (tmp_path / "cat" / "catalog.json").write_text(json.dumps(meta))
    with pytest.raises(IndexMismatchError, match="rebuild"):
        Catalog.load(tmp_path / "cat", embedder=default_embedder)


def test_filters_dict_and_predicate(catalog):
    assert set(catalog.allowed({"genre": "Horror"})) == {"h1", "h2", "h3", "h4"}
    assert set(catalog.allowed({"tags": "ghost"})) == {"h3"}  # "|"-separated string
    assert set(catalog.allowed({"genre": ["Horror", "Documentary"]}, exclude=["h1"])) == {"h2", "h3", "h4", "d1", "d2"}
    assert catalog.allowed(lambda r: r["title"].startswith("T")) == ["h4", "c2"]
    assert catalog.allowed(None) is None


# -- interactions --------------------------------------------------------------------------------
def test_interactions_autodetect_and_skip_unknown_items(caplog):
    df = pd.DataFrame({"userId": [1, 1, 2, 2], "movieId": [10, 11, 10, 99], "rating": [4, "x", 5, 3]})
    with caplog.at_level(logging.WARNING):
        it = Interactions.from_dataframe(df, known_items=["10", "11"])
    assert list(it.df["item"]) == ["10", "10"]
    assert it.skipped == {"non-numeric weight": 1, "unknown item": 1}
    assert "skipped 2 row(s)" in caplog.text
    with pytest.raises(DataError, match="unknown user"):
        it.history("nobody")
    with pytest.raises(DataError, match="no user column"):
        Interactions.from_dataframe(pd.DataFrame({"a": [1], "item": [2]}))


def test_interactions_from_csv_with_dates(tmp_path):
    p = tmp_path / "i.csv"
    p.write_text("user,item,timestamp\nu,a,2024-01-01\nu,b,2024-01-03\n", encoding="utf-8")
    it = Interactions.from_file(p)
    h = it.history("u")
    assert list(h["item"]) == ["a", "b"]
    assert h["timestamp"].iloc[1] - h["timestamp"].iloc[0] == 2 * 86400
    assert list(h["weight"]) == [1.0, 1.0]


# -- profiles, re-ranking, CF ----------------------------------------------------------------------
def test_decay_weights_halve_per_half_life():
    w = decay_weights(np.array([0.0, 86400.0 * 10]), np.array([1.0, 1.0]), half_life_days=10)
    np.testing.assert_allclose(w, [0.5, 1.0])
    np.testing.assert_allclose(decay_weights(np.array([0.0, 5.0]), None, None), [1.0, 1.0])


def test_multi_interest_separates_clusters_and_interleave():
    a = np.array([[1, 0, 0], [0.95, 0.05, 0], [0.9, 0.1, 0]], np.float32)
    b = np.array([[0, 0, 1], [0, 0.1, 0.95]], np.float32)
    v = np.vstack([a, b])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ints = multi_interest(v, k=2)
    assert len(ints) == 2
    assert sorted(map(sorted, (i.members for i in ints))) == [[0, 1, 2], [3, 4]]
    assert ints[0].weight == pytest.approx(0.6)
    assert interleave([["a", "b", "c"], ["x", "a", "y"]], k=5) == ["a", "x", "b", "y", "c"]


def test_mmr_diversity_trades_relevance_for_novelty():
    v = np.array([[1, 0], [0.999, 0.045], [0, 1]], np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rel = np.array([1.0, 0.99, 0.5])
    assert mmr(rel, v, 2, diversity=0.0) == [0, 1]
    assert mmr(rel, v, 2, diversity=0.5) == [0, 2]


def test_ease_and_popularity(inter, tmp_path):
    ease = EASE(l2=1.0).fit(inter)
    recs = ease.recommend(["h1"], k=2)
    assert recs[0][0] == "h2"  # co-consumed with h1 by two users
    assert np.isnan(ease.scores_for(["h1"], ["c4"])[0])  # cold item: CF cannot score it
    ease.save(tmp_path / "cf")
    again = EASE.load(tmp_path / "cf")
    np.testing.assert_allclose(again.scores(["h1"]), ease.scores(["h1"]))
    with pytest.raises(ArtifactError):
        EASE.load(tmp_path / "nothing")
    pop = Popularity().fit(inter)
    top = pop.recommend(4)
    assert {i for i, _ in top} == {"h1", "h2", "c1", "c2"} and all(s == 2 for _, s in top)  # two users each
    assert dict(pop.recommend(20))["d1"] == 1.0 and "d2" not in dict(pop.recommend(20))
    assert "h1" not in [i for i, _ in pop.recommend(3, exclude={"h1"})]
    assert [i for i, _ in pop.recommend(3, candidates=["d1", "h3"])] == ["d1", "h3"] or \
        {i for i, _ in pop.recommend(3, candidates=["d1", "h3"])} == {"d1", "h3"}


# -- recommender -----------------------------------------------------------------------------------
def test_recommend_excludes_seen_and_explains(rec):
    recs = rec.recommend("hor", k=3)
    items = [r.item for r in recs]
    assert not set(items) & {"h1", "h2", "h3"}
    assert items[0] == "h4"  # the remaining horror film
    assert recs[0].because and set(recs[0].because) <= {"h1", "h2", "h3"}
    assert recs[0].explanation.startswith("because you liked ")
    assert all(a.score >= b.score for a, b in zip(recs, recs[1:]))
    assert "h1" in [r.item for r in rec.recommend("hor", k=10, exclude_seen=False)]


def test_multi_interest_user_gets_both_tastes(rec):
    recs = rec.recommend("both", k=2, n_interests=2)
    genres = {rec.catalog.get(r.item)["genre"] for r in recs}
    assert genres == {"Horror", "Animation"}
    assert {r.interest for r in recs} == {0, 1}


def test_filters_candidates_diversity_and_prior(rec):
    recs = rec.recommend("hor", k=3, filters={"genre": "Documentary"})
    assert {r.item for r in recs} == {"d1", "d2"}
    assert [r.item for r in rec.recommend("hor", k=5, candidates=["c1", "d2"])] and \
        {r.item for r in rec.recommend("hor", k=5, candidates=["c1", "d2"])} == {"c1", "d2"}
    assert len(rec.recommend("kid", k=4, diversity=0.7)) == 4
    assert len(rec.recommend("kid", k=4, prior=0.5)) == 4
    with pytest.raises(DataError, match="unknown user"):
        rec.recommend("stranger")


def test_hybrid_blends_cf_and_falls_back_to_text_for_cold_items(catalog, inter):
    hy = Recommender(catalog, inter, cf=EASE(l2=1.0).fit(inter), mode="hybrid", alpha=0.5)
    recs = hy.recommend("hor", k=4)
    assert recs and {r.source for r in recs} <= {"hybrid", "text"}
    assert any(r.source == "text" for r in recs if r.item == "h4")  # h4 is cold for CF
    cold_only = hy.recommend("hor", k=3, candidates=["h4", "c4", "d2"])
    assert cold_only[0].item == "h4"
    with pytest.raises(DataError, match="needs a fitted CF"):
        Recommender(catalog, inter, mode="hybrid")


def test_cold_start_new_item_and_new_user(default_embedder, inter):
    cat = Catalog.from_records(ITEMS, embedder=default_embedder)
    r = Recommender(cat, inter)
    r.upsert_items([{"item_id": "h9", "title": "Vampire Castle II", "description": "More vampires and horror in the castle.",
                     "tags": ["horror", "vampire"], "genre": "Horror"}])
    assert "h9" in [x.item for x in r.recommend("hor", k=2)]
    by_text = r.recommend_for_text("I love cute animated cartoons for children", k=3)
    assert {x.item for x in by_text} <= {"c1", "c2", "c3", "c4"} and by_text[0].source == "query"
    by_items = r.recommend_for_items(["d1"], k=1)
    assert by_items[0].item == "d2" and by_items[0].because == ["d1"]
    with pytest.raises(DataError):
        r.recommend_for_text("   ")
    with pytest.raises(DataError, match="unknown item"):
        r.recommend_for_items(["nope"])
    r.remove_items(["h9"])
    assert "h9" not in [x.item for x in r.recommend("hor", k=5)]


def test_similar_items_and_search(rec):
    sim = rec.similar_items("c1", k=3)
    assert "c1" not in [s.item for s in sim]
    assert rec.catalog.get(sim[0].item)["genre"] == "Animation"
    hits = rec.search("whales in the ocean", k=1)
    assert hits[0].item == "d2"
    assert [h.item for h in rec.search("cartoon", k=5, filters={"genre": "Documentary"})] != []
    with pytest.raises(DataError, match="unknown item"):
        rec.similar_items("missing")


def test_recommender_save_load_roundtrip(rec, tmp_path, default_embedder):
    rec.save(tmp_path / "state")
    again = Recommender.load(tmp_path / "state", embedder=default_embedder)
    assert [r.item for r in again.recommend("kid", k=3)] == [r.item for r in rec.recommend("kid", k=3)]
    assert again.cf is not None and len(again.interactions) == len(rec.interactions)
    with pytest.raises(ArtifactError, match="recommender build"):
        Recommender.load(tmp_path / "nope")


def test_co_interaction_pairs(inter, catalog, caplog):
    pairs = co_interaction_pairs(inter, catalog.texts, window=1)
    # consecutive items per user, deduplicated: both (h1,c1),(c1,h2),(h2,c2); hor (h1,h2),(h2,h3); kid (c1,c2),(c2,c3)
    assert len(pairs) == 7
    assert all(a in catalog.texts.values() and b in catalog.texts.values() for a, b in pairs)
    with caplog.at_level(logging.WARNING):
        fewer = co_interaction_pairs(inter, {k: v for k, v in catalog.texts.items() if k != "h2"}, window=1)
    assert len(fewer) == 3 and "skipped 1 item" in caplog.text
    with pytest.raises(DataError):
        co_interaction_pairs(Interactions.from_dataframe(INTER[INTER.user_id == "doc"]), catalog.texts)
