"""Request bodies are limited while they stream, on every server; long texts become a bounded number of chunks."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import Body, FastAPI

from verticore.serving import BodyLimitMiddleware, add_body_limit


def _app(limit: int) -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    handled: list[int] = []

    @app.post("/echo")
    def echo(payload: dict = Body(...)) -> dict:
        handled.append(1)
        return {"keys": len(payload)}

    add_body_limit(app, limit)
    return app, handled


async def _post(app, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.post("/echo", **kwargs)


def test_small_body_passes_and_declared_oversize_is_refused():
    app, handled = _app(1000)
    assert asyncio.run(_post(app, json={"a": 1})).status_code == 200
    r = asyncio.run(_post(app, content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}))
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert handled == [1]


def test_chunked_body_without_content_length_is_cut_while_streaming():
    app, handled = _app(10_000)
    sent = []

    async def stream():
        yield b'{"a": "'
        for _ in range(64 * 1024):  # would be 64 MiB if read to the end
            sent.append(1)
            yield b"x" * 1024
        yield b'"}'

    r = asyncio.run(_post(app, content=stream(), headers={"content-type": "application/json"}))
    assert r.status_code == 413
    assert handled == []  # the handler never saw the body
    assert len(sent) < 64 * 1024  # reading stopped early, the body was never buffered whole


def test_bad_content_length_is_a_400():
    mw = BodyLimitMiddleware(FastAPI(), 100)
    out: list[dict] = []

    async def send(msg):
        out.append(msg)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(mw({"type": "http", "headers": [(b"content-length", b"abc")]}, receive, send))
    assert out[0]["status"] == 400


def test_every_server_limits_bodies(tmp_path, monkeypatch):
    from verticore.server import create_app

    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))  # the servers' key/usage databases go here

    core = create_app(classifier=None, embedder=None, max_body_bytes=2000)

    async def chunked(app, path):
        async def gen():
            for _ in range(100):
                yield b"x" * 100
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post(path, content=gen(), headers={"content-type": "application/json"})

    assert asyncio.run(chunked(core, "/embed")).status_code == 413

    import finance_sentiment.server as fs_server
    import recommender.api as rec_api

    # The handlers touch their model objects only per request, and a cut body never reaches them.
    assert asyncio.run(chunked(fs_server.create_app(None, max_body_bytes=2000), "/news")).status_code == 413
    rec = rec_api.create_app(None, max_body_bytes=2000)
    assert asyncio.run(chunked(rec, "/items")).status_code == 413


@pytest.mark.parametrize("max_chunks", [1, 3, 8])
def test_long_text_chunks_are_capped_and_cover_the_whole_text(max_chunks):
    from transformers import AutoTokenizer

    from verticore.inference.chunking import chunk_texts
    from verticore.models import default_model_path

    tok = AutoTokenizer.from_pretrained(default_model_path())
    words = [f"w{i}" for i in range(6000)]
    chunked = chunk_texts(tok, [" ".join(words), "short"], max_length=128, max_chunks=max_chunks)
    counts = chunked.chunks_per_text()
    assert counts[0] == max_chunks and counts[1] == 1
    if max_chunks > 1:  # the last kept chunk reaches the end of the text
        last = [ids for ids, o in zip(chunked.input_ids, chunked.owner) if o == 0][-1]
        assert tok.decode(last, skip_special_tokens=True).replace(" ", "").endswith("w5999")
