"""Request-body size limit enforced while the body streams in (pure ASGI middleware).

Checking ``Content-Length`` alone is not enough: a chunked request has none, and FastAPI would
read and parse all of it before any handler could object. This middleware counts the bytes as
the server receives them and answers 413 as soon as the running total passes the limit, so a
64 MiB chunked upload costs at most ``max_bytes`` of memory.
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

DEFAULT_MAX_BODY_BYTES = 4_000_000

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Reject HTTP requests whose body exceeds ``max_bytes`` with 413, without buffering them."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reject(send, 400, "invalid Content-Length header")
                    return
                if declared > limit:
                    await _reject(send, 413, f"request body too large ({declared} bytes > {limit})")
                    return
        received = 0
        exceeded = False
        rejected = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            # Frameworks may turn the receive error into their own 400/500: answer 413 instead.
            nonlocal rejected
            if exceeded:
                if not rejected:
                    rejected = True
                    await _reject(send, 413, f"request body too large (more than {limit} bytes)")
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not rejected:
            await _reject(send, 413, f"request body too large (more than {limit} bytes)")


async def _reject(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def add_body_limit(app: Any, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Any:
    """Install :class:`BodyLimitMiddleware` on a FastAPI/Starlette app (outermost, so it sees raw bytes)."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes)
    return app
