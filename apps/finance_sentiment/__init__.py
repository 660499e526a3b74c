"""finance_sentiment: a financial-news sentiment alerting monitor built on the Verticore core.

Pipeline: sources (RSS/Atom, watched files, ``POST /news``, replay) -> validation ->
deduplication (normalised title hash + embedding near-duplicates) -> sentiment (fine-tuned
classifier, article-level aggregation with per-sentence evidence) and topics (trained and/or
zero-shot by embedding similarity) -> entity matching against a watchlist -> SQLite store ->
surge detection per entity/topic -> grouped alerts -> persistent webhook outbox.

Public API::

    from finance_sentiment import Monitor, NewsItem, Watchlist, load_config
"""
from __future__ import annotations

from .config import MonitorConfig, Rule, WebhookTarget, load_config
from .entities import Watchlist
from .items import NewsItem

__all__ = ["NewsItem", "Watchlist", "MonitorConfig", "Rule", "WebhookTarget", "load_config", "Monitor"]


def __getattr__(name: str):
    if name == "Monitor":
        from .pipeline import Monitor

        return Monitor
    raise AttributeError(name)
