"""finance_sentiment: domain logic without models (text, entities, config, detection, store,
webhook delivery against a real loopback receiver, sources, bad input)."""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from finance_sentiment.config import (
    Rule,
    WebhookTarget,
    load_config,
    validate_webhook_url,
)
from finance_sentiment.detect import SurgeDetector
from finance_sentiment.entities import Watchlist
from finance_sentiment.items import NewsItem, ScoredItem, parse_timestamp
from finance_sentiment.receiver import LocalReceiver
from finance_sentiment.sources import FolderSource, ReplaySource, fetch_feed, parse_feed, read_records
from finance_sentiment.store import MIGRATIONS, SQLiteStore
from finance_sentiment.text import split_sentences, title_hash
from finance_sentiment.webhooks import Deliverer, backoff_delay, build_payload, idempotency_key, sign, verify_signature
from verticore.errors import DataError

T0 = 1_700_000_000.0


# -- text / items ---------------------------------------------------------------------------
def test_title_hash_ignores_syndication_noise():
    a = title_hash("UPDATE 2-Acme cuts full-year outlook - Reuters")
    assert a == title_hash("Acme cuts full-year outlook | MarketWatch") == title_hash("ACME cuts full‑year outlook!")
    assert a != title_hash("Acme raises full-year outlook")


def test_split_sentences_keeps_decimals_and_abbreviations():
    s = split_sentences("Net sales rose 5.2% to EUR 3.1 bn. Acme Inc. said demand was strong. Mr. Smith left! Shares fell")
    assert s == ["Net sales rose 5.2% to EUR 3.1 bn.", "Acme Inc. said demand was strong.", "Mr. Smith left!", "Shares fell"]


def test_news_item_validation_and_bad_input(caplog):
    it = NewsItem.from_dict({"title": "  Acme\x00 beats  ", "body": "x" * 500, "published": "2024-01-02T03:04:05Z"},
                            max_body_chars=100, source="t")
    assert it.title == "Acme beats" and len(it.body) == 100 and it.item_id.startswith("h:")
    assert it.published_at == parse_timestamp("2024-01-02T03:04:05+00:00")
    with pytest.raises(DataError, match="empty title"):
        NewsItem.from_dict({"title": "   ", "body": "text"})
    with pytest.raises(DataError, match="unparseable timestamp"):
        NewsItem.from_dict({"title": "a", "published_at": "yesterday-ish"})
    assert parse_timestamp(1_700_000_000_000) == 1_700_000_000.0  # epoch ms
    assert parse_timestamp("Tue, 14 Nov 2023 22:13:20 GMT") == 1_700_000_000.0
    # surrogates / non-UTF-8 bytes never crash
    assert NewsItem.from_dict({"title": b"Caf\xe9 chain falls"}).title == "Café chain falls"


# -- entities ---------------------------------------------------------------------------------
WATCH = "ticker,name,aliases\nAAPL,Apple Inc.,Apple Computer\nNOK,Nokia Oyj,Nokia Corporation|Nokia\nIT,Gartner,\n"


def test_watchlist_matching_is_robust():
    wl = Watchlist.from_csv_text(WATCH)
    assert wl.tickers_in("$AAPL jumps") == ["AAPL"]
    assert wl.tickers_in("NASDAQ: aapl and nyse:NOK") == ["AAPL", "NOK"]
    assert wl.tickers_in("NOKIA'S profit; apple inc. too") == ["NOK", "AAPL"]
    assert wl.tickers_in("Nokia Corporation said") == ["NOK"]
    assert wl.tickers_in("IT spending rises; pineapple sales") == []  # 2-letter bare ticker and substrings ignored
    assert wl.tickers_in("$ZZZZ rallies") == []


def test_watchlist_bad_input_and_roundtrip(tmp_path):
    with pytest.raises(DataError, match="no column 'name'"):
        Watchlist.from_csv_text("ticker,company\nA,B\n")
    with pytest.raises(DataError, match="duplicate ticker"):
        Watchlist.from_csv_text("ticker,name\nAAA,x\naaa,y\n")
    with pytest.raises(DataError, match="invalid ticker"):
        Watchlist.from_csv_text("ticker,name\nTOO LONG,x\n")
    p = tmp_path / "w.csv"
    p.write_bytes(b"ticker,name\nAAA,Caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        Watchlist.load(p)
    wl = Watchlist.from_csv_text(WATCH)
    wl.save(tmp_path / "out.csv")
    again = Watchlist.load(tmp_path / "out.csv")
    assert again.tickers == wl.tickers and again.get("NOK").aliases == ["Nokia Corporation", "Nokia"]


# -- config -----------------------------------------------------------------------------------
def test_config_loading_and_bad_rule_files(tmp_path):
    good = tmp_path / "c.toml"
    good.write_text('allow_hosts = ["127.0.0.1"]\n[[rules]]\nname = "neg"\nmin_count = 3\n'
                    '[[webhooks]]\nname = "w"\nurl = "http://127.0.0.1:9/x"\nformat = "slack"\n')
    cfg = load_config(good)
    assert cfg.rules[0].min_count == 3 and cfg.webhooks[0].format == "slack"
    cases = {
        "rules: [{name: a, series: ticker}]": "series must be entity",
        "rules: [{name: a, min_count: 0}]": "min_count",
        "rules: [{name: a, severity: urgent}]": "severity",
        "rules: [{name: a, windw_minutes: 5}]": "unknown key",
        "rules: [{name: a}, {name: a}]": "unique",
        "rules: {name: a}": "must be a list",
        "rules: [{name: a\n": "not valid YAML",
        "webhooks: [{name: w, url: 'ftp://x/y'}]": "must use http or https",
        "webhooks: [{name: w, url: 'https://evil.example/y'}]\nallow_hosts: [hooks.example]": "not in allow_hosts",
    }
    for text, msg in cases.items():
        p = tmp_path / "bad.yaml"
        p.write_text(text)
        with pytest.raises(DataError, match=msg):
            load_config(p)
    with pytest.raises(DataError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_webhook_url_validation():
    assert validate_webhook_url("https://hooks.example.com/a") == "https://hooks.example.com/a"
    for bad, msg in [("javascript:alert(1)", "http or https"), ("file:///etc/passwd", "http or https"),
                     ("http:///nohost", "no host"), ("https://u:p@h.example/x", "credentials"), ("", "empty"),
                     ("http://h.example:99999/", "malformed")]:
        with pytest.raises(DataError, match=msg):
            validate_webhook_url(bad)
    assert validate_webhook_url("https://a.hooks.example/x", [".hooks.example"])


# -- detection --------------------------------------------------------------------------------
def _scored(i, ts, sentiment, entities=("AAA",), topics=("earnings",)):
    s = ScoredItem(NewsItem(f"id{i}", f"headline {i}", published_at=ts, url=f"https://n.example/{i}", source="t"), f"h{i}")
    s.sentiment, s.sentiment_score, s.entities, s.topics, s.rowid = sentiment, {"negative": -0.9, "positive": 0.9}.get(sentiment, 0.0), list(entities), list(topics), i
    return s


RULE = Rule("neg", series="entity", window_minutes=60, min_count=5, z_threshold=3.0, min_share=0.5,
            cooldown_minutes=120, resolve_minutes=60)


def _background(rng, n, start, hours, ticker="AAA", neg_rate=0.1, offset=0):
    return [_scored(offset + i, start + rng.random() * hours * 3600, "negative" if rng.random() < neg_rate else "neutral",
                    entities=(ticker,)) for i in range(n)]


def test_surge_opens_one_alert_per_episode_then_resolves_with_cooldown():
    rng = random.Random(0)
    det = SurgeDetector([RULE])
    bg = _background(rng, 100, T0, 24)
    assert [e for e in det.observe(bg) if e.kind == "opened"] == []
    t = T0 + 25 * 3600
    burst = [_scored(1000 + j, t + j * 300, "negative") for j in range(8)]
    events = det.observe(burst)
    opened = [e for e in events if e.kind == "opened"]
    assert len(opened) == 1  # grouped: one alert for the whole burst
    a = opened[0].alert
    assert a["series_key"] == "AAA" and a["state"] == "open" and a["hit_count"] >= 5 and a["z"] >= 3
    assert {e["item"] for e in a["evidence"]} <= {s.rowid for s in burst} and a["evidence"][0]["url"]
    assert all(e.alert["alert_key"] == a["alert_key"] for e in events)
    # quiet for a while -> resolves; a new burst within the cooldown does not open a new alert
    res = det.tick(t + 8 * 300 + 2 * 3600)
    assert [e.kind for e in res] == ["resolved"] and res[0].alert["alert_key"] == a["alert_key"]
    t2 = t + 8 * 300 + 2 * 3600 + 60
    assert not [e for e in det.observe([_scored(2000 + j, t2 + j * 60, "negative") for j in range(8)]) if e.kind == "opened"]
    t3 = t2 + 5 * 3600
    again = [e for e in det.observe([_scored(3000 + j, t3 + j * 60, "negative") for j in range(8)]) if e.kind == "opened"]
    assert len(again) == 1 and again[0].alert["alert_key"] != a["alert_key"]


def test_quiet_ticker_with_few_bad_headlines_does_not_page_and_baseline_matters():
    det = SurgeDetector([RULE])
    # one bad headline on a quiet ticker
    assert det.observe([_scored(1, T0, "negative", entities=("QQQ",))]) == []
    # 4 negatives (< min_count) in a window
    assert not [e for e in det.observe([_scored(10 + j, T0 + 10 + j, "negative", entities=("QQQ",)) for j in range(3)]) if e.kind == "opened"]
    # a ticker that is *usually* negative: its own baseline absorbs a normal negative hour
    rng = random.Random(1)
    det2 = SurgeDetector([RULE])
    hist = [_scored(i, T0 + i * 600, "negative" if rng.random() < 0.7 else "neutral", entities=("BAD",)) for i in range(300)]
    opened_hist = [e for e in det2.observe(hist) if e.kind == "opened"]
    st = det2.states["neg|entity|BAD"]
    assert det2.stats(RULE, st).baseline > 0.5  # learned from its own history
    tail = [_scored(5000 + j, T0 + 300 * 600 + j * 300, "negative" if j % 3 else "neutral", entities=("BAD",)) for j in range(9)]
    assert not [e for e in det2.observe(tail) if e.kind == "opened"]
    assert len(opened_hist) <= 2  # early history before the baseline formed may page; later it does not


def test_detector_state_roundtrips_through_json():
    det = SurgeDetector([RULE])
    det.observe(_background(random.Random(2), 50, T0, 10))
    det.observe([_scored(900 + j, T0 + 11 * 3600 + j * 60, "negative") for j in range(6)])
    data = json.loads(json.dumps(det.to_dict()))
    det2 = SurgeDetector([RULE])
    det2.load_dict(data)
    assert det2.to_dict() == det.to_dict()
    # an open episode continues after the restore: no second "opened"
    more = [_scored(950 + j, T0 + 11 * 3600 + 600 + j * 60, "negative") for j in range(3)]
    assert not [e for e in det2.observe(more) if e.kind == "opened"]


# -- store ------------------------------------------------------------------------------------
def test_store_migrates_old_schema_in_place(tmp_path):
    from verticore.storage import connect, schema_version

    db = tmp_path / "m.db"
    conn = connect(db, MIGRATIONS[:1])
    conn.execute("INSERT INTO kv (key, value, updated_at) VALUES ('x', '1', 0)")
    conn.close()
    store = SQLiteStore(db)
    assert schema_version(store.conn) == len(MIGRATIONS)
    assert store.kv_get("x") == 1
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.record_rejected("feed", "empty title", "{}")
    assert store.list_rejected()[0]["reason"] == "empty title"


def _alert(key="neg|entity|AAA|1", state="open"):
    return {"alert_key": key, "rule": "neg", "series_kind": "entity", "series_key": "AAA", "direction": "negative",
            "severity": "high", "state": state, "opened_at": T0, "updated_at": T0, "resolved_at": None, "window_count": 6,
            "hit_count": 5, "share": 0.83, "baseline": 0.1, "z": 6.1,
            "evidence": [{"item": 1, "title": "Acme & Co <warns>", "url": "https://n.example/1", "source": "t",
                          "published_at": T0, "sentiment": "negative", "score": -0.9}],
            "summary": "negative news surge on entity AAA"}


# -- webhooks ---------------------------------------------------------------------------------
def test_payloads_signatures_and_backoff():
    key = idempotency_key("k", "opened", "t")
    assert key == idempotency_key("k", "opened", "t") != idempotency_key("k", "resolved", "t")
    generic = build_payload(_alert(), "opened", "json", key)
    assert generic["idempotency_key"] == key and generic["alert"]["evidence"][0]["url"] == "https://n.example/1"
    slack = build_payload(_alert(), "opened", "slack", key)
    assert slack["text"].startswith("[HIGH]") and "&amp; Co &lt;warns&gt;" in json.dumps(slack)
    body = b'{"a":1}'
    sig = sign("s3cret", "1700000000", body)
    assert verify_signature("s3cret", "1700000000", body, sig, now=T0)
    assert not verify_signature("other", "1700000000", body, sig, now=T0)
    assert not verify_signature("s3cret", "1700000000", body, sig, now=T0 + 3600)  # stale
    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 30.0, rng) for a in range(1, 10)]
    assert all(0.1 * min(30, 2 ** (a - 1)) <= d <= min(30, 2 ** (a - 1)) for a, d in zip(range(1, 10), delays))


def _queue(store, n, target):
    ids = []
    for i in range(n):
        a = _alert(key=f"neg|entity|AAA|{i}")
        aid = store.upsert_alert(a)
        key = idempotency_key(a["alert_key"], "opened", target.name)
        assert store.enqueue(aid, "opened", target.name, target.url, target.format,
                             build_payload(a, "opened", target.format, key), key, 0.0)
        assert not store.enqueue(aid, "opened", target.name, target.url, target.format, {}, key, 0.0)  # idempotent
        ids.append(aid)
    return ids


def test_delivery_survives_failures_timeouts_and_restart_exactly_once(tmp_path):
    db = tmp_path / "o.db"
    with LocalReceiver(secret="s3cret", mode="fail", hang_s=1.0) as rx:
        target = WebhookTarget("rx", rx.url, secret="s3cret", timeout_s=0.3, max_attempts=50, backoff_base_s=0.01, backoff_max_s=0.05)
        store = SQLiteStore(db)
        _queue(store, 3, target)
        d = Deliverer(store, [target])
        rep = d.run_once()
        assert rep.retried == 3 and rx.processed == {}  # receiver down (503)
        rx.mode = "hang"  # processes, but answers after the client's timeout -> client retries
        time.sleep(0.06)  # past every backoff
        rep = d.run_once()
        assert rep.retried == 3 and len(rx.processed) == 3
        # the monitor "dies" with one delivery leased mid-send; a new process takes over after the lease
        time.sleep(0.06)  # past every backoff
        assert len(store.claim_due(time.time(), limit=1, lease_s=0.2)) == 1
        store.close()
        rx.mode = "ok"
        time.sleep(0.35)
        store2 = SQLiteStore(db)
        rep = Deliverer(store2, [target]).drain(max_rounds=50, max_wait_s=0.05)
        assert rep.delivered == 3 and rep.dead == 0
        assert store2.list_outbox("pending") == [] and len(store2.list_outbox("delivered")) == 3
        # exactly once at the receiver although it saw more requests than alerts
        assert len(rx.processed) == 3 and rx.requests >= 9 and rx.bad_signatures == 0
        assert {p["idempotency_key"] for p in rx.processed.values()} == {r["idempotency_key"] for r in store2.list_outbox()}
        attempts = store2.attempts_for(store2.list_outbox()[0]["id"])
        assert any(a["error"] and "timeout" in a["error"] for a in attempts) and attempts[-1]["ok"] == 1


def test_dead_letter_and_resend(tmp_path):
    store = SQLiteStore(tmp_path / "d.db")
    with LocalReceiver(mode="fail") as rx:
        target = WebhookTarget("rx", rx.url, max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02)
        _queue(store, 1, target)
        rep = Deliverer(store, [target]).drain(max_rounds=10, max_wait_s=0.05)
        assert rep.dead == 1 and len(store.list_outbox("dead")) == 1
        row = store.list_outbox("dead")[0]
        assert row["attempts"] == 2 and "503" in row["last_error"]
        rx.mode = "ok"
        assert store.resend(row["id"], time.time())
        assert not store.resend(row["id"], time.time())  # only dead rows
        assert Deliverer(store, [target]).drain(max_rounds=5).delivered == 1
        assert len(rx.processed) == 1
        rx.mode = "reject"  # a non-retryable 4xx goes straight to dead
        _queue_one = _alert(key="neg|entity|AAA|x")
        aid = store.upsert_alert(_queue_one)
        store.enqueue(aid, "opened", "rx", rx.url, "json", {"x": 1}, "k-x", 0.0)
        assert Deliverer(store, [target]).run_once().dead == 1
    # a URL that is not http(s) is never called and is dead-lettered with the reason
    aid = store.upsert_alert(_alert(key="neg|entity|AAA|y"))
    store.enqueue(aid, "opened", "bad", "ftp://x.example/hook", "json", {"x": 1}, "k-y", 0.0)
    Deliverer(store, []).run_once()
    dead = [r for r in store.list_outbox("dead") if r["idempotency_key"] == "k-y"][0]
    assert "http or https" in dead["last_error"]


# -- sources ----------------------------------------------------------------------------------
RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title>
<item><guid>g1</guid><title>Acme beats estimates</title><link>https://n.example/1</link>
<description>&lt;p&gt;Acme &lt;b&gt;profit&lt;/b&gt; rose.&lt;/p&gt;</description><pubDate>Tue, 14 Nov 2023 22:13:20 GMT</pubDate></item>
<item><guid>g2</guid><title>Beta misses</title><link>https://n.example/2</link></item>
</channel></rss>"""


def test_rss_parsing_and_malformed_feeds():
    recs = parse_feed(RSS, "t")
    assert [r["id"] for r in recs] == ["g1", "g2"] and recs[0]["published_at"] == T0
    assert recs[0]["body"].split() == ["Acme", "profit", "rose."] and recs[0]["source"] == "Wire"
    with pytest.raises(DataError, match="not valid RSS/Atom"):
        parse_feed(b"<html><body>not a feed <<<", "bad")
    truncated = RSS[: RSS.index(b"<item><guid>g2")] + b"<item><title>half"
    assert [r["id"] for r in parse_feed(truncated, "t")][:1] == ["g1"]  # what is recoverable is kept


class _FeedHandler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        if self.path == "/hang":
            time.sleep(3)
        if self.path == "/bad":
            body = b"<<<not xml"
        else:
            body = RSS
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_feed_over_http_with_hang_and_bad_feed(caplog):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FeedHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        assert len(fetch_feed(base + "/ok", timeout_s=2)) == 2
        t = time.monotonic()
        with pytest.raises(DataError, match="timed out|did not finish"):
            fetch_feed(base + "/hang", timeout_s=0.5)
        assert time.monotonic() - t < 2.5
        from finance_sentiment.sources import poll_feeds

        with caplog.at_level(logging.ERROR, logger="finance_sentiment.sources"):
            got = dict(poll_feeds([base + "/bad", base + "/ok"], timeout_s=1))
        assert got[base + "/bad"] == [] and len(got[base + "/ok"]) == 2
        assert "not valid RSS/Atom" in caplog.text
    finally:
        srv.shutdown()
        srv.server_close()


def test_folder_source_reads_new_lines_once_across_restarts(tmp_path, caplog):
    store = SQLiteStore(tmp_path / "f.db")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    f = inbox / "a.jsonl"
    f.write_bytes(b'{"id": "1", "title": "one"}\nnot json\n{"id": "2", "title": "caf\xe9"}\n{"id": "3", "ti')
    with caplog.at_level(logging.WARNING, logger="finance_sentiment.sources"):
        src = FolderSource(inbox, store)
        recs = src.poll()
    assert [r["id"] for r in recs] == ["1", "2"] and recs[1]["title"] == "café"
    assert "line 2 is not valid JSON" in caplog.text and "not valid UTF-8" in caplog.text
    src.ack()  # progress moves only once the caller has stored the records
    with open(f, "ab") as fh:
        fh.write(b'tle": "three"}\n')
    src2 = FolderSource(inbox, SQLiteStore(tmp_path / "f.db"))  # new process
    assert [r["id"] for r in src2.poll()] == ["3"]
    src2.ack()
    (inbox / "b.csv").write_text("id,title\n4,four\n")
    src = FolderSource(inbox, store)
    assert src.poll() == []  # a CSV is read once it stopped growing
    assert [r["id"] for r in src.poll()] == ["4"]
    src.ack()
    assert src.poll() == []
    assert list(read_records(b'[1, 2]\n', "x.jsonl")) == []


def test_replay_source_paces_stream_time():
    recs = [{"title": f"t{i}", "published_at": T0 + i * 60} for i in range(10)]
    slept = []
    now = [0.0]

    def sleep(s):
        slept.append(s)
        now[0] += s

    src = ReplaySource(list(reversed(recs)), speed=60.0, sleep=sleep, clock=lambda: now[0])
    batches = list(src.batches(batch_size=3, batch_seconds=1e9))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [r["title"] for b in batches for r in b] == [f"t{i}" for i in range(10)]
    assert sum(slept) == pytest.approx(9.0)  # 9 stream-minutes at 60x = 9 s
    with pytest.raises(DataError, match="no published_at"):
        ReplaySource([{"title": "x"}])


def test_cooldown_counts_from_the_episode_end_not_from_when_a_quiet_series_notices():
    """A quiet company gets a burst, then nothing for 14 hours (no tick in between, as in a replay),
    then a second burst: the first episode ended long ago, so the second one alerts."""
    det = SurgeDetector([RULE])
    first = [_scored(100 + j, T0 + j * 360, "negative", entities=("QQQ",)) for j in range(6)]
    assert [e.kind for e in det.observe(first)].count("opened") == 1
    t = T0 + 14 * 3600
    second = [_scored(200 + j, t + j * 300, "negative", entities=("QQQ",)) for j in range(6)]
    kinds = [e.kind for e in det.observe(second)]
    assert kinds[0] == "resolved"  # the first episode, noticed only now
    assert kinds.count("opened") == 1, kinds
    st = det.states["neg|entity|QQQ"]
    # ... and its cooldown is dated from its own end: last hot window + resolve + cooldown
    third = [_scored(300 + j, t + 3600 + j * 60, "negative", entities=("QQQ",)) for j in range(6)]
    assert "opened" not in [e.kind for e in det.observe(third)]  # still the second episode (or its cooldown)
    assert st.episode is not None


def test_probability_evidence_counts_half_read_negatives():
    """Five bad stories in 20 minutes, two of them read as neutral with P(negative) 0.45: counted by
    top label that is 3 of 5 (z 2.8, no alert); counted by probability it is 3.6 of 5 (z 3.6) and alerts."""
    def item(i, ts, label, p_neg):
        s = _scored(i, ts, label, entities=("QQQ",))
        s.probabilities = {"negative": p_neg, "neutral": 1 - p_neg - 0.02, "positive": 0.02}
        return s

    burst = [item(j, T0 + j * 300, "negative" if j % 2 == 0 else "neutral", 0.9 if j % 2 == 0 else 0.45)
             for j in range(5)]
    by_label = SurgeDetector([RULE])
    assert "opened" not in [e.kind for e in by_label.observe(burst)]
    by_prob = SurgeDetector([Rule(**{**RULE.__dict__, "evidence": "probability"})])
    opened = [e for e in by_prob.observe(burst) if e.kind == "opened"]
    assert len(opened) == 1
    a = opened[0].alert
    assert a["hit_count"] == 3 and a["share"] == pytest.approx(3.6 / 5) and "by probability" in a["reason"]
    # probabilities survive the state round trip; items without them count by label
    st = by_prob.states["neg|entity|QQQ"]
    again = SurgeDetector([Rule(**{**RULE.__dict__, "evidence": "probability"})])
    again.load_dict(json.loads(json.dumps(by_prob.to_dict())))
    assert [o.p for o in again.states["neg|entity|QQQ"].window] == [o.p for o in st.window]
    old_state = [o.to_dict()[:9] for o in st.window]  # state written before `evidence` existed
    from finance_sentiment.detect import Obs

    assert [Obs.from_dict(o).weight("probability") for o in old_state] == [1.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(Exception, match="evidence"):
        Rule("bad", evidence="vibes")


def test_a_burst_lifts_a_quiet_companys_baseline_only_a_little():
    """After one 6-item burst on a quiet company, a second 5-of-5 burst a day later still alerts
    (at full weight the first burst lifted the baseline to 33% and the second scored z 2.9)."""
    det = SurgeDetector([RULE])
    assert [e.kind for e in det.observe([_scored(100 + j, T0 + j * 360, "negative", entities=("QQQ",))
                                         for j in range(6)])].count("opened") == 1
    t = T0 + 20 * 3600
    second = [_scored(200 + j, t + j * 300, "negative", entities=("QQQ",)) for j in range(5)]
    assert [e.kind for e in det.observe(second)].count("opened") == 1
    st = det.states["neg|entity|QQQ"]
    assert det.stats(RULE, st).baseline < 0.25
