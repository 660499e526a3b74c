"""Usage -- API requests per key and day, from the usage database of ``verticore serve``.

Part of the hub (``hub.py``); also runs alone: ``streamlit run shared/verticore/dashboard/usage_page.py``.
Reads ``$VERTICORE_HOME/serving/usage.db`` (counters reach it within ~1 s of each request).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

try:  # running from a source checkout without `pip install -e .`
    import verticore.dashboard  # noqa: F401
except ModuleNotFoundError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from verticore.dashboard import home
from verticore.errors import VerticoreError
from verticore.serving.metering import default_usage_db, query_usage

st.title("Usage")
db = default_usage_db(home())
st.caption(f"API usage per key from `{db}`. Create keys with `verticore keys create`; "
           "serve with `verticore serve`. Input tokens are approximate (words).")
try:
    rows = query_usage(db)
except VerticoreError as exc:
    st.error(f"Cannot read the usage database: {exc}")
    st.stop()
if not rows:
    st.info("No usage recorded yet. Start `verticore serve`, call it with a key, and come back.")
    st.stop()

df = pd.DataFrame(rows)
keys = sorted(df["key"].unique())
chosen = st.multiselect("Keys", keys, default=keys, key="usage_keys")
df = df[df["key"].isin(chosen)]
totals = df[["requests", "units", "input_tokens", "errors"]].sum()
c1, c2, c3, c4 = st.columns(4)
c1.metric("Requests", f"{int(totals['requests']):,}")
c2.metric("Texts / items", f"{int(totals['units']):,}")
c3.metric("Input tokens (approx.)", f"{int(totals['input_tokens']):,}")
c4.metric("Errors", f"{int(totals['errors']):,}")

for key in chosen:
    sub = df[df["key"] == key]
    st.subheader(f"Key: {key}")
    daily = sub.pivot_table(index="day", columns="endpoint", values="requests", aggfunc="sum", fill_value=0)
    st.bar_chart(daily, x_label="UTC day", y_label="requests")

st.subheader("All rows")
st.dataframe(df[["day", "key", "endpoint", "requests", "units", "input_tokens", "errors", "mean_latency_ms"]],
             hide_index=True, width="stretch")
