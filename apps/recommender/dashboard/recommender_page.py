"""Recommender dashboard: user history vs recommendations, cold start, search, embedding map, model quality."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from recommender.demo import demo_dir, is_ready
from verticore.paths import home as verticore_home


@st.cache_resource(show_spinner="Loading the recommender...")
def _load(state_dir: str, stamp: float):
    from recommender.recommender import Recommender

    return Recommender.load(state_dir)


def _recs_table(recs) -> pd.DataFrame:
    return pd.DataFrame([{"title": r.title, "score": round(r.score, 3), "why": r.explanation, "item": r.item}
                         for r in recs])


st.title("Recommender")
st.caption("Recommendations from what items say and what users did, served from a FAISS index.")
home = verticore_home()
if not is_ready(home):
    st.warning(f"The recommender demo is not prepared under {demo_dir(home)}. Run `make demo` "
               "(or `recommender demo`) first.")
    st.stop()
state = demo_dir(home) / "state"
rec = _load(str(state), (state / "recommender.json").stat().st_mtime)
cat = rec.catalog
st.write(f"**{len(cat)}** items, **{len(rec.interactions.users)}** users, mode **{rec.mode}**, "
         f"model `{Path(cat.embedder.model).name}`")

tab_user, tab_cold, tab_search, tab_map, tab_quality = st.tabs(
    ["User", "Describe what you like", "Search & similar", "Embedding map", "Model quality"])

with tab_user:
    users = rec.interactions.users
    c1, c2, c3 = st.columns(3)
    user = c1.selectbox("User", users, index=0)
    k = c2.slider("How many", 3, 20, 8)
    diversity = c3.slider("Diversity (MMR)", 0.0, 1.0, 0.0, 0.1)
    n_int = st.radio("Profile", [1, 2, 3], horizontal=True, format_func=lambda n: "one taste" if n == 1 else f"{n} interests")
    left, right = st.columns(2)
    with left:
        st.subheader("History")
        hist = pd.DataFrame(rec.user_history(user))
        hist["genre"] = [cat.get(i).get("genre", "") for i in hist["item"]]
        st.dataframe(hist[["title", "genre", "weight"]], hide_index=True, width="stretch")
    with right:
        st.subheader("Recommended")
        recs = rec.recommend(user, k, diversity=diversity, n_interests=n_int)
        t = _recs_table(recs)
        t["genre"] = [cat.get(i).get("genre", "") for i in t["item"]]
        st.dataframe(t[["title", "genre", "score", "why"]], hide_index=True, width="stretch")

with tab_cold:
    text = st.text_input("Describe what you like", "cute animated films about animals for kids")
    if text.strip():
        st.dataframe(_recs_table(rec.recommend_for_text(text, 8))[["title", "score", "item"]], hide_index=True,
                     width="stretch")

with tab_search:
    q = st.text_input("Search items", "space station")
    if q.strip():
        st.dataframe(_recs_table(rec.search(q, 8))[["title", "score", "item"]], hide_index=True, width="stretch")
    item = st.selectbox("Similar to", cat.ids, format_func=cat.title)
    st.dataframe(_recs_table(rec.similar_items(item, 6))[["title", "score", "item"]], hide_index=True,
                 width="stretch")

with tab_map:
    import numpy as np
    import plotly.express as px

    ids, vecs = cat.matrix()
    x = vecs - vecs.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)  # 2-D PCA projection
    xy = x @ vt[:2].T
    df = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "title": [cat.title(i) for i in ids],
                       "genre": [cat.get(i).get("genre", "") or "?" for i in ids]})
    st.plotly_chart(px.scatter(df, x="x", y="y", color="genre", hover_name="title", height=480),
                    width="stretch")

with tab_quality:
    # only what this model stored about itself: the hybrid weight's holdout scores (saved with the state
    # by `recommender build` / the demo) and the behaviour fine-tuning's metrics (in the demo's demo.json)
    tuning = rec.alpha_tuning or {}
    if tuning.get("scores"):
        import plotly.express as px

        scores = pd.DataFrame({"alpha": [float(a) for a in tuning["scores"]],
                               "score": [float(v) for v in tuning["scores"].values()]})
        st.write(f"Hybrid weight **alpha = {rec.alpha:g}**, picked on a time holdout of the training interactions "
                 f"({tuning.get('metric', 'NDCG@10')} over {tuning.get('users', '?')} users).")
        st.plotly_chart(px.line(scores, x="alpha", y="score", markers=True, height=320), width="stretch")
    elif tuning.get("skipped"):
        st.info(f"The hybrid weight was not tuned ({tuning['skipped']}); alpha = {rec.alpha:g}.")
    else:
        st.info(f"The hybrid weight alpha = {rec.alpha:g} was set by hand (`recommender build --alpha`), not tuned.")
    meta_file = demo_dir(home) / "demo.json"
    finetune = json.loads(meta_file.read_text(encoding="utf-8")).get("finetune") if meta_file.exists() else None
    numbers = {k: v for k, v in (finetune or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers:
        st.caption("Behaviour fine-tuning of the embedder")
        st.dataframe(pd.DataFrame([numbers]), hide_index=True, width="stretch")
    st.caption("Offline comparisons against other models on MovieLens are a bench: `python bench/recommender.py`.")
