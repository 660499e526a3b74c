"""Alertmanager-style notification policy: labels, grouping, silences, inhibition, resolved notices.

Detection (:mod:`finance_sentiment.detect`) records alert *episodes*; this module decides which
*notifications* go to the webhooks, and when:

* every alert has **labels** (:func:`labels_of`): ``rule``, ``kind`` (``entity``/``topic``/``market``),
  ``entity``, ``topic``, ``signal`` (``share``/``volume``), ``severity``, ``direction``;
* alerts with equal ``group_by`` labels form a **group**; the group is notified ``group_wait`` after
  its first alert opened, then at most once per ``group_interval`` when its alerts changed, and
  every ``repeat_interval`` while it keeps firing; resolved alerts are sent once (``send_resolved``);
* a **silence** (equality matchers, a time box, author and comment) mutes matching alerts;
* an **inhibit rule** mutes target alerts while a matching source alert fires (a market-wide surge
  explains the per-company alerts it causes).

Muted alerts are still recorded (``alerts.silenced_by`` / ``alerts.inhibited_by``), only not notified.

Every decision is made in *event time* on a grid anchored at the group's first alert
(``start + group_wait + k * group_interval``), from the alerts' own open/resolve times, so the same
stream gives the same notifications and the same idempotency keys whether it arrives in one batch or
many, and in one process or after a restart. The group state is saved next to the detector state
(same transaction, same generation counter).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from verticore.errors import DataError

from .config import LABELS, InhibitRule, NotifyPolicy, check_labels, parse_duration

if TYPE_CHECKING:
    from .store import NewsStore

MAX_SILENCE_S = 366 * 86400.0
MAX_STEPS = 10_000  # slots examined per flush (a very long quiet gap is skipped, not walked)


def labels_of(alert: dict[str, Any]) -> dict[str, str]:
    """The labels of an alert row (see the module docstring); absent labels are ``""``."""
    kind = "market" if alert["series_kind"] == "all" else str(alert["series_kind"])
    return {"rule": str(alert["rule"]), "kind": kind,
            "entity": str(alert["series_key"]) if kind == "entity" else "",
            "topic": str(alert["series_key"]) if kind == "topic" else "",
            "signal": str(alert.get("signal") or "share"), "severity": str(alert["severity"]),
            "direction": str(alert["direction"])}


def matches(labels: dict[str, str], matchers: dict[str, str]) -> bool:
    return all(labels.get(k, "") == v for k, v in matchers.items())


def group_key(labels: dict[str, str], group_by: Iterable[str]) -> str:
    """``rule=neg,kind=entity`` (in ``group_by`` order); ``*`` when grouping by nothing (one group)."""
    parts = [f"{k}={labels.get(k, '')}" for k in group_by]
    return ",".join(parts) if parts else "*"


def notification_key(gkey: str, start: float, slot: float, target: str) -> str:
    """Idempotency key of one notification: group, the group's start, the slot's time and the
    receiver; all from data, so retries, restarts and other batch splits reuse it."""
    raw = f"{gkey}\x1f{start:.3f}\x1f{slot:.3f}\x1f{target}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


# -- silences ---------------------------------------------------------------------------------------
@dataclass
class Silence:
    """A time-boxed mute: alerts whose labels equal every matcher are not notified in ``[starts_at, ends_at)``."""

    matchers: dict[str, str]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    id: int | None = None
    created_at: float | None = None
    expired_at: float | None = None

    def active_at(self, t: float) -> bool:
        return self.starts_at <= t < self.ends_at

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": self.matchers, "starts_at": self.starts_at, "ends_at": self.ends_at,
                "created_by": self.created_by, "comment": self.comment, "created_at": self.created_at,
                "expired_at": self.expired_at}


def parse_matchers(items: Iterable[str]) -> dict[str, str]:
    """``["entity=AAPL", "rule=neg"]`` -> matchers; :class:`DataError` for a malformed one."""
    out: dict[str, str] = {}
    for it in items:
        k, sep, v = str(it).partition("=")
        if not sep or not k.strip():
            raise DataError(f"matcher {it!r} must look like label=value (labels: {', '.join(LABELS)})")
        if k.strip() in out:
            raise DataError(f"matcher label {k.strip()!r} given twice")
        out[k.strip()] = v.strip()
    return out


def new_silence(matchers: Any, *, created_by: Any, comment: Any, starts_at: Any = None, ends_at: Any = None,
                duration: Any = None, now: float | None = None) -> Silence:
    """Validate a silence: known labels, non-empty values, an author and a comment, and an end after
    its start (from ``ends_at`` or ``duration``) that is not already past. Raises :class:`DataError`."""
    now = time.time() if now is None else float(now)
    m = check_labels(matchers, "silence matchers")
    if not isinstance(created_by, str) or not created_by.strip():
        raise DataError("a silence needs an author (created_by)")
    if not isinstance(comment, str) or not comment.strip():
        raise DataError("a silence needs a comment saying why")
    from .items import parse_timestamp

    start = now if starts_at is None else parse_timestamp(starts_at)
    if (ends_at is None) == (duration is None):
        raise DataError("give a silence either an end time or a duration (not both, not neither)")
    end = parse_timestamp(ends_at) if ends_at is not None else start + parse_duration(duration, "silence duration")
    if end <= start:
        raise DataError(f"silence ends ({_iso(end)}) before or when it starts ({_iso(start)})")
    if end <= now:
        raise DataError(f"silence would end in the past ({_iso(end)})")
    if end - start > MAX_SILENCE_S:
        raise DataError("a silence may last at most 366 days")
    return Silence(m, start, end, created_by.strip()[:200], comment.strip()[:2000], created_at=now)


def _iso(t: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- notifications ----------------------------------------------------------------------------------
@dataclass
class Notification:
    """One notification of a group: ``firing`` and ``resolved`` are alert keys."""

    group: str
    labels: dict[str, str]
    start: float
    slot: float
    seq: int
    event: str  # opened | updated | repeat | resolved
    firing: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    def key(self, target: str) -> str:
        return notification_key(self.group, self.start, self.slot, target)


class Notifier:
    """Groups alert events and decides notifications (see the module docstring). JSON state."""

    def __init__(self, policy: NotifyPolicy | None = None, inhibit_rules: Iterable[InhibitRule] = ()) -> None:
        self.policy = policy or NotifyPolicy()
        self.inhibit_rules = list(inhibit_rules)
        self.groups: dict[str, dict[str, Any]] = {}
        self.clock: float = -math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "group_by": self.policy.group_by, "groups": self.groups,
                "clock": self.clock if math.isfinite(self.clock) else None}

    def load_dict(self, data: dict[str, Any] | None) -> None:
        """Restore saved state; groups made under another ``group_by`` are kept (they finish as they were)."""
        if not data or data.get("version") != 1:
            return
        self.groups = data.get("groups") or {}
        self.clock = float(data["clock"]) if data.get("clock") is not None else -math.inf

    # -- events ------------------------------------------------------------------------------
    def add(self, alert: dict[str, Any], kind: str) -> None:
        """Record an alert event (``opened``/``updated``/``resolved``) in its group."""
        labels = labels_of(alert)
        gkey = group_key(labels, self.policy.group_by)
        key = alert["alert_key"]
        g = next((g for g in self.groups.values() if key in g["members"]), None)
        if g is None:
            if kind != "opened":
                return  # an episode this notifier never saw open (state from before grouping): nothing to resolve
            g = self.groups.get(gkey)
            if g is None:
                start = float(alert["opened_at"])
                g = self.groups[gkey] = {"labels": {k: labels[k] for k in self.policy.group_by}, "start": start,
                                         "last_eval": None, "last_sent": None, "seq": 0, "members": {}}
            # joined after the group's last look: it changes the group from the next slot on
            seen = float(alert["opened_at"])
            if g["last_eval"] is not None and seen <= g["last_eval"]:
                seen = g["last_eval"] + 1e-3
            g["members"][key] = {"opened_at": float(alert["opened_at"]), "resolved_at": None, "seen": seen,
                                 "notified": None}
        m = g["members"][key]
        if kind == "resolved":
            r = float(alert.get("resolved_at") or alert["updated_at"])
            if g["last_eval"] is not None and r <= g["last_eval"]:
                r = g["last_eval"] + 1e-3
            m["resolved_at"] = r

    # -- decisions ---------------------------------------------------------------------------
    def _slot_of(self, g: dict[str, Any], t: float) -> float:
        s0 = g["start"] + self.policy.group_wait
        gi = self.policy.group_interval
        if t <= s0 or gi <= 0:
            return max(t, s0)
        return s0 + math.ceil((t - s0) / gi - 1e-9) * gi

    def _next_slot(self, g: dict[str, Any], store: "NewsStore | None") -> float | None:
        last = g["last_eval"]
        if last is None:
            return g["start"] + self.policy.group_wait
        cands: list[float] = []
        firing_notified = False
        for key, m in g["members"].items():
            cands.append(m["seen"])
            if m["resolved_at"] is not None:
                cands.append(m["resolved_at"])
            if m["notified"] == "firing" and m["resolved_at"] is None:
                firing_notified = True
            if m["notified"] is None and m["resolved_at"] is None and store is not None:
                cands.extend(self._unmute_times(key, last, store))  # a muted alert may become notifiable
        rep = self.policy.repeat_interval
        if firing_notified and rep > 0 and g["last_sent"] is not None:
            due = g["last_sent"] + rep
            if math.isfinite(self.clock) and self.clock - due > rep:  # long gap (monitor was down): one repeat, not dozens
                due = g["last_sent"] + math.floor((self.clock - g["last_sent"]) / rep) * rep
            cands.append(due)
        slots = [self._slot_of(g, t) for t in cands if t > last]
        slots = [s for s in slots if s > last]
        return min(slots) if slots else None

    def _unmute_times(self, key: str, after: float, store: "NewsStore") -> list[float]:
        """When a muted alert's silences end or its inhibitors resolve (times after ``after``)."""
        out = []
        row = store.get_alert(key)
        if row is None:
            return out
        labels = labels_of(row)
        for s in store.silences_overlapping(after):
            if matches(labels, s.matchers):
                out.append(s.ends_at)
        for src in self._inhibitors(labels, key, after, store):
            if src.get("resolved_at") is not None:
                out.append(float(src["resolved_at"]))
        return [t for t in out if t > after]

    def _inhibitors(self, labels: dict[str, str], key: str, at: float, store: "NewsStore") -> list[dict[str, Any]]:
        out = []
        rules = [r for r in self.inhibit_rules if matches(labels, r.target_match)]
        if not rules:
            return out
        for src in store.alerts_firing_at(at):
            if src["alert_key"] == key:
                continue
            sl = labels_of(src)
            for r in rules:
                if matches(sl, r.source_match) and all(sl.get(e, "") == labels.get(e, "") for e in r.equal):
                    out.append(src)
                    break
        return out

    def muted(self, alert: dict[str, Any], at: float, store: "NewsStore") -> tuple[int | None, str | None]:
        """``(silence id, inhibiting alert key)`` muting ``alert`` at time ``at`` (``None`` where not)."""
        labels = labels_of(alert)
        sil = next((s.id for s in store.silences_overlapping(at) if s.active_at(at) and matches(labels, s.matchers)), None)
        inh = self._inhibitors(labels, alert["alert_key"], at, store)
        return sil, (inh[0]["alert_key"] if inh else None)

    def flush(self, clock: float, store: "NewsStore") -> list[Notification]:
        """Notifications due up to event time ``clock`` (muting marks are written to ``store``)."""
        self.clock = max(self.clock, clock)
        out: list[Notification] = []
        for gkey in sorted(self.groups):
            g = self.groups[gkey]
            for _ in range(MAX_STEPS):
                slot = self._next_slot(g, store)
                if slot is None or slot > self.clock:
                    break
                n = self._evaluate(gkey, g, slot, store)
                if n is not None:
                    out.append(n)
                if not g["members"]:
                    del self.groups[gkey]
                    break
        return out

    def _evaluate(self, gkey: str, g: dict[str, Any], slot: float, store: "NewsStore") -> Notification | None:
        g["last_eval"] = slot
        firing, resolved, new = [], [], False
        for key, m in sorted(g["members"].items(), key=lambda kv: (kv[1]["opened_at"], kv[0])):
            if m["seen"] > slot:
                continue
            row = store.get_alert(key)
            if m["resolved_at"] is not None and m["resolved_at"] <= slot:
                if m["notified"] == "firing" and self.policy.send_resolved:
                    resolved.append(key)
                continue
            if row is None:
                continue
            sil, inh = self.muted(row, slot, store)
            store.mark_alert_muted(key, sil, inh)
            if sil is None and inh is None:
                firing.append(key)
                new = new or m["notified"] != "firing"
        repeat = (bool(firing) and self.policy.repeat_interval > 0 and g["last_sent"] is not None
                  and slot - g["last_sent"] >= self.policy.repeat_interval - 1e-9)
        gone = [k for k, m in g["members"].items() if m["resolved_at"] is not None and m["resolved_at"] <= slot]
        send = new or bool(resolved) or repeat
        note = None
        if send:
            g["seq"] += 1
            g["last_sent"] = slot
            event = "opened" if new else ("resolved" if resolved and not firing else ("updated" if resolved else "repeat"))
            note = Notification(gkey, dict(g["labels"]), g["start"], slot, g["seq"], event, firing, resolved)
            for k in firing:
                g["members"][k]["notified"] = "firing"
        for k in gone:
            del g["members"][k]
        return note


# -- payloads ---------------------------------------------------------------------------------------
def group_payload(note: Notification, alerts: dict[str, dict[str, Any]], fmt: str, key: str,
                  dashboard_url: str | None = None) -> dict[str, Any]:
    """Body of a group notification. JSON: ``event`` (``alert.opened``/``updated``/``repeat``/``resolved``),
    ``group`` (key, labels, sequence), ``alerts`` (each with ``status`` firing/resolved) and ``alert``
    (the first one, in the single-alert shape receivers already read). Slack: one message listing them."""
    from .webhooks import build_payload

    rows = [(alerts[k], "firing") for k in note.firing if k in alerts] + \
           [(alerts[k], "resolved") for k in note.resolved if k in alerts]
    if not rows:
        raise DataError(f"notification for group {note.group!r} has no alerts")
    primary, status = rows[0]
    single_event = "resolved" if status == "resolved" else "opened"
    body = build_payload(primary, single_event, fmt, key, dashboard_url)
    if fmt == "slack":
        if len(rows) > 1 or note.event in ("updated", "repeat"):
            from verticore.text_safety import escape_slack

            head = (f"*{len(note.firing)} firing, {len(note.resolved)} resolved* · group "
                    f"`{escape_slack(note.group.replace('`', chr(39)), defang_urls=False)}` · {escape_slack(note.event)}")
            lines = [f"• [{escape_slack(st.upper())}] {escape_slack(a['summary'])}" for a, st in rows[:20]]
            body["blocks"] = [{"type": "section", "text": {"type": "mrkdwn", "text": head}},
                              {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}] + body["blocks"][-1:]
            body["text"] = escape_slack(f"{len(note.firing)} firing, {len(note.resolved)} resolved: {primary['summary']}")
        return body
    body["event"] = f"alert.{note.event}"
    body["group"] = {"key": note.group, "labels": note.labels, "sequence": note.seq, "started_at": note.start,
                     "notified_at": note.slot}
    body["alerts"] = [{**_brief(a), "status": st} for a, st in rows]
    return body


def _brief(a: dict[str, Any]) -> dict[str, Any]:
    return {"key": a["alert_key"], "labels": labels_of(a), "summary": a["summary"], "reason": a.get("reason") or "",
            "opened_at": a["opened_at"], "resolved_at": a.get("resolved_at"),
            "stats": {"window_count": a["window_count"], "hit_count": a["hit_count"], "share": a["share"],
                      "baseline": a["baseline"], "z": a["z"]}}


def silence_from_row(r: dict[str, Any]) -> Silence:
    return Silence(json.loads(r["matchers"]) if isinstance(r["matchers"], str) else r["matchers"], float(r["starts_at"]),
                   float(r["ends_at"]), r["created_by"], r["comment"], int(r["id"]), r["created_at"], r.get("expired_at"))
