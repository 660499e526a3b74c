"""recommender: text-embedding recommendations on FAISS, built on the Verticore core.

Library use::

    from recommender import Catalog, Interactions, Recommender, EASE

    catalog = Catalog.from_file("items.csv", template="{title}. {description} Tags: {tags}")
    inter = Interactions.from_file("interactions.csv", known_items=catalog.ids)
    rec = Recommender(catalog, inter, cf=EASE(l2=200).fit(inter))
    for r in rec.recommend("u1", k=10, diversity=0.3):
        print(r.title, r.score, r.explanation)
"""
from __future__ import annotations

from .catalog import DEFAULT_TEMPLATE, Catalog, UpsertReport, render_template
from .cf import EASE, Popularity
from .interactions import Interactions
from .profiles import Interest, decay_weights, interleave, multi_interest, weighted_mean
from .recommender import Recommendation, Recommender
from .rerank import mmr, popularity_prior
from .training import co_interaction_pairs, finetune_on_behaviour

__all__ = ["Catalog", "UpsertReport", "render_template", "DEFAULT_TEMPLATE", "Interactions", "Recommender",
           "Recommendation", "EASE", "Popularity", "Interest", "decay_weights", "weighted_mean", "multi_interest",
           "interleave", "mmr", "popularity_prior", "co_interaction_pairs", "finetune_on_behaviour"]
