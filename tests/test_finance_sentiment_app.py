"""finance_sentiment with models: demo preparation, the pipeline end to end (dedupe, bad input,
article evidence, alerts delivered exactly once across a monitor restart), HTTP ingestion, CLI,
and the dashboard page (AppTest and headless Chromium)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from finance_sentiment.config import MonitorConfig, Rule, WebhookTarget
from finance_sentiment.entities import Watchlist
from finance_sentiment.paths import APP_DIR_NAME, SAMPLES, AppPaths
from finance_sentiment.pipeline import Monitor
from finance_sentiment.receiver import LocalReceiver
from finance_sentiment.scoring import SentimentModel, TopicModel
from finance_sentiment.store import SQLiteStore
from finance_sentiment.webhooks import Deliverer

PAGE = Path(__file__).resolve().parents[1] / "apps" / "finance_sentiment" / "dashboard" / "monitor_page.py"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """A VERTICORE_HOME prepared in fast mode (tiny models, short stream) through the hub's
    ``verticore.demo --prepare-only`` (shared per session via the browser-test harness)."""
    from finance_sentiment.demo import prepare_demo

    try:
        from streamlit_harness import prepared_demo_home
    except ImportError:
        prepared_demo_home = None
    if prepared_demo_home is not None:
        home = prepared_demo_home(tmp_path_factory, only=("finance_sentiment",))
    else:
        home = tmp_path_factory.mktemp("vhome")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VERTICORE_DEMO_FAST", "1")
            prepare_demo(home, show_progress=False)
    model = AppPaths(home / APP_DIR_NAME).sentiment_model / "model.safetensors"
    assert model.exists(), "prepare_demo did not train the sentiment model"
    stamp = model.stat().st_mtime
    t = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VERTICORE_DEMO_FAST", "1")
        prepare_demo(home, show_progress=False)  # idempotent: nothing retrained
    assert time.perf_counter() - t < 5 and model.stat().st_mtime == stamp
    return home


@pytest.fixture(scope="module")
def paths(demo_home):
    return AppPaths(demo_home / APP_DIR_NAME)


def test_demo_state_is_complete(paths):
    store = SQLiteStore(paths.db)
    assert store.count_items(False) >= 50
    row = store.recent_items(limit=1)[0]
    assert row["model_version"].startswith("sentiment/sentiment@") and row["sentiment"] in ("positive", "neutral", "negative")
    assert row["source"] and row["published_at"] and row["topics"]
    assert (paths.root / "demo_bursts.json").exists() and paths.watchlist.exists() and paths.config.exists()


def test_sentiment_model_keeps_per_sentence_evidence(paths, caplog):
    model = SentimentModel.load(paths.sentiment_model, device="cpu", max_sentences=5)
    short, article, huge = model.score(
        ["Aurora Bank profit falls", "Helix Pharma cuts outlook", "Boreal Retail update"],
        ["", "Sales fell 10%. Costs rose. The CEO resigned. Shares were halted.", " ".join(["Sales rose."] * 500)])
    assert short.sentences == 1 and short.evidence == []
    assert abs(sum(short.probabilities.values()) - 1) < 1e-4 and -1 <= short.score <= 1
    assert article.sentences == 5 and [e.text for e in article.evidence][:2] == ["Helix Pharma cuts outlook", "Sales fell 10%."]
    assert huge.sentences == 5 and "scoring the first 4" in caplog.text  # enormous article capped with a log line


def test_zero_shot_topics_and_user_added_topic(default_embedder):
    from finance_sentiment.config import DEFAULT_TOPICS

    tm = TopicModel(default_embedder, DEFAULT_TOPICS, threshold=0.25)
    got = tm.assign(["Central bank raises interest rates to fight inflation", "Acme agrees to acquire rival in takeover deal"])
    assert "macro" in got[0] and "m&a" in got[1]
    assert tm.assign(["Bitcoin price soars past record as crypto rally continues"])[0] != ["crypto"]
    tm.add_topic("crypto", "bitcoin, cryptocurrency, crypto exchange, blockchain tokens")
    assert tm.assign(["Bitcoin price soars past record as crypto rally continues"])[0][0] == "crypto"


class KeywordClassifier:
    """Test double for the sentiment classifier: deterministic, so alert tests do not depend on a 2-step model."""

    labels = ["negative", "neutral", "positive"]

    def predict_proba(self, texts, show_progress=False):
        out = []
        for t in texts:
            t = t.lower()
            if any(w in t for w in ("plunge", "loss", "fine", "recall", "fraud", "cuts")):
                out.append([0.9, 0.08, 0.02])
            elif any(w in t for w in ("beat", "record", "surge")):
                out.append([0.02, 0.08, 0.9])
            else:
                out.append([0.05, 0.9, 0.05])
        return np.asarray(out, dtype=np.float32)


def _monitor(db, embedder, webhooks=(), **cfg_kw):
    rule = Rule("neg", series="entity", window_minutes=60, min_count=4, z_threshold=2.5, min_share=0.5,
                cooldown_minutes=120, resolve_minutes=30)
    cfg = MonitorConfig(rules=[rule], webhooks=list(webhooks), **cfg_kw)
    wl = Watchlist.load(SAMPLES / "watchlist.csv")
    tm = TopicModel(embedder, cfg.topics)
    return Monitor(SQLiteStore(db), SentimentModel(KeywordClassifier(), version="kw/1"), tm, wl, cfg, embedder)


def _background(n, start, step=900):
    """Distinct neutral headlines from the bundled sample (none trips the keyword test classifier)."""
    import pandas as pd

    df = pd.read_csv(SAMPLES / "headlines.csv")
    kw = ("plunge", "loss", "fine", "recall", "fraud", "cuts", "beat", "record", "surge")
    titles = [t for t in df[df.sentiment == "neutral"].text if not any(w in t.lower() for w in kw)]
    assert len(titles) >= n
    return [{"id": f"bg{start}-{i}", "title": titles[i], "published_at": start + i * step} for i in range(n)]


def test_pipeline_dedupes_rejects_bad_input_and_alerts_exactly_once_across_restart(tmp_path, default_embedder, caplog):
    db = tmp_path / "m.db"
    with LocalReceiver(secret="k3y", mode="fail") as rx:
        hook = WebhookTarget("risk", rx.url, secret="k3y", timeout_s=1.0, max_attempts=20, backoff_base_s=0.01, backoff_max_s=0.03)
        mon = _monitor(db, default_embedder, [hook])
        r = mon.process(_background(30, T0), source="test", now=T0)
        assert r.accepted == 30 and r.opened == 0
        # bad input: empty title, bad timestamp, not an object, duplicate id; the good item still goes through
        r = mon.process([{"title": ""}, {"title": "x", "published_at": "soon"}, "junk", {"id": "bg1700000000.0-0", "title": "again"},
                         {"id": "ok-1", "title": "Verdant Foods names new chair", "published_at": T0 + 30 * 900}], source="test")
        assert (r.accepted, r.rejected, r.skipped_ids) == (1, 3, 1)
        assert {x["reason"] for x in mon.store.list_rejected()} >= {"news item has an empty title"}
        # the same story syndicated: exact (normalised title) and near-duplicate copies are not new signals
        t = T0 + 40 * 900
        story = "Cascade Semiconductors posts surprise loss as orders plunge"
        copies = [{"id": "s0", "title": story, "published_at": t},
                  {"id": "s1", "title": f"UPDATE 1-{story} - Reuters", "published_at": t + 60},
                  {"id": "s2", "title": "Cascade Semiconductors posts a surprise loss as its orders plunge", "published_at": t + 120}]
        r = mon.process(copies, source="test")
        assert (r.accepted, r.duplicates) == (1, 2)
        assert all(s.duplicate_of == r.items[0].rowid for s in r.items[1:])
        # a burst of negative news on one company: one alert, queued for the webhook
        burst = [{"id": f"b{j}", "title": f"Meridian Airlines {w}", "url": f"https://n.example/b{j}", "published_at": t + 3600 + j * 300}
                 for j, w in enumerate(["fined over safety breaches", "shares plunge 20%", "warns of annual loss",
                                        "cuts flights after pilot strike", "faces fraud probe", "recall of aircraft parts"])]
        r1 = mon.process(burst[:3], source="test")
        r2 = mon.process(burst[3:], source="test")
        opened = [e for e in r1.events + r2.events if e.kind == "opened"]
        assert len(opened) == 1 and opened[0].alert["series_key"] == "MRD"
        assert {e["title"] for e in opened[0].alert["evidence"]} <= {b["title"] for b in burst}
        Deliverer(mon.store, [hook]).run_once()  # receiver is down: nothing delivered, nothing lost
        assert rx.processed == {} and len(mon.store.list_outbox("pending")) == 1
        mon.close()
        # restart: a fresh monitor resumes detection state; the episode continues without a new alert
        mon2 = _monitor(db, default_embedder, [hook])
        r3 = mon2.process([{"id": "b9", "title": "Meridian Airlines reports loss on cancelled routes", "published_at": t + 3600 + 7 * 300}])
        assert [e.kind for e in r3.events if e.kind == "opened"] == []
        rx.mode = "ok"
        time.sleep(0.05)
        assert Deliverer(mon2.store, [hook]).drain(max_rounds=20, max_wait_s=0.05).delivered == 1
        # the episode ends; the resolution is delivered too
        res = mon2.tick(t + 3600 + 7 * 300 + 3 * 3600)
        assert [e.kind for e in res] == ["resolved"]
        Deliverer(mon2.store, [hook]).drain(max_rounds=20, max_wait_s=0.05)
        events = sorted(p["event"] for p in rx.processed.values())
        assert events == ["alert.opened", "alert.resolved"] and rx.bad_signatures == 0
        assert mon2.store.list_alerts()[0]["state"] == "resolved"
        mon2.close()


def test_http_news_endpoint(tmp_path, default_embedder):
    from fastapi.testclient import TestClient

    from finance_sentiment.server import create_app
    from verticore.serving import KeyStore, ServingSettings

    mon = _monitor(tmp_path / "h.db", default_embedder)
    key, _ = KeyStore(tmp_path / "keys.db").create("ingest", ["finance:ingest", "finance:read"])
    client = TestClient(create_app(mon, settings=ServingSettings(keys_db=tmp_path / "keys.db", usage_db=tmp_path / "u.db")),
                        headers={"Authorization": f"Bearer {key}"})
    assert client.get("/health").json()["ok"]
    r = client.post("/news", json=[{"title": "Aurora Bank beats estimates", "id": "h1"}, {"title": ""}, 42])
    body = r.json()
    assert r.status_code == 200 and body["accepted"] == 1 and body["rejected"] == 2
    assert body["items"][0]["entities"] == ["ABK"] and body["items"][0]["sentiment"] == "positive"
    one = client.post("/news", json={"title": "Aurora Bank beats estimates", "id": "h1"}).json()
    assert one["skipped_ids"] == 1
    s = client.post("/score", json={"text": "Helix Pharma posts loss. Sales fell."}).json()
    assert s["label"] == "negative" and len(s["evidence"]) == 2 and s["entities"] == ["HLX"]
    assert client.post("/score", json={"text": " "}).status_code == 422
    mon.close()


def test_cli(paths, tmp_path):
    from typer.testing import CliRunner

    from finance_sentiment.cli import app

    runner = CliRunner()
    home = str(paths.root)
    r = runner.invoke(app, ["score", "Aurora Bank shares plunge. Profit fell.", "--json", "--home", home])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # --json: nothing but the JSON on stdout (logs go to stderr)
    assert out["label"] in ("positive", "neutral", "negative") and out["entities"] == ["ABK"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{name: x, severity: urgent}]")
    r = runner.invoke(app, ["check-config", str(bad)])
    assert r.exit_code == 3 and "error:" in r.output and "severity" in r.output and "Traceback" not in r.output
    assert runner.invoke(app, ["alerts", "--home", home]).exit_code == 0
    inbox = tmp_path / "in.jsonl"
    inbox.write_text(json.dumps({"id": "cli-1", "title": "Kestrel Logistics wins new contract"}) + "\n")
    r = runner.invoke(app, ["ingest", str(inbox), "--home", home])
    assert r.exit_code == 0 and "accepted=1" in r.output
    r = runner.invoke(app, ["ingest", str(inbox), "--home", home])  # already read: nothing new
    assert r.exit_code == 0 and "accepted" not in r.output
    r = runner.invoke(app, ["resend", "999", "--home", home])
    assert r.exit_code == 3 and "not dead-lettered" in r.output


def _add_dead_alert(store: SQLiteStore) -> int:
    alert = {"alert_key": "neg|entity|MRD|test", "rule": "neg", "series_kind": "entity", "series_key": "MRD",
             "direction": "negative", "severity": "high", "state": "open", "opened_at": T0, "updated_at": T0,
             "resolved_at": None, "window_count": 6, "hit_count": 5, "share": 0.83, "baseline": 0.12, "z": 5.2,
             "evidence": [{"item": 1, "title": "Meridian Airlines shares plunge", "url": "https://n.example/1",
                           "source": "t", "published_at": T0, "sentiment": "negative", "score": -0.9}],
             "summary": "negative news surge on entity MRD: 5/6 items negative"}
    aid = store.upsert_alert(alert)
    store.enqueue(aid, "opened", "risk-chat", "http://127.0.0.1:9/hook", "slack", {"text": "x"}, "dash-test-key", T0)
    row = store.list_outbox(alert_id=aid)[0]
    store.finish_attempt(row["id"], ok=False, now=T0, duration_s=0.1, status=503, error="HTTP 503", next_attempt_at=None, dead=True)
    return row["id"]


def test_dashboard_page_apptest(demo_home, paths, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VERTICORE_HOME", str(demo_home))
    store = SQLiteStore(paths.db)
    if not store.list_outbox("dead"):
        _add_dead_alert(store)
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.label for t in at.tabs] == ["Live feed", "Trends", "Alerts", "Watchlist & rules", "Score text"]
    assert "open alert" in at.caption[0].value and "1 dead-lettered" in at.caption[0].value
    assert at.metric[0].value == str(min(100, store.count_items(False)))
    assert any("negative news surge on entity MRD" in e.label for e in at.expander)
    # re-send the dead-lettered delivery from the page
    at.button(key="resend_btn").click().run()
    assert not at.exception and any("re-queued" in s.value for s in at.success)
    assert store.list_outbox("dead") == []
    # a bad rule edit is refused with the reason, the file is left alone
    before = paths.config.read_text()
    at.text_area(key="rules_text").set_value("rules: [{name: a, min_count: 0}]")
    at.button(key="rules_save").click().run()
    assert any("min_count" in e.value for e in at.error) and paths.config.read_text() == before
    # score this text
    at.text_area(key="score_text").set_value("Helix Pharma warns on profit. Sales fell 9%.")
    at.button(key="score_btn").click().run()
    assert not at.exception
    assert any("companies: HLX" in m.value for m in at.markdown)


def test_dashboard_page_in_chromium(demo_home, paths):
    harness = pytest.importorskip("streamlit_harness")
    if not harness.chromium_available():
        pytest.skip("chromium / playwright not installed (make browser-deps)")
    out = Path(__file__).resolve().parent / "_screenshots" / "finance_sentiment_monitor.png"
    png = harness.screenshot_streamlit(PAGE, out, ["Finance sentiment monitor", "Live feed", "Items shown"],
                                       env={"VERTICORE_HOME": str(demo_home)})
    assert png.exists() and png.stat().st_size > 10_000
