"""Monitor configuration: alert rules, webhook targets, topics, dedupe settings (YAML or TOML).

Example (YAML)::

    rules:
      - name: negative-surge
        series: entity            # entity | topic | all
        direction: negative       # negative | positive
        window_minutes: 60
        min_count: 5              # minimum volume in the window (quiet tickers never page)
        z_threshold: 3.0          # binomial z-score of the share vs the series' own EWMA baseline
        min_share: 0.5            # and at least this share of negative items in the window
        cooldown_minutes: 120     # no new episode for the same series during the cooldown
        resolve_minutes: 60       # the episode resolves after this long below threshold
        severity: high
      - name: volume-spike
        signal: volume            # share (default) | volume: mention rate vs the series' own baseline rate
        series: entity
        window_minutes: 60
        min_count: 10             # at least this many mentions in the window
        factor: 5.0               # and at least 5x the baseline rate
        max_p: 0.001              # and a Poisson upper-tail p-value at most this
        baseline_hours: 168       # trailing history the baseline rate is estimated from
        min_history_hours: 24     # a fresh monitor learns rates this long before volume alerts fire
    notify:                       # Alertmanager-style grouping (all optional; see README "Alerting")
      group_by: [rule, kind]      # labels: rule kind entity topic signal severity direction
      group_wait: 30s             # wait before a new group's first notification
      group_interval: 5m          # at most one notification per group per interval when it changes
      repeat_interval: 4h         # re-send a still-firing group (0 = never)
      send_resolved: true
    inhibit_rules:                # a market-wide alert mutes the per-entity alerts it explains
      - source_match: {kind: market}
        target_match: {kind: entity}
        equal: [direction]
    webhooks:
      - name: risk-chat
        url: https://hooks.example.com/T000/B000
        format: slack             # json | slack
        secret_env: RISK_HOOK_SECRET
        timeout_s: 5             # overall deadline per request (< the 60 s delivery lease)
    allow_hosts: [hooks.example.com]   # optional: only these hosts (restricts; never permits private ones)

Webhook hosts must be public addresses. Loopback/private receivers need the operator allow-list
``VERTICORE_WEBHOOK_ALLOW`` (environment, e.g. ``127.0.0.1,::1,10.0.0.0/8``) or the CLI's
``--webhook-allow``: deliberately not a config key, because the config is editable from the dashboard.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from verticore.errors import DataError
from verticore.netguard import check_public_url

SEVERITIES = ("info", "low", "medium", "high", "critical")
# how long a worker holds one delivery; a webhook's timeout_s (its overall deadline) must be shorter
DELIVERY_LEASE_S = 60.0

DEFAULT_TOPICS: dict[str, str] = {
    "earnings": "quarterly earnings results, profit, net sales, revenue, operating income, loss per share",
    "m&a": "mergers and acquisitions, takeover bid, buyout, acquiring a company, divestment, deal to buy a stake",
    "guidance": "company outlook and guidance, forecast raised or cut, expects sales to grow, profit warning",
    "legal/regulatory": "lawsuit, regulator investigation, fine, court ruling, antitrust probe, compliance, sanctions",
    "macro": "economy, central bank interest rates, inflation, GDP, unemployment, government policy, currency",
    "markets": "stock market moves, shares rose or fell, index, trading, analyst rating, price target, bond yields",
    "operations": "contracts, orders, new products, plants, layoffs, production, supply chain, partnerships",
}


@dataclass
class Rule:
    """One surge-detection rule (see the module docstring for the meaning of each field)."""

    name: str
    series: str = "entity"
    direction: str = "negative"
    window_minutes: float = 60.0
    min_count: int = 5
    z_threshold: float = 3.0
    min_share: float = 0.5
    cooldown_minutes: float = 120.0
    resolve_minutes: float = 60.0
    baseline_halflife_hours: float = 24.0
    prior_share: float = 0.15
    prior_weight: float = 20.0
    severity: str = "high"
    enabled: bool = True
    # signal "volume": the window's item count against the series' baseline rate (items/hour)
    signal: str = "share"
    factor: float = 5.0
    max_p: float = 0.001
    baseline_hours: float = 168.0
    prior_rate: float = 0.5
    prior_hours: float = 2.0
    min_history_hours: float = 24.0

    def validate(self) -> "Rule":
        where = f"rule {self.name!r}"
        if not self.name or not str(self.name).strip():
            raise DataError("every rule needs a non-empty name")
        if self.series not in ("entity", "topic", "all"):
            raise DataError(f"{where}: series must be entity, topic or all (got {self.series!r})")
        if self.direction not in ("negative", "positive"):
            raise DataError(f"{where}: direction must be negative or positive (got {self.direction!r})")
        if self.severity not in SEVERITIES:
            raise DataError(f"{where}: severity must be one of {', '.join(SEVERITIES)} (got {self.severity!r})")
        for fname in ("window_minutes", "cooldown_minutes", "resolve_minutes", "baseline_halflife_hours", "prior_weight"):
            v = getattr(self, fname)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (fname in ("window_minutes", "baseline_halflife_hours") and v <= 0):
                raise DataError(f"{where}: {fname} must be a positive number (got {v!r})")
        if not isinstance(self.min_count, int) or isinstance(self.min_count, bool) or self.min_count < 1:
            raise DataError(f"{where}: min_count must be an integer >= 1 (got {self.min_count!r})")
        if not 0 <= float(self.min_share) <= 1 or not 0 < float(self.prior_share) < 1:
            raise DataError(f"{where}: min_share must be in [0, 1] and prior_share in (0, 1)")
        if not isinstance(self.z_threshold, (int, float)) or isinstance(self.z_threshold, bool):
            raise DataError(f"{where}: z_threshold must be a number (got {self.z_threshold!r})")
        if self.signal not in SIGNALS:
            raise DataError(f"{where}: signal must be one of {', '.join(SIGNALS)} (got {self.signal!r})")
        for fname in ("factor", "baseline_hours", "prior_rate", "prior_hours"):
            v = getattr(self, fname)
            if not _number(v) or v <= 0:
                raise DataError(f"{where}: {fname} must be a positive number (got {v!r})")
        if not _number(self.min_history_hours) or self.min_history_hours < 0:
            raise DataError(f"{where}: min_history_hours must be a number >= 0 (got {self.min_history_hours!r})")
        if not _number(self.max_p) or not 0 < self.max_p <= 1:
            raise DataError(f"{where}: max_p must be in (0, 1] (got {self.max_p!r})")
        if self.signal == "volume" and self.baseline_hours * 60.0 < 2 * self.window_minutes:
            raise DataError(f"{where}: baseline_hours must cover at least two windows "
                            f"({2 * self.window_minutes / 60.0:g} h; got {self.baseline_hours!r})")
        return self


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


SIGNALS = ("share", "volume")
# labels of an alert, for grouping, silences and inhibition (see finance_sentiment.alerting.labels_of)
LABELS = ("rule", "kind", "entity", "topic", "signal", "severity", "direction")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds from ``30s``/``5m``/``4h``/``1d``/``1w`` or a plain number of seconds; :class:`DataError` otherwise."""
    if _number(value):
        secs = float(value)
    else:
        m = _DURATION.match(str(value)) if isinstance(value, str) else None
        if not m:
            raise DataError(f"{what} must be a duration such as 30s, 5m, 4h or 1d (got {value!r})")
        secs = float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    if not math.isfinite(secs) or secs < 0:
        raise DataError(f"{what} must be a non-negative duration (got {value!r})")
    return secs


def check_labels(matchers: Any, what: str, *, allow_empty: bool = False) -> dict[str, str]:
    """Validate ``{label: value}`` equality matchers: known labels, string values; a clean copy."""
    if not isinstance(matchers, dict):
        raise DataError(f"{what} must be a mapping of label -> value (got {type(matchers).__name__})")
    if not matchers and not allow_empty:
        raise DataError(f"{what} needs at least one matcher (label=value); labels are {', '.join(LABELS)}")
    unknown = sorted(str(k) for k in matchers if k not in LABELS)
    if unknown:
        raise DataError(f"{what}: unknown label(s) {unknown}; labels are {', '.join(LABELS)}")
    out = {}
    for k, v in matchers.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not str(v).strip():
            raise DataError(f"{what}: the value of {k!r} must be a non-empty string (got {v!r})")
        out[str(k)] = str(v).strip()
    return out


@dataclass
class NotifyPolicy:
    """How alerts become notifications (Alertmanager's route model, one route).

    Alerts with the same values of ``group_by`` labels form a group. A new group's first
    notification goes out ``group_wait`` seconds after its first alert opened (so alerts opening
    together arrive as one notification); after that the group is looked at every
    ``group_interval`` seconds and notified when its alerts changed (new ones firing, some
    resolved), or, while still firing, when ``repeat_interval`` seconds passed since the last one
    (0 = never repeat). Times are event times. The defaults (one alert per group, no waiting)
    notify each alert when it opens and when it resolves."""

    group_by: list[str] = field(default_factory=lambda: ["rule", "kind", "entity", "topic"])
    group_wait: float = 0.0
    group_interval: float = 0.0
    repeat_interval: float = 0.0
    send_resolved: bool = True


@dataclass
class InhibitRule:
    """While an alert matching ``source_match`` fires, alerts matching ``target_match`` that have the
    same values of the ``equal`` labels are recorded as inhibited and not notified."""

    source_match: dict[str, str] = field(default_factory=dict)
    target_match: dict[str, str] = field(default_factory=dict)
    equal: list[str] = field(default_factory=list)


@dataclass
class WebhookTarget:
    """A webhook receiver. ``secret`` (or the env var named by ``secret_env``) signs each body with HMAC-SHA256."""

    name: str
    url: str
    format: str = "json"
    secret: str | None = None
    secret_env: str | None = None
    timeout_s: float = 5.0
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_max_s: float = 600.0
    enabled: bool = True

    def resolved_secret(self) -> str | None:
        if self.secret:
            return self.secret
        if self.secret_env:
            return os.environ.get(self.secret_env) or None
        return None

    def public_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["secret"] = "***" if self.secret else None
        return d


@dataclass
class MonitorConfig:
    """Everything the monitor needs besides models and the watchlist."""

    rules: list[Rule] = field(default_factory=lambda: [Rule("negative-surge"), Rule("negative-topic-surge", series="topic", min_count=8, severity="medium")])
    webhooks: list[WebhookTarget] = field(default_factory=list)
    allow_hosts: list[str] = field(default_factory=list)
    topics: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    zero_shot_threshold: float = 0.25
    near_duplicate_threshold: float = 0.92
    dedupe_window_hours: float = 48.0
    max_body_chars: int = 100_000
    max_sentences: int = 64
    feed_timeout_s: float = 10.0
    notify: NotifyPolicy = field(default_factory=NotifyPolicy)
    inhibit_rules: list[InhibitRule] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["webhooks"] = [w.public_dict() for w in self.webhooks]
        return d


def validate_webhook_url(url: str, allow_hosts: list[str] | None = None, *, allow: Any = None) -> str:
    """Accept only ``http(s)://host[:port]/...`` whose host is not a literal private, loopback,
    link-local or metadata address (any numeric spelling); with ``allow_hosts`` the host must also
    be on that list.

    ``allow_hosts`` (config, dashboard-editable) only *restricts*; non-public addresses need the
    operator allow-list (``$VERTICORE_WEBHOOK_ALLOW`` or ``allow``, see :mod:`verticore.netguard`).
    Host names are resolved and re-checked at send time. Raises :class:`DataError` naming the problem.
    """
    target = check_public_url(url, allow, resolve=False, what="webhook URL")
    host = target.host
    if allow_hosts:
        allowed = {h.lower() for h in allow_hosts}
        if host not in allowed and not any(a.startswith(".") and host.endswith(a) for a in allowed):
            raise DataError(f"webhook host {host!r} is not in allow_hosts {sorted(allowed)}")
    return url


def _build(cls, raw: Any, what: str):
    if not isinstance(raw, dict):
        raise DataError(f"each entry of {what} must be a mapping, got {type(raw).__name__}")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DataError(f"{what} entry {raw.get('name', '?')!r}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise DataError(f"{what} entry is invalid: {exc}") from None


def config_from_dict(data: dict[str, Any] | None, *, origin: str = "config") -> MonitorConfig:
    """Build and validate a :class:`MonitorConfig` from parsed YAML/TOML."""
    data = data or {}
    if not isinstance(data, dict):
        raise DataError(f"{origin}: top level must be a mapping")
    known = set(MonitorConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"{origin}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    cfg = MonitorConfig()
    try:
        if "rules" in data:
            if not isinstance(data["rules"], list):
                raise DataError("'rules' must be a list")
            cfg.rules = [_build(Rule, r, "rules").validate() for r in data["rules"]]
            names = [r.name for r in cfg.rules]
            if len(set(names)) != len(names):
                raise DataError(f"rule names must be unique (got {names})")
        if "allow_hosts" in data:
            cfg.allow_hosts = [str(h) for h in (data["allow_hosts"] or [])]
        if "webhooks" in data:
            if not isinstance(data["webhooks"], list):
                raise DataError("'webhooks' must be a list")
            cfg.webhooks = [_build(WebhookTarget, w, "webhooks") for w in data["webhooks"]]
            for w in cfg.webhooks:
                validate_webhook_url(w.url, cfg.allow_hosts)
                if w.format not in ("json", "slack"):
                    raise DataError(f"webhook {w.name!r}: format must be json or slack (got {w.format!r})")
                if w.max_attempts < 1 or w.timeout_s <= 0:
                    raise DataError(f"webhook {w.name!r}: max_attempts must be >= 1 and timeout_s > 0")
                if w.timeout_s >= DELIVERY_LEASE_S:
                    raise DataError(f"webhook {w.name!r}: timeout_s must be shorter than the {DELIVERY_LEASE_S:g}s "
                                    f"delivery lease (got {w.timeout_s:g}); otherwise a second worker re-sends it")
            names = [w.name for w in cfg.webhooks]
            if len(set(names)) != len(names):
                raise DataError(f"webhook names must be unique (got {names})")
        if "topics" in data:
            topics = data["topics"]
            if not isinstance(topics, dict) or not all(isinstance(v, str) and v.strip() for v in topics.values()):
                raise DataError("'topics' must map topic name -> non-empty description")
            cfg.topics = {str(k): str(v) for k, v in topics.items()}
        if "notify" in data:
            cfg.notify = parse_notify(data["notify"])
        if "inhibit_rules" in data:
            cfg.inhibit_rules = parse_inhibit_rules(data["inhibit_rules"])
        for key in ("zero_shot_threshold", "near_duplicate_threshold", "dedupe_window_hours", "feed_timeout_s"):
            if key in data:
                v = data[key]
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                    raise DataError(f"{key} must be a positive number (got {v!r})")
                setattr(cfg, key, float(v))
        for key in ("max_body_chars", "max_sentences"):
            if key in data:
                v = data[key]
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise DataError(f"{key} must be a positive integer (got {v!r})")
                setattr(cfg, key, v)
    except DataError as exc:
        raise DataError(f"{origin}: {exc}") from None
    return cfg


def parse_notify(raw: Any) -> NotifyPolicy:
    """The ``notify`` section (see :class:`NotifyPolicy`); durations as ``30s``/``5m``/``4h`` or seconds."""
    if raw is None:
        return NotifyPolicy()
    if not isinstance(raw, dict):
        raise DataError(f"'notify' must be a mapping (got {type(raw).__name__})")
    known = set(NotifyPolicy.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DataError(f"notify: unknown key(s) {unknown}; known keys are {sorted(known)}")
    pol = NotifyPolicy()
    if "group_by" in raw:
        gb = raw["group_by"]
        if not isinstance(gb, list) or not all(isinstance(x, str) for x in gb):
            raise DataError(f"notify.group_by must be a list of labels (got {gb!r})")
        bad = sorted(set(gb) - set(LABELS))
        if bad:
            raise DataError(f"notify.group_by: unknown label(s) {bad}; labels are {', '.join(LABELS)}")
        pol.group_by = list(dict.fromkeys(gb))
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if key in raw:
            setattr(pol, key, parse_duration(raw[key], f"notify.{key}"))
    if "send_resolved" in raw:
        if not isinstance(raw["send_resolved"], bool):
            raise DataError(f"notify.send_resolved must be true or false (got {raw['send_resolved']!r})")
        pol.send_resolved = raw["send_resolved"]
    if pol.repeat_interval and pol.group_interval and pol.repeat_interval < pol.group_interval:
        raise DataError(f"notify.repeat_interval ({pol.repeat_interval:g}s) must be at least group_interval "
                        f"({pol.group_interval:g}s)")
    return pol


def parse_inhibit_rules(raw: Any) -> list[InhibitRule]:
    """The ``inhibit_rules`` list (see :class:`InhibitRule`)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DataError("'inhibit_rules' must be a list")
    out = []
    for i, r in enumerate(raw):
        what = f"inhibit_rules[{i}]"
        if not isinstance(r, dict):
            raise DataError(f"{what} must be a mapping")
        unknown = sorted(set(r) - set(InhibitRule.__dataclass_fields__))
        if unknown:
            raise DataError(f"{what}: unknown key(s) {unknown}; known keys are source_match, target_match, equal")
        src = check_labels(r.get("source_match"), f"{what}.source_match")
        tgt = check_labels(r.get("target_match"), f"{what}.target_match")
        equal = r.get("equal", []) or []
        if not isinstance(equal, list) or not all(isinstance(x, str) for x in equal):
            raise DataError(f"{what}.equal must be a list of labels")
        bad = sorted(set(equal) - set(LABELS))
        if bad:
            raise DataError(f"{what}.equal: unknown label(s) {bad}; labels are {', '.join(LABELS)}")
        if src == tgt:
            raise DataError(f"{what}: source_match and target_match are the same: an alert would inhibit itself")
        out.append(InhibitRule(src, tgt, list(equal)))
    return out


def load_config(path: str | Path | None) -> MonitorConfig:
    """Load a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config; ``None`` -> defaults.

    A bad file raises :class:`DataError` with the file name and the first problem found.
    """
    if path is None:
        return MonitorConfig()
    path = Path(path)
    if not path.exists():
        raise DataError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"config file {path} is not UTF-8") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"config file {path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'YAML'}: {first}") from None
    return config_from_dict(data, origin=str(path))


def dump_config_yaml(cfg: MonitorConfig) -> str:
    """YAML text for a config (round-trips through :func:`load_config`)."""
    d = asdict(cfg)
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
