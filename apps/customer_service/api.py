"""The bot as an authenticated HTTP service: customers chat, agents answer handed-over tickets.

Mounted by ``verticore serve`` under ``/v1/support`` (see :mod:`customer_service.plugin`) or served
alone by ``customer-service serve``. Customer routes need the ``support:chat`` scope (the public,
chat-only key a company puts in its web page), agent routes ``support:agent``; ``GET /widget`` is
the embeddable chat page and needs no key (it takes the public key from its URL).

Session ids are unguessable (``secrets.token_urlsafe``): a chat key reads only the sessions whose
ids it was given, and an unknown id is a 404.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from verticore.errors import DataError, VerticoreError
from verticore.serving import ServingSettings, install_serving, require_scope

from .bot import Bot
from .guardrails import validate_message
from .store import ConflictError, NotFoundError

WIDGET_DIR = Path(__file__).resolve().parent / "widget"
API_PREFIX = "/v1/support"
_WIDGET_FILES = {"widget.html": "text/html; charset=utf-8", "widget.js": "text/javascript; charset=utf-8",
                 "widget.css": "text/css; charset=utf-8"}
# The widget is meant to sit in other sites' iframes (so no frame-ancestors); everything it loads
# or calls is this server, and customer text is inserted with textContent only.
_WIDGET_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
               "base-uri 'none'; form-action 'none'")

T = TypeVar("T")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewSession(_Body):
    customer_ref: str | None = Field(default=None, max_length=200, description="your own customer id (kept encrypted)")


class MessageIn(_Body):
    text: str = Field(max_length=20_000, description="the customer's message (the bot enforces its own, lower limit)")


class FeedbackIn(_Body):
    message_id: int | None = Field(default=None, description="the answer's message_id (default: the last answer)")
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class ClaimIn(_Body):
    agent: str = Field(max_length=100)


class ReplyIn(_Body):
    agent: str = Field(max_length=100)
    text: str = Field(max_length=20_000)


class ResolveIn(_Body):
    agent: str = Field(max_length=100)
    intent: str = Field(max_length=200, description="one of GET /intents")
    note: str | None = Field(default=None, max_length=2000)


class CorrectionIn(_Body):
    agent: str = Field(max_length=100)
    intent: str = Field(max_length=200, description="one of GET /intents")


def _citation(c: dict[str, Any]) -> dict[str, Any]:
    return {"n": c.get("n"), "title": c.get("title"), "source": c.get("source"), "snippet": c.get("snippet")}


def _public_message(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: m[k] for k in ("id", "role", "text", "at") if k in m}
    if "message_id" in m:
        out["message_id"] = m["message_id"]
    if m["role"] == "bot":
        out.update(status=m.get("status"), intent=m.get("intent"), citations=[_citation(c) for c in m.get("citations") or []])
    if m["role"] == "agent":
        out["agent"] = m.get("agent")
    return out


def create_router(bot: Bot, *, widget: bool = True) -> APIRouter:
    """The customer-service routes around ``bot`` (prefix them, e.g. with ``/v1/support``).

    One lock serialises the bot and its store: the store's SQLite connection and the bot's
    session memory are shared by the server's worker threads.
    """
    router = APIRouter()
    store = bot.store
    lock = store.lock
    chat = [Depends(require_scope("support:chat"))]
    agent = [Depends(require_scope("support:agent"))]
    labels: list[str] = []

    def known_intents() -> list[str]:
        if not labels:
            labels.extend(bot.intent_labels())
        return labels

    def guarded(fn: Callable[[], T]) -> T:
        """Run ``fn`` under the lock; store errors become 404 / 409 / 422 with their message."""
        try:
            with lock:
                return fn()
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except ConflictError as exc:
            raise HTTPException(409, str(exc)) from None
        except DataError as exc:
            raise HTTPException(422, str(exc)) from None

    def require_session(session_id: str) -> None:
        if len(session_id) > 100 or not store.session_exists(session_id):
            raise NotFoundError("no such session")

    # -- customer side ----------------------------------------------------------------------
    @router.post("/sessions", dependencies=chat, status_code=201, tags=["support: customer"])
    def create_session(body: NewSession | None = None) -> dict[str, str]:
        """Start a conversation; keep the returned ``session_id`` (it is the only way back to it)."""
        return {"session_id": guarded(lambda: store.new_session(body.customer_ref if body else None))}

    @router.post("/sessions/{session_id}/messages", dependencies=chat, tags=["support: customer"])
    def send_message(session_id: str, body: MessageIn, request: Request) -> dict[str, Any]:
        """The bot's answer with its citations; while an agent has the conversation, the message goes to them."""
        request.state.units = 1

        def run() -> dict[str, Any]:
            require_session(session_id)
            status, ticket = store.session_status(session_id)
            if status == "with_agent":
                try:
                    text = validate_message(body.text, bot.config.max_message_chars)
                except DataError:
                    pass  # the bot explains what is wrong with the message
                else:
                    turn_id = store.add_turn(session_id, text, "", "with_agent", reason="with_agent")
                    return {"session_id": session_id, "message_id": turn_id, "answer": "", "citations": [],
                            "intent": None, "confidence": None, "escalated": True, "status": "with_agent",
                            "ticket_id": ticket["ticket_id"], "session_status": status}
            r = bot.ask(body.text, session_id=session_id)
            return {"session_id": session_id, "message_id": r.turn_id, "answer": r.text,
                    "citations": [_citation(c.to_dict()) for c in r.citations], "intent": r.intent,
                    "confidence": r.confidence, "escalated": r.escalated, "status": r.status, "ticket_id": r.ticket_id,
                    "session_status": store.session_status(session_id)[0]}

        return guarded(run)

    @router.get("/sessions/{session_id}", dependencies=chat, tags=["support: customer"])
    def get_session(session_id: str) -> dict[str, Any]:
        """The transcript (customer, bot and agent messages, PII-redacted as stored) and the session status."""
        def run() -> dict[str, Any]:
            require_session(session_id)
            status, ticket = store.session_status(session_id)
            return {"session_id": session_id, "status": status, "ticket_id": ticket["ticket_id"] if ticket else None,
                    "messages": [_public_message(m) for m in store.messages(session_id)]}

        return guarded(run)

    @router.get("/sessions/{session_id}/events", dependencies=chat, tags=["support: customer"])
    async def session_events(session_id: str, request: Request, after: int = Query(0, ge=0),
                             max_s: float = Query(300.0, gt=0, le=900)) -> StreamingResponse:
        """Server-sent events: each new message (``event: message``) after the first ``after`` ones,
        and ``event: status`` when the session status changes; the stream ends after ``max_s``
        seconds (reconnect with ``after`` = messages seen). Polling ``GET /sessions/{id}`` works too."""
        from starlette.concurrency import run_in_threadpool

        def snapshot() -> tuple[list[dict[str, Any]], str]:
            require_session(session_id)
            return [_public_message(m) for m in store.messages(session_id)], store.session_status(session_id)[0]

        await run_in_threadpool(guarded, snapshot)  # 404 before the stream starts

        async def stream():
            seen, status, last_beat = after, None, time.monotonic()
            deadline = time.monotonic() + max_s
            while time.monotonic() < deadline and not await request.is_disconnected():
                try:
                    messages, now = await run_in_threadpool(guarded, snapshot)
                except HTTPException:
                    return  # the session is gone
                for m in messages[seen:]:
                    yield f"event: message\ndata: {json.dumps(m, ensure_ascii=False)}\n\n"
                seen = max(seen, len(messages))
                if now != status:
                    status = now
                    yield f"event: status\ndata: {json.dumps({'status': now})}\n\n"
                if time.monotonic() - last_beat > 15:
                    last_beat = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.post("/sessions/{session_id}/feedback", dependencies=chat, tags=["support: customer"])
    def feedback(session_id: str, body: FeedbackIn) -> dict[str, Any]:
        """Thumbs up/down for one of this session's answers (the last one by default)."""
        def run() -> dict[str, Any]:
            require_session(session_id)
            mid = body.message_id if body.message_id is not None else store.last_answer_id(session_id)
            if mid is None:
                raise NotFoundError("this session has no answer to rate yet")
            store.turn(session_id, mid)  # 404 for another session's message
            store.add_feedback(mid, body.rating, body.comment)
            return {"message_id": mid, "rating": body.rating}

        return guarded(run)

    # -- agent side -------------------------------------------------------------------------
    def ticket_out(t: dict[str, Any]) -> dict[str, Any]:
        live = store.messages(t["session_id"])
        return {k: t.get(k) for k in ("ticket_id", "session_id", "status", "reason", "summary", "created_at", "agent",
                                      "claimed_at", "resolved_at", "intent", "note")} | {
            "messages": [_public_message(m) for m in live] if live else t["transcript"]}

    @router.get("/tickets", dependencies=agent, tags=["support: agent"])
    def list_tickets(status: Literal["open", "claimed", "resolved"] | None = Query(None)) -> dict[str, Any]:
        """The handoff queue (all tickets, or those with ``status``), newest first, with redacted transcripts."""
        return guarded(lambda: {"tickets": [ticket_out(t) for t in store.tickets(status)]})

    @router.get("/tickets/{ticket_id}", dependencies=agent, tags=["support: agent"])
    def get_ticket(ticket_id: str) -> dict[str, Any]:
        return guarded(lambda: ticket_out(store.ticket(ticket_id)))

    @router.post("/tickets/{ticket_id}/claim", dependencies=agent, tags=["support: agent"])
    def claim(ticket_id: str, body: ClaimIn) -> dict[str, Any]:
        """Take the ticket (409 when another agent has it or it is resolved)."""
        return guarded(lambda: ticket_out(store.claim_ticket(ticket_id, body.agent)))

    @router.post("/tickets/{ticket_id}/reply", dependencies=agent, tags=["support: agent"])
    def reply(ticket_id: str, body: ReplyIn, request: Request) -> dict[str, Any]:
        """Write to the customer: the reply joins their session (they see it on their next poll)."""
        request.state.units = 1
        return guarded(lambda: _public_message(store.add_agent_reply(ticket_id, body.agent, body.text)))

    @router.post("/tickets/{ticket_id}/resolve", dependencies=agent, tags=["support: agent"])
    def resolve(ticket_id: str, body: ResolveIn) -> dict[str, Any]:
        """Close the ticket; the customer's question is saved with ``intent`` as a labelled example."""
        def run() -> dict[str, Any]:
            example = store.resolve_ticket(ticket_id, body.agent, body.intent, known_intents(), note=body.note)
            return {"ticket": ticket_out(store.ticket(ticket_id)), "labelled_example": example}

        return guarded(run)

    @router.post("/sessions/{session_id}/messages/{message_id}/correction", dependencies=agent, tags=["support: agent"])
    def correction(session_id: str, message_id: int, body: CorrectionIn) -> dict[str, Any]:
        """The right intent for a customer message the bot got wrong (e.g. after a thumbs-down)."""
        def run() -> dict[str, Any]:
            require_session(session_id)
            return {"labelled_example": store.correct_turn(session_id, message_id, body.agent, body.intent,
                                                           known_intents())}

        return guarded(run)

    @router.get("/intents", dependencies=agent, tags=["support: agent"])
    def intents() -> dict[str, list[str]]:
        """The labels ``resolve`` and ``correction`` accept."""
        return {"intents": guarded(known_intents)}

    @router.get("/feedback", dependencies=agent, tags=["support: agent"])
    def list_feedback(rating: Literal["up", "down"] | None = Query(None), limit: int = Query(200, ge=1, le=1000)
                      ) -> dict[str, Any]:
        """Rated answers, newest first: ``?rating=down`` is the list to correct."""
        return guarded(lambda: {"feedback": store.feedback_list(rating, limit)})

    @router.get("/labelled-examples", dependencies=agent, tags=["support: agent"])
    def labelled_examples(source: Literal["agent_resolution", "agent_correction"] | None = Query(None)
                          ) -> dict[str, Any]:
        """What agents labelled, for retraining the intent model (``text``, ``intent``, ``source``...)."""
        return guarded(lambda: {"examples": store.labelled_examples(source)})

    # -- the embeddable widget (open: it carries the public chat key in its own URL) --------
    if widget:
        def widget_file(name: str) -> FileResponse:
            return FileResponse(WIDGET_DIR / name, media_type=_WIDGET_FILES[name],
                                headers={"Content-Security-Policy": _WIDGET_CSP, "Cache-Control": "no-cache",
                                         "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

        @router.get("/widget", include_in_schema=False)
        def widget_page() -> FileResponse:
            return widget_file("widget.html")

        @router.get("/widget.js", include_in_schema=False)
        def widget_js() -> FileResponse:
            return widget_file("widget.js")

        @router.get("/widget.css", include_in_schema=False)
        def widget_css() -> FileResponse:
            return widget_file("widget.css")

    return router


def create_app(bot: Bot, settings: ServingSettings | None = None, *, close_bot: bool = False) -> FastAPI:
    """A FastAPI app serving ``bot`` under ``/v1/support`` with the serving layer (auth on unless
    ``settings.insecure_no_auth``), ``GET /health`` and ``/metrics``; ``close_bot`` closes it on shutdown."""
    app = FastAPI(title="Verticore customer service", version="1")
    state = install_serving(app, settings if settings is not None else ServingSettings())
    if close_bot:
        state.shutdown_hooks.append(bot.close)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        return JSONResponse({"detail": f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}"},
                            status_code=422)

    @app.exception_handler(VerticoreError)
    async def verticore_error(request: Request, exc: VerticoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, Any]:
        return {"status": "ok", "auth": state.auth_status, "knowledge_base": str(bot.kb.directory)}

    app.include_router(create_router(bot), prefix=API_PREFIX)
    return app


__all__ = ["API_PREFIX", "create_app", "create_router"]
