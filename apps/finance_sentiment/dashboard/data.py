"""Data access for the dashboard page (plain functions, testable without Streamlit)."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pandas as pd

from verticore.text_safety import escape_html, escape_markdown

from ..store import SQLiteStore

SENTIMENT_COLOURS = {"positive": "#d7f5dd", "neutral": "#eeeeee", "negative": "#fbd5d5"}


def feed_frame(store: SQLiteStore, limit: int = 200, entity: str | None = None, topic: str | None = None) -> pd.DataFrame:
    rows = store.recent_items(limit=limit, entity=entity or None, topic=topic or None)
    return pd.DataFrame([{
        "published": dt.datetime.fromtimestamp(r["published_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "sentiment": r["sentiment"], "score": round(r["sentiment_score"] or 0.0, 3), "title": r["title"],
        "entities": ", ".join(r["entities"]), "topics": ", ".join(r["topics"]), "source": r["source"], "url": r["url"],
        "sentences": len(r["evidence"]) or 1, "model": r["model_version"], "id": r["id"]} for r in rows])


def trend_frame(store: SQLiteStore, kind: str, key: str, freq: str = "1h") -> pd.DataFrame:
    """Per time bucket: volume, mean sentiment score, negative share (non-duplicate items)."""
    rows = store.series_items(kind, key)
    if not rows:
        return pd.DataFrame(columns=["bucket", "volume", "mean_sentiment", "negative_share"])
    df = pd.DataFrame(rows)
    df["bucket"] = pd.to_datetime(df["published_at"], unit="s", utc=True).dt.floor(freq)
    df["neg"] = (df["sentiment"] == "negative").astype(float)
    g = df.groupby("bucket").agg(volume=("id", "count"), mean_sentiment=("sentiment_score", "mean"),
                                 negative_share=("neg", "mean")).reset_index()
    return g


def alerts_frame(store: SQLiteStore, limit: int = 200) -> pd.DataFrame:
    rows = store.list_alerts(limit=limit)
    return pd.DataFrame([{
        "id": a["id"], "state": a["state"], "severity": a["severity"], "series": f"{a['series_kind']}:{a['series_key']}",
        "opened": dt.datetime.fromtimestamp(a["opened_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "summary": a["summary"], "reason": a.get("reason") or "", "muted": muted_label(a), "delivered": a["delivered"], "pending": a["pending"], "dead": a["dead"],
        "attempts": a["attempts"], "evidence": len(a["evidence"])} for a in rows])


def shown_error(error: str | None) -> str:
    """A delivery error as the dashboard shows it. Rows written before receivers' bodies stopped
    being stored (``HTTP 503: <body>``) are cut back to the status: a receiver's answer is never shown."""
    if not error:
        return ""
    m = re.match(r"HTTP (\d{3})", error)
    if m:
        from ..webhooks import http_reason

        return http_reason(int(m.group(1)))
    return error[:300]


def outbox_frame(store: SQLiteStore, state: str | None = None) -> pd.DataFrame:
    rows = store.list_outbox(state=state, limit=500)
    return pd.DataFrame([{"id": r["id"], "alert": r["alert_id"], "event": r["event"], "target": r["target"], "state": r["state"],
                          "attempts": r["attempts"], "last_status": r["last_status"], "last_error": shown_error(r["last_error"])}
                         for r in rows])


# -- markup: everything from feeds, users or config is escaped before Streamlit renders it --------
def evidence_heading_md(title: str, sentiment: str | None, score: float | None) -> str:
    """Markdown heading of one article's evidence (the title is literal text, never markup)."""
    return f"**{escape_markdown(title)}** — {escape_markdown(sentiment)} ({float(score or 0.0):+.2f})"


def alert_label_md(alert: dict[str, Any]) -> str:
    """Expander label of an alert (the summary names config-defined series: escaped)."""
    return f"\\#{int(alert['id'])} \\[{escape_markdown(alert['state'])}\\] {escape_markdown(alert['summary'])}"


def score_badge_html(colour: str, label: str, score: float, topics: list[str], companies: list[str]) -> str:
    """The coloured "score this text" result (``unsafe_allow_html``): topic names come from the
    editable config and tickers from the watchlist, so every value is HTML-escaped."""
    return (f"<div style='background:{escape_html(colour)};padding:8px;border-radius:6px'><b>{escape_html(label)}</b> "
            f"(score {float(score):+.3f}) · topics: {escape_html(', '.join(topics))} · "
            f"companies: {escape_html(', '.join(companies)) or '—'}</div>")


def alert_markers(store: SQLiteStore, kind: str, key: str) -> list[dict[str, Any]]:
    return [a for a in store.list_alerts(limit=500) if a["series_kind"] == kind and a["series_key"] == key]


def muted_label(alert: dict[str, Any]) -> str:
    """``silenced #3`` / ``inhibited by <key>`` / ``""``: why an alert was recorded but not notified."""
    parts = []
    if alert.get("silenced_by"):
        parts.append(f"silenced #{int(alert['silenced_by'])}")
    if alert.get("inhibited_by"):
        parts.append(f"inhibited by {alert['inhibited_by']}")
    return "; ".join(parts)


def silences_frame(store: SQLiteStore, include_expired: bool = True, now: float | None = None) -> pd.DataFrame:
    """Silences, newest first, with their state (active / pending / expired) at ``now``."""
    import time as _time

    now = _time.time() if now is None else now
    rows = store.list_silences(include_expired=include_expired, now=now)

    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")

    return pd.DataFrame([{
        "id": s.id, "state": "expired" if s.ends_at <= now else ("active" if s.starts_at <= now else "pending"),
        "matchers": ", ".join(f"{k}={v}" for k, v in sorted(s.matchers.items())), "starts": iso(s.starts_at),
        "ends": iso(s.ends_at), "by": s.created_by, "comment": s.comment} for s in reversed(rows)],
        columns=["id", "state", "matchers", "starts", "ends", "by", "comment"])
