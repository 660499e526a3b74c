"""Request ids, structured JSON logs and Prometheus metrics for the serving layer.

Every HTTP response carries ``X-Request-ID`` (the client's, when it sent a sane one, else a new
one), and every log line written while a request is handled carries it too (a context variable
read by :class:`JsonFormatter`). Metrics live in one :class:`prometheus_client.CollectorRegistry`
per app, so several apps in one process (tests) never clash.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..text import utc_iso

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("verticore_request_id", default=None)
access_log = logging.getLogger("verticore.serving.access")
log = logging.getLogger("verticore.serving")
_RID_OK = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_STD_ATTRS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


def new_request_id(incoming: str | None = None) -> str:
    """The client's id when it is short and plain (no log injection), else a fresh one."""
    if incoming and _RID_OK.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, plus any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": utc_iso(record.created, timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for k, v in vars(record).items():
            if k not in _STD_ATTRS and k not in out and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Route every log record (ours, uvicorn's, the apps') to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our access log has the request id and key


class ServingMetrics:
    """The Prometheus metrics of one app (own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("verticore_http_requests", "HTTP requests by endpoint (route template), method and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("verticore_http_request_duration_seconds", "HTTP request latency",
                                 ["endpoint", "method", "status"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.in_progress = Gauge("verticore_http_requests_in_progress", "requests being handled", registry=r)
        self.model_loaded = Gauge("verticore_model_loaded", "1 when the model is loaded, 0 when not (yet)", ["model"],
                                  registry=r)
        self.batch_size = Histogram("verticore_batch_size", "texts per model call of a micro-batcher", ["batcher"],
                                    registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
        self.batch_requests = Histogram("verticore_batch_requests", "requests merged into one model call", ["batcher"],
                                        registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128))

    def batch_observer(self, name: str) -> Callable[[int, int], None]:
        size, reqs = self.batch_size.labels(name), self.batch_requests.labels(name)

        def observe(n_texts: int, n_requests: int) -> None:
            size.observe(n_texts)
            reqs.observe(n_requests)

        return observe


def route_template(scope: dict) -> str | None:
    """The matched route's full template (``/v1/rec/items/{item_id}``), never the raw path.

    FastAPI may hand over the included router's own route (``/items/{item_id}``, without the
    ``include_router`` prefix); the prefix is then the leading segments of the real path that
    the template does not cover (a prefix holds no parameters here).
    """
    route = scope.get("route")
    tmpl = getattr(route, "path", None)
    if not tmpl:
        return None
    path = scope.get("path", "")
    if ":path}" in tmpl or path.count("/") <= tmpl.count("/"):
        return tmpl
    parts = path.split("/")
    prefix = "/".join(parts[: len(parts) - tmpl.count("/")])
    return prefix + tmpl


ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class ServingMiddleware:
    """Pure ASGI middleware: request id, access log, metrics and usage metering per request."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state  # verticore.serving.auth.ServingState

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = new_request_id(incoming)
        req_state = scope.setdefault("state", {})
        req_state["request_id"] = rid
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500
        started = False
        body_bytes = 0
        rid_header = (b"x-request-id", rid.encode())

        async def counting_receive() -> dict:
            nonlocal body_bytes
            message = await receive()
            if message["type"] == "http.request":
                body_bytes += len(message.get("body", b""))
            return message

        async def send_with_id(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), rid_header]}
            await send(message)

        metrics = self.state.metrics
        metrics.in_progress.inc()
        try:
            await self.app(scope, counting_receive, send_with_id)
        except Exception:
            # Answer the 500 here (inside, the framework's own handler would drop our header).
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            status = 500
            if not started:
                body = json.dumps({"detail": "internal server error", "request_id": rid}).encode()
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()), rid_header]})
                await send({"type": "http.response.body", "body": body})
        finally:
            metrics.in_progress.dec()
            ms = (time.perf_counter() - start) * 1000.0
            endpoint = route_template(scope) or ("unmatched" if status == 404 else "other")
            method = scope.get("method", "")
            metrics.requests.labels(endpoint, method, str(status)).inc()
            metrics.latency.labels(endpoint, method, str(status)).observe(ms / 1000.0)
            principal = req_state.get("principal")
            key = getattr(principal, "name", None)
            if key is not None and self.state.meter is not None:
                tokens = req_state.get("tokens")
                self.state.meter.record(key, endpoint, status=status, ms=ms, units=int(req_state.get("units") or 0),
                                        tokens=int(tokens) if tokens is not None else body_bytes // 4)
            if self.state.settings.access_log:
                access_log.info("request", extra={"request_id": rid, "method": method, "route": endpoint,
                                                  "status": status, "ms": round(ms, 2), "key": key})
            request_id_var.reset(token)


__all__ = ["JsonFormatter", "ServingMetrics", "ServingMiddleware", "configure_json_logging", "new_request_id",
           "request_id_var"]
