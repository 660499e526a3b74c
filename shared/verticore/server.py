"""HTTP serving of the core models (FastAPI): ``/classify``, ``/embed``, ``/health``, OpenAPI at ``/docs``.

Bad requests get a 4xx with a one-line ``detail``; oversized inputs are rejected (413) before
they reach the model, so one huge request cannot take the server down.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from .errors import VerticoreError
from .serving import add_body_limit


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
               max_body_bytes: int = 4_000_000) -> FastAPI:
    """Build the FastAPI app. Models load lazily on first use (and on ``/health?warm=1``)."""
    app = FastAPI(title="Verticore", version="0.1.0", description="Classification and embedding API of the Verticore core.")
    lock = threading.Lock()
    state: dict[str, Any] = {"classifier": None, "embedder": None, "started": time.time()}

    def get_classifier():
        if classifier is None:
            raise HTTPException(404, "no classifier is configured on this server (start it with --model DIR)")
        with lock:
            if state["classifier"] is None:
                from .inference import load_classifier

                clf = load_classifier(classifier, device=device, backend=backend)  # an artifact or an ensemble
                clf.warm_up()
                state["classifier"] = clf
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
        return state["embedder"]

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

    # Counted while the body streams in: chunked uploads carry no Content-Length to check.
    add_body_limit(app, max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        return JSONResponse({"detail": f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}"}, status_code=422)

    @app.exception_handler(VerticoreError)
    async def verticore_error(request: Request, exc: VerticoreError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/health")
    def health(warm: bool = False) -> dict[str, Any]:
        """Liveness; ``?warm=1`` also loads the models."""
        if warm:
            if classifier:
                get_classifier()
            if embedder:
                get_embedder()
        from .models import resolve_device

        return {"status": "ok", "classifier": classifier, "embedder": embedder, "device": resolve_device(device),
                "uptime_s": round(time.time() - state["started"], 1)}

    @app.post("/classify")
    def classify(req: TextsRequest) -> dict[str, Any]:
        """Labels with calibrated probabilities and top-k for one text or a batch."""
        texts, single = req.batch()
        check(texts)
        preds = get_classifier().predict(texts, top_k=req.top_k)
        out = [p.to_dict() for p in preds]
        return {"prediction": out[0]} if single else {"predictions": out}

    @app.post("/embed")
    def embed(req: TextsRequest) -> dict[str, Any]:
        """L2-normalised float32 embeddings."""
        texts, single = req.batch()
        check(texts)
        emb = get_embedder()
        vecs = emb.encode(texts)
        return {"dimension": int(vecs.shape[1]), "model_fingerprint": emb.fingerprint,
                **({"embedding": vecs[0].tolist()} if single else {"embeddings": vecs.tolist()})}

    return app
