"""Authentication, scopes, rate limits and quotas; :func:`install_serving` wires the whole layer.

The interface every app codes against::

    from verticore.serving import Principal, ServingSettings, install_serving, require_scope

    router.get("/x", dependencies=[Depends(require_scope("rec:read"))])
    def handler(principal: Principal = Depends(require_scope("rec:write"))): ...
    install_serving(app, ServingSettings(keys_db=..., usage_db=...))

Requests authenticate with ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key, an
unknown or a revoked key: 401 (``WWW-Authenticate: Bearer``). A valid key without the scope:
403. Over the key's rate (``"20/s"``, a moving window) or its daily quota (``"N/day"``, UTC
days): 429 with ``Retry-After``. ``admin`` grants every scope.
"""
from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from .batching import MicroBatcher, QueueFullError
from .body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, add_body_limit
from .keys import SCOPES, KeyRecord, KeyStore, default_keys_db, parse_quota, parse_rate
from .metering import Meter, default_usage_db, seconds_to_next_utc_day
from .observability import ServingMetrics, ServingMiddleware

log = logging.getLogger("verticore.serving")
AUTH_DISABLED = "DISABLED (--insecure-no-auth)"


class ServingSettings(BaseModel):
    """Settings of the serving layer (one per app; ``verticore serve`` builds it from its flags)."""

    model_config = ConfigDict(extra="forbid")

    keys_db: Path | None = Field(default=None, description="API keys database (default $VERTICORE_HOME/serving/keys.db)")
    usage_db: Path | None = Field(default=None, description="usage database (default $VERTICORE_HOME/serving/usage.db)")
    insecure_no_auth: bool = Field(default=False, description="serve without API keys (local experiments only)")
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    max_queue: int = Field(default=1024, ge=1, description="texts waiting per micro-batcher before 503")
    max_batch: int = Field(default=64, ge=1, description="texts per merged model call")
    max_wait_ms: float = Field(default=5.0, ge=0, description="how long a batch waits to fill")
    batching: bool = Field(default=True, description="merge concurrent requests into one model call")
    flush_interval_s: float = Field(default=0.5, gt=0, description="usage counters reach SQLite this often")
    access_log: bool = Field(default=True, description="one JSON log line per request")

    def resolved_keys_db(self) -> Path:
        return self.keys_db or default_keys_db()

    def resolved_usage_db(self) -> Path:
        return self.usage_db or default_usage_db()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and scopes (``anonymous`` with every scope when auth is off)."""

    name: str
    scopes: frozenset[str]
    key_prefix: str | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


ANONYMOUS = Principal("anonymous", frozenset(SCOPES))


class RateLimiter:
    """Per-key moving-window rate limits (the ``limits`` library, in-process memory)."""

    def __init__(self) -> None:
        from limits import RateLimitItemPerSecond
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._item_cls = RateLimitItemPerSecond
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[str, Any] = {}

    def retry_after(self, name: str, rate: str) -> int | None:
        """Count one request; None when allowed, else seconds until the window lets one through."""
        item = self._items.get(rate)
        if item is None:
            amount, seconds = parse_rate(rate)
            item = self._items[rate] = self._item_cls(amount, seconds)
        if self._limiter.hit(item, name):
            return None
        stats = self._limiter.get_window_stats(item, name)
        return max(1, math.ceil(stats.reset_time - time.time()))


@dataclass
class ServingState:
    """Everything :func:`install_serving` puts on ``app.state.serving``."""

    settings: ServingSettings
    keys: KeyStore | None
    meter: Meter | None
    metrics: ServingMetrics
    limiter: RateLimiter
    batchers: list[MicroBatcher] = field(default_factory=list)
    shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    accepting: bool = True
    _closed: bool = False
    _close_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def auth_status(self) -> str:
        return AUTH_DISABLED if self.settings.insecure_no_auth else "on"

    def batcher(self, fn: Callable, name: str) -> MicroBatcher:
        """A :class:`MicroBatcher` with this app's limits and metrics, drained on shutdown."""
        s = self.settings
        b = MicroBatcher(fn, max_batch=s.max_batch, max_wait_ms=s.max_wait_ms, max_queue=s.max_queue, name=name,
                         on_batch=self.metrics.batch_observer(name))
        self.batchers.append(b)
        return b

    def shutdown(self) -> None:
        """Stop accepting, finish in-flight batches, run hooks, flush usage. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.accepting = False
        for b in self.batchers:
            b.close()
        for hook in self.shutdown_hooks:
            try:
                hook()
            except Exception:
                log.exception("shutdown hook failed")
        if self.meter is not None:
            self.meter.close()
        if self.keys is not None:
            self.keys.close()


def _extract_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def serving_state(app: Any) -> ServingState:
    st = getattr(app.state, "serving", None)
    if st is None:
        raise HTTPException(500, "this app has no serving layer: call install_serving(app, settings) when building it")
    return st


def authorize(request: Request, scope: str) -> Principal:
    """Authenticate the request and check ``scope``, the key's rate limit and its daily quota."""
    st = serving_state(request.app)
    if st.settings.insecure_no_auth:
        request.state.principal = ANONYMOUS
        return ANONYMOUS
    # A second require_scope on the same request (router + route) only checks the scope.
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        key = _extract_key(request)
        if key is None:
            raise _unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        rec: KeyRecord | None = st.keys.verify(key) if st.keys is not None else None
        if rec is None:
            raise _unauthorized("invalid or revoked API key")
        principal = Principal(rec.name, frozenset(rec.scopes), rec.prefix)
        request.state.principal = principal
        if not principal.has(scope):
            raise HTTPException(403, f"key {rec.name!r} lacks the scope {scope!r}")
        if rec.rate:
            wait = st.limiter.retry_after(rec.name, rec.rate)
            if wait is not None:
                raise HTTPException(429, f"rate limit {rec.rate} exceeded for key {rec.name!r}; retry in {wait} s",
                                    headers={"Retry-After": str(wait)})
        if rec.quota and st.meter is not None and not st.meter.admit(rec.name, parse_quota(rec.quota)):
            wait = seconds_to_next_utc_day()
            raise HTTPException(429, f"daily quota {rec.quota} used up for key {rec.name!r}; it resets at 00:00 UTC",
                                headers={"Retry-After": str(wait)})
    elif not principal.has(scope):
        raise HTTPException(403, f"key {principal.name!r} lacks the scope {scope!r}")
    return principal


def require_scope(scope: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the caller's :class:`Principal` when its key holds ``scope``.

    Works on any app where :func:`install_serving` was called (settings are read from
    ``request.app.state``); unknown scope names fail here, when the route is declared.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; valid scopes: {', '.join(SCOPES)}")

    def dependency(request: Request) -> Principal:
        return authorize(request, scope)

    # A plain def would run in the thread pool; an async wrapper keeps the cheap check inline.
    async def async_dependency(request: Request) -> Principal:
        return dependency(request)

    async_dependency.__name__ = f"require_scope_{scope.replace(':', '_')}"
    async_dependency.__doc__ = f"Requires an API key with the {scope!r} scope."
    return async_dependency


def install_serving(app: FastAPI, settings: ServingSettings | None = None) -> ServingState:
    """Install auth state, request ids, JSON access logs, metering, rate limits, ``/metrics``,
    the body limit, 503 for full queues and a graceful shutdown on ``app``. Call it once, before
    the app starts serving."""
    if getattr(app.state, "serving", None) is not None:
        raise RuntimeError("install_serving was already called on this app")
    settings = settings or ServingSettings()
    if settings.insecure_no_auth:
        keys = None
        log.warning("!" * 72)
        log.warning("AUTHENTICATION IS DISABLED (--insecure-no-auth): anyone who can reach this server can call "
                    "every endpoint. Use it only on a trusted machine.")
        log.warning("!" * 72)
    else:
        keys = KeyStore(settings.resolved_keys_db())
    meter = Meter(settings.resolved_usage_db(), flush_interval_s=settings.flush_interval_s)
    state = ServingState(settings=settings, keys=keys, meter=meter, metrics=ServingMetrics(), limiter=RateLimiter())
    app.state.serving = state

    if not any(m.cls is BodyLimitMiddleware for m in app.user_middleware):
        add_body_limit(app, settings.max_body_bytes)
    app.add_middleware(ServingMiddleware, state=state)  # outermost: 413s get request ids and logs too

    async def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after_s)})

    app.add_exception_handler(QueueFullError, queue_full)

    async def metrics_endpoint() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any):
        async with inner(a) as maybe_state:
            try:
                yield maybe_state
            finally:
                from starlette.concurrency import run_in_threadpool

                await run_in_threadpool(state.shutdown)

    app.router.lifespan_context = lifespan
    ref = weakref.ref(state)
    atexit.register(lambda: (s := ref()) is not None and s.shutdown())  # a normal exit without lifespan still flushes
    return state


__all__ = ["ANONYMOUS", "AUTH_DISABLED", "Principal", "RateLimiter", "ServingSettings", "ServingState", "authorize",
           "install_serving", "require_scope", "serving_state"]
