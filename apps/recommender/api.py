"""HTTP API (FastAPI): ``/recommend/{user}``, ``/similar/{item}``, ``/search?q=``, ``/events``, ``/items``, ``/health``.

:func:`create_router` builds the routes around one loaded recommender; it is mounted by the
app's own server (:func:`create_app`, ``recommender serve``) and by the hub (``verticore serve``,
under ``/v1/rec``) through :mod:`recommender.plugin`. Every route needs an API key: reads the
``rec:read`` scope, writes (``POST /events``, ``POST``/``DELETE /items``) ``rec:write``.

User mistakes (unknown item, empty query, bad filter, bad event) come back as 4xx with a one-line
``detail``. An unknown user is not a mistake: they get a cold start (``"cold_start": true``).
Events and item changes are persisted when the router was built with a ``state_dir``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, BeforeValidator, Field

from verticore.errors import DataError, VerticoreError
from verticore.serving import DEFAULT_MAX_BODY_BYTES, ServingSettings, install_serving, require_scope

from .recommender import Recommender

READ = "rec:read"
WRITE = "rec:write"
MAX_EVENTS = 1000


class ItemsUpsert(BaseModel):
    """Items to add or update: each a JSON object with the catalog's id field and text fields."""

    items: list[dict[str, Any]] = Field(..., description="item records")


class ItemsDelete(BaseModel):
    ids: list[str] = Field(..., description="item ids to remove")


def _id_text(v: Any) -> Any:
    """Numeric ids (MovieLens-style ``42``) are accepted and kept as their text, like the CSV loader does."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


IdText = Annotated[str, BeforeValidator(_id_text), Field(min_length=1, max_length=200)]


class Event(BaseModel):
    """One interaction. ``weight`` defaults by kind (view 1, click 2, like 4, purchase 5)."""

    user: IdText
    item: IdText
    event: Literal["view", "click", "like", "purchase"]
    weight: float | None = Field(None, gt=0, le=1e6)
    timestamp: float | None = Field(None, ge=0, description="seconds since the epoch (default: now)")


class EventsIn(BaseModel):
    events: list[Event] = Field(..., min_length=1, max_length=MAX_EVENTS)


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


def _run(fn, *args, **kwargs):
    """Call into the recommender; user errors become 404 (unknown item) or 422."""
    try:
        return fn(*args, **kwargs)
    except DataError as exc:
        msg = str(exc)
        raise HTTPException(404 if msg.startswith(("unknown user", "unknown item")) else 422, msg) from None
    except VerticoreError as exc:
        raise HTTPException(422, str(exc)) from None


def _units(request: Request, n: int) -> None:
    request.state.units = n  # metered by the serving layer (results or records handled)


def create_router(recommender: Recommender, state_dir: str | Path | None = None, max_k: int = 100) -> APIRouter:
    """The recommender's routes around a loaded :class:`~recommender.recommender.Recommender`.

    With ``state_dir`` (the directory :meth:`Recommender.save` wrote), item changes re-save the
    state and events are appended, fsynced, to its ``interactions.csv`` before they are acknowledged.
    """
    def sync_models() -> None:  # promoted cf/embedder versions are swapped in between requests
        recommender.sync_models()

    router = APIRouter(dependencies=[Depends(sync_models)])
    started = time.time()
    state = Path(state_dir) if state_dir is not None else None

    @router.get("/health", dependencies=[Depends(require_scope(READ))])
    def health() -> dict[str, Any]:
        cat = recommender.catalog
        return {"status": "ok", "items": len(cat), "users": len(recommender.interactions.users),
                "mode": recommender.mode, "model": cat.embedder.model, "index": cat.index.info(),
                "uptime_s": round(time.time() - started, 1)}

    @router.get("/recommend/{user}", dependencies=[Depends(require_scope(READ))])
    def recommend(request: Request, user: str, k: int = Query(10, ge=1), exclude_seen: bool = True,
                  diversity: float = Query(0.0, ge=0, le=1), prior: float = Query(0.0, ge=0, le=1),
                  filters: str | None = None, explain: bool = True,
                  text: str | None = Query(None, max_length=2000, description="cold start: the user's taste in words"),
                  items: str | None = Query(None, max_length=4000, description="cold start: seed item ids, comma-separated"),
                  ) -> dict[str, Any]:
        """Recommendations for ``user``; a user without history gets a cold start (hints: ``items``, ``text``)."""
        seeds = [s.strip() for s in items.split(",") if s.strip()] if items else None
        if seeds:
            unknown = [s for s in seeds if s not in recommender.catalog]
            if unknown:
                raise HTTPException(422, f"unknown seed item(s) {unknown[:5]}")
        recs, strategy = _run(recommender.recommend_or_cold_start, user, min(k, max_k), text=text, items=seeds,
                              exclude_seen=exclude_seen, diversity=diversity, prior=prior,
                              filters=_parse_filters(filters), explain=explain)
        _units(request, len(recs))
        return {"user": user, "cold_start": strategy != "history", "strategy": strategy,
                "recommendations": [r.to_dict() for r in recs]}

    @router.get("/similar/{item}", dependencies=[Depends(require_scope(READ))])
    def similar(request: Request, item: str, k: int = Query(10, ge=1), filters: str | None = None) -> dict[str, Any]:
        recs = _run(recommender.similar_items, item, min(k, max_k), filters=_parse_filters(filters))
        _units(request, len(recs))
        return {"item": item, "similar": [r.to_dict() for r in recs]}

    @router.get("/search", dependencies=[Depends(require_scope(READ))])
    def search(request: Request, q: str = Query(..., description="free text", max_length=2000), k: int = Query(10, ge=1),
               filters: str | None = None, as_taste: bool = False) -> dict[str, Any]:
        fn = recommender.recommend_for_text if as_taste else recommender.search
        recs = _run(fn, q, min(k, max_k), filters=_parse_filters(filters))
        _units(request, len(recs))
        return {"q": q, "results": [r.to_dict() for r in recs]}

    @router.post("/events", dependencies=[Depends(require_scope(WRITE))])
    def post_events(request: Request, body: EventsIn) -> dict[str, Any]:
        """Record interactions (all or none: one bad row -> 422 naming it); profiles update at once."""
        n = _run(recommender.record_events, [e.model_dump() for e in body.events],
                 persist_to=state / "interactions.csv" if state is not None else None)
        _units(request, n)
        return {"recorded": n, "users": len({e.user for e in body.events}), "persisted": state is not None}

    @router.post("/items", dependencies=[Depends(require_scope(WRITE))])
    def upsert_items(request: Request, body: ItemsUpsert) -> dict[str, Any]:
        report = _run(recommender.upsert_items, body.items)
        if state is not None:
            recommender.save(state)
        _units(request, len(body.items))
        return {**report.to_dict(), "items": len(recommender.catalog)}

    @router.delete("/items", dependencies=[Depends(require_scope(WRITE))])
    def delete_items(request: Request, body: ItemsDelete) -> dict[str, Any]:
        n = _run(recommender.remove_items, body.ids)
        if state is not None:
            recommender.save(state)
        _units(request, len(body.ids))
        return {"removed": n, "items": len(recommender.catalog)}

    return router


def create_app(recommender: Recommender, state_dir: str | Path | None = None, max_k: int = 100,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, settings: ServingSettings | None = None) -> FastAPI:
    """The app's own server: :func:`create_router` plus the serving layer (API keys on by default)."""
    app = FastAPI(title="Verticore recommender", version="0.1.0",
                  description="Text-embedding recommendations served from a FAISS index.")
    install_serving(app, settings if settings is not None else ServingSettings(max_body_bytes=max_body_bytes))
    app.include_router(create_router(recommender, state_dir=state_dir, max_k=max_k))
    return app
