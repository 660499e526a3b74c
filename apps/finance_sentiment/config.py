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
        evidence: label           # label: an item counts 1 if read negative | probability: its P(negative)
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
    non_english_in_surges: false  # non-English / emoji-only items stay out of surge statistics
    discovered_entities:          # ORG mentions not on the watchlist (off unless a NER model is given)
      model: models/ner           # a verticore token-classifier artifact
      alerts: false               # their trends are kept; alerts for them only when true

Webhook hosts must be public addresses. Loopback/private receivers need the operator allow-list
``VERTICORE_WEBHOOK_ALLOW`` (environment, e.g. ``127.0.0.1,::1,10.0.0.0/8``) or the CLI's
``--webhook-allow``: deliberately not a config key, because the config is editable from the dashboard.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from verticore.errors import DataError
from verticore.netguard import check_public_url

SEVERITIES = ("info", "low", "medium", "high", "critical")
SIGNALS = ("share", "volume")
EVIDENCE = ("label", "probability")
# labels of an alert, for grouping, silences and inhibition (see finance_sentiment.alerting.labels_of)
LABELS = ("rule", "kind", "entity", "topic", "signal", "severity", "direction")
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

# Every section is a pydantic dataclass: the field types below carry the checks, and a bad file
# fails with pydantic's first error turned into one line (see _first_problem).
_STRICT = ConfigDict(extra="forbid")


# -- field types -------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
            le: float | None = None, integer: bool = False) -> BeforeValidator:
    """A number (YAML ``true`` is not one) within the given bounds; the error says which."""
    if integer:
        text = f"must be an integer >= {ge:g}" if ge is not None else "must be an integer"
    elif (gt is not None or ge is not None) and (lt is not None or le is not None):
        lo, hi = (f"({gt:g}" if gt is not None else f"[{ge:g}"), (f"{lt:g})" if lt is not None else f"{le:g}]")
        text = f"must be in {lo}, {hi}"
    elif gt == 0:
        text = "must be a positive number"
    elif ge is not None:
        text = f"must be a number >= {ge:g}"
    else:
        text = "must be a number"

    def check(v: Any) -> Any:
        ok = (isinstance(v, int) and not isinstance(v, bool)) if integer else _is_number(v)
        ok = ok and (gt is None or v > gt) and (ge is None or v >= ge) and (lt is None or v < lt) \
            and (le is None or v <= le)
        if not ok:
            raise ValueError(f"{text} (got {v!r})")
        return v if integer else float(v)

    return BeforeValidator(check)


def _choice(*options: str, text: str | None = None) -> AfterValidator:
    def check(v: str) -> str:
        if v not in options:
            raise ValueError(f"{text or 'must be one of ' + ', '.join(options)} (got {v!r})")
        return v

    return AfterValidator(check)


def _strict_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false (got {v!r})")
    return v


def _non_empty(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


Positive = Annotated[float, _number(gt=0)]
NonNegative = Annotated[float, _number(ge=0)]
Count = Annotated[int, _number(ge=1, integer=True)]
Name = Annotated[str, AfterValidator(_non_empty)]
Flag = Annotated[bool, BeforeValidator(_strict_bool)]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _seconds(value: Any) -> float:
    if _is_number(value):
        secs = float(value)
    else:
        m = _DURATION.match(str(value)) if isinstance(value, str) else None
        if not m:
            raise ValueError(f"must be a duration such as 30s, 5m, 4h or 1d (got {value!r})")
        secs = float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    if not math.isfinite(secs) or secs < 0:
        raise ValueError(f"must be a non-negative duration (got {value!r})")
    return secs


def parse_duration(value: Any, what: str = "duration") -> float:
    """Seconds from ``30s``/``5m``/``4h``/``1d``/``1w`` or a plain number of seconds; :class:`DataError` otherwise."""
    try:
        return _seconds(value)
    except ValueError as exc:
        raise DataError(f"{what} {exc}") from None


Duration = Annotated[float, BeforeValidator(_seconds)]


def _matchers(matchers: Any, *, allow_empty: bool = False) -> dict[str, str]:
    if not isinstance(matchers, dict):
        raise ValueError(f"must be a mapping of label -> value (got {type(matchers).__name__})")
    if not matchers and not allow_empty:
        raise ValueError(f"needs at least one matcher (label=value); labels are {', '.join(LABELS)}")
    unknown = sorted(str(k) for k in matchers if k not in LABELS)
    if unknown:
        raise ValueError(f"has unknown label(s) {unknown}; labels are {', '.join(LABELS)}")
    out = {}
    for k, v in matchers.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not str(v).strip():
            raise ValueError(f"has an empty value for {k!r}: it must be a non-empty string (got {v!r})")
        out[str(k)] = str(v).strip()
    return out


def check_labels(matchers: Any, what: str, *, allow_empty: bool = False) -> dict[str, str]:
    """Validate ``{label: value}`` equality matchers: known labels, string values; a clean copy."""
    try:
        return _matchers(matchers, allow_empty=allow_empty)
    except ValueError as exc:
        raise DataError(f"{what} {exc}") from None


def _label_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"must be a list of labels (got {v!r})")
    bad = sorted(set(v) - set(LABELS))
    if bad:
        raise ValueError(f"has unknown label(s) {bad}; labels are {', '.join(LABELS)}")
    return list(dict.fromkeys(v))


Matchers = Annotated[dict[str, str], BeforeValidator(_matchers)]
LabelList = Annotated[list[str], BeforeValidator(_label_list)]


# -- sections ----------------------------------------------------------------------------------

@dataclass(config=_STRICT)
class Rule:
    """One surge-detection rule (see the module docstring for the meaning of each field)."""

    name: Name
    series: Annotated[str, _choice("entity", "topic", "all", text="must be entity, topic or all")] = "entity"
    direction: Annotated[str, _choice("negative", "positive", text="must be negative or positive")] = "negative"
    window_minutes: Positive = 60.0
    min_count: Count = 5
    z_threshold: Annotated[float, _number()] = 3.0
    min_share: Annotated[float, _number(ge=0, le=1)] = 0.5
    cooldown_minutes: NonNegative = 120.0
    resolve_minutes: NonNegative = 60.0
    baseline_halflife_hours: Positive = 24.0
    prior_share: Annotated[float, _number(gt=0, lt=1)] = 0.15
    prior_weight: NonNegative = 20.0
    severity: Annotated[str, _choice(*SEVERITIES)] = "high"
    enabled: Flag = True
    # signal "volume": the window's item count against the series' baseline rate (items/hour)
    signal: Annotated[str, _choice(*SIGNALS)] = "share"
    # share rules: how much an item counts towards the share: 1 or 0 by its top label, or its
    # calibrated probability of the rule's direction (a story read 40% negative counts 0.4)
    evidence: Annotated[str, _choice(*EVIDENCE)] = "label"
    factor: Positive = 5.0
    max_p: Annotated[float, _number(gt=0, le=1)] = 0.001
    baseline_hours: Positive = 168.0
    prior_rate: Positive = 0.5
    prior_hours: Positive = 2.0
    min_history_hours: NonNegative = 24.0

    @model_validator(mode="after")
    def _volume_baseline(self) -> "Rule":
        if self.signal == "volume" and self.baseline_hours * 60.0 < 2 * self.window_minutes:
            raise ValueError(f"baseline_hours must cover at least two windows "
                             f"({2 * self.window_minutes / 60.0:g} h; got {self.baseline_hours!r})")
        return self


@dataclass(config=_STRICT)
class NotifyPolicy:
    """How alerts become notifications (Alertmanager's route model, one route).

    Alerts with the same values of ``group_by`` labels form a group. A new group's first
    notification goes out ``group_wait`` seconds after its first alert opened (so alerts opening
    together arrive as one notification); after that the group is looked at every
    ``group_interval`` seconds and notified when its alerts changed (new ones firing, some
    resolved), or, while still firing, when ``repeat_interval`` seconds passed since the last one
    (0 = never repeat). Times are event times; durations are ``30s``/``5m``/``4h`` or seconds.
    The defaults (one alert per group, no waiting) notify each alert when it opens and when it
    resolves."""

    group_by: LabelList = field(default_factory=lambda: ["rule", "kind", "entity", "topic"])
    group_wait: Duration = 0.0
    group_interval: Duration = 0.0
    repeat_interval: Duration = 0.0
    send_resolved: Flag = True

    @model_validator(mode="after")
    def _repeat_after_group(self) -> "NotifyPolicy":
        if self.repeat_interval and self.group_interval and self.repeat_interval < self.group_interval:
            raise ValueError(f"repeat_interval ({self.repeat_interval:g}s) must be at least group_interval "
                             f"({self.group_interval:g}s)")
        return self


@dataclass(config=_STRICT)
class InhibitRule:
    """While an alert matching ``source_match`` fires, alerts matching ``target_match`` that have the
    same values of the ``equal`` labels are recorded as inhibited and not notified."""

    source_match: Matchers = field(default_factory=dict)
    target_match: Matchers = field(default_factory=dict)
    equal: Annotated[list[str], BeforeValidator(lambda v: _label_list(v or []))] = field(default_factory=list)

    @model_validator(mode="after")
    def _not_itself(self) -> "InhibitRule":
        if self.source_match == self.target_match:
            raise ValueError("source_match and target_match are the same: an alert would inhibit itself")
        return self


@dataclass(config=_STRICT)
class WebhookTarget:
    """A webhook receiver. ``secret`` (or the env var named by ``secret_env``) signs each body with HMAC-SHA256."""

    name: Name
    url: str
    format: Annotated[str, _choice("json", "slack", text="must be json or slack")] = "json"
    secret: str | None = None
    secret_env: str | None = None
    timeout_s: Positive = 5.0
    max_attempts: Count = 8
    backoff_base_s: NonNegative = 2.0
    backoff_max_s: NonNegative = 600.0
    enabled: Flag = True

    def resolved_secret(self) -> str | None:
        if self.secret:
            return self.secret
        if self.secret_env:
            return os.environ.get(self.secret_env) or None
        return None

    def to_dict(self) -> dict[str, Any]:
        """The settings as shown to users and the API: the secret itself is masked."""
        d = asdict(self)
        d["secret"] = "***" if self.secret else None
        return d


def _host_list(v: Any) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"must be a list of host names (got {v!r})")
    return [str(h) for h in v]


def _topics(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(d, str) and d.strip() for d in v.values()):
        raise ValueError("must map topic name -> non-empty description")
    return {str(k): str(d) for k, d in v.items()}


@dataclass(config=_STRICT)
class EntityDiscovery:
    """Organisations the NER model finds that are not on the watchlist become entities of kind
    ``discovered`` (key ``org:<normalised name>``, own trends). Off unless ``model`` names a
    token-classifier artifact; their alerts are off unless ``alerts`` is true. A found name that is
    a watchlist name, alias or ticker links to that entry instead."""

    model: str | None = None      # path of a verticore token-classifier artifact (None: discovery off)
    alerts: Flag = False          # surge alerts for discovered entities
    min_score: Annotated[float, _number(ge=0, le=1)] = 0.5
    types: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = \
        field(default_factory=lambda: ["ORG"])


def _default_rules() -> list[Rule]:
    return [Rule("negative-surge"), Rule("negative-topic-surge", series="topic", min_count=8, severity="medium")]


@dataclass(config=_STRICT)
class MonitorConfig:
    """Everything the monitor needs besides models and the watchlist."""

    rules: list[Rule] = field(default_factory=_default_rules)
    webhooks: list[WebhookTarget] = field(default_factory=list)
    allow_hosts: Annotated[list[str], BeforeValidator(_host_list)] = field(default_factory=list)
    topics: Annotated[dict[str, str], BeforeValidator(_topics)] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    zero_shot_threshold: Positive = 0.25
    near_duplicate_threshold: Positive = 0.92
    dedupe_window_hours: Positive = 48.0
    max_body_chars: Count = 100_000
    max_sentences: Count = 64
    feed_timeout_s: Positive = 10.0
    notify: Annotated[NotifyPolicy, BeforeValidator(lambda v: {} if v is None else v)] = \
        field(default_factory=NotifyPolicy)
    inhibit_rules: Annotated[list[InhibitRule], BeforeValidator(lambda v: [] if v is None else v)] = \
        field(default_factory=list)
    # items that look non-English or have no words are scored with low confidence and, unless this is
    # on, left out of surge statistics (an English model's reading of them is mostly noise)
    non_english_in_surges: Flag = False
    discovered_entities: Annotated[EntityDiscovery, BeforeValidator(lambda v: {} if v is None else v)] = \
        field(default_factory=EntityDiscovery)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["webhooks"] = [w.to_dict() for w in self.webhooks]
        return d


def _unique(what: str, names: list[str]) -> None:
    if len(set(names)) != len(names):
        raise DataError(f"{what} names must be unique (got {names})")


def _check_file(cfg: MonitorConfig) -> None:
    """Checks across sections, for a file (built in code, a config may hold a test's loopback webhook)."""
    _unique("rule", [r.name for r in cfg.rules])
    for w in cfg.webhooks:
        validate_webhook_url(w.url, cfg.allow_hosts)
        if w.timeout_s >= DELIVERY_LEASE_S:
            raise DataError(f"webhook {w.name!r}: timeout_s must be shorter than the {DELIVERY_LEASE_S:g}s "
                            f"delivery lease (got {w.timeout_s:g}); otherwise a second worker re-sends it")
    _unique("webhook", [w.name for w in cfg.webhooks])


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


# -- pydantic errors -> one line ----------------------------------------------------------------

_SECTIONS: dict[str, tuple[type, str]] = {
    "rules": (Rule, "rule"), "webhooks": (WebhookTarget, "webhook"),
    "inhibit_rules": (InhibitRule, "inhibit_rules"), "notify": (NotifyPolicy, "notify"),
    "discovered_entities": (EntityDiscovery, "discovered_entities")}


def _first_problem(exc: ValidationError, data: Any, top: type = MonitorConfig, where: str = "") -> str:
    """The first error as ``<entry>: <field> <problem>``, e.g.
    ``rule 'a': min_count must be an integer >= 1 (got 0)``."""
    err = exc.errors()[0]
    loc = list(err.get("loc") or ())
    cls = top
    if loc and isinstance(loc[0], str) and loc[0] in _SECTIONS and (len(loc) > 1 or loc[0] == "notify"):
        section = loc.pop(0)
        cls, label = _SECTIONS[section]
        if loc and isinstance(loc[0], int):
            i = loc.pop(0)
            entry = data.get(section)[i] if isinstance(data, dict) and isinstance(data.get(section), list) else None
            name = entry.get("name", "?") if isinstance(entry, dict) else None
            where = f"{label} {name!r}" if section in ("rules", "webhooks") and name is not None else f"{section}[{i}]"
        else:
            where = label
    name = ".".join(str(x) for x in loc)
    msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    kind = err.get("type")
    if kind == "unexpected_keyword_argument":
        known = sorted(f.name for f in fields(cls))
        text = f"unknown key(s) [{name!r}]; known keys are {known}"
        name = ""
    elif kind in ("missing", "missing_argument"):
        text = "is required"
    elif kind == "list_type":
        text = f"must be a list (got {type(err.get('input')).__name__})"
    elif kind in ("dataclass_type", "dict_type", "dataclass_args_type"):
        text = f"must be a mapping (got {type(err.get('input')).__name__})"
    elif kind == "value_error":
        text = msg
    else:
        text = f"{msg[:1].lower()}{msg[1:]} (got {err.get('input')!r})"
    if name and kind in ("list_type",) and not where:
        name = f"{name!r}"
    subject = " ".join(p for p in (name, text) if p)
    return f"{where}: {subject}" if where else subject


def _validate(cls: type, raw: Any, origin: str) -> Any:
    try:
        return TypeAdapter(cls).validate_python(raw)
    except ValidationError as exc:
        raise DataError(f"{origin}: {_first_problem(exc, raw, cls)}") from None


def config_from_dict(data: dict[str, Any] | None, *, origin: str = "config") -> MonitorConfig:
    """Build and validate a :class:`MonitorConfig` from parsed YAML/TOML (:class:`DataError`: one
    line naming ``origin``, the entry and the field)."""
    data = data or {}
    if not isinstance(data, dict):
        raise DataError(f"{origin}: top level must be a mapping")
    cfg = _validate(MonitorConfig, data, origin)
    try:
        _check_file(cfg)
    except DataError as exc:
        raise DataError(f"{origin}: {exc}") from None
    return cfg


def parse_notify(raw: Any) -> NotifyPolicy:
    """The ``notify`` section (see :class:`NotifyPolicy`)."""
    return NotifyPolicy() if raw is None else _validate(MonitorConfig, {"notify": raw}, "notify").notify


def parse_inhibit_rules(raw: Any) -> list[InhibitRule]:
    """The ``inhibit_rules`` list (see :class:`InhibitRule`)."""
    return [] if raw is None else _validate(MonitorConfig, {"inhibit_rules": raw}, "inhibit_rules").inhibit_rules


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
    toml = path.suffix.lower() == ".toml"
    try:
        data = tomllib.loads(text) if toml else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"config file {path} is not valid {'TOML' if toml else 'YAML'}: {first}") from None
    return config_from_dict(data, origin=str(path))


def dump_config_yaml(cfg: MonitorConfig) -> str:
    """YAML text for a config (round-trips through :func:`load_config`)."""
    return yaml.safe_dump(asdict(cfg), sort_keys=False, allow_unicode=True)
