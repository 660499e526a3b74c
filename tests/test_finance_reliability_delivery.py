"""finance_sentiment delivery reliability and safety (issue #11): leases that cannot expire under a
live worker, an overall per-request deadline, a persistent receiver, SSRF refusals (config, send time,
DNS rebinding, feed redirects, non-http schemes), no receiver bodies stored, escaped markup."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from finance_sentiment.config import WebhookTarget, config_from_dict, validate_webhook_url
from finance_sentiment.receiver import LocalReceiver, receiver_counts
from finance_sentiment.sources import fetch_feed
from finance_sentiment.store import SQLiteStore
from finance_sentiment.webhooks import Deliverer, build_payload, queue_alerts, synthetic_alert
from verticore.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
LOOP = "127.0.0.1,::1"


@pytest.fixture
def no_allow(monkeypatch):
    """The default: no operator allow-list at all."""
    monkeypatch.delenv("VERTICORE_WEBHOOK_ALLOW", raising=False)


@pytest.fixture
def allow_loopback(monkeypatch):
    monkeypatch.setenv("VERTICORE_WEBHOOK_ALLOW", LOOP)


def _queue(store, n, target, prefix="t"):
    assert queue_alerts(store, [synthetic_alert(i, prefix) for i in range(n)], [target]) == n


# -- item 5: leases and deadlines ---------------------------------------------------------------
def test_two_deliverers_against_a_slow_receiver_send_each_alert_once(tmp_path, allow_loopback):
    """One worker used to lease a 50-row batch for a fixed time and send it row by row; with a slow
    receiver the lease ran out under it and a second worker re-sent the tail."""
    with LocalReceiver(mode="slow", slow_s=0.25, db=tmp_path / "rx.db") as rx:
        target = WebhookTarget("rx", rx.url, timeout_s=0.8, max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.02)
        store = SQLiteStore(tmp_path / "o.db")
        _queue(store, 8, target)
        workers = [Deliverer(SQLiteStore(tmp_path / "o.db"), [target], lease_s=1.0) for _ in range(2)]
        stop = time.monotonic() + 8

        def work(d):
            while time.monotonic() < stop and (d.store.list_outbox("pending") or d.store.list_outbox("sending")):
                d.run_once()
                time.sleep(0.02)

        threads = [threading.Thread(target=work, args=(d,)) for d in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(store.list_outbox("delivered")) == 8
        assert rx.requests == 8 and rx.duplicates == 0
        counts = receiver_counts(tmp_path / "rx.db")
        assert counts["unique_deliveries"] == 8 and counts["duplicate_sends"] == 0


def test_trickling_receiver_is_cut_at_the_overall_deadline(tmp_path, allow_loopback):
    """httpx timeouts are per read: a receiver sending one byte every 0.1 s held a 0.5 s delivery for
    ~10 s. The deadline is now on the wall clock."""
    with LocalReceiver(mode="trickle", trickle_s=0.1) as rx:
        target = WebhookTarget("rx", rx.url, timeout_s=0.5, max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02)
        store = SQLiteStore(tmp_path / "o.db")
        _queue(store, 1, target)
        t = time.monotonic()
        rep = Deliverer(store, [target]).run_once()
        took = time.monotonic() - t
        assert took < 1.5, f"delivery held for {took:.1f}s at timeout_s=0.5"
        assert rep.retried == 1
        row = store.list_outbox()[0]
        assert row["state"] == "pending" and "timeout" in row["last_error"]


def test_timeout_must_be_shorter_than_the_lease(tmp_path):
    with pytest.raises(DataError, match="lease"):
        config_from_dict({"webhooks": [{"name": "w", "url": "https://hooks.example.com/x", "timeout_s": 60}]})
    with pytest.raises(DataError, match="lease"):
        Deliverer(SQLiteStore(tmp_path / "o.db"), [WebhookTarget("w", "https://hooks.example.com/x", timeout_s=5)], lease_s=5)


def test_a_worker_that_lost_its_lease_does_not_reschedule_the_row(tmp_path):
    store = SQLiteStore(tmp_path / "o.db")
    queue_alerts(store, [synthetic_alert(0)], [WebhookTarget("w", "https://hooks.example.com/x")], now=0.0)
    first = store.claim_due(100.0, limit=1, lease_s=1.0)[0]
    second = store.claim_due(102.0, limit=1, lease_s=1.0)[0]  # first worker stalled past its lease
    assert second["id"] == first["id"]
    assert not store.finish_attempt(first["id"], ok=False, now=102.5, duration_s=0.1, status=503, error="HTTP 503",
                                    next_attempt_at=200.0, dead=False, lease=first["lease_until"])
    assert store.list_outbox()[0]["state"] == "sending"  # still the second worker's
    assert store.finish_attempt(second["id"], ok=True, now=102.6, duration_s=0.1, status=200, error=None,
                                next_attempt_at=None, dead=False, lease=second["lease_until"])
    assert store.list_outbox()[0]["state"] == "delivered"


# -- item 8: persistent receiver -----------------------------------------------------------------
def test_receiver_remembers_keys_across_restarts(tmp_path):
    db = tmp_path / "rx.db"
    body = json.dumps({"idempotency_key": "k1", "event": "alert.opened", "alert": {"key": "a1"}})
    headers = {"Idempotency-Key": "k1", "Content-Type": "application/json"}
    with LocalReceiver(db=db) as rx:
        assert httpx.post(rx.url, content=body, headers=headers).json()["duplicate"] is False
    with LocalReceiver(db=db, mode="slow", slow_s=0.3) as rx:  # restarted: the key is still known
        t = time.monotonic()
        r = httpx.post(rx.url, content=body, headers=headers, timeout=5)
        assert r.json()["duplicate"] is True and time.monotonic() - t >= 0.3
    c = receiver_counts(db)
    assert (c["unique_deliveries"], c["duplicate_sends"], c["requests"], c["alerts"]) == (1, 1, 2, 1)


def test_cli_receiver_subprocess_and_deliver_until_empty(tmp_path, no_allow):
    """The fault bench's path: receiver and deliverer as separate processes, counts read back."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT / "apps")])}
    env.pop("VERTICORE_WEBHOOK_ALLOW", None)
    cli = [sys.executable, "-m", "finance_sentiment.cli"]
    rx = subprocess.Popen([*cli, "receiver", "--port", "0", "--db", str(tmp_path / "rx.db"), "--mode", "ok", "--quiet"],
                          stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = rx.stdout.readline()
        url = re.search(r"http://\S+/hook", line).group(0)
        home = tmp_path / "home"
        out = subprocess.run([*cli, "queue-test-alerts", "--home", str(home), "-n", "5", "--url", url,
                              "--webhook-allow", "127.0.0.1"], capture_output=True, text=True, env=env)
        assert out.returncode == 0 and "queued 5" in out.stdout, out.stderr
        # without the operator allow-list the loopback receiver is refused (dead-lettered, never called)
        out = subprocess.run([*cli, "deliver", "--home", str(home), "--until-empty", "--max-seconds", "20",
                              "--webhook-allow", "127.0.0.1"], capture_output=True, text=True, env=env)
        assert out.returncode == 0 and "delivered=5" in out.stdout, out.stdout + out.stderr
    finally:
        rx.send_signal(signal.SIGTERM)
        rx.wait(timeout=10)
    stats = subprocess.run([*cli, "receiver-stats", "--db", str(tmp_path / "rx.db")], capture_output=True, text=True, env=env)
    c = json.loads(stats.stdout)
    assert c["unique_deliveries"] == 5 and c["duplicate_sends"] == 0 and c["alerts"] == 5


# -- item 9: SSRF ----------------------------------------------------------------------------------
BLOCKED = ["http://127.0.0.1:8700/hook", "http://localhost/hook", "http://[::1]/x", "http://10.0.0.5/x",
           "http://192.168.1.1/x", "http://172.16.0.1/x", "http://169.254.169.254/latest/meta-data/",
           "http://metadata.google.internal/computeMetadata/v1/", "http://2130706433/", "http://0x7f000001/",
           "http://0177.0.0.1/", "http://127.1/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/"]


@pytest.mark.parametrize("url", BLOCKED)
def test_webhook_urls_to_non_public_addresses_are_refused(url, no_allow):
    with pytest.raises(DataError, match="public|metadata|loopback"):
        validate_webhook_url(url)


def test_only_the_operator_allow_list_permits_private_receivers(monkeypatch, no_allow):
    # the dashboard-editable config cannot permit loopback, even by listing it in allow_hosts
    with pytest.raises(DataError, match="public"):
        config_from_dict({"allow_hosts": ["127.0.0.1"], "webhooks": [{"name": "w", "url": "http://127.0.0.1:9/x"}]})
    with pytest.raises(DataError, match="unknown key"):
        config_from_dict({"allow_private": True})
    monkeypatch.setenv("VERTICORE_WEBHOOK_ALLOW", "127.0.0.1, 10.0.0.0/8")
    assert validate_webhook_url("http://127.0.0.1:9/x") and validate_webhook_url("http://10.2.3.4/x")
    with pytest.raises(DataError, match="public"):
        validate_webhook_url("http://192.168.0.1/x")
    assert validate_webhook_url("http://x.example/y", allow=None)  # names are checked when sent


def test_send_time_check_resolves_and_connects_to_the_checked_address(tmp_path, monkeypatch, no_allow):
    """DNS rebinding: the name passed validation, but now resolves to loopback -> refused, never called.
    With loopback allowed, the request goes to the address that was checked (the name itself
    does not resolve at all), with the original Host header."""
    with LocalReceiver() as rx:
        port = rx.server.server_address[1]
        url = f"http://hooks.rebind.test:{port}/hook"
        validate_webhook_url(url)  # passes at config time (no DNS there)
        store = SQLiteStore(tmp_path / "o.db")
        target = WebhookTarget("w", url, timeout_s=2, max_attempts=3)
        _queue(store, 1, target)
        rep = Deliverer(store, [target], resolver=lambda host, p: ["93.184.216.34", "127.0.0.1"]).run_once()
        assert rep.dead == 1 and rx.requests == 0
        assert "not a public address" in store.list_outbox("dead")[0]["last_error"]
        monkeypatch.setenv("VERTICORE_WEBHOOK_ALLOW", LOOP)
        _queue(store, 1, target, prefix="u")
        rep = Deliverer(store, [target], resolver=lambda host, p: ["127.0.0.1"]).run_once()
        assert rep.delivered == 1 and rx.requests == 1


def test_receiver_error_bodies_are_not_stored(tmp_path, allow_loopback):
    with LocalReceiver(mode="fail") as rx:
        store = SQLiteStore(tmp_path / "o.db")
        target = WebhookTarget("w", rx.url, max_attempts=1)
        _queue(store, 1, target)
        Deliverer(store, [target]).run_once()
        row = store.list_outbox("dead")[0]
        assert row["last_error"] == "HTTP 503 Service Unavailable"
        assert all("unavailable\"" not in (a["error"] or "") for a in store.attempts_for(row["id"]))
    from finance_sentiment.dashboard.data import shown_error

    assert shown_error('HTTP 503: {"token": "s3cret"}') == "HTTP 503 Service Unavailable"  # rows stored before


RSS = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>W</title><item><guid>g1</guid><title>A</title></item>'
       b'<item><guid>g2</guid><title>B</title></item></channel></rss>')


class _Redirects(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        loc = {"/meta": "http://169.254.169.254/latest/meta-data/", "/hop": "/ok",
               "/private": "http://10.1.2.3/feed"}.get(self.path)
        m = re.fullmatch(r"/loop(\d+)", self.path)
        if m:
            loc = f"/loop{int(m.group(1)) + 1}"
        if loc:
            self.send_response(302)
            self.send_header("Location", loc)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(RSS)))
        self.end_headers()
        self.wfile.write(RSS)


def test_feed_redirects_are_rechecked_and_bounded(no_allow):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Redirects)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        with pytest.raises(DataError, match="public"):  # the feed host itself, without the allow-list
            fetch_feed(base + "/ok", timeout_s=2)
        assert len(fetch_feed(base + "/hop", timeout_s=2, allow="127.0.0.1")) == 2
        assert len(fetch_feed(base.replace("http", "HTTP") + "/ok", timeout_s=2, allow="127.0.0.1")) == 2
        for path in ("/meta", "/private"):
            t = time.monotonic()
            with pytest.raises(DataError, match="redirect target host .* not a public address"):
                fetch_feed(base + path, timeout_s=2, allow="127.0.0.1")
            assert time.monotonic() - t < 1.0  # refused, not attempted
        with pytest.raises(DataError, match="more than 5"):
            fetch_feed(base + "/loop0", timeout_s=2, allow="127.0.0.1")
    finally:
        srv.shutdown()
        srv.server_close()


def test_feed_sources_other_than_http_are_refused_not_read_as_paths(tmp_path):
    feed = tmp_path / "feed.xml"
    feed.write_bytes(RSS)
    for url in (f"file://{feed}", f"FILE://{feed}", "ftp://x.example/feed", "gopher://x.example/", f"//{feed}"):
        with pytest.raises(DataError, match="http or https"):
            fetch_feed(url)
    assert len(fetch_feed(feed)) == 2 and len(fetch_feed(str(feed))) == 2  # explicit paths still work


# -- item 11: markup injection -----------------------------------------------------------------------
EVIL = "![x](http://evil/t.png) <img src=x onerror=alert(1)> [click](http://evil/) $x$"


def _rendered(md: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").render(md)


def test_dashboard_markdown_shows_feed_titles_as_text():
    from finance_sentiment.dashboard.data import alert_label_md, evidence_heading_md, score_badge_html

    for md in (evidence_heading_md(EVIL, "negative", -0.5), alert_label_md({"id": 1, "state": "open", "summary": EVIL})):
        html = _rendered(md)
        assert "<img" not in html and "<a " not in html and "![" not in md
        assert "![x](http://evil/t.png)" in html and "&lt;img src=x onerror=alert(1)&gt;" in html  # literal text
    badge = score_badge_html("#fff", "negative", -0.2, ["<img src=x>", "m&a"], ["AAA"])
    assert "<img" not in badge and "&lt;img src=x&gt;" in badge and "m&amp;a" in badge


def test_slack_payload_escapes_titles_and_urls():
    alert = synthetic_alert(1)
    alert["summary"] = "surge <!channel> & <http://evil|click>"
    alert["evidence"][0].update(title="<http://evil.example|Click> & see http://evil.example/x", url="https://n.example/a|b>c")
    alert["series_key"] = "AAA`<@U1>"
    p = build_payload(alert, "opened", "slack", "k")
    text = json.dumps(p)
    blocks = "\n".join(b["text"]["text"] for b in p["blocks"][:2]) + p["blocks"][2]["elements"][0]["text"]
    assert "<!channel>" not in text and "<http://evil" not in blocks and "<@U1>" not in blocks
    assert "&lt;!channel&gt; &amp;" in p["text"]
    links = re.findall(r"<([^>|]*)\|", blocks)
    assert links == ["https://n.example/a%7Cb%3Ec"]  # the article link is the only link
    assert "http://evil.example/x" not in blocks  # no bare URL for Slack to auto-link
