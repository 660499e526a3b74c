"""Surge detection: rolling windows per entity / topic, each series against its own baseline.

For every (rule, series) the detector keeps the items of the last ``window_minutes`` (event
time) and an exponentially-weighted baseline of the series' share of negative (or positive)
items, fed by items as they *leave* the window (so a burst never inflates its own baseline while
it is being tested). Items that were in a hot window enter the baseline at a quarter of the weight
(:data:`EPISODE_BASELINE_WEIGHT`): at full weight, one 6-item burst on a quiet company lifted its
baseline from 15% to 33% and hid its next burst (5 of 5 negative, z 2.9) for days; left out entirely,
a company whose news is *usually* negative would alert forever instead of learning its own normal
(its windows are hot against the prior, so nothing would ever be learned). The baseline is shrunk
towards ``prior_share`` with weight ``prior_weight`` pseudo-items, which is what makes a brand-new or
quiet series behave sensibly.

A window is *hot* when it holds at least ``min_count`` items, their share reaches ``min_share``
and the one-sided binomial z-score ``(k - n p0) / sqrt(n p0 (1 - p0))`` reaches ``z_threshold``.
``k`` counts the items whose top label is the rule's direction (``evidence: label``), or sums each
item's calibrated probability of that direction (``evidence: probability``: a negative story the
model reads as 45% negative and 50% neutral still counts 0.45, instead of 0); the baseline is kept
in the same unit.
The first hot window opens an episode (one alert); further hot windows update it; the episode
resolves after ``resolve_minutes`` without a hot window, and a cooldown then suppresses a new
episode for the same series. Both run on event time: the cooldown counts from the episode's end
(its last hot window + ``resolve_minutes``), not from whenever a quiet series' next item notices it.

Event time never runs ahead of the clock: when the caller passes ``now`` (the pipeline always
does), a series' time is capped at ``now + max_skew_s``, so one item stamped 2099 cannot evict
every later item and silence the series; state saved by older code with such a time is pulled
back on the next call. Late (out-of-order) items older than the window go straight into the
baseline. An episode's ``alert_key`` is ``rule|kind|key|<start>`` where ``<start>`` is the
publication time of the first negative (positive) item of the window that opened it: the same
items always give the same key, whichever process detects them.

Rules with ``signal: volume`` test the *number* of items instead of their sentiment (a 10x spike of
mixed news, which the share test ignores): items leaving the window are counted per window-sized
bucket of the trailing ``baseline_hours``; the baseline rate (items/hour) is the 10%-trimmed mean of
those buckets (zero buckets included, so quiet stretches count; the trimming keeps one earlier burst
from inflating it), shrunk towards ``prior_rate`` with weight ``prior_hours``. A window is hot when it
holds at least ``min_count`` items, at least ``factor`` times the baseline expectation, and the
Poisson upper-tail p-value ``P(X >= n | rate)`` is at most ``max_p``.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from .config import Rule
from .items import MAX_FUTURE_SKEW_S, ScoredItem

MAX_EVIDENCE = 10
#: Weight of an item from an alerted (hot) window in a share rule's baseline (see the module docstring).
EPISODE_BASELINE_WEIGHT = 0.25


@dataclass
class Obs:
    ts: float
    rowid: int
    hit: bool
    score: float
    sentiment: str
    title: str
    url: str
    source: str
    in_episode: bool = False
    p: float | None = None  # the item's probability of the rule's direction, when the model gave one

    def to_dict(self) -> list[Any]:
        return [self.ts, self.rowid, int(self.hit), self.score, self.sentiment, self.title, self.url, self.source,
                int(self.in_episode), self.p]

    @classmethod
    def from_dict(cls, d: list[Any]) -> "Obs":
        p = d[9] if len(d) > 9 and d[9] is not None else None  # state saved before `evidence` existed has no p
        return cls(float(d[0]), int(d[1]), bool(d[2]), float(d[3]), str(d[4]), str(d[5]), str(d[6]), str(d[7]), bool(d[8]),
                   float(p) if p is not None else None)

    def weight(self, evidence: str) -> float:
        """How much this item counts towards a share rule's hits (see the module docstring)."""
        if evidence == "probability" and self.p is not None:
            return self.p
        return 1.0 if self.hit else 0.0

    def evidence(self) -> dict[str, Any]:
        return {"item": self.rowid, "title": self.title, "url": self.url, "source": self.source, "published_at": self.ts,
                "sentiment": self.sentiment, "score": round(self.score, 4)}


@dataclass
class SeriesState:
    window: deque = field(default_factory=deque)
    base_hits: float = 0.0
    base_n: float = 0.0
    base_ts: float | None = None
    last_ts: float = 0.0
    episode: dict[str, Any] | None = None
    cooldown_until: float = 0.0
    last_start: int = 0  # start second of the last episode (keeps alert keys of later episodes distinct)
    counts: dict[str, int] = field(default_factory=dict)  # volume rules: bucket index -> items that left the window

    def to_dict(self) -> dict[str, Any]:
        d = {"window": [o.to_dict() for o in self.window], "base_hits": self.base_hits, "base_n": self.base_n,
             "base_ts": self.base_ts, "last_ts": self.last_ts, "episode": self.episode, "cooldown_until": self.cooldown_until,
             "last_start": self.last_start}
        if self.counts:
            d["counts"] = self.counts
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SeriesState":
        return cls(deque(Obs.from_dict(o) for o in d["window"]), float(d["base_hits"]), float(d["base_n"]),
                   d.get("base_ts"), float(d.get("last_ts", 0.0)), d.get("episode"), float(d.get("cooldown_until", 0.0)),
                   int(d.get("last_start", 0)), {str(k): int(v) for k, v in (d.get("counts") or {}).items()})

    def pull_back(self, cap: float, cooldown_s: float) -> None:
        """Bring times that ran ahead of the clock (``cap``) back to it, so the series is live again.
        (Every time in the state is at most ``last_ts`` (+ cooldown), so checking it is enough.)"""
        if self.last_ts <= cap:
            return
        self.last_ts = cap
        for o in self.window:
            o.ts = min(o.ts, cap)
        if self.base_ts is not None and self.base_ts > cap:
            self.base_ts = cap
        if self.episode is not None:
            self.episode["last_hot"] = min(float(self.episode["last_hot"]), cap)
        self.cooldown_until = min(self.cooldown_until, cap + cooldown_s)


@dataclass
class AlertEvent:
    """``kind`` is ``opened``, ``updated`` or ``resolved``; ``alert`` has the ``alerts`` table columns."""

    kind: str
    alert: dict[str, Any]


@dataclass
class WindowStats:
    """``baseline`` is a share for share rules and items/hour for volume rules."""

    n: int
    hits: int  # items whose top label is the rule's direction (what the alert text shows)
    share: float
    baseline: float
    z: float
    hot: bool
    ratio: float = 0.0  # volume: n / expected
    p: float = 1.0  # volume: Poisson upper-tail p-value


def poisson_sf(n: int, mu: float) -> float:
    """``P(X >= n)`` for ``X ~ Poisson(mu)``, accurate for tiny tails (summed upwards in log space)."""
    if n <= 0:
        return 1.0
    if mu <= 0:
        return 0.0
    if n <= mu:  # not a tail: 1 - P(X < n) is accurate here
        term = math.exp(-mu)
        cdf = 0.0
        for k in range(n):
            cdf += term
            term *= mu / (k + 1)
        return min(1.0, max(0.0, 1.0 - cdf))
    log_term = -mu + n * math.log(mu) - math.lgamma(n + 1)
    total, k, rel = 0.0, n, 1.0
    while rel > 1e-15 and k < n + 100_000:
        rel *= 1.0 if k == n else mu / k
        total += rel
        k += 1
    return min(1.0, math.exp(log_term) * total)


def _hours(minutes: float) -> str:
    return f"{minutes / 60.0:g} h" if minutes >= 60 else f"{minutes:g} min"


class SurgeDetector:
    """Event-time surge detector over scored items (see module docstring). State is JSON-serialisable."""

    def __init__(self, rules: Iterable[Rule], *, max_skew_s: float = MAX_FUTURE_SKEW_S) -> None:
        self.rules = [r for r in rules if r.enabled]
        self.states: dict[str, SeriesState] = {}
        self.max_skew_s = float(max_skew_s)
        # earliest event time this detector has seen: how much history a volume baseline covers (a
        # series with no mentions since then has a low rate; a fresh monitor has no history yet)
        self.first_ts: float | None = None

    # -- state -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "rules": [r.name for r in self.rules], "states": {k: s.to_dict() for k, s in self.states.items()},
                "first_ts": self.first_ts}

    def load_dict(self, data: dict[str, Any] | None) -> None:
        """Restore state saved by :meth:`to_dict` (states of rules no longer configured are dropped)."""
        if not data or data.get("version") != 1:
            return
        names = {r.name for r in self.rules}
        self.states = {k: SeriesState.from_dict(v) for k, v in data.get("states", {}).items() if k.split("|", 1)[0] in names}
        self.first_ts = data.get("first_ts")

    @staticmethod
    def series_of(rule: Rule, item: ScoredItem) -> list[tuple[str, str]]:
        if rule.series == "entity":
            return [("entity", e) for e in item.entities]
        if rule.series == "topic":
            return [("topic", t) for t in item.topics]
        return [("all", "*")]

    # -- core ------------------------------------------------------------------------
    def observe(self, items: Iterable[ScoredItem], now: float | None = None) -> list[AlertEvent]:
        """Feed scored, non-duplicate items (any order; processed by ``published_at``).

        ``now`` is the processing clock: no series' time goes past ``now + max_skew_s`` (without it,
        item times are trusted as they are, e.g. in offline analyses)."""
        cap = math.inf if now is None else float(now) + self.max_skew_s
        events: list[AlertEvent] = []
        horizon = max((r.baseline_hours * 3600.0 + r.window_minutes * 60.0 for r in self.rules), default=0.0) + self.max_skew_s
        for it in sorted((i for i in items if not i.is_duplicate and i.sentiment), key=lambda i: i.item.published_at):
            ts = it.item.published_at
            if not math.isfinite(ts):
                continue  # ingest clamps these; a NaN would corrupt the window order
            ts = min(ts, cap)
            if (self.first_ts is None or ts < self.first_ts) and (now is None or ts >= cap - horizon):
                self.first_ts = ts  # (a stray years-old item does not pretend to be history of every series)
            for rule in self.rules:
                for kind, key in self.series_of(rule, it):
                    skey = f"{rule.name}|{kind}|{key}"
                    st = self.states.setdefault(skey, SeriesState())
                    st.pull_back(cap, rule.cooldown_minutes * 60.0)
                    # a company named with others counts with its own (target-aware) label when there is one
                    own = it.entity_sentiment.get(key) if kind == "entity" else None
                    label = str(own["label"]) if own else str(it.sentiment)
                    score = float(own["score"]) if own else float(it.sentiment_score or 0.0)
                    prob = None if own or rule.signal == "volume" else it.probabilities.get(rule.direction)
                    obs = Obs(ts, int(it.rowid or 0), rule.signal == "volume" or label == rule.direction, score,
                              label, it.item.title, it.item.url, it.item.source,
                              p=min(max(float(prob), 0.0), 1.0) if prob is not None and math.isfinite(prob) else None)
                    t = max(ts, st.last_ts)
                    self._evict(st, rule, t)
                    if ts < t - rule.window_minutes * 60.0:
                        self._to_baseline(st, rule, obs)  # older than the window: history, not a signal
                    else:
                        st.window.append(obs)
                        if len(st.window) > 1 and st.window[-2].ts > ts:  # late item: keep the window sorted
                            st.window = deque(sorted(st.window, key=lambda o: o.ts))
                    st.last_ts = t
                    ev = self._evaluate(st, rule, kind, key, t)
                    if ev:
                        events.append(ev)
        return events

    def tick(self, now: float) -> list[AlertEvent]:
        """Advance event time to ``now`` for every series with an open episode (resolves quiet ones)."""
        events = []
        for skey, st in self.states.items():
            rule = next((r for r in self.rules if r.name == skey.split("|", 1)[0]), None)
            if rule is None:
                continue
            st.pull_back(now + self.max_skew_s, rule.cooldown_minutes * 60.0)
            if st.episode is None or now <= st.last_ts:
                continue
            _, kind, key = skey.split("|", 2)
            self._evict(st, rule, now)
            st.last_ts = now
            ev = self._evaluate(st, rule, kind, key, now)
            if ev:
                events.append(ev)
        return events

    def stats(self, rule: Rule, st: SeriesState, now: float | None = None) -> WindowStats:
        if rule.signal == "volume":
            return self._volume_stats(rule, st, st.last_ts if now is None else now)
        n = len(st.window)
        hits = sum(1 for o in st.window if o.hit)
        k = sum(o.weight(rule.evidence) for o in st.window)
        p0 = (st.base_hits + rule.prior_share * rule.prior_weight) / (st.base_n + rule.prior_weight)
        p = min(max(p0, 0.01), 0.99)
        share = k / n if n else 0.0
        z = (k - n * p) / math.sqrt(n * p * (1 - p)) if n else 0.0
        hot = n >= rule.min_count and share >= rule.min_share and z >= rule.z_threshold
        return WindowStats(n, hits, share, p0, z, hot)

    def baseline_rate(self, rule: Rule, st: SeriesState, now: float) -> float:
        """Items per hour the series usually gets (see the module docstring), from history before the window."""
        w = rule.window_minutes * 60.0
        end = now - w  # the baseline ends where the current window starts
        b_end = math.floor(end / w)
        n_buckets = int(round(rule.baseline_hours * 3600.0 / w))
        if self.first_ts is not None:  # whole buckets since the first item seen (the first one is partial)
            n_buckets = min(n_buckets, max(0, b_end - math.floor(self.first_ts / w) - 1))
        counts = sorted(st.counts.get(str(b), 0) for b in range(b_end - n_buckets, b_end))
        cut = len(counts) // 10
        kept = counts[cut:len(counts) - cut] if cut else counts
        hours = len(kept) * w / 3600.0
        return (sum(kept) + rule.prior_rate * rule.prior_hours) / (hours + rule.prior_hours)

    def _volume_stats(self, rule: Rule, st: SeriesState, now: float) -> WindowStats:
        n = len(st.window)
        rate = self.baseline_rate(rule, st, now)
        mu = rate * rule.window_minutes / 60.0
        ratio = n / mu if mu > 0 else math.inf
        p = poisson_sf(n, mu)
        z = (n - mu) / math.sqrt(mu) if mu > 0 else 0.0
        history_h = (now - rule.window_minutes * 60.0 - self.first_ts) / 3600.0 if self.first_ts is not None else 0.0
        hot = n >= rule.min_count and ratio >= rule.factor and p <= rule.max_p and history_h >= rule.min_history_hours
        return WindowStats(n, n, 1.0 if n else 0.0, rate, z, hot, ratio, p)

    def _evict(self, st: SeriesState, rule: Rule, now: float) -> None:
        horizon = now - rule.window_minutes * 60.0
        while st.window and st.window[0].ts < horizon:
            self._to_baseline(st, rule, st.window.popleft())

    @staticmethod
    def _to_baseline(st: SeriesState, rule: Rule, o: Obs) -> None:
        if rule.signal == "volume":
            w = rule.window_minutes * 60.0
            b = math.floor(o.ts / w)
            st.counts[str(b)] = st.counts.get(str(b), 0) + 1
            oldest = math.floor(st.last_ts / w) - int(rule.baseline_hours * 3600.0 / w) - 2
            if len(st.counts) > 4 and min(int(k) for k in st.counts) < oldest:  # drop buckets past the history
                st.counts = {k: v for k, v in st.counts.items() if int(k) >= oldest}
            return
        half = rule.baseline_halflife_hours * 3600.0
        if st.base_ts is not None and o.ts > st.base_ts:
            f = 0.5 ** ((o.ts - st.base_ts) / half)
            st.base_hits *= f
            st.base_n *= f
        w = EPISODE_BASELINE_WEIGHT if o.in_episode else 1.0
        st.base_hits += w * o.weight(rule.evidence)
        st.base_n += w
        st.base_ts = o.ts if st.base_ts is None else max(st.base_ts, o.ts)

    def _evaluate(self, st: SeriesState, rule: Rule, kind: str, key: str, now: float) -> AlertEvent | None:
        s = self.stats(rule, st, now)
        ep = st.episode
        if s.hot:
            for o in st.window:
                o.in_episode = True
            if ep is None:
                if now < st.cooldown_until:
                    return None
                # the key comes from the data (first hit of the window), never from a clock or counter
                start = int(min((o.ts for o in st.window if o.hit), default=now))
                start = max(start, st.last_start + 1)
                st.last_start = start
                ep = st.episode = {"alert_key": f"{rule.name}|{kind}|{key}|{start}", "opened_at": now, "last_hot": now,
                                   "evidence": {}, "peak_z": s.z, "peak": self._peak(s)}
                self._add_evidence(ep, st)
                return AlertEvent("opened", self._alert(rule, kind, key, ep, s, "open", now))
            ep["last_hot"] = now
            ep["peak_z"] = max(ep["peak_z"], s.z)
            grew = rule.signal == "volume" and s.n > ep.get("peak", {}).get("n", -1)
            if grew:
                ep["peak"] = self._peak(s)  # the reason names the episode's busiest window
            if self._add_evidence(ep, st) or grew:
                return AlertEvent("updated", self._alert(rule, kind, key, ep, s, "open", now))
            return None
        if ep is not None and now - ep["last_hot"] >= rule.resolve_minutes * 60.0:
            st.episode = None
            # Event time: the episode ended resolve_minutes after its last hot window, however late a
            # quiet series' next item (or tick) notices; cooling down from "now" instead made a quiet
            # company's next burst, hours later, fall inside the cooldown of the one before.
            st.cooldown_until = float(ep["last_hot"]) + (rule.resolve_minutes + rule.cooldown_minutes) * 60.0
            return AlertEvent("resolved", self._alert(rule, kind, key, ep, s, "resolved", now))
        return None

    @staticmethod
    def _add_evidence(ep: dict[str, Any], st: SeriesState) -> bool:
        changed = False
        for o in st.window:
            if o.hit and str(o.rowid) not in ep["evidence"] and len(ep["evidence"]) < MAX_EVIDENCE:
                ep["evidence"][str(o.rowid)] = o.evidence()
                changed = True
        return changed

    @staticmethod
    def _peak(s: WindowStats) -> dict[str, Any]:
        return {"n": s.n, "rate": s.baseline, "ratio": s.ratio if math.isfinite(s.ratio) else 1e9, "p": s.p}

    @staticmethod
    def reason(rule: Rule, s: WindowStats, peak: dict[str, Any] | None = None) -> str:
        """Why the alert fired, one line: ``volume: 37 mentions in 1 h vs 3.1/h baseline (x11.9)`` or
        ``negative share: 5/6 items (83% vs baseline 15%, z=4.2)``."""
        if rule.signal == "volume":
            pk = peak or SurgeDetector._peak(s)
            return (f"volume: {pk['n']} mentions in {_hours(rule.window_minutes)} vs {pk['rate']:.1f}/h baseline "
                    f"(x{pk['ratio']:.1f}, p={pk['p']:.1g})")
        how = " by probability" if rule.evidence == "probability" else ""
        return (f"{rule.direction} share: {s.hits}/{s.n} items {rule.direction} "
                f"({s.share:.0%}{how} vs baseline {s.baseline:.0%}, z={s.z:.1f})")

    @staticmethod
    def _alert(rule: Rule, kind: str, key: str, ep: dict[str, Any], s: WindowStats, state: str, now: float) -> dict[str, Any]:
        label = key if kind != "all" else "all news"
        if rule.signal == "volume":
            reason = SurgeDetector.reason(rule, s, ep.get("peak"))
            summary = f"volume surge on {kind} {label}: {reason.removeprefix('volume: ')}"
            if state == "resolved":
                summary = f"resolved: volume on {kind} {label} back to normal ({s.n} in window, {s.baseline:.1f}/h baseline)"
            direction = "any"
        else:
            reason = SurgeDetector.reason(rule, s)
            summary = (f"{rule.direction} news surge on {kind} {label}: {s.hits}/{s.n} items {rule.direction} "
                       f"({s.share:.0%} vs baseline {s.baseline:.0%}, z={s.z:.1f})")
            if state == "resolved":
                summary = f"resolved: {rule.direction} news on {kind} {label} back to normal ({s.hits}/{s.n} in window)"
            direction = rule.direction
        if state == "resolved":
            reason = ep.get("reason", reason)  # keep what made it fire
        else:
            ep["reason"] = reason
        return {"alert_key": ep["alert_key"], "rule": rule.name, "series_kind": kind, "series_key": key,
                "signal": rule.signal, "reason": reason,
                "direction": direction, "severity": rule.severity, "state": state, "opened_at": ep["opened_at"],
                "updated_at": now, "resolved_at": now if state == "resolved" else None, "window_count": s.n,
                "hit_count": s.hits, "share": round(s.share, 4), "baseline": round(s.baseline, 4), "z": round(max(s.z, ep["peak_z"]) if state == "open" else s.z, 3),
                "evidence": list(ep["evidence"].values()), "summary": summary}
