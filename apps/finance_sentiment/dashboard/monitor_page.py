"""Finance sentiment monitor: live feed, trends with alert markers, alerts and deliveries,
watchlist and rule editing, and a "score this text" box.

Part of the Verticore hub; also runs alone: ``streamlit run apps/finance_sentiment/dashboard/monitor_page.py``.
Reads the monitor's state from ``$VERTICORE_HOME/finance_sentiment`` (``finance-sentiment demo`` prepares it).
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st
import yaml
from plotly.subplots import make_subplots

from finance_sentiment.config import config_from_dict, dump_config_yaml, load_config
from finance_sentiment.dashboard.data import (
    SENTIMENT_COLOURS,
    alert_label_md,
    alert_markers,
    alerts_frame,
    evidence_heading_md,
    feed_frame,
    outbox_frame,
    score_badge_html,
    silences_frame,
    trend_frame,
)
from finance_sentiment.entities import Watchlist
from finance_sentiment.paths import SAMPLES, AppPaths
from finance_sentiment.store import SQLiteStore
from verticore.dashboard import auth
from verticore.errors import VerticoreError
from verticore.text_safety import escape_markdown


def _paths() -> AppPaths:
    return AppPaths.default()


@st.cache_resource(show_spinner="Loading models…", max_entries=2)
def _scorer(root: str, stamp: float):
    """Sentiment + topics + watchlist for the "score this text" box (cached per model mtime)."""
    from finance_sentiment.config import MonitorConfig
    from finance_sentiment.scoring import SentimentModel, TopicModel
    from verticore import Embedder

    paths = AppPaths(Path(root))
    cfg = load_config(paths.config) if paths.config.exists() else MonitorConfig()
    emb = Embedder("default", max_length=128)
    return (SentimentModel.load(paths.sentiment_model), TopicModel.load(emb, cfg.topics, paths.topic_model,
            threshold=cfg.zero_shot_threshold), emb)


def _colour(row: pd.Series) -> list[str]:
    c = SENTIMENT_COLOURS.get(row.get("sentiment"), "")
    return [f"background-color: {c}" if c else "" for _ in row]


def feed_tab(store: SQLiteStore) -> None:
    wl_keys = [k for k, _ in store.series_keys("entity")]
    c1, c2, c3 = st.columns([1, 1, 1])
    entity = c1.selectbox("Company", ["(all)"] + wl_keys, key="feed_entity")
    topic = c2.selectbox("Topic", ["(all)"] + [k for k, _ in store.series_keys("topic")], key="feed_topic")
    limit = c3.number_input("Items", 10, 1000, 100, step=10, key="feed_limit")
    df = feed_frame(store, int(limit), None if entity == "(all)" else entity, None if topic == "(all)" else topic)
    if df.empty:
        st.info("No items yet.")
        return
    counts = df["sentiment"].value_counts()
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Items shown", len(df))
    m2.metric("Negative", int(counts.get("negative", 0)))
    m3.metric("Positive", int(counts.get("positive", 0)))
    m4.metric("Duplicates dropped (all time)", store.count_items(True))
    shown = df[["published", "sentiment", "score", "title", "entities", "topics", "source"]]
    st.dataframe(shown.style.apply(_colour, axis=1).format({"score": "{:+.2f}"}), hide_index=True, width="stretch")
    relabel_section(store, df)
    with st.expander("Evidence: per-sentence scores of the newest multi-sentence items"):
        multi = [r for r in store.recent_items(limit=int(limit)) if r["evidence"]][:10]
        if not multi:
            st.caption("No multi-sentence articles among the shown items (headlines are scored whole).")
        for r in multi:
            st.markdown(evidence_heading_md(r["title"], r["sentiment"], r["sentiment_score"]))
            st.dataframe(pd.DataFrame(r["evidence"]), hide_index=True, width="stretch")


RELABEL_CHOICES = ["", "positive", "neutral", "negative"]


def relabel_section(store: SQLiteStore, df: pd.DataFrame) -> None:
    """A relabel control on each feed row (agents and admins): the chosen sentiment is stored as an
    analyst label (``labels`` table), which ``verticore retrain --app finance_sentiment --model sentiment``
    learns from. The CLI equivalent is ``finance-sentiment label ITEM_ID LABEL``."""
    with st.expander("Relabel sentiment (feedback for retraining)"):
        if not auth.require_role("agent", "Relabelling items"):
            return
        rows = df[["id", "sentiment", "title"]].copy()
        rows.insert(1, "relabel", "")
        edited = st.data_editor(
            rows, hide_index=True, width="stretch", key="feed_relabel", disabled=["id", "sentiment", "title"],
            column_config={"relabel": st.column_config.SelectboxColumn(
                "Relabel", options=RELABEL_CHOICES, help="the correct sentiment of this item (blank: leave it)"),
                "id": st.column_config.NumberColumn("Item", width="small")})
        picked = edited[edited["relabel"].fillna("").astype(str) != ""]
        st.caption(f"{len(store.list_labels())} analyst label(s) stored so far.")
        if st.button(f"Save {len(picked)} label(s)", key="feed_relabel_save", disabled=picked.empty) \
                and auth.allowed("agent", "relabelling items"):
            user = auth.current_user()
            items = {r["id"]: r for r in store.items_by_rowid(picked["id"].astype(int).tolist())}
            saved = 0
            for rowid, label in zip(picked["id"].astype(int), picked["relabel"].astype(str)):
                if rowid in items:
                    store.add_label(items[rowid], label, by=user.username if user else None)
                    saved += 1
            st.success(f"{saved} label(s) saved; `verticore retrain --app finance_sentiment --model sentiment` "
                       "learns from them")


def trends_tab(store: SQLiteStore) -> None:
    c1, c2, c3 = st.columns([1, 2, 1])
    kind = c1.radio("Series", ["entity", "topic"], horizontal=True, key="trend_kind")
    keys = [k for k, _ in store.series_keys(kind)]
    if not keys:
        st.info("No series yet.")
        return
    key = c2.selectbox("Which", keys, key="trend_key")
    freq = c3.selectbox("Bucket", ["1h", "3h", "6h", "1D"], index=1, key="trend_freq")
    tf = trend_frame(store, kind, key, freq)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=tf["bucket"], y=tf["volume"], name="volume", marker_color="#9db4d3", opacity=0.6, secondary_y=True)
    fig.add_scatter(x=tf["bucket"], y=tf["mean_sentiment"], name="mean sentiment", mode="lines+markers",
                    line=dict(color="#1f4e79"), secondary_y=False)
    for a in alert_markers(store, kind, key):
        x = pd.to_datetime(a["opened_at"], unit="s", utc=True)
        fig.add_vline(x=x.timestamp() * 1000, line_dash="dash", line_color="#c0392b")
        fig.add_scatter(x=[x], y=[-1], mode="markers+text", marker=dict(color="#c0392b", size=12, symbol="triangle-up"),
                        text=[f"alert ({a['state']})"], textposition="top center", name="alert", showlegend=False,
                        secondary_y=False)
    fig.update_yaxes(title_text="mean sentiment (P(pos) - P(neg))", range=[-1.1, 1.1], secondary_y=False)
    fig.update_yaxes(title_text="items", secondary_y=True)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h"))
    st.plotly_chart(fig, width="stretch")
    st.caption(f"{int(tf['volume'].sum()) if not tf.empty else 0} items on {kind} {escape_markdown(key)}; "
               f"red markers: alerts opened on this series.")


def alerts_tab(store: SQLiteStore) -> None:
    af = alerts_frame(store)
    if af.empty:
        st.info("No alerts yet.")
    else:
        st.dataframe(af, hide_index=True, width="stretch")
        for a in store.list_alerts(limit=20):
            with st.expander(alert_label_md(a)):
                ev = pd.DataFrame(a["evidence"])
                if not ev.empty:
                    st.dataframe(ev[[c for c in ("title", "sentiment", "score", "source", "url") if c in ev]], hide_index=True,
                                 width="stretch")
    silences_section(store)
    st.subheader("Webhook deliveries")
    ob = outbox_frame(store)
    if ob.empty:
        st.caption("No deliveries queued (configure webhooks in the rules file).")
        return
    st.dataframe(ob, hide_index=True, width="stretch")
    dead = ob[ob["state"] == "dead"]
    if not dead.empty:
        st.warning(f"{len(dead)} delivery(ies) dead-lettered")
        if not auth.require_role("agent", "Re-sending deliveries"):
            return
        pick = st.selectbox("Re-send dead-lettered delivery", dead["id"].tolist(), key="resend_pick")
        if st.button("Re-send", key="resend_btn") and auth.allowed("agent", "re-sending deliveries"):
            store.resend(int(pick), time.time())
            st.success(f"delivery #{pick} re-queued (same idempotency key)")


def silences_section(store: SQLiteStore) -> None:
    """List silences; agents and admins add and expire them (alerts stay recorded, only not notified)."""
    from finance_sentiment.alerting import new_silence, parse_matchers

    st.subheader("Silences")
    sf = silences_frame(store)
    if sf.empty:
        st.caption("No silences.")
    else:
        st.dataframe(sf, hide_index=True, width="stretch")
    if not auth.require_role("agent", "Adding and expiring silences"):
        return
    with st.form("silence_form"):
        c1, c2 = st.columns([2, 1])
        match = c1.text_input("Matchers (label=value, comma-separated)", placeholder="entity=MRD, rule=negative-surge",
                              key="silence_match")
        duration = c2.text_input("Duration", "2h", key="silence_duration")
        author = c1.text_input("Author", key="silence_author")
        comment = c1.text_input("Comment", key="silence_comment")
        submitted = st.form_submit_button("Add silence")
    if submitted and auth.allowed("agent", "adding silences"):
        try:
            sil = new_silence(parse_matchers([m for m in match.split(",") if m.strip()]), created_by=author,
                              comment=comment, duration=duration.strip() or None)
            store.add_silence(sil)
            st.success(f"silence #{sil.id} added")
        except VerticoreError as exc:
            st.error(escape_markdown(str(exc)))
    running = sf[sf["state"] != "expired"] if not sf.empty else sf
    if not running.empty:
        pick = st.selectbox("Expire silence", running["id"].tolist(), key="silence_expire_pick")
        if st.button("Expire", key="silence_expire_btn") and auth.allowed("agent", "expiring silences"):
            if store.expire_silence(int(pick), time.time()):
                st.success(f"silence #{pick} expired")
            else:
                st.error(f"silence #{pick} is no longer running")


def settings_tab(paths: AppPaths) -> None:
    can_edit = auth.require_role("admin", "Editing the watchlist, rules and webhooks")
    st.markdown("**Watchlist** (ticker, name, aliases separated by `|`)")
    wl_path = paths.watchlist if paths.watchlist.exists() else SAMPLES / "watchlist.csv"
    try:
        wl = Watchlist.load(wl_path)
    except VerticoreError as exc:
        st.error(escape_markdown(str(exc)))
        return
    df = pd.DataFrame([{"ticker": e.ticker, "name": e.name, "aliases": "|".join(e.aliases)} for e in wl.entries])
    edited = st.data_editor(df, num_rows="dynamic", hide_index=True, key="wl_editor", width="stretch", disabled=not can_edit)
    if st.button("Save watchlist", key="wl_save", disabled=not can_edit) and auth.allowed("admin", "editing the watchlist"):
        try:
            new = Watchlist.from_csv_text(edited.fillna("").to_csv(index=False), origin="edited watchlist")
            new.save(paths.watchlist)
            st.success(f"saved {len(new)} companies to {escape_markdown(paths.watchlist)} (the monitor picks them up on restart)")
        except VerticoreError as exc:
            st.error(escape_markdown(str(exc)))
    st.markdown("**Rules and webhooks** (YAML)")
    if not can_edit:  # the rules file may hold webhook secrets
        st.caption("Only admins see the rules file (it can hold webhook secrets).")
        return
    text = paths.config.read_text(encoding="utf-8") if paths.config.exists() else dump_config_yaml(config_from_dict({}))
    new_text = st.text_area("config.yaml", text, height=300, key="rules_text", disabled=not can_edit)
    if (st.button("Validate and save rules", key="rules_save", disabled=not can_edit)
            and auth.allowed("admin", "editing rules and webhooks")):
        try:
            cfg = config_from_dict(yaml.safe_load(new_text), origin="edited config")
            from verticore.io import atomic_write_text

            atomic_write_text(paths.config, new_text)
            st.success(f"valid: {len(cfg.rules)} rule(s), {len(cfg.webhooks)} webhook(s); saved")
        except yaml.YAMLError as exc:
            st.error(f"not valid YAML: {escape_markdown(str(exc).splitlines()[0])}")
        except VerticoreError as exc:
            st.error(escape_markdown(str(exc)))


def score_tab(paths: AppPaths) -> None:
    text = st.text_area("Score this text", "Meridian Airlines cuts its profit forecast. Fuel costs rose sharply. "
                        "Bookings for the summer remain strong.", key="score_text")
    if st.button("Score", key="score_btn"):
        if not text.strip():
            st.error("enter some text to score")
            return
        if not (paths.sentiment_model / "labels.json").exists():
            st.error("no sentiment model yet: run `finance-sentiment demo` or `finance-sentiment train`")
            return
        try:
            stamp = (paths.sentiment_model / "model.safetensors").stat().st_mtime
            sentiment, topics, emb = _scorer(str(paths.root), stamp)
            from finance_sentiment.text import split_sentences

            sents = split_sentences(text)
            r = sentiment.score([sents[0]], [" ".join(sents[1:])])[0]
            tps = topics.assign([sents[0]])[0]
            wl = Watchlist.load(paths.watchlist if paths.watchlist.exists() else SAMPLES / "watchlist.csv")
        except VerticoreError as exc:
            st.error(escape_markdown(str(exc)))
            return
        st.markdown(score_badge_html(SENTIMENT_COLOURS[r.label], r.label, r.score, list(tps), list(wl.tickers_in(text))),
                    unsafe_allow_html=True)
        if r.evidence:
            st.dataframe(pd.DataFrame([e.to_dict() for e in r.evidence]), hide_index=True, width="stretch")


def main() -> None:
    st.title("Finance sentiment monitor")
    auth.guard_page()
    paths = _paths()
    if not paths.db.exists():
        st.info(f"No monitor state at {escape_markdown(paths.root)}. Run `make demo` or `finance-sentiment demo` to prepare it.")
        return
    try:
        store = SQLiteStore(paths.db)
    except VerticoreError as exc:
        st.error(escape_markdown(str(exc)))
        return
    n_items, n_open = store.count_items(False), len(store.list_alerts(state="open"))
    n_dead = len(store.list_outbox("dead"))
    st.caption(f"{n_items} items · {n_open} open alert(s) · {n_dead} dead-lettered deliveries · state in {escape_markdown(paths.root)}")
    tabs = st.tabs(["Live feed", "Trends", "Alerts", "Watchlist & rules", "Score text"])
    with tabs[0]:
        feed_tab(store)
    with tabs[1]:
        trends_tab(store)
    with tabs[2]:
        alerts_tab(store)
    with tabs[3]:
        settings_tab(paths)
    with tabs[4]:
        score_tab(paths)
    store.close()


main()
