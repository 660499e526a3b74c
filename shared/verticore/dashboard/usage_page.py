"""Usage -- API requests per key and day, from the usage database of ``verticore serve``; API key management (admins).

Part of the hub (``hub.py``); also runs alone: ``streamlit run shared/verticore/dashboard/usage_page.py``.
Reads ``$VERTICORE_HOME/serving/usage.db`` (counters reach it within ~1 s of each request) and manages the keys in
``$VERTICORE_HOME/serving/keys.db`` (the same store as ``verticore keys``: only hashes are kept).
"""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from verticore.dashboard import auth, home
from verticore.errors import VerticoreError
from verticore.serving.keys import SCOPES, KeyStore, default_keys_db
from verticore.serving.metering import default_usage_db, query_usage

NEW_KEY_STATE = "usage_new_key"  # (name, plaintext): shown on the next run only, then dropped


def usage_section() -> None:
    """Requests, units, tokens and errors per key and day."""
    db = default_usage_db(home())
    st.caption(f"API usage per key from `{db}`. Create keys below (admins) or with `verticore keys create`; "
               "serve with `verticore serve`. Input tokens are approximate (words).")
    try:
        rows = query_usage(db)
    except VerticoreError as exc:
        st.error(f"Cannot read the usage database: {exc}")
        return
    if not rows:
        st.info("No usage recorded yet. Start `verticore serve`, call it with a key, and come back.")
        return

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


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else "–"


def _key_action(action) -> None:
    """Run ``action(store)`` from a button callback (callbacks run before the page, with their own store)."""
    try:
        auth.check_role("admin", "managing API keys")  # again here: the UI check alone is not enough
        store = KeyStore(default_keys_db(home()))
        try:
            action(store)
        finally:
            store.close()
    except VerticoreError as exc:
        st.session_state["keys_flash"] = str(exc).splitlines()[0]


def _create_key() -> None:
    """Create a key; its plaintext stays in the session only until it is shown once."""
    state = st.session_state

    def create(store: KeyStore) -> None:
        rate = (state.get("key_rate") or "").strip() or None
        quota = (state.get("key_quota") or "").strip() or None
        key, rec = store.create(state.get("key_name", ""), state.get("key_scopes") or [], rate=rate, quota=quota)
        state[NEW_KEY_STATE] = (rec.name, key)

    _key_action(create)


def _revoke_key() -> None:
    name = st.session_state.get("key_revoke_pick")

    def revoke(store: KeyStore) -> None:
        store.revoke(name)
        st.session_state["keys_flash_ok"] = f"Revoked key {name!r}; it stops working at once."

    _key_action(revoke)


def keys_section() -> None:
    """List, create (key shown once) and revoke API keys -- admins only."""
    st.header("API keys", anchor=False)
    if msg := st.session_state.pop("keys_flash", None):  # before the role check: a refusal shows too
        st.error(msg)
    if not auth.require_role("admin", "Managing API keys"):
        st.session_state.pop(NEW_KEY_STATE, None)
        return
    store = KeyStore(default_keys_db(home()))
    try:
        new = st.session_state.pop(NEW_KEY_STATE, None)
        if new:
            st.success(f"Created key {new[0]!r}. Copy it now: it is not shown again (only its hash is stored).")
            st.code(new[1], language=None)
        if msg := st.session_state.pop("keys_flash_ok", None):
            st.success(msg)
        recs = store.list()
        if recs:
            st.dataframe(pd.DataFrame([{"name": r.name, "prefix": r.prefix + "…", "status": "active" if r.active else
                                        "revoked", "scopes": ", ".join(r.scopes), "rate": r.rate or "–",
                                        "quota": r.quota or "–", "created (UTC)": _when(r.created_at),
                                        "last used (UTC)": _when(r.last_used)} for r in recs]),
                         hide_index=True, width="stretch")
        else:
            st.caption("No API keys yet.")
        with st.form("create_key", clear_on_submit=True):
            st.markdown("**Create a key**")
            c1, c2, c3 = st.columns([2, 1, 1])
            c1.text_input("Name", key="key_name", placeholder="e.g. shop-frontend")
            c2.text_input("Rate limit (optional)", key="key_rate", placeholder="20/s")
            c3.text_input("Daily quota (optional)", key="key_quota", placeholder="100000/day")
            st.multiselect("Scopes", list(SCOPES), key="key_scopes")
            st.form_submit_button("Create key", type="primary", on_click=_create_key)
        active = [r.name for r in recs if r.active]
        if active:
            c1, c2 = st.columns([3, 1])
            c1.selectbox("Revoke a key", active, key="key_revoke_pick")
            c2.button("Revoke", key="key_revoke", on_click=_revoke_key, icon=":material/block:")
    finally:
        store.close()


st.title("Usage")
auth.guard_page()
usage_section()
keys_section()
