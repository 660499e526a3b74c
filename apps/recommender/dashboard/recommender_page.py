"""Recommender dashboard: user history vs recommendations, cold start, search, embedding map, bench."""
from __future__ import annotations

import json
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[3]
for _p in (_ROOT / "shared", _ROOT / "apps"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402


def _home() -> Path:
    try:
        from verticore.dashboard import home

        return Path(home())
    except Exception:
        from verticore.settings import get_settings

        return get_settings().home or _ROOT / ".verticore"


@st.cache_resource(show_spinner="Loading the recommender...")
def _load(state_dir: str, stamp: float):
    from recommender.recommender import Recommender

    return Recommender.load(state_dir)


def _recs_table(recs) -> pd.DataFrame:
    return pd.DataFrame([{"title": r.title, "score": round(r.score, 3), "why": r.explanation, "item": r.item}
                         for r in recs])


st.title("Recommender")
st.caption("Recommendations from what items say and what users did, served from a FAISS index.")
home = _home()
from recommender.demo import demo_dir, is_ready  # noqa: E402

if not is_ready(home):
    st.warning(f"The recommender demo is not prepared under {demo_dir(home)}. Run `make demo` "
               "(or `recommender demo`) first.")
    st.stop()
state = demo_dir(home) / "state"
rec = _load(str(state), (state / "recommender.json").stat().st_mtime)
cat = rec.catalog
st.write(f"**{len(cat)}** items, **{len(rec.interactions.users)}** users, mode **{rec.mode}**, "
         f"model `{Path(cat.embedder.model).name}`")

tab_user, tab_cold, tab_search, tab_map, tab_bench = st.tabs(
    ["User", "Describe what you like", "Search & similar", "Embedding map", "Bench"])

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
        st.dataframe(hist[["title", "genre", "weight"]], hide_index=True, use_container_width=True)
    with right:
        st.subheader("Recommended")
        recs = rec.recommend(user, k, diversity=diversity, n_interests=n_int)
        t = _recs_table(recs)
        t["genre"] = [cat.get(i).get("genre", "") for i in t["item"]]
        st.dataframe(t[["title", "genre", "score", "why"]], hide_index=True, use_container_width=True)

with tab_cold:
    text = st.text_input("Describe what you like", "cute animated films about animals for kids")
    if text.strip():
        st.dataframe(_recs_table(rec.recommend_for_text(text, 8))[["title", "score", "item"]], hide_index=True,
                     use_container_width=True)

with tab_search:
    q = st.text_input("Search items", "space station")
    if q.strip():
        st.dataframe(_recs_table(rec.search(q, 8))[["title", "score", "item"]], hide_index=True, use_container_width=True)
    item = st.selectbox("Similar to", cat.ids, format_func=cat.title)
    st.dataframe(_recs_table(rec.similar_items(item, 6))[["title", "score", "item"]], hide_index=True,
                 use_container_width=True)

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
                    use_container_width=True)

with tab_bench:
    path = _ROOT / "bench" / "results" / "recommender.json"
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = []
        for m in ("random", "popularity", "ease", "text", "text_finetuned", "hybrid"):
            if m in data:
                rows.append({"model": m, "metric": "all NDCG@10", "value": data[m]["all"]["ndcg10"]})
                if data[m].get("cold"):
                    rows.append({"model": m, "metric": "cold Recall@10", "value": data[m]["cold"]["recall10"]})
        import plotly.express as px

        st.plotly_chart(px.bar(pd.DataFrame(rows), x="model", y="value", color="metric", barmode="group", height=380),
                        use_container_width=True)
        st.caption("MovieLens latest-small, fixed splits (bench/recommender.py).")
    else:
        st.info("No bench results yet: run `python bench/recommender.py`.")
