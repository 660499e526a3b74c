"""The recommender and finance_sentiment apps as authenticated services (issue #13).

Every protected route answers 401 without a key and 403 with a key lacking its scope; the
recommender's cold start, online events and explanations; the finance webhook admin (SSRF
rules, persisted config, live deliverer) and outbox resend; both apps found as plugins.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from verticore.serving import KeyStore, ServingSettings

REC_SAMPLES = Path(__file__).resolve().parents[1] / "apps" / "recommender" / "samples"
TEMPLATE = "{title} ({year}). {genre}. {description} Tags: {tags}"


# -- keys --------------------------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path):
    """A keys database with one key per scope of interest; returns (settings, {scope: headers})."""
    store = KeyStore(tmp_path / "keys.db")
    headers = {}
    for name, scopes in {"rec-read": ["rec:read"], "rec-write": ["rec:write"], "fin-ingest": ["finance:ingest"],
                         "fin-read": ["finance:read"], "admin": ["admin"], "other": ["classify"]}.items():
        key, _ = store.create(name, scopes)
        headers[name] = {"Authorization": f"Bearer {key}"}
    store.close()
    settings = ServingSettings(keys_db=tmp_path / "keys.db", usage_db=tmp_path / "usage.db", access_log=False)
    return settings, headers


# -- recommender -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rec_base(tmp_path_factory, default_embedder):
    """A small text-mode recommender on 48 sample items (8 per genre) and their sample interactions, saved once."""
    from recommender import Catalog, Interactions, Recommender
    from verticore.io import read_table

    items = read_table(REC_SAMPLES / "items.csv")
    items = items.groupby("genre", sort=False).head(8)
    catalog = Catalog.from_records(items.to_dict(orient="records"), embedder=default_embedder, template=TEMPLATE)
    inter = Interactions.from_dataframe(read_table(REC_SAMPLES / "interactions.csv"), known_items=catalog.ids)
    rec = Recommender(catalog, inter, mode="text")
    d = tmp_path_factory.mktemp("rec") / "state"
    rec.save(d)
    return d


@pytest.fixture
def rec_state(rec_base, tmp_path):
    import shutil

    d = tmp_path / "state"
    shutil.copytree(rec_base, d)
    return d


@pytest.fixture
def rec_client(rec_state, keys, default_embedder):
    from recommender import Recommender
    from recommender.api import create_app

    settings, headers = keys
    rec = Recommender.load(rec_state, embedder=default_embedder)
    with TestClient(create_app(rec, state_dir=rec_state, settings=settings)) as client:
        yield client, rec, headers


NEW_ITEM = {"item_id": "new1", "title": "The Galactic Dragon", "year": 2025, "genre": "Fantasy",
            "description": "A dragon flies through space.", "tags": "dragons|space"}
REC_ROUTES = [  # method, path, body, scope needed
    ("GET", "/health", None, "rec-read"),
    ("GET", "/recommend/someone", None, "rec-read"),
    ("GET", "/similar/{item}", None, "rec-read"),
    ("GET", "/search?q=ghosts", None, "rec-read"),
    ("POST", "/events", {"events": [{"user": "u", "item": "{item}", "event": "view"}]}, "rec-write"),
    ("POST", "/items", {"items": [NEW_ITEM]}, "rec-write"),
    ("DELETE", "/items", {"ids": ["{item}"]}, "rec-write"),
]


def _fill(obj, item):
    return json.loads(json.dumps(obj).replace("{item}", item)) if obj is not None else None


def test_recommender_routes_need_their_scope(rec_client):
    client, rec, h = rec_client
    item = rec.catalog.ids[0]
    for method, path, body, scope in REC_ROUTES:
        path, body = path.replace("{item}", item), _fill(body, item)
        r = client.request(method, path, json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path)
        assert client.request(method, path, json=body, headers={"Authorization": "Bearer vk_wrong"}).status_code == 401
        wrong = "rec-write" if scope == "rec-read" else "rec-read"
        for other in (wrong, "other", "fin-read"):
            assert client.request(method, path, json=body, headers=h[other]).status_code == 403, (method, path, other)
        ok = client.request(method, path, json=body, headers=h[scope])
        assert ok.status_code == 200, (method, path, ok.text)
        assert client.request(method, path, json=body, headers=h["admin"]).status_code in (200, 404)  # admin: all scopes


def test_cold_start_for_unknown_user_with_and_without_hints(rec_client):
    client, rec, h = rec_client
    r = client.get("/recommend/brand-new-user", params={"k": 5}, headers=h["rec-read"])
    body = r.json()
    assert r.status_code == 200 and body["cold_start"] is True and body["strategy"] == "popular"
    counts = rec.interactions.counts()
    top = sorted(counts, key=lambda i: -counts[i])[:5]
    assert [x["item"] for x in body["recommendations"]] == top
    assert all(x["explanation"] == "popular right now" and x["because"] == [] for x in body["recommendations"])
    # a free-text hint: the taste description drives the list (same as the text search)
    r = client.get("/recommend/brand-new-user", params={"k": 3, "text": "haunted house ghosts"}, headers=h["rec-read"]).json()
    assert r["cold_start"] and r["strategy"] == "text"
    assert [x["item"] for x in r["recommendations"]] == [x.item for x in rec.recommend_for_text("haunted house ghosts", 3)]
    # seed items: their neighbours, the seeds themselves excluded, explanations name only the seeds
    seeds = rec.catalog.ids[:2]
    r = client.get("/recommend/brand-new-user", params={"k": 4, "items": ",".join(seeds)}, headers=h["rec-read"]).json()
    assert r["cold_start"] and r["strategy"] == "items" and len(r["recommendations"]) == 4
    assert not {x["item"] for x in r["recommendations"]} & set(seeds)
    assert all(x["because"] and set(x["because"]) <= set(seeds) for x in r["recommendations"])
    bad = client.get("/recommend/brand-new-user", params={"items": "nope"}, headers=h["rec-read"])
    assert bad.status_code == 422 and "nope" in bad.json()["detail"]
    # a known user is not a cold start
    user = rec.interactions.users[0]
    r = client.get(f"/recommend/{user}", headers=h["rec-read"]).json()
    assert r["cold_start"] is False and r["strategy"] == "history"


def test_events_update_the_profile_at_once_and_are_persisted(rec_client, rec_state, default_embedder):
    from recommender import Recommender

    client, rec, h = rec_client
    before = client.get("/recommend/newbie", params={"k": 5}, headers=h["rec-read"]).json()
    assert before["cold_start"]
    liked = next(i for i in rec.catalog.ids if rec.catalog.get(i)["genre"] == "Horror")
    neighbours = [x["item"] for x in client.get(f"/similar/{liked}", params={"k": 5}, headers=h["rec-read"]).json()["similar"]]
    assert [x["item"] for x in before["recommendations"]] != neighbours
    r = client.post("/events", json={"events": [{"user": "newbie", "item": liked, "event": "like"}]}, headers=h["rec-write"])
    assert r.status_code == 200 and r.json()["recorded"] == 1
    after = client.get("/recommend/newbie", params={"k": 5}, headers=h["rec-read"]).json()
    assert after["cold_start"] is False
    assert [x["item"] for x in after["recommendations"]] == neighbours  # a one-item profile = that item's neighbours
    assert all(x["because"] == [liked] for x in after["recommendations"])
    # all or nothing: one unknown item rejects the batch with the row named; nothing recorded
    n = len(rec.interactions)
    bad = client.post("/events", json={"events": [{"user": "newbie", "item": liked, "event": "click"},
                                                  {"user": "newbie", "item": "ghost-item", "event": "view"}]},
                      headers=h["rec-write"])
    assert bad.status_code == 422 and "event 1: unknown item 'ghost-item'" in bad.json()["detail"]
    assert len(rec.interactions) == n
    for wrong in ({"user": "u", "item": liked, "event": "stare"}, {"user": "", "item": liked, "event": "view"},
                  {"user": "u", "item": liked, "event": "view", "weight": -1}):
        assert client.post("/events", json={"events": [wrong]}, headers=h["rec-write"]).status_code == 422
    assert client.post("/events", json={"events": []}, headers=h["rec-write"]).status_code == 422
    r = client.post("/events", json={"events": [{"user": 12345, "item": liked, "event": "view"}]}, headers=h["rec-write"])
    assert r.status_code == 200 and rec.interactions.seen("12345") == {liked}  # numeric ids are kept as text
    # durable: a fresh process sees the event (appended to the state's interactions.csv)
    again = Recommender.load(rec_state, embedder=default_embedder)
    assert again.interactions.seen("newbie") == {liked}
    hist = again.interactions.history("newbie")
    assert float(hist["weight"].iloc[0]) == 4.0  # a like weighs 4


def test_explanations_only_use_the_requested_users_own_history(rec_client):
    client, rec, h = rec_client
    users = rec.interactions.users[:6]
    # another user's fresh activity must not show up in anyone else's explanations
    spy_item = rec.catalog.ids[-1]
    client.post("/events", json={"events": [{"user": "spy", "item": spy_item, "event": "purchase"}]}, headers=h["rec-write"])
    for user in users:
        r = client.get(f"/recommend/{user}", params={"k": 8, "explain": True, "exclude_seen": False},
                       headers=h["rec-read"])
        own = rec.interactions.seen(user)
        text = r.text
        for x in r.json()["recommendations"]:
            assert set(x["because"]) <= own, (user, x)
            assert set(x["because_titles"]) <= {rec.catalog.title(i) for i in own}
        assert "spy" not in text and not any(u in text for u in users if u != user)
    cold = client.get("/recommend/visitor", params={"explain": True}, headers=h["rec-read"]).json()
    assert all(x["because"] == [] for x in cold["recommendations"])  # popular items: nobody's history named


def test_torn_last_line_of_the_event_log_is_dropped(rec_state, default_embedder):
    from recommender import Recommender
    from recommender.interactions import append_rows

    csv = rec_state / "interactions.csv"
    n = len(Recommender.load(rec_state, embedder=default_embedder).interactions)
    with open(csv, "ab") as f:
        f.write(b'"half a row, no newline')  # a crash in the middle of an append
    item = Recommender.load(rec_state, embedder=default_embedder).catalog.ids[0]
    append_rows(csv, [("u-after-crash", item, 1.0, 1.0)])
    rec = Recommender.load(rec_state, embedder=default_embedder)
    assert len(rec.interactions) == n + 1 and rec.interactions.seen("u-after-crash") == {item}


def test_insecure_mode_serves_without_keys(rec_state, tmp_path, default_embedder):
    from recommender import Recommender
    from recommender.api import create_app

    rec = Recommender.load(rec_state, embedder=default_embedder)
    settings = ServingSettings(insecure_no_auth=True, usage_db=tmp_path / "u.db", access_log=False)
    with TestClient(create_app(rec, settings=settings)) as client:
        assert client.get("/recommend/anyone").json()["cold_start"] is True


# -- finance_sentiment ---------------------------------------------------------------------------
class KeywordClassifier:
    """Deterministic stand-in for the sentiment model (no fine-tuning in these tests)."""

    labels = ["negative", "neutral", "positive"]

    def predict_proba(self, texts, show_progress=False):
        out = []
        for t in texts:
            t = t.lower()
            out.append([0.9, 0.08, 0.02] if "loss" in t else [0.02, 0.08, 0.9] if "beat" in t else [0.05, 0.9, 0.05])
        return np.asarray(out, dtype=np.float32)


@pytest.fixture
def fin(tmp_path, keys, default_embedder, monkeypatch):
    from finance_sentiment.config import MonitorConfig
    from finance_sentiment.entities import Watchlist
    from finance_sentiment.paths import SAMPLES
    from finance_sentiment.pipeline import Monitor
    from finance_sentiment.scoring import SentimentModel, TopicModel
    from finance_sentiment.server import create_app
    from finance_sentiment.store import SQLiteStore
    from finance_sentiment.webhooks import Deliverer

    monkeypatch.delenv("VERTICORE_WEBHOOK_ALLOW", raising=False)
    settings, headers = keys
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text("# operator notes\nzero_shot_threshold: 0.3\n", encoding="utf-8")
    cfg = MonitorConfig()
    mon = Monitor(SQLiteStore(tmp_path / "m.db"), SentimentModel(KeywordClassifier(), version="kw/1"),
                  TopicModel(default_embedder, cfg.topics), Watchlist.load(SAMPLES / "watchlist.csv"), cfg, default_embedder)
    deliverer = Deliverer(mon.store, mon.config.webhooks)
    app = create_app(mon, settings=settings, config_path=cfg_path, deliverer=deliverer)
    with TestClient(app) as client:
        yield client, mon, deliverer, cfg_path, headers
    mon.close()


FIN_ROUTES = [
    ("GET", "/health", None, "fin-read"),
    ("POST", "/news", [{"title": "Aurora Bank beats estimates", "id": "a1"}], "fin-ingest"),
    ("POST", "/score", {"text": "Helix Pharma posts loss."}, "fin-read"),
    ("GET", "/alerts", None, "fin-read"),
    ("GET", "/items", None, "fin-read"),
    ("GET", "/series/entity", None, "fin-read"),
    ("GET", "/webhooks", None, "admin"),
    ("POST", "/webhooks", {"name": "h1", "url": "https://hooks.example.com/a"}, "admin"),
    ("DELETE", "/webhooks/h1", None, "admin"),
    ("GET", "/outbox", None, "admin"),
    ("POST", "/outbox/999/resend", None, "admin"),
]


def test_finance_routes_need_their_scope(fin):
    client, mon, _, _, h = fin
    for method, path, body, scope in FIN_ROUTES:
        assert client.request(method, path, json=body).status_code == 401, (method, path)
        for other in {"fin-read", "fin-ingest", "rec-read"} - {scope}:
            assert client.request(method, path, json=body, headers=h[other]).status_code == 403, (method, path, other)
        r = client.request(method, path, json=body, headers=h[scope])
        expected = 409 if path.endswith("/resend") else 201 if (method, path) == ("POST", "/webhooks") else 200
        assert r.status_code == expected, (method, path, r.text)
    items = client.get("/items", headers=h["fin-read"]).json()
    assert [i["item_id"] if "item_id" in i else i.get("id") for i in items]  # the ingested item is readable
    assert client.get("/series/entity", headers=h["fin-read"]).json() == [{"key": "ABK", "items": 1}]


def test_webhook_admin_enforces_ssrf_rules_and_persists(fin, monkeypatch):
    from finance_sentiment.config import load_config

    client, mon, deliverer, cfg_path, h = fin
    before = cfg_path.read_text()
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://10.0.0.5/x", "http://2130706433/",
                "ftp://hooks.example.com/x", "http://user:pw@hooks.example.com/x"):
        r = client.post("/webhooks", json={"name": "bad", "url": url}, headers=h["admin"])
        assert r.status_code == 422, (url, r.text)
    assert cfg_path.read_text() == before and mon.config.webhooks == []  # nothing written, nothing applied
    r = client.post("/webhooks", json={"name": "risk-chat", "url": "https://hooks.example.com/T1", "format": "slack",
                                       "secret": "s3cret", "max_attempts": 3}, headers=h["admin"])
    assert r.status_code == 201 and r.json()["secret"] == "***" and r.json()["format"] == "slack"
    assert client.post("/webhooks", json={"name": "risk-chat", "url": "https://hooks.example.com/T2"},
                       headers=h["admin"]).status_code == 409
    assert client.post("/webhooks", json={"name": "x", "url": "https://hooks.example.com/", "bogus": 1},
                       headers=h["admin"]).status_code == 422
    # saved to the config (other keys kept), live in the monitor and the running deliverer
    saved = load_config(cfg_path)
    assert saved.zero_shot_threshold == 0.3 and [w.name for w in saved.webhooks] == ["risk-chat"]
    assert saved.webhooks[0].secret == "s3cret" and saved.webhooks[0].max_attempts == 3
    assert [w.name for w in mon.config.webhooks] == ["risk-chat"] and deliverer.targets["risk-chat"].secret == "s3cret"
    listed = client.get("/webhooks", headers=h["admin"]).json()
    assert [w["name"] for w in listed] == ["risk-chat"] and "s3cret" not in json.dumps(listed)
    # a private receiver is accepted only when the operator allow-list permits it
    monkeypatch.setenv("VERTICORE_WEBHOOK_ALLOW", "127.0.0.1")
    r = client.post("/webhooks", json={"name": "local", "url": "http://127.0.0.1:9/hook"}, headers=h["admin"])
    assert r.status_code == 201, r.text
    assert client.delete("/webhooks/risk-chat", headers=h["admin"]).status_code == 200
    assert client.delete("/webhooks/risk-chat", headers=h["admin"]).status_code == 404
    assert [w["name"] for w in yaml.safe_load(cfg_path.read_text())["webhooks"]] == ["local"]
    assert set(deliverer.targets) == {"local"}


def test_outbox_resend_over_the_api(fin):
    client, mon, _, _, h = fin
    alert = {"alert_key": "k1", "rule": "neg", "series_kind": "entity", "series_key": "MRD", "direction": "negative",
             "severity": "high", "state": "open", "opened_at": 1.0, "updated_at": 1.0, "resolved_at": None,
             "window_count": 6, "hit_count": 5, "share": 0.8, "baseline": 0.1, "z": 5.0, "evidence": [], "summary": "s"}
    aid = mon.store.upsert_alert(alert)
    mon.store.enqueue(aid, "opened", "t", "https://hooks.example.com/x", "json", {"x": 1}, "key-1", 1.0)
    oid = mon.store.list_outbox()[0]["id"]
    mon.store.finish_attempt(oid, ok=False, now=2.0, duration_s=0.1, status=503, error="HTTP 503", next_attempt_at=None,
                             dead=True)
    dead = client.get("/outbox", params={"state": "dead"}, headers=h["admin"]).json()
    assert [r["id"] for r in dead] == [oid]
    assert client.post(f"/outbox/{oid}/resend", headers=h["admin"]).json() == {"requeued": oid}
    assert mon.store.list_outbox("pending")[0]["id"] == oid
    assert client.post(f"/outbox/{oid}/resend", headers=h["admin"]).status_code == 409  # no longer dead


# -- plugins -------------------------------------------------------------------------------------
def test_both_apps_are_discovered_as_plugins():
    from verticore.plugins import discover_apps

    errors = []
    apps = discover_apps(on_error=lambda n, r: errors.append((n, r)))
    assert not [e for e in errors if e[0] in ("recommender", "finance_sentiment")], errors
    assert apps["recommender"].api_prefix == "rec" and apps["recommender"].title == "Recommender"
    assert apps["finance_sentiment"].api_prefix == "finance" and apps["finance_sentiment"].title == "Finance sentiment"
    assert callable(apps["recommender"].create_router) and callable(apps["finance_sentiment"].create_router)


def test_recommender_plugin_serves_the_state_under_home(rec_base, tmp_path, keys):
    import shutil

    from fastapi import FastAPI

    from recommender.plugin import APP
    from verticore.errors import ArtifactError
    from verticore.plugins import ServingContext
    from verticore.serving import install_serving

    settings, h = keys
    with pytest.raises(ArtifactError, match="recommender demo"):
        APP.create_router(ServingContext(home=tmp_path / "empty", settings=settings))
    shutil.copytree(rec_base, tmp_path / "home" / "recommender" / "state")
    app = FastAPI()
    install_serving(app, settings)
    app.include_router(APP.create_router(ServingContext(home=tmp_path / "home", settings=settings)), prefix="/v1/rec")
    with TestClient(app) as client:
        assert client.get("/v1/rec/recommend/x").status_code == 401
        r = client.get("/v1/rec/recommend/x", headers=h["rec-read"])
        assert r.status_code == 200 and r.json()["cold_start"] is True


def test_finance_plugin_runs_the_deliverer_while_serving(fin, tmp_path, keys, monkeypatch):
    import threading

    from fastapi import FastAPI

    from finance_sentiment.pipeline import Monitor
    from finance_sentiment.plugin import APP
    from verticore.errors import ArtifactError
    from verticore.plugins import ServingContext
    from verticore.serving import install_serving

    settings, h = keys
    with pytest.raises(ArtifactError, match="no sentiment model"):
        APP.create_router(ServingContext(home=tmp_path / "empty", settings=settings))
    _, mon, _, _, _ = fin
    opened = []
    monkeypatch.setattr(Monitor, "open", classmethod(lambda cls, paths, **kw: opened.append(paths) or mon))

    def workers():
        return [t for t in threading.enumerate() if t.name == "webhook-deliverer" and t.is_alive()]

    before = len(workers())
    app = FastAPI()
    install_serving(app, settings)
    app.include_router(APP.create_router(ServingContext(home=tmp_path / "home", settings=settings)), prefix="/v1/finance")
    assert opened[0].root == tmp_path / "home" / "finance_sentiment"
    with TestClient(app) as client:
        assert len(workers()) == before + 1  # started once, with the server
        assert client.post("/v1/finance/news", json={"title": "Aurora Bank beats estimates"}).status_code == 401
        r = client.post("/v1/finance/news", json={"title": "Aurora Bank beats estimates"}, headers=h["fin-ingest"])
        assert r.status_code == 200 and r.json()["accepted"] == 1
        r = client.post("/v1/finance/webhooks", json={"name": "w", "url": "https://hooks.example.com/w"}, headers=h["admin"])
        assert r.status_code == 201
        assert (tmp_path / "home" / "finance_sentiment" / "config.yaml").exists()  # the monitor's own config file
    assert len(workers()) == before  # stopped with the server
