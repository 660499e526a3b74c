"""The serving layer: API keys, scopes, rate limits, quotas, metering, request ids, metrics,
micro-batching, the keys/usage CLI, entry-point app discovery and the Usage dashboard page."""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient

from verticore.errors import DataError
from verticore.plugins import AppSpec, discover_apps
from verticore.serving import (
    KeyStore,
    MicroBatcher,
    Principal,
    QueueFullError,
    ServingSettings,
    install_serving,
    query_usage,
    require_scope,
)
from verticore.serving.metering import seconds_to_next_utc_day


def _settings(tmp_path: Path, **kw) -> ServingSettings:
    return ServingSettings(keys_db=tmp_path / "keys.db", usage_db=tmp_path / "usage.db", **kw)


def _toy_app(settings: ServingSettings) -> FastAPI:
    """A small app written the way the apps use the interface."""
    app = FastAPI()
    state = install_serving(app, settings)
    gate = threading.Event()
    gate.set()

    def upper(texts: list[str]) -> list[str]:
        gate.wait(10)
        return [t.upper() for t in texts]

    batcher = state.batcher(upper, "toy")
    app.state.gate, app.state.toy_batcher = gate, batcher
    router = APIRouter()

    @router.get("/items/{item_id}", dependencies=[Depends(require_scope("rec:read"))])
    def get_item(item_id: int, request: Request) -> dict:
        request.state.units = 3
        return {"id": item_id}

    @router.post("/upper")
    async def post_upper(body: dict, principal: Principal = Depends(require_scope("rec:write"))) -> dict:
        return {"by": principal.name, "out": await batcher.submit(body["texts"])}

    @router.get("/boom", dependencies=[Depends(require_scope("rec:read"))])
    def boom() -> dict:
        raise RuntimeError("kaput")

    app.include_router(router, prefix="/v1/toy")
    return app


@pytest.fixture
def toy(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    app = _toy_app(_settings(tmp_path, flush_interval_s=60))
    client = TestClient(app, raise_server_exceptions=False)
    return app, client, store


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- keys -------------------------------------------------------------------------------------
def test_key_store_keeps_only_hashes_and_validates(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key, rec = store.create("alice", ["rec:read", "embed"], rate="20/s", quota="100000/day")
    assert key.startswith("vk_") and len(key) > 40 and rec.prefix == key[:10]
    raw = sqlite3.connect(tmp_path / "keys.db").execute("SELECT * FROM api_keys").fetchall()
    assert key not in repr(raw)  # the plaintext is stored nowhere
    assert store.verify(key).name == "alice" and store.verify(key + "x") is None and store.verify("") is None
    with pytest.raises(DataError, match="already exists"):
        store.create("alice", ["embed"])
    with pytest.raises(DataError, match=r"unknown scope\(s\) 'rec:delete'.*valid scopes: classify"):
        store.create("bob", ["rec:delete"])
    for bad in ("20/fortnight", "0/s", "lots"):
        with pytest.raises(DataError, match="invalid rate"):
            store.create("bob", ["embed"], rate=bad)
    with pytest.raises(DataError, match="invalid quota"):
        store.create("bob", ["embed"], quota="5/hour")
    new = store.rotate("alice")
    assert store.verify(key) is None and store.verify(new).name == "alice"
    store.revoke("alice")
    assert store.verify(new) is None and not store.get("alice").active
    with pytest.raises(DataError, match="already revoked"):
        store.revoke("alice")


def test_last_used_is_not_written_per_request(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("k", ["embed"])
    for _ in range(50):
        store.verify(key)
    first = store.get("k").last_used
    for _ in range(50):
        store.verify(key)
    assert first is not None and store.get("k").last_used == first  # one write in this second, not 100


# -- auth ------------------------------------------------------------------------------------
def test_401_without_or_with_revoked_key_and_403_without_scope(toy):
    _, client, store = toy
    r = client.get("/v1/toy/items/1")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "missing API key" in r.json()["detail"]
    assert client.get("/v1/toy/items/1", headers=_auth("vk_nope")).status_code == 401
    key, _ = store.create("reader", ["rec:read"])
    assert client.get("/v1/toy/items/1", headers=_auth(key)).json() == {"id": 1}
    assert client.get("/v1/toy/items/1", headers={"X-API-Key": key}).status_code == 200
    r = client.post("/v1/toy/upper", json={"texts": ["a"]}, headers=_auth(key))
    assert r.status_code == 403 and "lacks the scope 'rec:write'" in r.json()["detail"]
    admin, _ = store.create("root", ["admin"])
    r = client.post("/v1/toy/upper", json={"texts": ["a", "b"]}, headers=_auth(admin))
    assert r.json() == {"by": "root", "out": ["A", "B"]}
    store.revoke("reader")  # from another connection (as the CLI would): effective at once
    assert client.get("/v1/toy/items/1", headers=_auth(key)).status_code == 401


def test_unknown_scope_in_route_declaration_fails_early():
    with pytest.raises(ValueError, match="unknown scope 'rec:raed'"):
        require_scope("rec:raed")


def test_require_scope_without_install_serving_fails_closed():
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(require_scope("rec:read"))])
    def x() -> dict:
        return {}

    r = TestClient(app).get("/x")
    assert r.status_code == 500 and "install_serving" in r.json()["detail"]


def test_rate_limit_429_with_retry_after(toy):
    _, client, store = toy
    key, _ = store.create("slow", ["rec:read"], rate="3/s")
    codes = [client.get("/v1/toy/items/1", headers=_auth(key)).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = client.get("/v1/toy/items/1", headers=_auth(key))
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 2 and "rate limit 3/s" in r.json()["detail"]


def test_daily_quota_429_until_utc_midnight_and_survives_restart(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("q", ["rec:read"], quota="4/day")
    app = _toy_app(_settings(tmp_path))
    with TestClient(app) as client:
        codes = [client.get("/v1/toy/items/1", headers=_auth(key)).status_code for _ in range(6)]
        r = client.get("/v1/toy/items/1", headers=_auth(key))
    assert codes == [200] * 4 + [429] * 2
    assert r.status_code == 429 and "quota 4/day" in r.json()["detail"]
    assert abs(int(r.headers["retry-after"]) - seconds_to_next_utc_day()) <= 2
    # A restarted server starts from the day's stored usage: still over quota.
    with TestClient(_toy_app(_settings(tmp_path))) as client:
        assert client.get("/v1/toy/items/1", headers=_auth(key)).status_code == 429


# -- metering, request ids, logs, metrics ----------------------------------------------------------------
def test_usage_counts_match_the_requests_after_flush(toy, tmp_path):
    app, client, store = toy
    a, _ = store.create("a", ["rec:read", "rec:write"])
    b, _ = store.create("b", ["rec:read"])
    for i in range(7):
        assert client.get(f"/v1/toy/items/{i}", headers=_auth(a)).status_code == 200
    assert client.post("/v1/toy/upper", json={"texts": ["one two three", "four"]}, headers=_auth(a)).status_code == 200
    for _ in range(2):
        assert client.get("/v1/toy/boom", headers=_auth(b)).status_code == 500
    assert client.post("/v1/toy/upper", json={"texts": ["x"]}, headers=_auth(b)).status_code == 403
    client.get("/v1/toy/items/1")  # no key: 401, charged to nobody
    assert query_usage(tmp_path / "usage.db") == []  # flush interval is 60 s here: nothing written yet
    app.state.serving.meter.flush()
    rows = {(r["key"], r["endpoint"]): r for r in query_usage(tmp_path / "usage.db")}
    assert set(rows) == {("a", "/v1/toy/items/{item_id}"), ("a", "/v1/toy/upper"), ("b", "/v1/toy/boom"),
                         ("b", "/v1/toy/upper")}
    items = rows[("a", "/v1/toy/items/{item_id}")]
    assert (items["requests"], items["units"], items["errors"]) == (7, 21, 0) and items["latency_ms_sum"] > 0
    assert rows[("a", "/v1/toy/upper")]["input_tokens"] > 0  # body bytes / 4 when the handler reports none
    assert (rows[("b", "/v1/toy/boom")]["requests"], rows[("b", "/v1/toy/boom")]["errors"]) == (2, 2)
    assert rows[("b", "/v1/toy/upper")]["errors"] == 1
    assert [r["key"] for r in query_usage(tmp_path / "usage.db", key="b")] == ["b", "b"]


def test_background_flush_and_shutdown_flush(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("k", ["rec:read"])
    app = _toy_app(_settings(tmp_path, flush_interval_s=0.1))
    client = TestClient(app)
    client.get("/v1/toy/items/1", headers=_auth(key))
    time.sleep(0.5)  # the flusher thread, no explicit flush
    assert query_usage(tmp_path / "usage.db")[0]["requests"] == 1
    app2 = _toy_app(_settings(tmp_path, flush_interval_s=3600))
    with TestClient(app2) as c2:
        c2.get("/v1/toy/items/2", headers=_auth(key))
    assert query_usage(tmp_path / "usage.db")[0]["requests"] == 2  # lifespan shutdown flushed it


def test_request_id_echoed_or_generated_and_in_json_logs(toy, caplog):
    from verticore.serving.observability import JsonFormatter

    _, client, store = toy
    key, _ = store.create("k", ["rec:read"])
    with caplog.at_level(logging.INFO, logger="verticore.serving.access"):
        r1 = client.get("/v1/toy/items/1", headers={**_auth(key), "X-Request-ID": "abc-123"})
        r2 = client.get("/v1/toy/items/1")
        r3 = client.get("/v1/toy/boom", headers={**_auth(key), "X-Request-ID": "bad id\nwith newline"})
    assert r1.headers["x-request-id"] == "abc-123"
    assert len(r2.headers["x-request-id"]) == 32 and r2.status_code == 401
    assert r3.status_code == 500 and r3.headers["x-request-id"] != "bad id\nwith newline"
    assert r3.json()["request_id"] == r3.headers["x-request-id"]
    lines = [json.loads(JsonFormatter().format(rec)) for rec in caplog.records if rec.name.endswith("access")]
    first = lines[0]
    assert {k: first[k] for k in ("request_id", "method", "route", "status", "key", "level")} == {
        "request_id": "abc-123", "method": "GET", "route": "/v1/toy/items/{item_id}", "status": 200, "key": "k",
        "level": "info"}
    assert isinstance(first["ms"], float) and "ts" in first
    assert lines[1]["status"] == 401 and lines[1]["key"] is None


def test_metrics_endpoint_has_request_counters_and_batch_histogram(toy):
    _, client, store = toy
    key, _ = store.create("k", ["rec:read", "rec:write"])
    for _ in range(3):
        client.get("/v1/toy/items/5", headers=_auth(key))
    client.post("/v1/toy/upper", json={"texts": ["a", "b", "c"]}, headers=_auth(key))
    r = client.get("/metrics")  # open, no key
    assert r.status_code == 200
    text = r.text
    assert 'verticore_http_requests_total{endpoint="/v1/toy/items/{item_id}",method="GET",status="200"} 3.0' in text
    assert 'verticore_http_request_duration_seconds_bucket{endpoint="/v1/toy/items/{item_id}"' in text
    assert 'verticore_batch_size_sum{batcher="toy"} 3.0' in text
    # A second app in the same process has its own registry: no "Duplicated timeseries" clash.
    assert TestClient(_toy_app(_settings(store.path.parent / "other"))).get("/metrics").status_code == 200


def test_insecure_no_auth_serves_anonymously_and_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="verticore.serving"):
        app = _toy_app(_settings(tmp_path, insecure_no_auth=True))
    assert any("AUTHENTICATION IS DISABLED" in r.getMessage() for r in caplog.records)
    client = TestClient(app)
    assert client.post("/v1/toy/upper", json={"texts": ["a"]}).json()["by"] == "anonymous"
    assert app.state.serving.auth_status == "DISABLED (--insecure-no-auth)"


# -- micro-batching ------------------------------------------------------------------------------
def test_micro_batcher_routes_results_by_position_under_concurrency():
    sizes: list[int] = []

    def fn(texts: list[str]) -> list[str]:
        sizes.append(len(texts))
        time.sleep(0.002)  # a model call: requests pile up meanwhile
        return [f"out:{t}" for t in texts]

    batcher = MicroBatcher(fn, max_batch=32, max_wait_ms=5, max_queue=10_000)

    async def one(i: int) -> None:
        texts = [f"r{i}-t{j}" for j in range(1 + i % 7)]
        await asyncio.sleep((i % 5) / 1000)
        assert await batcher.submit(texts) == [f"out:{t}" for t in texts]

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(300)))

    asyncio.run(main())
    assert sum(sizes) == sum(1 + i % 7 for i in range(300))
    assert max(sizes) <= 32 and max(sizes) > 7  # requests were merged (one request has at most 7 texts)
    assert len(sizes) < 300 / 2
    batcher.close()


def test_micro_batcher_isolates_a_failing_request_and_checks_output_length():
    def fn(texts: list[str]) -> list[str]:
        if "bad" in texts:
            raise ValueError("bad text")
        return [t * 2 for t in texts]

    batcher = MicroBatcher(fn, max_batch=64, max_wait_ms=20)

    async def main():
        return await asyncio.gather(batcher.submit(["a"]), batcher.submit(["bad"]), batcher.submit(["b", "c"]),
                                    return_exceptions=True)

    ok1, err, ok2 = asyncio.run(main())
    assert ok1 == ["aa"] and ok2 == ["bb", "cc"] and isinstance(err, ValueError)
    wrong = MicroBatcher(lambda texts: texts[:-1])
    with pytest.raises(RuntimeError, match="returned 1 outputs for 2 texts"):
        wrong.submit_sync(["x", "y"], timeout=5)


def test_full_queue_is_503_with_retry_after_and_shutdown_drains(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("k", ["rec:write"])
    app = _toy_app(_settings(tmp_path, max_queue=4, max_wait_ms=0))
    app.state.gate.clear()  # the model blocks: everything queues behind the first batch
    batcher: MicroBatcher = app.state.toy_batcher
    first = batcher.submit_future(["in-flight"])
    deadline = time.time() + 5
    while batcher.queued and time.time() < deadline:  # the worker took it and is blocked in the model
        time.sleep(0.01)
    queued = batcher.submit_future(["a", "b", "c", "d"])  # fills the queue (4 texts)
    r = TestClient(app).post("/v1/toy/upper", json={"texts": ["e"]}, headers=_auth(key))
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "queue full" in r.json()["detail"]
    app.state.gate.set()
    app.state.serving.shutdown()  # finishes the in-flight and queued batches, then refuses
    assert first.result(5) == ["IN-FLIGHT"] and queued.result(5) == ["A", "B", "C", "D"]
    with pytest.raises(QueueFullError, match="shutting down"):
        batcher.submit_future(["late"])


# -- the core server with the serving layer --------------------------------------------------
def test_core_v1_endpoints_need_keys_and_batch(tmp_path):
    from verticore.server import create_app

    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("emb", ["embed"])
    app = create_app(None, "default", device="cpu", serving=_settings(tmp_path))
    client = TestClient(app)
    assert client.post("/v1/embed", json={"text": "hi"}).status_code == 401
    assert client.post("/embed", json={"text": "hi"}).status_code == 401  # the legacy alias is guarded too
    assert client.post("/v1/classify", json={"text": "hi"}, headers=_auth(key)).status_code == 403
    r = client.post("/v1/embed", json={"texts": ["hello world", "good bye"]}, headers=_auth(key))
    assert r.status_code == 200 and r.json()["dimension"] == 384 and len(r.json()["embeddings"]) == 2
    health = client.get("/health").json()
    assert health["auth"] == "on" and health["batching"] is True
    metrics = client.get("/metrics").text
    assert 'verticore_model_loaded{model="embedder"} 1.0' in metrics and 'verticore_batch_size_count{batcher="embed"}' in metrics
    app.state.serving.meter.flush()
    rows = {r["endpoint"]: r for r in query_usage(tmp_path / "usage.db")}
    assert (rows["/v1/embed"]["units"], rows["/v1/embed"]["input_tokens"]) == (2, 4)  # whitespace words
    assert (rows["/v1/classify"]["requests"], rows["/v1/classify"]["errors"]) == (1, 1)  # the 403
    # Batched and unbatched answers agree.
    plain = TestClient(create_app(None, "default", device="cpu", serving=_settings(tmp_path / "u", insecure_no_auth=True),
                                  batching=False))
    assert plain.get("/health").json()["auth"] == "DISABLED (--insecure-no-auth)"
    r2 = plain.post("/v1/embed", json={"texts": ["hello world", "good bye"]})
    import numpy as np

    assert np.allclose(r.json()["embeddings"], r2.json()["embeddings"], atol=1e-5)


# -- entry-point discovery ---------------------------------------------------------------------
def _fake_dist(root: Path, dist: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    info = root / f"{dist}-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[verticore.apps]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    for name, code in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))


FAKE_APP = """
    from fastapi import APIRouter, Depends
    from verticore.plugins import AppSpec
    from verticore.serving import Principal, require_scope

    def create_router(ctx):
        router = APIRouter()

        @router.get("/ping")
        def ping(principal: Principal = Depends(require_scope("support:chat"))) -> dict:
            return {"pong": principal.name, "home": str(ctx.home)}

        return router

    SPEC = AppSpec(name="vc_fake_serving", title="Fake", api_prefix="fake", create_router=create_router)

    def broken_router(ctx):
        raise FileNotFoundError("demo state missing: run the demo prep first")

    def make_broken():
        return AppSpec(name="vc_fake_broken", title="Broken", api_prefix="broken", create_router=broken_router)
"""


@pytest.fixture
def fake_dists(tmp_path, monkeypatch):
    root = tmp_path / "site"
    _fake_dist(root, "vc_fake_serving", {"vc_fake_serving": "vc_fake_serving_mod:SPEC",
                                         "vc_fake_broken": "vc_fake_serving_mod:make_broken"},
               {"vc_fake_serving_mod": FAKE_APP})
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop("vc_fake_serving_mod", None)


def test_entry_point_app_is_mounted_under_v1_with_auth(fake_dists, tmp_path):
    from verticore.server import create_app

    found = discover_apps()
    assert isinstance(found["vc_fake_serving"], AppSpec) and found["vc_fake_broken"].api_prefix == "broken"
    apps = {k: v for k, v in found.items() if k.startswith("vc_fake_")}
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("chat", ["support:chat"])
    wrong, _ = store.create("other", ["embed"])
    app = create_app(None, None, serving=_settings(tmp_path), apps=apps, home=tmp_path / "home")
    client = TestClient(app)
    assert "/v1/fake/ping" in client.get("/openapi.json").json()["paths"]
    assert client.get("/v1/fake/ping").status_code == 401
    assert client.get("/v1/fake/ping", headers=_auth(wrong)).status_code == 403
    assert client.get("/v1/fake/ping", headers=_auth(key)).json() == {"pong": "chat", "home": str(tmp_path / "home")}
    status = client.get("/health").json()["apps"]
    assert status["vc_fake_serving"] == "ok (/v1/fake)"
    assert status["vc_fake_broken"].startswith("unavailable: FileNotFoundError: demo state missing")


def test_duplicate_app_names_and_bad_entry_points(tmp_path, monkeypatch):
    root = tmp_path / "site"
    _fake_dist(root, "vc_dup_one", {"vc_dup": "vc_dup_a:SPEC", "vc_notspec": "vc_dup_a:NOT_A_SPEC"},
               {"vc_dup_a": "from verticore.plugins import AppSpec\nSPEC = AppSpec('vc_dup', 'A', 'dupa')\nNOT_A_SPEC = 3\n"})
    monkeypatch.syspath_prepend(str(root))
    errors: dict[str, str] = {}
    found = discover_apps(on_error=errors.__setitem__)
    assert "vc_dup" in found and "not an AppSpec" in errors["vc_notspec"]
    _fake_dist(root, "vc_dup_two", {"vc_dup": "vc_dup_b:SPEC"},
               {"vc_dup_b": "from verticore.plugins import AppSpec\nSPEC = AppSpec('vc_dup', 'B', 'dupb')\n"})
    with pytest.raises(DataError, match="two apps are named 'vc_dup'"):
        discover_apps(on_error=errors.__setitem__)
    for m in ("vc_dup_a", "vc_dup_b"):
        sys.modules.pop(m, None)


# -- CLI --------------------------------------------------------------------------------------
def test_keys_and_usage_cli(tmp_path, capsys):
    from typer.testing import CliRunner

    from verticore.cli import app, main

    runner = CliRunner()
    home = ["--home", str(tmp_path)]
    r = runner.invoke(app, ["keys", "create", "--name", "svc", "--scopes", "embed,rec:read", "--rate", "20/s",
                            "--quota", "1000/day", "--json", *home])
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)  # pure JSON on stdout
    key = created["key"]
    assert created["scopes"] == ["embed", "rec:read"] and created["rate"] == "20/s"
    listing = runner.invoke(app, ["keys", "list", *home]).stdout
    assert "svc" in listing and key[:10] in listing and key not in listing
    r = runner.invoke(app, ["keys", "rotate", "svc", "--json", *home])
    new = json.loads(r.stdout)["key"]
    store = KeyStore(tmp_path / "serving" / "keys.db")
    assert store.verify(key) is None and store.verify(new).name == "svc"
    assert runner.invoke(app, ["keys", "revoke", "svc", *home]).exit_code == 0
    assert store.verify(new) is None
    with pytest.raises(SystemExit) as exc:
        main(["keys", "create", "--name", "x", "--scopes", "embed,teleport", *home])
    assert exc.value.code == 3 and "unknown scope(s) 'teleport'" in capsys.readouterr().err

    from verticore.serving.metering import Meter, utc_day

    meter = Meter(tmp_path / "serving" / "usage.db", start=False)
    meter.record("svc", "/v1/embed", status=200, ms=12.5, units=3, tokens=9)
    meter.record("svc", "/v1/embed", status=500, ms=7.5, units=0, tokens=2)
    meter.record("other", "/v1/classify", status=200, ms=1.0, units=1, tokens=1)
    meter.close()
    rows = json.loads(runner.invoke(app, ["usage", "--key", "svc", "--json", *home]).stdout)
    assert rows == [{"key": "svc", "endpoint": "/v1/embed", "day": utc_day(), "requests": 2, "units": 3,
                     "input_tokens": 11, "errors": 1, "latency_ms_sum": 20.0, "mean_latency_ms": 10.0}]
    csv_out = runner.invoke(app, ["usage", "--csv", "--since", utc_day(), *home]).stdout.splitlines()
    assert csv_out[0].startswith("day,key,endpoint,requests") and len(csv_out) == 3
    assert "no usage recorded" in runner.invoke(app, ["usage", "--since", "2999-01-01", *home]).stdout


# -- the Usage dashboard page ------------------------------------------------------------------
def test_usage_page_charts_each_key(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from verticore.dashboard import CORE_PAGE
    from verticore.serving.metering import Meter

    monkeypatch.setenv("VERTICORE_HOME", str(tmp_path))
    page = str(CORE_PAGE.with_name("usage_page.py"))
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception and "No usage recorded" in at.info[0].value
    meter = Meter(tmp_path / "serving" / "usage.db", start=False)
    for key, n in (("alpha", 3), ("beta", 2)):
        for _ in range(n):
            meter.record(key, "/v1/embed", status=200, ms=5, units=1, tokens=2)
    meter.close()
    at = AppTest.from_file(page, default_timeout=60).run()
    assert not at.exception
    assert [s.value for s in at.subheader] == ["Key: alpha", "Key: beta", "All rows"]
    assert {m.label: m.value for m in at.metric}["Requests"] == "5"
    assert len(at.get("arrow_vega_lite_chart")) + len(at.get("vega_lite_chart")) == 2
