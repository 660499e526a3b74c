"""Alert delivery: payloads (generic JSON, Slack-compatible), HMAC signing, and the outbox worker.

Guarantees:

* **Nothing lost.** Alerts are written to the ``outbox`` table in the same transaction as the
  alert row. A delivery is leased (``state='sending'``) while in flight; a worker that dies
  mid-send leaves an expired lease that the next worker picks up.
* **No duplicates at the receiver.** Every delivery carries an ``Idempotency-Key`` header (and
  ``idempotency_key`` in the JSON body) that stays the same across retries and re-sends, so a
  receiver that records keys processes each alert event once even when a retry follows a
  timed-out-but-processed request.
* **No duplicates from the sender.** Each row is claimed right before it is sent, under a lease
  longer than the request's overall deadline (``timeout_s``, enforced on the wall clock, not per
  read), so a second worker only takes over a row whose worker died.
* **Only public receivers.** Each send resolves the host, refuses loopback/private/link-local/
  metadata addresses unless the operator allow-list (``$VERTICORE_WEBHOOK_ALLOW``) permits them,
  and connects to the checked address. Receivers' response bodies are never stored or shown.
* **Bounded retries.** Timeouts, connection errors, 408/429 and 5xx are retried with exponential
  backoff and full jitter (``Retry-After`` honoured); other 4xx and exhausting ``max_attempts``
  move the delivery to ``dead`` (visible in the dashboard, re-sendable).

Signature: ``X-Verticore-Signature: sha256=<hex>`` = HMAC-SHA256(secret, f"{timestamp}.{body}")
with ``X-Verticore-Timestamp: <timestamp>``; receivers should reject stale timestamps.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Sequence

from verticore.errors import DataError
from verticore.netguard import AllowList, NetError, Resolver, allow_from_env, guarded_request
from verticore.text_safety import escape_slack, slack_link

from .config import DELIVERY_LEASE_S, WebhookTarget, validate_webhook_url
from .store import NewsStore

log = logging.getLogger("finance_sentiment.webhooks")

SIGNATURE_HEADER = "X-Verticore-Signature"
TIMESTAMP_HEADER = "X-Verticore-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_SEV_EMOJI = {"info": ":information_source:", "low": ":large_blue_circle:", "medium": ":large_orange_circle:",
              "high": ":red_circle:", "critical": ":rotating_light:"}


def http_reason(status: int) -> str:
    """``HTTP 503 Service Unavailable``: the status and its standard phrase, nothing from the receiver."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "non-standard status"
    return f"HTTP {status} {phrase}"


def idempotency_key(alert_key: str, event: str, target: str) -> str:
    """Stable key of one (alert episode, event, receiver): identical across retries and restarts."""
    return hashlib.sha256(f"{alert_key}\x1f{event}\x1f{target}".encode("utf-8")).hexdigest()[:32]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` HMAC of ``timestamp.body``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, header: str, *, max_age_s: float | None = 300.0,
                     now: float | None = None) -> bool:
    """Receiver-side check (constant-time), with an optional freshness window."""
    if max_age_s is not None:
        try:
            if abs((now or time.time()) - float(timestamp)) > max_age_s:
                return False
        except ValueError:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body), header or "")


def build_payload(alert: dict[str, Any], event: str, fmt: str, key: str, dashboard_url: str | None = None) -> dict[str, Any]:
    """The JSON body for one alert event in ``json`` (generic) or ``slack`` format."""
    evidence = [{k: e.get(k) for k in ("title", "url", "source", "published_at", "sentiment", "score")} for e in alert.get("evidence", [])]
    if fmt == "slack":
        # everything below comes from feeds or config: escaped for mrkdwn, no links but the article URL
        sev = alert["severity"]
        head = f"{_SEV_EMOJI.get(sev, '')} *[{escape_slack(sev.upper())}] {escape_slack(alert['summary'])}*".strip()
        lines = []
        for e in evidence[:5]:
            link = slack_link(e.get("url"), e.get("title") or "")
            lines.append(f"• {link} ({escape_slack(e.get('sentiment'))}, {float(e.get('score') or 0.0):+.2f})")
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": head}}]
        if lines and event != "resolved":
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
        ctx = (f"rule `{_code(alert['rule'])}` · {escape_slack(alert['series_kind'])} `{_code(alert['series_key'])}`"
               f" · {escape_slack(event)}")
        if dashboard_url:
            ctx += f" · {slack_link(dashboard_url, 'dashboard')}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": ctx}]})
        return {"text": escape_slack(f"[{sev.upper()}] {alert['summary']}"), "blocks": blocks, "idempotency_key": key}
    return {"idempotency_key": key, "event": f"alert.{event}", "alert": {
        "key": alert["alert_key"], "rule": alert["rule"], "series": {"kind": alert["series_kind"], "key": alert["series_key"]},
        "direction": alert["direction"], "severity": alert["severity"], "state": alert["state"],
        "opened_at": alert["opened_at"], "resolved_at": alert.get("resolved_at"), "summary": alert["summary"],
        "stats": {"window_count": alert["window_count"], "hit_count": alert["hit_count"], "share": alert["share"],
                  "baseline": alert["baseline"], "z": alert["z"]},
        "evidence": evidence}}


def _code(text: Any) -> str:
    """Text for inside a Slack `code` span: escaped, and no backtick to close it early."""
    return escape_slack(str(text).replace("`", "'"), defang_urls=False)


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform(0, min(max, base * 2**(attempt-1))), at least 10% of the cap."""
    cap = min(max_s, base_s * (2 ** max(attempt - 1, 0)))
    r = (rng or random).random()
    return max(cap * 0.1, cap * r)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0

    def __iadd__(self, other: "DeliveryReport") -> "DeliveryReport":
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead
        return self


class Deliverer:
    """Drains the outbox: POSTs due deliveries, records every attempt, schedules retries, dead-letters.

    ``targets`` supplies secrets, timeouts and retry policy by target name; a row whose target is
    no longer configured is still delivered to its recorded URL with default policy (nothing is lost).

    Rows are claimed one at a time, right before each is sent, under a ``lease_s`` lease; every send
    has an overall deadline of the target's ``timeout_s`` (connect + request + answer, however slowly
    the receiver trickles), which must be shorter than the lease, so a live worker never loses a row
    to a second worker. Each send re-resolves the host, refuses non-public addresses unless the
    operator allow-list (``allow`` + ``$VERTICORE_WEBHOOK_ALLOW``) permits them, and connects to the
    address it checked. ``allow_hosts`` (from the config) can only narrow that further.
    """

    def __init__(self, store: NewsStore, targets: Sequence[WebhookTarget], *, allow_hosts: Sequence[str] | None = None,
                 allow: str | Sequence[str] | AllowList | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, lease_s: float = DELIVERY_LEASE_S,
                 resolver: Resolver | None = None) -> None:
        for t in targets:
            if t.timeout_s >= lease_s:
                raise DataError(f"webhook {t.name!r}: timeout_s ({t.timeout_s:g}s) must be shorter than the delivery "
                                f"lease ({lease_s:g}s); otherwise a second worker re-sends while the first still waits")
        self.store = store
        self.targets = {t.name: t for t in targets}
        self.allow_hosts = list(allow_hosts or [])
        self.allow = allow_from_env(allow)
        self.clock = clock
        self.rng = rng or random.Random()
        self.lease_s = lease_s
        self.resolver = resolver
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, limit: int = 50) -> DeliveryReport:
        """Attempt up to ``limit`` deliveries that are due now, claiming each just before sending it."""
        report = DeliveryReport()
        start = self.clock()  # rows rescheduled during this call are due after it: one attempt per row per call
        for _ in range(limit):
            rows = self.store.claim_due(self.clock(), limit=1, lease_s=self.lease_s, due_by=start)
            if not rows:
                break
            report += self._deliver(rows[0])
        return report

    def drain(self, max_rounds: int = 100, sleep: Callable[[float], None] = time.sleep, max_wait_s: float = 1.0) -> DeliveryReport:
        """Keep delivering until nothing is pending (or ``max_rounds``); sleeps until the next due retry."""
        total = DeliveryReport()
        for _ in range(max_rounds):
            total += self.run_once()
            if not self.pending():
                break
            sleep(min(max(self.next_due() - self.clock(), 0.01), max_wait_s))
        return total

    def pending(self) -> list[dict[str, Any]]:
        """Rows not finished yet (waiting for a retry, or leased by some worker)."""
        return self.store.list_outbox("pending", limit=1000) + self.store.list_outbox("sending", limit=1000)

    def next_due(self) -> float:
        """When the next row becomes claimable: its retry time, or the end of another worker's lease."""
        rows = self.pending()
        if not rows:
            return self.clock()
        return min((r["lease_until"] or r["next_attempt_at"]) if r["state"] == "sending" else r["next_attempt_at"]
                   for r in rows)

    def _target(self, row: dict[str, Any]) -> WebhookTarget:
        target = self.targets.get(row["target"])
        if target is None:  # target removed from the config: default policy, deadline inside the lease
            target = WebhookTarget(row["target"], row["url"])
            target.timeout_s = min(target.timeout_s, self.lease_s / 2)
        return target

    def _deliver(self, row: dict[str, Any]) -> DeliveryReport:
        target = self._target(row)
        attempt = int(row["attempts"]) + 1
        body = json.dumps(row["payload"], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        ts = str(int(self.clock()))
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: row["idempotency_key"], TIMESTAMP_HEADER: ts,
                   "User-Agent": "verticore-finance-sentiment/0.1", "X-Verticore-Attempt": str(attempt)}
        secret = target.resolved_secret()
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, ts, body)
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        t0 = time.perf_counter()
        try:
            validate_webhook_url(row["url"], self.allow_hosts or None, allow=self.allow)
            resp = guarded_request("POST", row["url"], allow=self.allow, deadline_s=target.timeout_s, headers=headers,
                                   body=body, resolver=self.resolver, what="webhook URL")
            status = resp.status
            if 200 <= status < 300:
                ok, retryable = True, False
            else:
                ok = False
                retryable = status in (408, 425, 429) or status >= 500
                error = http_reason(status)  # never the receiver's body: it is shown in the dashboard
                ra = resp.headers.get("retry-after", "")
                if ra.strip().isdigit():
                    retry_after = float(ra.strip())
        except NetError as exc:
            ok, retryable = False, True
            error = f"timeout after {target.timeout_s:g}s" if exc.timeout else str(exc)
        except DataError as exc:  # refused URL / address: not retryable, the reason is ours
            ok, retryable, error = False, False, str(exc)
        except Exception as exc:  # anything unexpected: not retryable, visible, re-sendable
            ok, retryable, error = False, False, f"unexpected {type(exc).__name__} while sending"
            log.exception("delivery %s failed unexpectedly", row["id"])
        duration = time.perf_counter() - t0
        now = self.clock()
        lease = row.get("lease_until")
        if ok:
            self.store.finish_attempt(row["id"], ok=True, now=now, duration_s=duration, status=status, error=None,
                                      next_attempt_at=None, dead=False, lease=lease)
            log.info("delivered %s to %s (attempt %d)", row["event"], row["target"], attempt)
            return DeliveryReport(delivered=1)
        dead = not retryable or attempt >= target.max_attempts
        delay = backoff_delay(attempt, target.backoff_base_s, target.backoff_max_s, self.rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, target.backoff_max_s))
        held = self.store.finish_attempt(row["id"], ok=False, now=now, duration_s=duration, status=status, error=error,
                                         next_attempt_at=None if dead else now + delay, dead=dead, lease=lease)
        if not held:
            log.warning("delivery %s: lease lost to another worker while sending; left to it", row["id"])
            return DeliveryReport(retried=1)
        if dead:
            log.error("dead-lettered %s to %s after %d attempt(s): %s", row["event"], row["target"], attempt, error)
            return DeliveryReport(dead=1)
        log.warning("delivery to %s failed (attempt %d/%d): %s; retrying in %.1fs", row["target"], attempt,
                    target.max_attempts, error, delay)
        return DeliveryReport(retried=1)

    # -- background ------------------------------------------------------------------
    def start(self, interval_s: float = 1.0) -> None:
        """Deliver in a daemon thread every ``interval_s`` until :meth:`stop`."""
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception as exc:  # keep the worker alive; the row stays leased and is retried
                    log.error("delivery worker error: %s", exc)
                self._stop.wait(interval_s)

        self._thread = threading.Thread(target=loop, name="webhook-deliverer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


# -- synthetic alerts (tests, fault benches: exercise delivery without running models) ---------------
def synthetic_alert(i: int, prefix: str = "synthetic", now: float | None = None) -> dict[str, Any]:
    """A well-formed alert episode ``{prefix}|entity|SYN{i}`` (what the detector would store)."""
    t = time.time() if now is None else now
    return {"alert_key": f"{prefix}|entity|SYN{i}", "rule": "synthetic", "series_kind": "entity", "series_key": f"SYN{i}",
            "direction": "negative", "severity": "high", "state": "open", "opened_at": t, "updated_at": t,
            "resolved_at": None, "window_count": 6, "hit_count": 5, "share": 0.83, "baseline": 0.1, "z": 6.0,
            "evidence": [{"item": i, "title": f"Synthetic headline {i}", "url": f"https://news.example/{i}", "source": "synthetic",
                          "published_at": t, "sentiment": "negative", "score": -0.9}],
            "summary": f"synthetic negative surge {i}"}


def queue_alerts(store: NewsStore, alerts: Sequence[dict[str, Any]], targets: Sequence[WebhookTarget], *,
                 event: str = "opened", now: float | None = None) -> int:
    """Store each alert and its outbox rows in one transaction (as the monitor does); returns rows queued."""
    t = time.time() if now is None else now
    queued = 0
    for alert in alerts:
        with store.transaction():
            alert_id = store.upsert_alert(alert)
            for target in targets:
                key = idempotency_key(alert["alert_key"], event, target.name)
                queued += store.enqueue(alert_id, event, target.name, target.url, target.format,
                                        build_payload(alert, event, target.format, key), key, t)
    return queued
