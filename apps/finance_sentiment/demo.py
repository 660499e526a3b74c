"""Demo state for the Verticore hub: ``prepare_demo(home)`` trains small models on the bundled
sample data and replays a synthetic two-day news stream (with two injected negative bursts)
through the monitor, delivering its alerts to a local loopback receiver.

Idempotent and fast when already done. ``VERTICORE_DEMO_FAST=1`` makes it tiny (2 training
steps, a shorter stream, zero-shot topics only) for tests.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from verticore.io import atomic_write_json, atomic_write_text, read_json
from verticore.paths import app_home
from verticore.settings import get_settings

from .paths import APP_DIR_NAME, SAMPLES, AppPaths

log = logging.getLogger("finance_sentiment")
DEMO_DONE = "demo_state.json"
DEMO_VERSION = 3  # 3: multi-source sentiment recipe and a target-aware model on the bundled sample sources


def fast_mode() -> bool:
    return get_settings().demo_fast


def _say(show: bool, msg: str) -> None:
    if show:
        print(f"[finance_sentiment demo] {msg}", flush=True)


def _ready(model_dir: Path) -> bool:
    return all((model_dir / f).is_file() for f in ("labels.json", "config.json", "model.safetensors"))


def demo_stream(paths: AppPaths, fast: bool) -> tuple[list[dict], list]:
    """The demo's replay stream: sample headlines as background plus negative bursts on two tickers."""
    import pandas as pd

    from .entities import Watchlist
    from .streams import build_stream

    wl = Watchlist.load(paths.watchlist)
    df = pd.read_csv(SAMPLES / "headlines.csv")
    neg = df[df.sentiment == "negative"].text.tolist()
    # burst texts are negative headlines; the rest is background
    burst_pool = neg[::3]
    used = set(burst_pool)
    background = [{"title": t, "url": f"https://news.example.com/bg/{i}", "source": "Sample Wire"}
                  for i, t in enumerate(df.text) if t not in used]
    if fast:
        background = background[:60]
    start = time.time() - 48 * 3600.0
    return build_stream(background, burst_pool, wl, start=start, hours=48.0, n_bursts=2, burst_size=7 if not fast else 6,
                        burst_minutes=30.0, seed=11, tickers=["MRD", "CSM"])


def is_ready(home: Path) -> bool:
    """True when :func:`prepare_demo` has completed under ``home`` (models, database, replayed stream)."""
    paths = AppPaths(app_home(APP_DIR_NAME, Path(home)))
    done = paths.root / DEMO_DONE
    if not done.exists():
        return False
    try:
        state = read_json(done)
    except Exception:
        return False
    return (state.get("version") == DEMO_VERSION and _ready(paths.sentiment_model)
            and _ready(paths.target_sentiment_model) and paths.db.exists())


def prepare_demo(home: Path, show_progress: bool = True, fast: bool | None = None) -> None:
    """Prepare ``home / "finance_sentiment"``: models, watchlist, config, a replayed stream with alerts.

    ``fast`` (default: ``VERTICORE_DEMO_FAST``) trains for 2 steps on a shorter stream.
    """
    from .targets import train_target_sentiment
    from .training import SAMPLE_SENTIMENT_SOURCES, train_sample_sentiment, train_topics

    fast = fast_mode() if fast is None else bool(fast)
    paths = AppPaths(app_home(APP_DIR_NAME, Path(home)))
    paths.root.mkdir(parents=True, exist_ok=True)
    done = paths.root / DEMO_DONE
    if is_ready(home):
        _say(show_progress, f"ready at {paths.root}")
        return
    if not paths.watchlist.exists():
        shutil.copyfile(SAMPLES / "watchlist.csv", paths.watchlist)
    if not paths.config.exists():
        atomic_write_text(paths.config, (SAMPLES / "rules.yaml").read_text(encoding="utf-8"))
    steps = 2 if fast else None
    if not _ready(paths.sentiment_model):  # a model already there (a real one, or an older demo's) is kept
        _say(show_progress, "training the demo sentiment model (multi-source recipe on the bundled report "
                            "sentences, headlines and posts)")
        train_sample_sentiment(paths.sentiment_model, max_steps=steps, epochs=6, show_progress=show_progress,
                               rows=40 if fast else None)
    if not _ready(paths.target_sentiment_model):
        _say(show_progress, "training the demo target-aware sentiment model (one label per company named)")
        train_target_sentiment(list(SAMPLE_SENTIMENT_SOURCES), paths.target_sentiment_model, max_steps=steps,
                               batch_size=16, show_progress=show_progress, limit=40 if fast else None,
                               eval_every=None)
    if not fast and not _ready(paths.topic_model):
        _say(show_progress, "training the demo topic classifier on the bundled sample headlines")
        train_topics(paths.topic_model, max_steps=steps, epochs=6, show_progress=show_progress)
    _replay(paths, fast, show_progress)
    atomic_write_json(done, {"version": DEMO_VERSION, "fast": fast, "prepared_at": time.time()})
    _say(show_progress, f"ready at {paths.root}")


def _replay(paths: AppPaths, fast: bool, show_progress: bool) -> None:
    from tqdm.auto import tqdm

    from .config import WebhookTarget, load_config
    from .pipeline import Monitor
    from .receiver import LocalReceiver
    from .sources import ReplaySource
    from .webhooks import Deliverer

    for suffix in ("", "-wal", "-shm"):
        p = Path(str(paths.db) + suffix)
        if p.exists():
            p.unlink()
    records, bursts = demo_stream(paths, fast)
    receiver = LocalReceiver(secret="demo-secret").start()
    try:
        cfg = load_config(paths.config)
        cfg.webhooks = [WebhookTarget("demo-receiver", receiver.url, format="json", secret="demo-secret", timeout_s=2.0,
                                      max_attempts=3, backoff_base_s=0.05, backoff_max_s=0.2)]
        mon = Monitor.open(paths, config=cfg, device="cpu")
        try:
            src = ReplaySource(records, speed=0)
            bar = tqdm(total=len(records), desc="replaying demo stream", unit="item", disable=not show_progress)
            for batch in src.batches(batch_size=32, batch_seconds=1800):
                mon.process(batch, source="replay", now=batch[-1]["published_at"])
                bar.update(len(batch))
            bar.close()
            Deliverer(mon.store, cfg.webhooks, allow="127.0.0.1").drain(max_rounds=20)  # its own loopback receiver
        finally:
            mon.close()
    finally:
        receiver.stop()
    atomic_write_json(paths.root / "demo_bursts.json", [b.to_dict() for b in bursts])
