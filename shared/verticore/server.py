"""HTTP serving of the core models (FastAPI): ``/v1/classify``, ``/v1/embed``, ``/health``, OpenAPI at ``/docs``.

Bad requests get a 4xx with a one-line ``detail``; oversized inputs are rejected (413) before
they reach the model, so one huge request cannot take the server down. Concurrent requests are
micro-batched into one model call (:class:`verticore.serving.MicroBatcher`; ``batching=False``
calls the model once per request, for comparison).

With ``serving=ServingSettings(...)`` the app gets the whole serving layer (API keys and
scopes, rate limits, quotas, metering, request ids, JSON logs, ``/metrics``) and mounts the
routers of the installed apps (``apps=discover_apps()``) under ``/v1/<prefix>``; without it,
it is the plain unauthenticated in-process app the tests and notebooks use. The unprefixed
``/classify`` and ``/embed`` stay as aliases of the ``/v1`` routes.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .errors import VerticoreError
from .serving import MicroBatcher, ServingSettings, add_body_limit, install_serving, require_scope
from .serving.metering import approx_tokens

if TYPE_CHECKING:
    from .plugins import AppSpec

log = logging.getLogger("verticore.serving")


class TextsRequest(BaseModel):
    """Either ``text`` (one string) or ``texts`` (a list)."""

    text: str | None = Field(default=None, description="a single text")
    texts: list[str] | None = Field(default=None, description="a batch of texts")
    top_k: int = Field(default=3, ge=1, le=100)

    def batch(self) -> tuple[list[str], bool]:
        if self.texts is not None and self.text is not None:
            raise HTTPException(422, "give either 'text' or 'texts', not both")
        if self.texts is not None:
            return list(self.texts), False
        if self.text is not None:
            return [self.text], True
        raise HTTPException(422, "request needs 'text' or 'texts'")


def create_app(classifier: str | None = None, embedder: str | None = "default", device: str = "auto",
               backend: str = "torch", max_texts: int = 256, max_chars: int = 100_000,
               max_body_bytes: int = 4_000_000, *, serving: ServingSettings | None = None,
               batching: bool | None = None, apps: "dict[str, AppSpec] | None" = None,
               home: Path | None = None) -> FastAPI:
    """Build the FastAPI app. Models load lazily on first use (and on ``/health?warm=1``).

    ``serving``: install the serving layer (auth is on unless ``insecure_no_auth``).
    ``batching``: micro-batch concurrent requests (default: ``serving.batching``, else True).
    ``apps``: app specs whose routers are mounted under ``/v1/<api_prefix>`` (needs ``serving``).
    """
    app = FastAPI(title="Verticore", version="0.1.0",
                  description="Classification and embedding API of the Verticore core, plus the installed apps' APIs.")
    lock = threading.Lock()
    state: dict[str, Any] = {"classifier": None, "embedder": None, "started": time.time()}
    use_batching = (serving.batching if serving is not None else True) if batching is None else bool(batching)

    # Counted while the body streams in: chunked uploads carry no Content-Length to check.
    add_body_limit(app, serving.max_body_bytes if serving is not None else max_body_bytes)
    srv = install_serving(app, serving) if serving is not None else None
    loaded = srv.metrics.model_loaded if srv is not None else None
    if loaded is not None:
        loaded.labels("classifier").set(0)
        loaded.labels("embedder").set(0)

    def get_classifier():
        if classifier is None:
            raise HTTPException(404, "no classifier is configured on this server (start it with --model DIR)")
        with lock:
            if state["classifier"] is None:
                from .inference import load_classifier

                clf = load_classifier(classifier, device=device, backend=backend)  # an artifact or an ensemble
                clf.warm_up()
                state["classifier"] = clf
                if loaded is not None:
                    loaded.labels("classifier").set(1)
        return state["classifier"]

    def get_embedder():
        if embedder is None:
            raise HTTPException(404, "no embedder is configured on this server")
        with lock:
            if state["embedder"] is None:
                from .inference import Embedder

                emb = Embedder(embedder, device=device, backend=backend)
                emb.warm_up()
                state["embedder"] = emb
                if loaded is not None:
                    loaded.labels("embedder").set(1)
        return state["embedder"]

    def classify_all(texts: list[str]) -> list[Any]:
        # Full top-k here; each request keeps its own top_k when the answer is built.
        clf = get_classifier()
        return clf.predict(texts, top_k=len(clf.labels))

    def embed_all(texts: list[str]) -> Any:
        return get_embedder().encode(texts)

    def new_batcher(fn, name: str) -> MicroBatcher:
        if srv is not None:
            return srv.batcher(fn, name)
        return MicroBatcher(fn, name=name)

    clf_batcher = new_batcher(classify_all, "classify")
    emb_batcher = new_batcher(embed_all, "embed")
    app.state.core_batchers = {"classify": clf_batcher, "embed": emb_batcher}

    async def run_model(batcher: MicroBatcher, fn, texts: list[str]) -> list[Any]:
        if use_batching:
            return await batcher.submit(texts)
        return list(await run_in_threadpool(fn, texts))

    def check(texts: list[str]) -> None:
        if not texts:
            raise HTTPException(422, "'texts' is empty")
        if len(texts) > max_texts:
            raise HTTPException(413, f"too many texts: {len(texts)} > {max_texts} per request")
        for i, t in enumerate(texts):
            if len(t) > max_chars:
                raise HTTPException(413, f"text #{i} has {len(t)} characters; the limit is {max_chars}")
            if not t.strip():
                raise HTTPException(422, f"text #{i} is empty or whitespace only")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        return JSONResponse({"detail": f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}"}, status_code=422)

    @app.exception_handler(VerticoreError)
    async def verticore_error(request: Request, exc: VerticoreError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    app_status: dict[str, str] = {}

    def health(warm: bool = False) -> dict[str, Any]:
        """Liveness (open, no key needed); ``?warm=1`` also loads the models."""
        if warm:
            if classifier:
                get_classifier()
            if embedder:
                get_embedder()
        from .models import resolve_device

        return {"status": "ok", "classifier": classifier, "embedder": embedder, "device": resolve_device(device),
                "uptime_s": round(time.time() - state["started"], 1),
                "auth": srv.auth_status if srv is not None else "off (no serving layer)",
                "batching": use_batching, "apps": dict(app_status)}

    async def classify(req: TextsRequest, request: Request) -> JSONResponse:
        """Labels with calibrated probabilities and top-k for one text or a batch."""
        texts, single = req.batch()
        check(texts)
        if classifier is None:
            get_classifier()  # the clear 404
        request.state.units, request.state.tokens = len(texts), approx_tokens(texts)
        preds = await run_model(clf_batcher, classify_all, texts)
        out = []
        for p in preds:
            d = p.to_dict()
            d["top_k"] = d["top_k"][: req.top_k]
            out.append(d)
        return JSONResponse({"prediction": out[0]} if single else {"predictions": out})

    async def embed(req: TextsRequest, request: Request) -> JSONResponse:
        """L2-normalised float32 embeddings."""
        texts, single = req.batch()
        check(texts)
        emb = get_embedder() if state["embedder"] is None else state["embedder"]
        request.state.units, request.state.tokens = len(texts), approx_tokens(texts)
        rows = await run_model(emb_batcher, embed_all, texts)
        vecs = [r.tolist() for r in rows]
        # Plain json.dumps: FastAPI's generic response validation costs more than the
        # model call for a single sentence.
        return JSONResponse({"dimension": int(len(vecs[0])), "model_fingerprint": emb.fingerprint,
                             **({"embedding": vecs[0]} if single else {"embeddings": vecs})})

    def deps(scope: str) -> list:
        return [Depends(require_scope(scope))] if srv is not None else []

    app.add_api_route("/health", health, methods=["GET"], tags=["core"])
    for prefix, legacy in (("/v1", False), ("", True)):
        app.add_api_route(f"{prefix}/classify", classify, methods=["POST"], dependencies=deps("classify"),
                          tags=["core"], deprecated=legacy, name=f"classify{'_legacy' if legacy else ''}")
        app.add_api_route(f"{prefix}/embed", embed, methods=["POST"], dependencies=deps("embed"),
                          tags=["core"], deprecated=legacy, name=f"embed{'_legacy' if legacy else ''}")

    def warm_up() -> None:
        if classifier:
            get_classifier()
        if embedder:
            get_embedder()

    app.state.warm_up = warm_up

    if apps:
        if srv is None:
            raise ValueError("mounting apps needs the serving layer: pass serving=ServingSettings(...)")
        from .paths import home as default_home
        from .plugins import ServingContext

        ctx = ServingContext(home=Path(home) if home is not None else default_home(), settings=srv.settings,
                             embedder_loader=lambda: get_embedder() if embedder else None,
                             classifier_loader=lambda: get_classifier() if classifier else None,
                             embedder_batcher=emb_batcher if embedder else None)
        for name, spec in apps.items():
            if spec.create_router is None or not spec.api_prefix:
                app_status[name] = "no API"
                continue
            try:
                router = spec.router_factory()(ctx)  # a hook may be a "module:attr" string
                app.include_router(router, prefix=f"/v1/{spec.api_prefix}")
            except Exception as exc:  # one app's missing demo state must not stop the others
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                log.error("app %s unavailable: %s: %s (serving the others)", name, type(exc).__name__, reason)
                app_status[name] = f"unavailable: {type(exc).__name__}: {reason}"
                continue
            app_status[name] = f"ok (/v1/{spec.api_prefix})"
    return app
