"""HTTP ingestion: ``POST /news`` (one item or a list), ``POST /score``, ``GET /alerts``, ``GET /health``.

Run with ``finance-sentiment serve``; the webhook deliverer runs in a background thread.
"""
from __future__ import annotations

import threading
from typing import Any

from fastapi import Body, FastAPI, HTTPException

from verticore.errors import VerticoreError
from verticore.serving import DEFAULT_MAX_BODY_BYTES, add_body_limit

from .pipeline import Monitor

MAX_BATCH = 1000


def create_app(monitor: Monitor, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """A FastAPI app around one monitor (requests are serialised: the models run one batch at a time)."""
    app = FastAPI(title="finance-sentiment", version="0.1")
    add_body_limit(app, max_body_bytes)
    lock = threading.Lock()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "model_version": monitor.sentiment.version, "topics": monitor.topics.version,
                "watchlist": len(monitor.watchlist)}

    @app.post("/news")
    def post_news(payload: Any = Body(...)) -> dict[str, Any]:
        """Ingest news. Each record: ``title`` (required), ``body``, ``url``, ``id``, ``source``, ``published_at``.
        Bad records are rejected individually (see ``rejected``); the rest are processed."""
        records = payload if isinstance(payload, list) else [payload]
        if len(records) > MAX_BATCH:
            raise HTTPException(413, f"at most {MAX_BATCH} items per request")
        bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
        good = [r for r in records if isinstance(r, dict)]
        with lock:
            try:
                res = monitor.process(good, source="http")
            except VerticoreError as exc:
                raise HTTPException(422, str(exc)) from None
        out = res.summary()
        out["rejected"] += len(bad)
        out["alerts"] = [{"event": e.kind, "summary": e.alert["summary"]} for e in res.events if e.kind != "updated"]
        out["items"] = [{"id": s.item.item_id, "sentiment": s.sentiment, "score": s.sentiment_score, "topics": s.topics,
                         "entities": s.entities, "duplicate_of": s.duplicate_of} for s in res.items]
        return out

    @app.post("/score")
    def score(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(422, "body must be {\"text\": \"...\"} with non-empty text")
        with lock:
            try:
                return monitor.score_text(text)
            except VerticoreError as exc:
                raise HTTPException(422, str(exc)) from None

    @app.get("/alerts")
    def alerts(state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return monitor.store.list_alerts(state=state, limit=limit)

    return app
