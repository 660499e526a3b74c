"""HTTP API (FastAPI): ``/recommend/{user}``, ``/similar/{item}``, ``/search?q=``, ``/items``, ``/health``.

User mistakes (unknown user or item, empty query, bad filter) come back as 4xx with a one-line
``detail``; item upserts/deletes update the FAISS index in place and are persisted when the
app was created with a ``state_dir``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from verticore.errors import DataError, VerticoreError
from verticore.serving import DEFAULT_MAX_BODY_BYTES, add_body_limit

from .recommender import Recommender


class ItemsUpsert(BaseModel):
    """Items to add or update: each a JSON object with the catalog's id field and text fields."""

    items: list[dict[str, Any]] = Field(..., description="item records")


class ItemsDelete(BaseModel):
    ids: list[str] = Field(..., description="item ids to remove")


def _parse_filters(filters: str | None) -> dict[str, Any] | None:
    if not filters:
        return None
    try:
        f = json.loads(filters)
    except json.JSONDecodeError:
        raise HTTPException(422, "filters must be a JSON object, e.g. {\"genre\": \"Horror\"}") from None
    if not isinstance(f, dict):
        raise HTTPException(422, "filters must be a JSON object, e.g. {\"genre\": \"Horror\"}")
    return f


def create_app(recommender: Recommender, state_dir: str | Path | None = None, max_k: int = 100,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """Build the API around a loaded :class:`~recommender.recommender.Recommender`."""
    app = FastAPI(title="Verticore recommender", version="0.1.0",
                  description="Text-embedding recommendations served from a FAISS index.")
    add_body_limit(app, max_body_bytes)
    started = time.time()

    def run(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as exc:
            msg = str(exc)
            raise HTTPException(404 if msg.startswith(("unknown user", "unknown item")) else 422, msg) from None
        except VerticoreError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/health")
    def health() -> dict[str, Any]:
        cat = recommender.catalog
        return {"status": "ok", "items": len(cat), "users": len(recommender.interactions.users),
                "mode": recommender.mode, "model": cat.embedder.model, "index": cat.index.info(),
                "uptime_s": round(time.time() - started, 1)}

    @app.get("/recommend/{user}")
    def recommend(user: str, k: int = Query(10, ge=1), exclude_seen: bool = True, diversity: float = Query(0.0, ge=0, le=1),
                  prior: float = Query(0.0, ge=0, le=1), filters: str | None = None, explain: bool = True) -> dict[str, Any]:
        recs = run(recommender.recommend, user, min(k, max_k), exclude_seen=exclude_seen, diversity=diversity,
                   prior=prior, filters=_parse_filters(filters), explain=explain)
        return {"user": user, "recommendations": [r.to_json() for r in recs]}

    @app.get("/similar/{item}")
    def similar(item: str, k: int = Query(10, ge=1), filters: str | None = None) -> dict[str, Any]:
        recs = run(recommender.similar_items, item, min(k, max_k), filters=_parse_filters(filters))
        return {"item": item, "similar": [r.to_json() for r in recs]}

    @app.get("/search")
    def search(q: str = Query(..., description="free text"), k: int = Query(10, ge=1), filters: str | None = None,
               as_taste: bool = False) -> dict[str, Any]:
        fn = recommender.recommend_for_text if as_taste else recommender.search
        recs = run(fn, q, min(k, max_k), filters=_parse_filters(filters))
        return {"q": q, "results": [r.to_json() for r in recs]}

    @app.post("/items")
    def upsert_items(body: ItemsUpsert) -> dict[str, Any]:
        report = run(recommender.upsert_items, body.items)
        if state_dir is not None:
            recommender.save(state_dir)
        return {**report.to_json(), "items": len(recommender.catalog)}

    @app.delete("/items")
    def delete_items(body: ItemsDelete) -> dict[str, Any]:
        n = run(recommender.remove_items, body.ids)
        if state_dir is not None:
            recommender.save(state_dir)
        return {"removed": n, "items": len(recommender.catalog)}

    return app
