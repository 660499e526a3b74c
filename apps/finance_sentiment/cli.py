"""``finance-sentiment``: train, score, ingest (file / folder / feeds / replay / HTTP), alerts, outbox, demo."""
from __future__ import annotations

import json
import logging
import time
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from verticore.cli_support import (
    EXIT_DATA,
    RegistryChoicesCommand,
    VerticoreGroup,
    device_option,
    method_option,
    run_app,
    version_option,
)
from verticore.errors import VerticoreError

from .paths import AppPaths
from .training import MULTI_SOURCE_UPSAMPLE, SENTIMENT_MAX_LENGTH

app = typer.Typer(add_completion=False, no_args_is_help=True, cls=VerticoreGroup,
                  help="Financial-news sentiment alerting monitor (Verticore app).")
watchlist_app = typer.Typer(no_args_is_help=True, help="Show or edit the watchlist.")
app.add_typer(watchlist_app, name="watchlist")
silence_app = typer.Typer(no_args_is_help=True, help="Silence alerts (time-boxed; they are recorded, not notified).")
app.add_typer(silence_app, name="silence")
log = logging.getLogger("finance_sentiment")

HOME_OPT = typer.Option(None, "--home", help="monitor directory (default $VERTICORE_HOME/finance_sentiment)")
CONFIG_OPT = typer.Option(None, "--config", help="YAML or TOML monitor config (default: the monitor directory's "
                                                 "config, else built-in defaults)")
JSON_OPT = typer.Option(False, "--json", help="print pure JSON")
HOST_OPT = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: all)")


class LabelTask(str, Enum):
    """What an analyst's label teaches (``finance-sentiment label --task``)."""

    sentiment = "sentiment"
    topic = "topic"


def _paths(home: Optional[Path]) -> AppPaths:
    return AppPaths(home) if home else AppPaths.default()


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into ``error: <message>`` and exit code 3 (no stack trace)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VerticoreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_DATA) from None

    return wrapper


def _monitor(home: Optional[Path], config: Optional[Path] = None, device: str = "auto"):
    from .config import load_config
    from .pipeline import Monitor

    paths = _paths(home)
    cfg = load_config(config) if config else None
    return Monitor.open(paths, config=cfg, device=device)


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
          show_version: bool = version_option()) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command(cls=RegistryChoicesCommand)
@_friendly
def train(data: Optional[List[Path]] = typer.Option(None, help="folder with train.csv, dev.csv and optionally test.csv "
                                                                "(text,label, or text,score,target); repeat for a "
                                                                "multi-source model. Default: the multi-source recipe's "
                                                                "PhraseBank 50Agree, SemEval-2017 headlines and FiQA "
                                                                "posts splits under $VERTICORE_DATA"),
          upsample: int = typer.Option(MULTI_SOURCE_UPSAMPLE, min=1, help="times the training rows of every --data "
                                                                          "after the first are repeated (the extra "
                                                                          "sources are small)"),
          max_length: int = typer.Option(SENTIMENT_MAX_LENGTH, min=8, help="tokens per text"),
          out: Optional[Path] = typer.Option(None, help="artifact dir (default <home>/models/sentiment)"),
          method: str = method_option(),
          epochs: int = typer.Option(6, help="passes over the training data"),
          batch_size: int = typer.Option(32, help="training examples per optimiser step"),
          learning_rate: Optional[float] = typer.Option(None, help="learning rate (default 1e-4; LoRA 8e-4)"),
          max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps"),
          home: Optional[Path] = HOME_OPT) -> None:
    """Fine-tune the sentiment model (positive/neutral/negative) with the core and print test metrics.
    Without --data: the multi-source recipe (report sentences, news headlines, social posts)."""
    from .training import multi_source_folders, train_sentiment

    folders = list(data) if data else multi_source_folders()
    out = out or _paths(home).sentiment_model
    typer.echo("training on " + ", ".join(str(f) for f in folders))
    res = train_sentiment(folders, out, method=method, epochs=epochs, batch_size=batch_size,
                          learning_rate=learning_rate, max_steps=max_steps, upsample=upsample, max_length=max_length)
    m = res.metrics
    typer.echo(f"sentiment model written to {res.artifact_dir}")
    for split in ("dev", "test"):
        if isinstance(m.get(split), dict):
            typer.echo(f"{split}: accuracy {m[split]['accuracy']:.4f}  macro-F1 {m[split]['macro_f1']:.4f}")


@app.command("train-targets")
@_friendly
def train_targets_cmd(data: Optional[List[Path]] = typer.Option(None, help="split folders (train.csv, dev.csv, optional "
                                                                          "test.csv); text,target,label rows give one "
                                                                          "example per company named, text,label rows "
                                                                          "one with an empty target; repeat. Default: "
                                                                          "the multi-source recipe's folders"),
                      out: Optional[Path] = typer.Option(None, help="model directory (default "
                                                                    "<home>/models/target_sentiment)"),
                      upsample: int = typer.Option(MULTI_SOURCE_UPSAMPLE, min=1, help="times the rows of every --data "
                                                                                      "after the first are repeated"),
                      epochs: int = typer.Option(6, help="passes over the training data"),
                      max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps"),
                      batch_size: int = typer.Option(32, help="training examples per optimiser step"),
                      home: Optional[Path] = HOME_OPT) -> None:
    """Fine-tune the target-aware (entity-level) sentiment model; the monitor uses it for items naming
    two or more watched companies."""
    from .targets import train_target_sentiment
    from .training import multi_source_folders

    out = out or _paths(home).target_sentiment_model
    res = train_target_sentiment(list(data) if data else multi_source_folders(), out, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                                 upsample=upsample)
    typer.echo(f"target sentiment model written to {res.artifact_dir}")
    for split in ("dev", "test"):
        if isinstance(res.metrics.get(split), dict):
            m = res.metrics[split]
            typer.echo(f"{split}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")


@app.command("train-topics")
@_friendly
def train_topics_cmd(data: Optional[Path] = typer.Option(None, help="CSV with text,topic (default: bundled sample)"),
                     out: Optional[Path] = typer.Option(None, help="model directory (default <home>/models/topics)"),
                     epochs: int = typer.Option(6, help="passes over the training data"),
                     max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps"),
                     home: Optional[Path] = HOME_OPT) -> None:
    """Fine-tune the topic classifier (zero-shot topics in the config keep working alongside it)."""
    from .training import train_topics

    out = out or _paths(home).topic_model
    res = train_topics(out, data, epochs=epochs, max_steps=max_steps)
    typer.echo(f"topic model written to {res.artifact_dir}")


@app.command()
@_friendly
def score(text: str = typer.Argument(..., help="headline or article text"), as_json: bool = JSON_OPT,
          home: Optional[Path] = HOME_OPT, device: str = device_option()) -> None:
    """Score one text: sentiment (with per-sentence evidence), topics and watched companies."""
    mon = _monitor(home, device=device)
    try:
        r = mon.score_text(text)
    finally:
        mon.close()
    if as_json:
        return _echo_json(r)
    typer.echo(f"{r['label']} (score {r['score']:+.3f})  topics: {', '.join(r['topics'])}  entities: {', '.join(r['entities']) or '-'}")
    for e in r["evidence"]:
        typer.echo(f"  [{e['label']:>8} {e['score']:+.2f}] {e['text']}")


def _report(res) -> None:
    s = res.summary()
    if not any(s.values()):
        return  # e.g. a batch of blank lines: nothing to say
    typer.echo(" ".join(f"{k}={v}" for k, v in s.items()))
    for e in res.events:
        if e.kind != "updated":
            typer.echo(f"ALERT {e.kind}: {e.alert['summary']}")


@app.command()
@_friendly
def ingest(path: Path = typer.Argument(..., help="JSONL or CSV file (or a folder of them)"), config: Optional[Path] = CONFIG_OPT,
           home: Optional[Path] = HOME_OPT, batch_size: int = typer.Option(64, help="items scored per model call")) -> None:
    """Ingest new records from a file or folder once (already-read lines are skipped).

    Each batch is stored together with the file's read position, so a killed run loses and
    repeats nothing: run it again and it continues where the last committed batch ended."""
    from .sources import FolderSource
    from .webhooks import Deliverer

    mon = _monitor(home, config)
    try:
        for res in mon.ingest(FolderSource(path, mon.store), batch_size=batch_size):
            _report(res)
        if mon.config.webhooks:
            Deliverer(mon.store, mon.config.webhooks, allow_hosts=mon.config.allow_hosts).run_once()
    finally:
        mon.close()


@app.command()
@_friendly
def watch(path: Path = typer.Argument(..., help="file or folder to watch"),
          interval: float = typer.Option(5.0, help="seconds between polls of the path"),
          feeds: list[str] = typer.Option([], "--feed", help="RSS/Atom URL to poll as well (repeatable)"),
          feed_interval: float = typer.Option(300.0, help="seconds between polls of the feeds"),
          config: Optional[Path] = CONFIG_OPT, home: Optional[Path] = HOME_OPT,
          once: bool = typer.Option(False, help="one poll, then exit")) -> None:
    """Run the monitor: watch a file/folder (and feeds), classify, detect, deliver alerts. Ctrl-C stops."""
    from .sources import FolderSource, poll_feeds
    from .webhooks import Deliverer

    mon = _monitor(home, config)
    deliverer = Deliverer(mon.store, mon.config.webhooks, allow_hosts=mon.config.allow_hosts)
    deliverer.start()
    src = FolderSource(path, mon.store) if path else None
    last_feed = 0.0
    try:
        while True:
            if src is not None:
                for res in mon.ingest(src):
                    _report(res)
            if feeds and time.time() - last_feed >= feed_interval:
                for url, recs in poll_feeds(feeds, timeout_s=mon.config.feed_timeout_s):
                    if recs:
                        _report(mon.process(recs, source=url))
                last_feed = time.time()
            mon.tick()
            if once:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        deliverer.stop()
        deliverer.run_once()
        mon.close()


@app.command()
@_friendly
def feeds(urls: list[str] = typer.Argument(..., help="RSS/Atom URLs or files"), config: Optional[Path] = CONFIG_OPT,
          home: Optional[Path] = HOME_OPT) -> None:
    """Poll RSS/Atom feeds once (a broken or hanging feed is logged and skipped)."""
    from .sources import poll_feeds

    mon = _monitor(home, config)
    try:
        for url, recs in poll_feeds(urls, timeout_s=mon.config.feed_timeout_s):
            if recs:
                _report(mon.process(recs, source=url))
    finally:
        mon.close()


@app.command()
@_friendly
def replay(path: Path = typer.Argument(..., help="JSONL/CSV with published_at"), speed: float = typer.Option(60.0, help="N x real time; 0 = as fast as possible"),
           config: Optional[Path] = CONFIG_OPT, home: Optional[Path] = HOME_OPT) -> None:
    """Replay a timestamped dataset through the monitor at N x speed."""
    from .sources import ReplaySource
    from .webhooks import Deliverer

    mon = _monitor(home, config)
    deliverer = Deliverer(mon.store, mon.config.webhooks, allow_hosts=mon.config.allow_hosts)
    try:
        for batch in ReplaySource.from_file(path, speed).batches():
            _report(mon.process(batch, source="replay", now=batch[-1]["published_at"]))
            deliverer.run_once()
    finally:
        mon.close()


@app.command()
@_friendly
def serve(host: str = HOST_OPT, port: int = typer.Option(8600, help="TCP port"),
          config: Optional[Path] = CONFIG_OPT, home: Optional[Path] = HOME_OPT,
          keys_db: Optional[Path] = typer.Option(None, "--keys-db", help="API keys database (default "
                                                 "$VERTICORE_HOME/serving/keys.db; create keys with `verticore keys create`)"),
          insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                                help="serve without API keys (local experiments only)")) -> None:
    """HTTP API (POST /news, POST /score, GET /alerts, /items, webhook admin) with background webhook delivery.

    Every route needs an API key ('Authorization: Bearer vk_...') with the route's scope
    (finance:ingest, finance:read or admin); --insecure-no-auth turns that off."""
    import uvicorn

    from verticore.serving import ServingSettings

    from .server import create_app
    from .webhooks import Deliverer

    mon = _monitor(home, config)
    deliverer = Deliverer(mon.store, mon.config.webhooks, allow_hosts=mon.config.allow_hosts)
    deliverer.start()
    settings = ServingSettings(keys_db=keys_db, insecure_no_auth=insecure_no_auth)
    try:
        uvicorn.run(create_app(mon, settings=settings, config_path=config or _paths(home).config, deliverer=deliverer),
                    host=host, port=port, log_level="info")
    finally:
        deliverer.stop()
        mon.close()


def _apply_webhook_allow(entries: list[str]) -> None:
    """``--webhook-allow``: the operator allow-list for this process (added to $VERTICORE_WEBHOOK_ALLOW,
    so config validation and every send see it)."""
    if not entries:
        return
    import os

    from verticore.netguard import ENV_ALLOW, parse_allow_list

    parse_allow_list(entries)  # a bad entry is an error here, not at the first send
    os.environ[ENV_ALLOW] = ",".join(p for p in [os.environ.get(ENV_ALLOW, ""), *entries] if p)


WEBHOOK_ALLOW_OPT = typer.Option([], "--webhook-allow", help="permit a non-public webhook host, IP or CIDR "
                                 "(repeatable; adds to $VERTICORE_WEBHOOK_ALLOW), e.g. 127.0.0.1 or 10.0.0.0/8")


@app.command()
@_friendly
def deliver(config: Optional[Path] = CONFIG_OPT, home: Optional[Path] = HOME_OPT,
            until_empty: bool = typer.Option(False, "--until-empty", help="keep going (waiting for retries) until no "
                                             "delivery is pending or in flight, then exit"),
            max_seconds: Optional[float] = typer.Option(None, help="with --until-empty: stop after this long (exit 1 if work is left)"),
            lease_s: float = typer.Option(60.0, help="lease per delivery; a killed worker's row is retried after it"),
            webhook_allow: list[str] = WEBHOOK_ALLOW_OPT) -> None:
    """Attempt every due webhook delivery once (or, with --until-empty, until the outbox is drained)."""
    from .config import MonitorConfig, load_config
    from .store import SQLiteStore
    from .webhooks import Deliverer

    _apply_webhook_allow(webhook_allow)
    paths = _paths(home)
    cfg = load_config(config or (paths.config if paths.config.exists() else None)) if (config or paths.config.exists()) else MonitorConfig()
    store = SQLiteStore(paths.db)
    try:
        d = Deliverer(store, cfg.webhooks, allow_hosts=cfg.allow_hosts, lease_s=lease_s)
        r = d.run_once()
        if until_empty:
            end = None if max_seconds is None else time.monotonic() + max_seconds
            while d.pending():
                if end is not None and time.monotonic() >= end:
                    typer.echo(f"delivered={r.delivered} retried={r.retried} dead={r.dead} left={len(d.pending())}")
                    raise typer.Exit(1)
                time.sleep(min(max(d.next_due() - time.time(), 0.05), 1.0))
                r += d.run_once()
    finally:
        store.close()
    typer.echo(f"delivered={r.delivered} retried={r.retried} dead={r.dead}")


@app.command("queue-test-alerts")
@_friendly
def queue_test_alerts(count: int = typer.Option(10, "--count", "-n", help="how many synthetic alerts"),
                      url: Optional[str] = typer.Option(None, help="webhook URL (default: the config's webhooks)"),
                      target: str = typer.Option("test", help="target name used with --url"),
                      prefix: str = typer.Option("synthetic", help="alert-key prefix (keep it unique per run)"),
                      config: Optional[Path] = CONFIG_OPT, home: Optional[Path] = HOME_OPT,
                      webhook_allow: list[str] = WEBHOOK_ALLOW_OPT) -> None:
    """Queue synthetic alerts for delivery without running models (to try a receiver, or for a fault bench)."""
    from verticore.errors import DataError

    from .config import MonitorConfig, WebhookTarget, load_config, validate_webhook_url
    from .store import SQLiteStore
    from .webhooks import queue_alerts, synthetic_alert

    _apply_webhook_allow(webhook_allow)
    paths = _paths(home)
    cfg = load_config(config or paths.config) if (config or paths.config.exists()) else MonitorConfig()
    targets = [WebhookTarget(target, validate_webhook_url(url))] if url else cfg.webhooks
    if not targets:
        raise DataError("no webhook to queue for: pass --url or a config with webhooks")
    store = SQLiteStore(paths.db)
    try:
        n = queue_alerts(store, [synthetic_alert(i, prefix) for i in range(count)], targets)
    finally:
        store.close()
    typer.echo(f"queued {n} deliveries for {count} alert(s)")


@app.command("receiver-stats")
@_friendly
def receiver_stats(db: Path = typer.Option(..., "--db", help="the receiver's database")) -> None:
    """What a `finance-sentiment receiver --db` saw: unique deliveries, duplicate sends, requests (JSON)."""
    from .receiver import receiver_counts

    _echo_json(receiver_counts(db))


@app.command()
@_friendly
def alerts(state: Optional[str] = typer.Option(None, help="open or resolved"),
           limit: int = typer.Option(50, help="newest N alerts"), as_json: bool = JSON_OPT,
           home: Optional[Path] = HOME_OPT) -> None:
    """List alerts with their delivery state."""
    from .store import SQLiteStore

    rows = SQLiteStore(_paths(home).db).list_alerts(state=state, limit=limit)
    if as_json:
        return _echo_json(rows)
    for a in rows:
        muted = (f" [silenced by #{a['silenced_by']}]" if a.get("silenced_by") else "") + \
                (f" [inhibited by {a['inhibited_by']}]" if a.get("inhibited_by") else "")
        typer.echo(f"#{a['id']} [{a['state']}] {a['severity']:>8} {a['summary']}{muted}  (delivered {a['delivered']}, "
                   f"pending {a['pending']}, dead {a['dead']}, attempts {a['attempts']})")
    if not rows:
        typer.echo("no alerts")


@app.command()
@_friendly
def outbox(state: Optional[str] = typer.Option(None, help="pending, sending, delivered or dead"),
           limit: int = typer.Option(50, help="newest N deliveries"),
           home: Optional[Path] = HOME_OPT) -> None:
    """List webhook deliveries."""
    from .store import SQLiteStore

    for r in SQLiteStore(_paths(home).db).list_outbox(state=state, limit=limit):
        typer.echo(f"#{r['id']} {r['state']:>9} {r['event']:>8} -> {r['target']} attempts={r['attempts']} "
                   f"last={r['last_status'] or ''} {r['last_error'] or ''}")


@app.command()
@_friendly
def resend(outbox_id: int = typer.Argument(..., help="id of a dead-lettered delivery"), home: Optional[Path] = HOME_OPT) -> None:
    """Move a dead-lettered delivery back to the queue (same idempotency key: no duplicate at the receiver)."""
    from verticore.errors import DataError

    from .store import SQLiteStore

    if not SQLiteStore(_paths(home).db).resend(outbox_id, time.time()):
        raise DataError(f"delivery #{outbox_id} is not dead-lettered (or does not exist)")
    typer.echo(f"delivery #{outbox_id} re-queued")


@watchlist_app.command("show")
@_friendly
def watchlist_show(home: Optional[Path] = HOME_OPT) -> None:
    """Print the watchlist CSV."""
    from .entities import Watchlist
    from .paths import SAMPLES

    p = _paths(home).watchlist
    typer.echo(Watchlist.load(p if p.exists() else SAMPLES / "watchlist.csv").to_csv_text(), nl=False)


@watchlist_app.command("add")
@_friendly
def watchlist_add(ticker: str = typer.Argument(..., help="ticker symbol, e.g. AURB"),
                  name: str = typer.Argument(..., help="company name as it appears in news"),
                  aliases: list[str] = typer.Option([], "--alias", help="another name to match (repeatable)"),
                  home: Optional[Path] = HOME_OPT) -> None:
    """Add a company (the running monitor picks it up on restart)."""
    from .entities import WatchEntry, Watchlist
    from .paths import SAMPLES

    p = _paths(home).watchlist
    wl = Watchlist.load(p if p.exists() else SAMPLES / "watchlist.csv")
    wl.add(WatchEntry(ticker, name, list(aliases)))
    wl.save(p)
    typer.echo(f"added {ticker.upper()} to {p}")


@app.command()
@_friendly
def check_config(path: Path = typer.Argument(..., help="YAML or TOML config")) -> None:
    """Validate a rules/webhooks config file."""
    from .config import load_config

    cfg = load_config(path)
    vol = sum(1 for r in cfg.rules if r.signal == "volume")
    n = cfg.notify
    typer.echo(f"ok: {len(cfg.rules)} rule(s) ({vol} volume), {len(cfg.webhooks)} webhook(s), {len(cfg.topics)} topic(s), "
               f"{len(cfg.inhibit_rules)} inhibit rule(s); notify group_by={n.group_by} group_wait={n.group_wait:g}s "
               f"group_interval={n.group_interval:g}s repeat_interval={n.repeat_interval:g}s send_resolved={n.send_resolved}")


@app.command()
@_friendly
def demo(home: Optional[Path] = typer.Option(None, help="VERTICORE_HOME (default: the core's)")) -> None:
    """Prepare the demo state (small models on bundled samples, a replayed stream with alerts)."""
    from .demo import prepare_demo
    from .paths import verticore_home

    prepare_demo(home or verticore_home(), show_progress=True)


@app.command()
@_friendly
def receiver(port: int = typer.Option(8700, help="TCP port"),
             secret: Optional[str] = typer.Option(None, help="HMAC secret: verify each request's signature "
                                                             "(default: accept unsigned requests)"),
             db: Optional[Path] = typer.Option(None, "--db", help="SQLite file: accepted keys survive restarts, counts for benches"),
             mode: str = typer.Option("ok", help="ok | fail (503) | reject (400) | hang | slow | trickle"),
             slow_s: float = typer.Option(5.0, help="slow: seconds to wait before processing and answering"),
             hang_s: float = typer.Option(2.0, help="hang: seconds to wait after processing, before answering"),
             trickle_s: float = typer.Option(1.0, help="trickle: seconds between the answer's bytes"),
             host: str = HOST_OPT, quiet: bool = typer.Option(False, help="do not print payloads")) -> None:
    """Run a local webhook receiver that records each alert event once (to try a configuration, or for a bench).
    SIGTERM or Ctrl-C stops it cleanly."""
    import signal

    from .receiver import LocalReceiver

    rx = LocalReceiver(port, secret=secret, db=db, mode=mode, slow_s=slow_s, hang_s=hang_s, trickle_s=trickle_s,
                       host=host).start()

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    typer.echo(f"listening on {rx.url} (mode {mode}{', db ' + str(db) if db else ''}); Ctrl-C stops")
    seen = len(rx.processed)
    try:
        while True:
            time.sleep(0.5)
            items = list(rx.processed.items())
            if not quiet:
                for key, payload in items[seen:]:
                    typer.echo(json.dumps(payload)[:500])
            seen = len(items)
    except KeyboardInterrupt:
        rx.stop()


def main() -> None:
    """Console-script entry point (exit codes: see verticore.cli_support)."""
    run_app(app)


if __name__ == "__main__":
    main()


# -- silences ---------------------------------------------------------------------------------------
def _store(home: Optional[Path]):
    from .store import SQLiteStore

    return SQLiteStore(_paths(home).db)


def _silence_line(s: Any, now: float) -> str:
    import datetime as _dt

    def iso(t: float) -> str:
        return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")

    state = "expired" if s.ends_at <= now else ("active" if s.starts_at <= now else "pending")
    match = " ".join(f"{k}={v}" for k, v in sorted(s.matchers.items()))
    return (f"#{s.id} {state:>7} {match}  {iso(s.starts_at)} -> {iso(s.ends_at)}  by {s.created_by}: {s.comment}")


@silence_app.command("add")
@_friendly
def silence_add(match: list[str] = typer.Option(..., "--match", "-m", help="label=value (repeatable; labels: rule kind "
                                                 "entity topic signal severity direction)"),
                duration: Optional[str] = typer.Option(None, help="how long from the start, e.g. 2h, 30m, 1d"),
                start: Optional[str] = typer.Option(None, help="start (ISO-8601 or epoch s; default now)"),
                end: Optional[str] = typer.Option(None, help="end (ISO-8601 or epoch s) instead of --duration"),
                author: str = typer.Option(..., "--author", help="who silences"),
                comment: str = typer.Option(..., "--comment", help="why"), home: Optional[Path] = HOME_OPT) -> None:
    """Add a silence: matching alerts are still recorded (marked silenced) but not notified until it ends."""
    from .alerting import new_silence, parse_matchers

    sil = new_silence(parse_matchers(match), created_by=author, comment=comment, starts_at=start, ends_at=end,
                      duration=duration)
    store = _store(home)
    try:
        store.add_silence(sil)
    finally:
        store.close()
    typer.echo(f"silence #{sil.id} added")
    typer.echo(_silence_line(sil, time.time()))


@silence_app.command("list")
@_friendly
def silence_list(all_: bool = typer.Option(False, "--all", help="include expired silences"),
                 as_json: bool = JSON_OPT, home: Optional[Path] = HOME_OPT) -> None:
    """Silences that are active or start later (with --all, expired ones too)."""
    store = _store(home)
    try:
        rows = store.list_silences(include_expired=all_)
    finally:
        store.close()
    if as_json:
        return _echo_json([s.to_dict() for s in rows])
    now = time.time()
    for s in rows:
        typer.echo(_silence_line(s, now))
    if not rows:
        typer.echo("no silences")


@silence_app.command("expire")
@_friendly
def silence_expire(silence_id: int = typer.Argument(..., help="silence id (see `silence list`)"),
                   home: Optional[Path] = HOME_OPT) -> None:
    """End a silence now (it stays listed with --all); alerts it muted are notified at their group's next slot."""
    from verticore.errors import DataError

    store = _store(home)
    try:
        if not store.expire_silence(silence_id, time.time()):
            raise DataError(f"no running silence #{silence_id} (see `finance-sentiment silence list --all`)")
    finally:
        store.close()
    typer.echo(f"silence #{silence_id} expired")


# -- labels (issue #14: an analyst's relabel becomes training data for `verticore retrain`) ----------
@app.command("label")
@_friendly
def label_cmd(item_id: str = typer.Argument(..., help="the item's id (as ingested; see the monitor's feed)"),
              label: str = typer.Argument(..., help="sentiment: positive, neutral or negative; with --task topic: "
                                                    "a topic the topic model knows"),
              task: LabelTask = typer.Option(LabelTask.sentiment, "--task",
                                             help="which model the label teaches: sentiment or topic"),
              by: Optional[str] = typer.Option(None, "--by", help="who labels (default: login name)"),
              source: Optional[str] = typer.Option(None, "--source", help="the item's source, when several sources "
                                                                          "use this id"),
              as_json: bool = JSON_OPT, home: Optional[Path] = HOME_OPT) -> None:
    """Relabel an item's sentiment (or topic, --task topic); `verticore retrain --app finance_sentiment --model
    sentiment` (or `--model topics`) learns from it."""
    from verticore.errors import DataError
    from verticore.registry.store import current_user

    store = _store(home)
    try:
        items = store.find_items(item_id, source)
        if not items:
            raise DataError(f"no item {item_id!r}" + (f" from source {source!r}" if source else "") + " in the monitor")
        if len(items) > 1:
            raise DataError(f"item id {item_id!r} is used by sources {', '.join(i['source'] for i in items)}; "
                            "pick one with --source")
        if task is LabelTask.topic:
            from .retrain import known_topics

            row = store.add_topic_label(items[0], label, known=known_topics(_paths(home)),
                                        by=by or current_user())
            row["label"] = row["topic"]
        else:
            row = store.add_label(items[0], label, by=by or current_user())
    finally:
        store.close()
    if as_json:
        return _echo_json(row)
    typer.echo(f"labelled {row['item_source']}/{row['item_id']} {task.value} {row['label']} "
               f"(was {row['previous'] or '-'}) by {row['labelled_by']} at {row['created_at']}")
