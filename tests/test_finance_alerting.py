"""finance_sentiment alerts worth trusting (issue #15): volume surges, Alertmanager-style grouping,
silences, inhibition, resolved notices, deterministic notification keys, and bad input.

No models: items are scored by hand and fed through :meth:`Monitor.process_scored` (the detection and
alerting half of the pipeline, same transaction, same outbox); timestamps are fixed.
"""
from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from finance_sentiment.alerting import labels_of, new_silence, parse_matchers
from finance_sentiment.config import Rule, WebhookTarget, config_from_dict, load_config
from finance_sentiment.detect import SurgeDetector, poisson_sf
from finance_sentiment.entities import WatchEntry, Watchlist
from finance_sentiment.items import NewsItem, ScoredItem
from finance_sentiment.paths import SAMPLES
from finance_sentiment.pipeline import Monitor
from finance_sentiment.store import SQLiteStore
from verticore.errors import DataError
from verticore.serving import KeyStore, ServingSettings

T = 1_750_000_000.0
HOOK = WebhookTarget("hook", "https://hooks.example.com/x")
NEG = Rule("neg", series="entity", window_minutes=60, min_count=3, z_threshold=2.0, min_share=0.6,
           cooldown_minutes=60, resolve_minutes=30)
VOL = Rule("vol", signal="volume", series="entity", window_minutes=60, min_count=10, factor=5.0, max_p=0.001,
           baseline_hours=48)
SHARE = Rule("share", series="entity", window_minutes=60, min_count=5, z_threshold=3.0, min_share=0.5)
MIX = ["neutral", "negative", "positive", "neutral", "positive", "negative", "neutral", "neutral", "negative", "positive"]
_n = [0]


def si(ts: float, sentiment: str, entities=("AAA",), topics=(), source: str = "t") -> ScoredItem:
    _n[0] += 1
    i = _n[0]
    s = ScoredItem(NewsItem(f"id{i}", f"headline {i}", published_at=ts, url=f"https://n.example/{i}", source=source), f"h{i}")
    s.sentiment, s.sentiment_score = sentiment, {"negative": -0.9, "positive": 0.9}.get(sentiment, 0.0)
    s.entities, s.topics = list(entities), list(topics)
    return s


class _Emb:
    """Stands in for the embedder: process_scored never encodes."""
    dimension = 8
    fingerprint = "none"


def monitor(db, rules, *, notify=None, inhibit=None, webhooks=(HOOK,)) -> Monitor:
    raw = {"rules": [r.__dict__ for r in rules]}
    if notify is not None:
        raw["notify"] = notify
    if inhibit is not None:
        raw["inhibit_rules"] = inhibit
    cfg = config_from_dict(raw)
    cfg.webhooks = list(webhooks)
    return Monitor(SQLiteStore(db), None, None, Watchlist(), cfg, _Emb())


def burst(entity: str, t0: float, n: int = 3, step: float = 10.0, sentiment: str = "negative") -> list[ScoredItem]:
    return [si(t0 + j * step, sentiment, (entity,)) for j in range(n)]


def sent(store: SQLiteStore) -> list[dict]:
    """Outbox rows, oldest first, as (event, slot, firing keys, resolved keys)."""
    out = []
    for r in reversed(store.list_outbox(limit=1000)):
        p = r["payload"]
        out.append({"event": r["event"], "slot": p["group"]["notified_at"] - T, "labels": p["group"]["labels"],
                    "firing": [a["key"] for a in p["alerts"] if a["status"] == "firing"],
                    "resolved": [a["key"] for a in p["alerts"] if a["status"] == "resolved"],
                    "key": r["idempotency_key"], "payload": p})
    return out


# -- 1. volume surges -------------------------------------------------------------------------------
def _mixed_background(entity: str, hours: int, per_hour: int, start: float) -> list[ScoredItem]:
    step = 3600.0 / per_hour
    return [si(start + k * step, MIX[k % len(MIX)], (entity,)) for k in range(hours * per_hour)]


def test_volume_surge_fires_on_a_10x_spike_of_mixed_news_that_the_share_rule_ignores():
    det = SurgeDetector([VOL, SHARE])
    bg = _mixed_background("AAA", 48, 3, T - 48 * 3600)
    assert det.observe(bg, now=T) == []
    spike = [si(T + 60 + j * 95, MIX[j % len(MIX)], ("AAA",)) for j in range(36)]  # 36 in one hour, 30% negative
    events = det.observe(spike, now=T + 3600)
    opened = [e for e in events if e.kind == "opened"]
    assert [e.alert["rule"] for e in opened] == ["vol"]  # the share rule stays quiet: the mix did not change
    a = [e for e in events if e.alert["rule"] == "vol"][-1].alert
    assert a["signal"] == "volume" and a["direction"] == "any" and a["series_key"] == "AAA"
    assert a["reason"].startswith("volume: 36 mentions in 1 h vs ")
    rate = float(a["reason"].split(" vs ")[1].split("/h")[0])
    assert 2.4 <= rate <= 3.2  # ~3/h learned from its own history
    ratio = float(a["reason"].split("(x")[1].split(",")[0])
    assert ratio == pytest.approx(36 / rate, rel=0.05) and ratio >= 10
    assert "volume surge on entity AAA" in a["summary"]
    # a share alert keeps its own reason text
    det2 = SurgeDetector([SHARE])
    det2.observe(_mixed_background("BBB", 24, 2, T - 24 * 3600), now=T)
    ev = [e for e in det2.observe(burst("BBB", T + 60, 8, 120), now=T + 3600) if e.kind == "opened"]
    assert ev and ev[0].alert["reason"].startswith("negative share: ") and ev[0].alert["signal"] == "share"


def test_volume_rule_works_without_a_processing_clock_and_the_demo_bursts_name_their_company():
    # offline analyses pass no `now`: the history still starts at the first item
    det = SurgeDetector([VOL])
    det.observe(_mixed_background("AAA", 48, 3, T - 48 * 3600))
    assert [e.alert["rule"] for e in det.observe([si(T + 60 + j * 95, "neutral", ("AAA",)) for j in range(36)])
            if e.kind == "opened"] == ["vol"]
    from finance_sentiment.streams import retarget

    wl = Watchlist.load(SAMPLES / "watchlist.csv")
    name = wl.get("CSM").name
    out = retarget("Meridian Airlines shares slump 20% in heavy trading", wl, "CSM")
    assert out == f"{name} shares slump 20% in heavy trading" and wl.tickers_in(out) == ["CSM"]
    assert wl.tickers_in(retarget("Shares slump", wl, "CSM")) == ["CSM"]


def test_quiet_or_normally_busy_entities_do_not_fire_volume_alerts():
    det = SurgeDetector([VOL])
    quiet = [si(T - 48 * 3600 + k * 6 * 3600, "neutral", ("QQQ",)) for k in range(8)]
    quiet += [si(T + 60 + j * 300, "negative", ("QQQ",)) for j in range(4)]  # 4 in an hour after 1 per 6 h
    assert [e for e in det.observe(quiet, now=T + 3600) if e.kind == "opened"] == []
    # a fresh monitor on a busy entity: ~3/h at random times for three days, ordinary fluctuation
    # (the first min_history_hours only learn; after that the rate is known)
    rng = random.Random(7)
    busy = sorted((si(T + rng.random() * 72 * 3600, rng.choice(MIX), ("BSY",)) for _ in range(216)),
                  key=lambda s: s.item.published_at)
    det2 = SurgeDetector([VOL])
    assert [e for e in det2.observe(busy, now=T + 72 * 3600) if e.kind == "opened"] == []
    assert 2.0 < det2.baseline_rate(VOL, det2.states["vol|entity|BSY"], T + 72 * 3600) < 4.0
    # whereas in the first monitor, where BSY was never mentioned for two days, the same start is news
    assert [e.alert["series_key"] for e in det.observe(busy, now=T + 72 * 3600) if e.kind == "opened"][:1] == ["BSY"]


def test_poisson_tail():
    assert poisson_sf(0, 3.0) == 1.0
    assert poisson_sf(3, 3.0) == pytest.approx(1 - (1 + 3 + 4.5) * 2.718281828 ** -3, rel=1e-6)
    tiny = poisson_sf(36, 3.0)
    assert 0 < tiny < 1e-20  # accurate far in the tail, no cancellation to 0


# -- 2. grouping ------------------------------------------------------------------------------------
def test_three_alerts_opening_within_group_wait_go_out_as_one_notification(tmp_path):
    mon = monitor(tmp_path / "m.db", [NEG], notify={"group_by": ["rule"], "group_wait": "2m"})
    res = mon.process_scored(burst("AAA", T) + burst("BBB", T + 30) + burst("CCC", T + 60), now=T + 80)
    assert res.opened == 3 and res.notifications == []  # still inside group_wait
    mon.tick(T + 139)
    assert mon.store.list_outbox() == []
    mon.tick(T + 140)  # first alert opened at T+20, group_wait 120 s
    rows = sent(mon.store)
    assert len(rows) == 1 and rows[0]["event"] == "opened" and rows[0]["labels"] == {"rule": "neg"}
    assert len(rows[0]["firing"]) == 3 and rows[0]["payload"]["event"] == "alert.opened"
    assert {a["labels"]["entity"] for a in rows[0]["payload"]["alerts"]} == {"AAA", "BBB", "CCC"}
    assert rows[0]["payload"]["alert"]["key"] == rows[0]["firing"][0]  # single-alert shape kept for old receivers


def test_group_interval_and_repeat_interval_timing(tmp_path):
    rule = Rule(**{**NEG.__dict__, "resolve_minutes": 300})
    mon = monitor(tmp_path / "m.db", [rule], notify={"group_by": ["rule"], "group_wait": 60, "group_interval": "5m",
                                                     "repeat_interval": "1h"})
    mon.process_scored(burst("AAA", T), now=T + 20)  # opens at T+20 -> first slot T+80
    for t in (79, 80):
        mon.tick(T + t)
    mon.process_scored(burst("DDD", T + 180), now=T + 200)  # joins at T+200 -> next slot on the grid, T+380
    for t in (379, 380, 3979, 3980, 7000, 18400, 18680):
        mon.tick(T + t)
    rows = sent(mon.store)
    assert [(r["event"], r["slot"], len(r["firing"]), len(r["resolved"])) for r in rows] == [
        ("opened", 80, 1, 0),       # group_wait after the first alert
        ("opened", 380, 2, 0),      # the change waits for the group_interval grid (80 + 300)
        ("repeat", 3980, 2, 0),     # repeat_interval after the last notification
        ("repeat", 18380, 2, 0),    # a long gap gives one repeat, not one per hour missed
        ("resolved", 18680, 0, 2),  # both resolved at T+18400; sent on the next grid slot
    ]
    assert len({r["key"] for r in rows}) == 5


def test_resolved_notification_and_send_resolved_false(tmp_path):
    mon = monitor(tmp_path / "a.db", [NEG])  # default policy: per alert, immediately
    mon.process_scored(burst("AAA", T), now=T + 20)
    mon.tick(T + 3 * 3600)
    rows = sent(mon.store)
    assert [r["event"] for r in rows] == ["opened", "resolved"]
    assert rows[1]["payload"]["event"] == "alert.resolved" and rows[1]["resolved"] == rows[0]["firing"]
    assert mon.store.list_alerts()[0]["state"] == "resolved"
    quiet = monitor(tmp_path / "b.db", [NEG], notify={"send_resolved": False})
    quiet.process_scored(burst("AAA", T), now=T + 20)
    quiet.tick(T + 3 * 3600)
    assert [r["event"] for r in sent(quiet.store)] == ["opened"]


# -- 3. silences ------------------------------------------------------------------------------------
def test_silence_mutes_notification_but_the_alert_is_recorded_and_expiry_unmutes(tmp_path):
    mon = monitor(tmp_path / "m.db", [NEG])
    sil = new_silence({"entity": "AAA"}, created_by="ops", comment="earnings day", starts_at=T - 60,
                      ends_at=T + 3600, now=T - 60)
    sid = mon.store.add_silence(sil)
    mon.process_scored(burst("AAA", T) + burst("BBB", T + 30), now=T + 50)
    alerts = {a["series_key"]: a for a in mon.store.list_alerts()}
    assert set(alerts) == {"AAA", "BBB"}  # both recorded
    assert alerts["AAA"]["silenced_by"] == sid and alerts["BBB"]["silenced_by"] is None
    assert [r["labels"].get("entity") for r in sent(mon.store)] == ["BBB"]
    assert [s.id for s in mon.store.list_silences(now=T)] == [sid]
    assert mon.store.expire_silence(sid, T + 100) and not mon.store.expire_silence(sid, T + 101)
    mon.tick(T + 100)  # the silence ended: AAA goes out now, while still firing
    rows = sent(mon.store)
    assert [(r["labels"]["entity"], r["event"], r["slot"]) for r in rows] == [("BBB", "opened", 50), ("AAA", "opened", 100)]
    assert mon.store.get_alert(rows[1]["firing"][0])["silenced_by"] is None
    assert mon.store.list_silences(now=T + 200) == [] and mon.store.list_silences(include_expired=True)[0].expired_at == T + 100


# -- 4. inhibition ----------------------------------------------------------------------------------
MARKET = Rule("market", series="all", window_minutes=60, min_count=5, z_threshold=2.0, min_share=0.5)
INHIBIT = [{"source_match": {"kind": "market"}, "target_match": {"kind": "entity"}, "equal": ["direction"]}]


def _market_day() -> list[ScoredItem]:
    bg = [si(T - 10 * 3600 + k * 900, "neutral", (e,)) for k, e in enumerate(["AAA", "BBB", "CCC", "DDD"] * 10)]
    return bg + burst("AAA", T) + burst("BBB", T + 30)


def test_market_alert_inhibits_the_per_entity_alerts_it_explains(tmp_path):
    notify = {"group_by": ["rule", "kind", "entity"], "group_wait": "5m"}
    mon = monitor(tmp_path / "m.db", [NEG, MARKET], notify=notify, inhibit=INHIBIT)
    mon.process_scored(_market_day(), now=T + 50)
    mon.tick(T + 400)
    rows = sent(mon.store)
    assert [r["labels"] for r in rows] == [{"rule": "market", "kind": "market", "entity": ""}]
    market = rows[0]["firing"][0]
    entity_alerts = [a for a in mon.store.list_alerts() if a["series_kind"] == "entity"]
    assert {a["series_key"] for a in entity_alerts} == {"AAA", "BBB"}  # recorded, visible
    assert all(a["inhibited_by"] == market for a in entity_alerts)
    # control: without the inhibit rule the same stream notifies the entities too
    ctl = monitor(tmp_path / "c.db", [NEG, MARKET], notify=notify)
    ctl.process_scored(_market_day(), now=T + 50)
    ctl.tick(T + 400)
    assert sorted(r["labels"]["entity"] for r in sent(ctl.store)) == ["", "AAA", "BBB"]


# -- 5. exactly-once keys ---------------------------------------------------------------------------
def _stream() -> list[ScoredItem]:
    _n[0] = 10_000  # same ids every call
    items = _mixed_background("AAA", 12, 2, T - 12 * 3600) + _mixed_background("BBB", 12, 2, T - 12 * 3600 + 7)
    items += burst("AAA", T) + burst("BBB", T + 100) + burst("CCC", T + 900) + burst("DDD", T + 5000)
    items += [si(T + 6 * 3600 + j, "neutral", ("AAA",)) for j in range(2)]
    return sorted(items, key=lambda s: s.item.published_at)


def test_notification_keys_are_identical_across_batch_splits_and_restarts(tmp_path):
    notify = {"group_by": ["rule"], "group_wait": "1m", "group_interval": "5m", "repeat_interval": "1h"}
    end = T + 8 * 3600

    def run(db, sizes) -> list[tuple]:
        items = _stream()
        mon = monitor(db, [NEG, MARKET], notify=notify, inhibit=INHIBIT)
        i = 0
        for n in sizes:
            batch = items[i:i + n]
            i += n
            if not batch:
                break
            if n == 1:  # a new process for every item: state comes from the database only
                mon.close()
                mon = monitor(db, [NEG, MARKET], notify=notify, inhibit=INHIBIT)
            mon.process_scored(batch, now=batch[-1].item.published_at)
        mon.tick(end)
        return [(r["key"], r["event"], r["slot"], tuple(r["firing"]), tuple(r["resolved"])) for r in sent(mon.store)]

    whole = run(tmp_path / "a.db", [10_000])
    assert len(whole) >= 3 and {e for _, e, *_ in whole} >= {"opened", "resolved"}
    assert run(tmp_path / "b.db", [7] * 1000) == whole
    assert run(tmp_path / "c.db", [1] * 1000) == whole


# -- 6. config, CLI, API ----------------------------------------------------------------------------
def test_config_validates_notify_inhibit_and_volume_sections(tmp_path):
    cfg = load_config(SAMPLES / "rules.yaml")
    assert any(r.signal == "volume" for r in cfg.rules) and any(r.series == "all" for r in cfg.rules)
    assert cfg.notify.group_wait == 30 and cfg.notify.group_interval == 300 and cfg.notify.repeat_interval == 4 * 3600
    assert cfg.inhibit_rules and cfg.inhibit_rules[0].source_match == {"kind": "market"}
    for raw, msg in [({"notify": {"group_by": ["ticker"]}}, "unknown label"),
                     ({"notify": {"group_wait": "soon"}}, "duration such as"),
                     ({"notify": {"group_wait": -1}}, "non-negative"),
                     ({"notify": {"group_interval": "1h", "repeat_interval": "5m"}}, "at least group_interval"),
                     ({"notify": {"grouping": []}}, "unknown key"),
                     ({"notify": {"send_resolved": "yes"}}, "true or false"),
                     ({"inhibit_rules": [{"source_match": {"kind": "market"}, "target_match": {}}]}, "at least one matcher"),
                     ({"inhibit_rules": [{"source_match": {"kind": "market"}, "target_match": {"kind": "entity"},
                                          "equal": ["colour"]}]}, "unknown label"),
                     ({"inhibit_rules": [{"source_match": {"kind": "x"}, "target_match": {"kind": "x"}}]}, "inhibit itself"),
                     ({"rules": [{"name": "v", "signal": "loudness"}]}, "signal must be one of"),
                     ({"rules": [{"name": "v", "signal": "volume", "factor": 0}]}, "factor must be a positive"),
                     ({"rules": [{"name": "v", "signal": "volume", "max_p": 2}]}, "max_p must be in"),
                     ({"rules": [{"name": "v", "signal": "volume", "baseline_hours": 1}]}, "at least two windows")]:
        with pytest.raises(DataError, match=msg):
            config_from_dict(raw)
    from finance_sentiment.cli import app

    r = CliRunner().invoke(app, ["check-config", str(SAMPLES / "rules.yaml")])
    assert r.exit_code == 0 and "volume" in r.output and "group_wait=30s" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("notify: {group_by: [ticker]}\n")
    r = CliRunner().invoke(app, ["check-config", str(bad)])
    assert r.exit_code == 3 and "unknown label" in r.output and "Traceback" not in r.output


def test_silence_bad_input_is_refused_with_one_line_reasons():
    for kw, msg in [(dict(matchers={}), "at least one matcher"),
                    (dict(matchers={"ticker": "AAA"}), "unknown label"),
                    (dict(matchers={"entity": ""}), "non-empty string"),
                    (dict(starts_at=T + 3600, ends_at=T), "before or when it starts"),
                    (dict(ends_at=T - 10, starts_at=T - 100), "in the past"),
                    (dict(ends_at=T + 10, duration="1h"), "either an end time or a duration"),
                    (dict(duration="forever"), "duration such as"),
                    (dict(created_by=" "), "author"),
                    (dict(comment=""), "comment")]:
        args = {"matchers": {"entity": "AAA"}, "created_by": "ops", "comment": "why", "duration": None, "ends_at": None,
                "starts_at": None}
        args.update(kw)
        if args["duration"] is None and args["ends_at"] is None:
            args["duration"] = "2h"
        with pytest.raises(DataError, match=msg) as exc:
            new_silence(args.pop("matchers"), now=T, **args)
        assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="label=value"):
        parse_matchers(["entityAAA"])


def test_silence_cli_add_list_expire(tmp_path):
    from finance_sentiment.cli import app

    home = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    run = CliRunner().invoke
    r = run(app, ["silence", "add", "--match", "entity=AAA", "-m", "rule=neg", "--duration", "2h", "--author", "ana",
                  "--comment", "known news", "--home", home])
    assert r.exit_code == 0 and "silence #1 added" in r.output and "entity=AAA rule=neg" in r.output
    r = run(app, ["silence", "list", "--home", home])
    assert "#1  active" in r.output and "by ana: known news" in r.output
    r = run(app, ["silence", "add", "--match", "entity=AAA", "--start", "2030-01-02T00:00:00Z",
                  "--end", "2030-01-01T00:00:00Z", "--author", "ana", "--comment", "x", "--home", home])
    assert r.exit_code == 3 and "before or when it starts" in r.output
    r = run(app, ["silence", "add", "--match", "stock=AAA", "--duration", "1h", "--author", "a", "--comment", "x",
                  "--home", home])
    assert r.exit_code == 3 and "unknown label" in r.output
    assert run(app, ["silence", "expire", "1", "--home", home]).exit_code == 0
    r = run(app, ["silence", "expire", "1", "--home", home])
    assert r.exit_code == 3 and "no running silence #1" in r.output
    assert "no silences" in run(app, ["silence", "list", "--home", home]).output
    assert "expired" in run(app, ["silence", "list", "--all", "--home", home]).output


def test_silence_api_scopes_and_errors(tmp_path):
    from fastapi import FastAPI

    from finance_sentiment.server import create_router
    from verticore.serving import install_serving

    ks = KeyStore(tmp_path / "keys.db")
    h = {}
    for name, scopes in {"read": ["finance:read"], "admin": ["admin"]}.items():
        key, _ = ks.create(name, scopes)
        h[name] = {"Authorization": f"Bearer {key}"}
    ks.close()
    app = FastAPI()
    install_serving(app, ServingSettings(keys_db=tmp_path / "keys.db", usage_db=tmp_path / "u.db", access_log=False))
    mon = monitor(tmp_path / "m.db", [NEG])
    app.include_router(create_router(mon))
    c = TestClient(app)
    body = {"matchers": {"entity": "AAA"}, "duration": "2h", "created_by": "ana", "comment": "earnings"}
    assert c.post("/silences", json=body, headers=h["read"]).status_code == 403
    r = c.post("/silences", json=body, headers=h["admin"])
    assert r.status_code == 201 and r.json()["matchers"] == {"entity": "AAA"}
    sid = r.json()["id"]
    assert [s["id"] for s in c.get("/silences", headers=h["read"]).json()] == [sid]
    bad = c.post("/silences", json={**body, "duration": None, "starts_at": "2030-01-02T00:00:00Z",
                                    "ends_at": "2030-01-01T00:00:00Z"}, headers=h["admin"])
    assert bad.status_code == 422 and "before or when it starts" in bad.json()["detail"]
    assert c.post("/silences", json={**body, "matchers": {}}, headers=h["admin"]).status_code == 422
    assert c.delete(f"/silences/{sid}", headers=h["read"]).status_code == 403
    assert c.delete(f"/silences/{sid}", headers=h["admin"]).json() == {"expired": sid}
    assert c.delete(f"/silences/{sid}", headers=h["admin"]).status_code == 404
    assert c.get("/silences", headers=h["read"]).json() == []
    mon.close()


# -- 7. watchlist bad input ---------------------------------------------------------------------------
def test_watchlist_names_with_regex_metacharacters_are_literal():
    wl = Watchlist([WatchEntry("SPGI", "S&P (Global)* Inc.", ["S&P+"]), WatchEntry("ABC", "A.B.C [Holdings]", ["a|b"])])
    assert wl.tickers_in("S&P (Global)* shares fell") == ["SPGI"]
    assert wl.tickers_in("A.B.C [Holdings] wins contract") == ["ABC"]
    assert wl.tickers_in("a|b said") == ["ABC"] and wl.tickers_in("ab said") == []
    assert wl.tickers_in("SXP Global and AxBxC") == []  # '.' and '*' are not wildcards
    with pytest.raises(DataError, match="no letters or digits"):
        Watchlist([WatchEntry("XYZ", "***")])
    with pytest.raises(DataError, match="no letters or digits"):
        Watchlist([WatchEntry("XYZ", "Xyz", ["(.*)"])])


def test_watchlist_alias_shared_by_two_companies_is_refused_at_load():
    text = "ticker,name,aliases\nACM,Acme Corp,Acme|Roadrunner\nACX,Acme Explosives,ACME Inc.\n"
    with pytest.raises(DataError, match=r"ACX: name/alias 'ACME Inc\.' already names ACM"):
        Watchlist.from_csv_text(text)
    # the same phrase twice in one row is harmless
    wl = Watchlist.from_csv_text("ticker,name,aliases\nACM,Acme Corp,Acme|ACME\n")
    assert wl.tickers_in("acme reports") == ["ACM"]
    assert len(Watchlist.load(SAMPLES / "watchlist.csv")) >= 10  # the bundled list has no shared alias


def test_labels_of_alerts():
    a = {"rule": "m", "series_kind": "all", "series_key": "*", "severity": "high", "direction": "negative", "signal": None}
    assert labels_of(a) == {"rule": "m", "kind": "market", "entity": "", "topic": "", "signal": "share",
                            "severity": "high", "direction": "negative"}
