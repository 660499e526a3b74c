"""HTTP API: ingest news, score text, read alerts/items/series, administer webhooks.

:func:`create_router` builds the routes around one :class:`~finance_sentiment.pipeline.Monitor`;
the app's own server (:func:`create_app`, ``finance-sentiment serve``) and the hub
(``verticore serve``, under ``/v1/finance``, see :mod:`finance_sentiment.plugin`) both mount it.
Every route needs an API key with a scope:

* ``finance:ingest`` -- ``POST /news`` (one item or a list)
* ``finance:read`` -- ``GET /health``, ``POST /score``, ``GET /alerts``, ``GET /items``, ``GET /series/{kind}``
* ``finance:read`` also -- ``GET /silences``
* ``admin`` -- ``GET/POST /webhooks``, ``DELETE /webhooks/{name}``, ``GET /outbox``,
  ``POST /outbox/{id}/resend``, ``POST /silences``, ``DELETE /silences/{id}`` (expire)

Webhook targets added over the API pass the same SSRF rules as the config file
(:func:`~finance_sentiment.config.validate_webhook_url`) and are saved to the monitor's
``config.yaml`` atomically, then take effect at once (new alerts are queued for them and the
running deliverer knows their secrets and retry policy).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from verticore.errors import DataError, VerticoreError
from verticore.io import atomic_write_text
from verticore.serving import DEFAULT_MAX_BODY_BYTES, ServingSettings, install_serving, require_scope

from .config import config_from_dict, validate_webhook_url
from .pipeline import Monitor

MAX_BATCH = 1000
INGEST = "finance:ingest"
READ = "finance:read"
ADMIN = "admin"


class WebhookIn(BaseModel):
    """A webhook target to add (the fields of :class:`~finance_sentiment.config.WebhookTarget`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@ -]*$")
    url: str = Field(..., min_length=1, max_length=2000)
    format: Literal["json", "slack"] = "json"
    secret: str | None = Field(None, max_length=500)
    secret_env: str | None = Field(None, max_length=200)
    timeout_s: float = Field(5.0, gt=0)
    max_attempts: int = Field(8, ge=1, le=100)
    backoff_base_s: float = Field(2.0, gt=0)
    backoff_max_s: float = Field(600.0, gt=0)
    enabled: bool = True


class WebhookAdmin:
    """Reads and rewrites the ``webhooks`` list of a monitor's YAML config, then applies it live.

    The other keys of the file are kept as they are (comments are not: the file is re-dumped).
    Every change is validated as a whole config before it is written, so a bad change leaves the
    file and the running monitor untouched.
    """

    def __init__(self, monitor: Monitor, config_path: Path | None, deliverer: Any = None, allow: Any = None) -> None:
        self.monitor = monitor
        self.path = config_path
        self.deliverer = deliverer
        self.allow = allow  # operator allow-list (CLI flag); $VERTICORE_WEBHOOK_ALLOW is read by netguard
        self._lock = threading.Lock()

    def _raw(self) -> dict[str, Any]:
        if self.path is None:
            raise DataError("this server has no config file to save webhooks to; start it with a monitor home or --config")
        if self.path.suffix.lower() == ".toml":
            raise DataError(f"{self.path} is TOML; webhooks can be edited over the API in a YAML config only")
        if not self.path.exists():
            return {}
        text = self.path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"config file {self.path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise DataError(f"config file {self.path}: top level must be a mapping")
        return data

    def _save(self, raw: dict[str, Any]) -> None:
        cfg = config_from_dict(raw, origin=str(self.path))  # validates everything before anything is written
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
        # live: alerts from now on are queued for these targets; the deliverer signs/retries by their policy
        self.monitor.config.webhooks = cfg.webhooks
        self.monitor.config.allow_hosts = cfg.allow_hosts
        if self.deliverer is not None:
            self.deliverer.targets = {t.name: t for t in cfg.webhooks}
            self.deliverer.allow_hosts = list(cfg.allow_hosts)

    def list(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.monitor.config.webhooks]

    def add(self, hook: WebhookIn) -> dict[str, Any]:
        with self._lock:
            raw = self._raw()
            hooks = list(raw.get("webhooks") or [])
            if any(isinstance(h, dict) and h.get("name") == hook.name for h in hooks):
                raise HTTPException(409, f"a webhook named {hook.name!r} already exists; remove it first")
            allow_hosts = [str(h) for h in (raw.get("allow_hosts") or [])]
            validate_webhook_url(hook.url, allow_hosts, allow=self.allow)  # SSRF rules; DataError names the problem
            entry = hook.model_dump(exclude_defaults=True)  # name and url always; the rest only when set
            raw["webhooks"] = hooks + [entry]
            self._save(raw)
        added = next(t for t in self.monitor.config.webhooks if t.name == hook.name)
        return added.to_dict()

    def remove(self, name: str) -> None:
        with self._lock:
            raw = self._raw()
            hooks = list(raw.get("webhooks") or [])
            keep = [h for h in hooks if not (isinstance(h, dict) and h.get("name") == name)]
            if len(keep) == len(hooks):
                raise HTTPException(404, f"no webhook named {name!r}")
            raw["webhooks"] = keep
            self._save(raw)


class SilenceIn(BaseModel):
    """A silence to add: equality matchers on alert labels, a time box (``ends_at`` or ``duration``),
    an author and a comment. Times are ISO-8601 or epoch seconds; durations ``2h``/``30m`` or seconds."""

    model_config = ConfigDict(extra="forbid")

    matchers: dict[str, str] = Field(..., max_length=7)
    starts_at: float | str | None = None
    ends_at: float | str | None = None
    duration: float | str | None = None
    created_by: str = Field(..., min_length=1, max_length=200)
    comment: str = Field(..., min_length=1, max_length=2000)


def _user_error(exc: VerticoreError) -> HTTPException:
    return HTTPException(422, str(exc))


def create_router(monitor: Monitor, *, config_path: str | Path | None = None, deliverer: Any = None,
                  allow: Any = None) -> APIRouter:
    """The monitor's routes. ``config_path`` is where webhook changes are saved (the monitor's
    ``config.yaml``); ``deliverer`` is the running :class:`~finance_sentiment.webhooks.Deliverer`
    to keep in step; ``allow`` the operator's extra webhook allow-list."""
    router = APIRouter()
    lock = threading.Lock()  # the models run one batch at a time
    admin = WebhookAdmin(monitor, Path(config_path) if config_path is not None else None, deliverer, allow)

    @router.get("/health", dependencies=[Depends(require_scope(READ))])
    def health() -> dict[str, Any]:
        return {"ok": True, "model_version": monitor.sentiment.version, "topics": monitor.topics.version,
                "watchlist": len(monitor.watchlist)}

    @router.post("/news", dependencies=[Depends(require_scope(INGEST))])
    def post_news(request: Request, payload: Any = Body(...)) -> dict[str, Any]:
        """Ingest news. Each record: ``title`` (required), ``body``, ``url``, ``id``, ``source``, ``published_at``.
        Bad records are rejected individually (see ``rejected``); the rest are processed."""
        records = payload if isinstance(payload, list) else [payload]
        if len(records) > MAX_BATCH:
            raise HTTPException(413, f"at most {MAX_BATCH} items per request")
        bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
        good = [r for r in records if isinstance(r, dict)]
        request.state.units = len(records)
        with lock:
            try:
                res = monitor.process(good, source="http")
            except VerticoreError as exc:
                raise _user_error(exc) from None
        out = res.summary()
        out["rejected"] += len(bad)
        out["alerts"] = [{"event": e.kind, "summary": e.alert["summary"]} for e in res.events if e.kind != "updated"]
        out["items"] = [{"id": s.item.item_id, "sentiment": s.sentiment, "score": s.sentiment_score, "topics": s.topics,
                         "entities": s.entities, "duplicate_of": s.duplicate_of} for s in res.items]
        return out

    @router.post("/score", dependencies=[Depends(require_scope(READ))])
    def score(request: Request, payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(422, "body must be {\"text\": \"...\"} with non-empty text")
        request.state.units = 1
        with lock:
            try:
                return monitor.score_text(text)
            except VerticoreError as exc:
                raise _user_error(exc) from None

    @router.get("/alerts", dependencies=[Depends(require_scope(READ))])
    def alerts(state: Literal["open", "resolved"] | None = None, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return monitor.store.list_alerts(state=state, limit=limit)

    @router.get("/items", dependencies=[Depends(require_scope(READ))])
    def items(limit: int = Query(100, ge=1, le=1000), entity: str | None = None, topic: str | None = None,
              sentiment: Literal["positive", "neutral", "negative"] | None = None, since: float | None = None,
              include_duplicates: bool = False) -> list[dict[str, Any]]:
        """Stored items, newest first, optionally for one entity (ticker) or topic."""
        if entity and topic:
            raise HTTPException(422, "filter by entity or by topic, not both")
        return monitor.store.recent_items(limit, entity=entity, topic=topic, sentiment=sentiment, since=since,
                                          include_duplicates=include_duplicates)

    @router.get("/series/{kind}", dependencies=[Depends(require_scope(READ))])
    def series(kind: Literal["entity", "topic"]) -> list[dict[str, Any]]:
        """Entities or topics seen so far with their item counts (largest first)."""
        return [{"key": k, "items": n} for k, n in monitor.store.series_keys(kind)]

    # -- admin: webhooks and the outbox ----------------------------------------------------
    @router.get("/webhooks", dependencies=[Depends(require_scope(ADMIN))])
    def list_webhooks() -> list[dict[str, Any]]:
        """Configured targets (secrets masked)."""
        return admin.list()

    @router.post("/webhooks", status_code=201, dependencies=[Depends(require_scope(ADMIN))])
    def add_webhook(hook: WebhookIn) -> dict[str, Any]:
        """Add a target: the URL must pass the SSRF rules (public address unless the operator allows it)."""
        try:
            return admin.add(hook)
        except VerticoreError as exc:
            raise _user_error(exc) from None

    @router.delete("/webhooks/{name}", dependencies=[Depends(require_scope(ADMIN))])
    def remove_webhook(name: str) -> dict[str, Any]:
        """Remove a target; deliveries already queued for it are still attempted (nothing is lost)."""
        try:
            admin.remove(name)
        except VerticoreError as exc:
            raise _user_error(exc) from None
        return {"removed": name}

    @router.get("/outbox", dependencies=[Depends(require_scope(ADMIN))])
    def outbox(state: Literal["pending", "sending", "delivered", "dead"] | None = None,
               limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return monitor.store.list_outbox(state, limit)

    @router.post("/outbox/{outbox_id}/resend", dependencies=[Depends(require_scope(ADMIN))])
    def resend(outbox_id: int) -> dict[str, Any]:
        """Re-queue a dead-lettered delivery (same idempotency key, attempts reset)."""
        if not monitor.store.resend(outbox_id, time.time()):
            raise HTTPException(409, f"no dead-lettered delivery with id {outbox_id}")
        return {"requeued": outbox_id}

    # -- silences --------------------------------------------------------------------------
    @router.get("/silences", dependencies=[Depends(require_scope(READ))])
    def list_silences(include_expired: bool = False) -> list[dict[str, Any]]:
        """Running and future silences (``include_expired=true``: all)."""
        return [s.to_dict() for s in monitor.store.list_silences(include_expired=include_expired)]

    @router.post("/silences", status_code=201, dependencies=[Depends(require_scope(ADMIN))])
    def add_silence(body: SilenceIn) -> dict[str, Any]:
        """Mute matching alerts (still recorded, marked silenced) until the silence ends or is expired."""
        from .alerting import new_silence

        try:
            sil = new_silence(body.matchers, created_by=body.created_by, comment=body.comment, starts_at=body.starts_at,
                              ends_at=body.ends_at, duration=body.duration)
        except VerticoreError as exc:
            raise _user_error(exc) from None
        monitor.store.add_silence(sil)
        return sil.to_dict()

    @router.delete("/silences/{silence_id}", dependencies=[Depends(require_scope(ADMIN))])
    def expire_silence(silence_id: int) -> dict[str, Any]:
        """Expire a silence now (it stays listed with ``include_expired``)."""
        if not monitor.store.expire_silence(silence_id, time.time()):
            raise HTTPException(404, f"no running silence with id {silence_id}")
        return {"expired": silence_id}

    return router


def create_app(monitor: Monitor, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, *, settings: ServingSettings | None = None,
               config_path: str | Path | None = None, deliverer: Any = None, allow: Any = None) -> FastAPI:
    """The app's own server: :func:`create_router` plus the serving layer (API keys on by default)."""
    app = FastAPI(title="finance-sentiment", version="0.1")
    install_serving(app, settings if settings is not None else ServingSettings(max_body_bytes=max_body_bytes))
    app.include_router(create_router(monitor, config_path=config_path, deliverer=deliverer, allow=allow))
    return app
