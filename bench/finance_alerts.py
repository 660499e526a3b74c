"""Alerting quality on a replayed stream with known injected negative-news bursts.

Background: Financial PhraseBank 50Agree *test* sentences (deduplicated), each attributed to one of
12 watched (fictional) companies or to none, spread uniformly over ``--hours`` of synthetic time.
Injected: ``--bursts`` bursts, each ``--burst-size`` negative test sentences about one company
within 30 minutes, plus decoys that must NOT page: volume bursts of neutral/positive items and
single bad headlines on quiet tickers. Burst sentences are held out of the background.

Everything runs through the real monitor (trained PhraseBank classifier, dedupe, entity matching,
detection with the default entity rule). An alert is a true positive when it is on a burst's
ticker and opens between the burst's first item and 60 minutes after its last; recall counts
bursts with at least one such alert; time-to-alert = alert open time - burst's first item time
(stream time).

Writes ``bench/results/finance_alerts.json``: {"precision", "recall", "median_seconds_to_alert", "bursts", "alerts", ...}.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _finance_common import ARTIFACTS, DATA, PHRASEBANK, ROOT, print_table, read_split, sentiment_artifact, write_result  # noqa: E402,F401


def build(args, watchlist):
    from finance_sentiment.streams import Burst

    df = read_split("test").drop_duplicates("text")
    rng = random.Random(args.seed)
    neg = [t for t, l in zip(df.text, df.label) if l == "negative"]
    other = [t for t, l in zip(df.text, df.label) if l != "negative"]
    rng.shuffle(neg)
    rng.shuffle(other)
    n_burst_texts = args.bursts * args.burst_size
    if n_burst_texts > len(neg) - 10:
        raise SystemExit(f"not enough negative test sentences for {args.bursts} bursts of {args.burst_size}")
    burst_texts, neg_bg = neg[:n_burst_texts], neg[n_burst_texts:]
    n_decoy = args.bursts * args.burst_size  # volume decoys take neutral/positive sentences
    decoy_texts, bg_other = other[:n_decoy], other[n_decoy:]
    tickers = watchlist.tickers
    names = {e.ticker: e.name for e in watchlist.entries}
    t0 = 1_700_000_000.0
    span = args.hours * 3600.0
    recs = []

    def about(text: str, ticker: str | None) -> str:
        return f"{names[ticker]}: {text}" if ticker else text

    for i, text in enumerate(bg_other + neg_bg):
        tk = rng.choice(tickers) if rng.random() < 0.8 else None
        recs.append({"id": f"bg-{i}", "title": about(text, tk), "published_at": t0 + rng.random() * span, "source": "bench"})
    bursts: list[Burst] = []
    slot = span / args.bursts
    order = tickers[:]
    rng.shuffle(order)
    for k in range(args.bursts):
        tk = order[k % len(order)]
        start = t0 + k * slot + slot * (0.2 + 0.3 * rng.random())
        b = Burst(tk, start, start + 30 * 60, args.burst_size)
        for j in range(args.burst_size):
            rid = f"burst-{k}-{j}"
            recs.append({"id": rid, "title": about(burst_texts[k * args.burst_size + j], tk),
                         "published_at": start + j * (30 * 60) / max(args.burst_size - 1, 1), "source": "bench"})
            b.item_ids.append(rid)
        bursts.append(b)
        # a volume decoy on another ticker in the second half of the slot: many items, not negative
        dk = order[(k + 3) % len(order)]
        ds = t0 + k * slot + slot * (0.65 + 0.2 * rng.random())
        for j in range(args.burst_size):
            recs.append({"id": f"decoy-{k}-{j}", "title": about(decoy_texts[k * args.burst_size + j], dk),
                         "published_at": ds + j * 240, "source": "bench"})
    recs.sort(key=lambda r: r["published_at"])
    return recs, bursts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="sentiment artifact dir (default: bench/artifacts/finance_sentiment_phrasebank)")
    ap.add_argument("--bursts", type=int, default=8)
    ap.add_argument("--burst-size", type=int, default=6)
    ap.add_argument("--hours", type=float, default=96.0)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--quick", action="store_true", help="3 bursts over 24 h, quick model if none exists")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.quick:
        args.bursts, args.hours = 3, 24.0

    from finance_sentiment.config import MonitorConfig, Rule
    from finance_sentiment.entities import Watchlist
    from finance_sentiment.paths import SAMPLES
    from finance_sentiment.pipeline import Monitor
    from finance_sentiment.scoring import SentimentModel, TopicModel
    from finance_sentiment.sources import ReplaySource
    from finance_sentiment.store import SQLiteStore
    from verticore import Embedder, resolve_device

    artifact = sentiment_artifact(args.model, args.quick)
    watchlist = Watchlist.load(SAMPLES / "watchlist.csv")
    recs, bursts = build(args, watchlist)
    device = resolve_device(args.device)
    rule = Rule("negative-surge", series="entity", direction="negative", window_minutes=60, min_count=5, z_threshold=3.0,
                min_share=0.5, cooldown_minutes=120, resolve_minutes=60, severity="high")
    cfg = MonitorConfig(rules=[rule])
    embedder = Embedder("default", device=device, max_length=128)
    sentiment = SentimentModel.load(artifact, device=device)
    topics = TopicModel(embedder, cfg.topics, threshold=cfg.zero_shot_threshold)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "alerts.db")
        mon = Monitor(store, sentiment, topics, watchlist, cfg, embedder)
        for batch in ReplaySource(recs, speed=0).batches(batch_size=64, batch_seconds=600):
            mon.process(batch, source="bench", now=batch[-1]["published_at"])
        mon.tick(recs[-1]["published_at"] + 6 * 3600)
        alerts = store.list_alerts(limit=10_000)
        n_dup = store.count_items(True)
        mon.close()
    wall = time.perf_counter() - t

    tp_alerts = 0
    detected: dict[int, float] = {}
    rows = []
    for a in sorted(alerts, key=lambda a: a["opened_at"]):
        match = None
        for k, b in enumerate(bursts):
            if a["series_key"] == b.ticker and b.start <= a["opened_at"] <= b.end + 3600:
                match = k
                break
        if match is not None:
            tp_alerts += 1
            detected.setdefault(match, a["opened_at"] - bursts[match].start)
        rows.append([a["series_key"], f"{(a['opened_at'] - recs[0]['published_at']) / 3600:.1f}h", f"{a['hit_count']}/{a['window_count']}",
                     f"{a['z']:.1f}", "burst" if match is not None else "FALSE"])
    precision = tp_alerts / len(alerts) if alerts else 0.0
    recall = len(detected) / len(bursts)
    ttas = sorted(detected.values())
    result = {"precision": round(precision, 4), "recall": round(recall, 4),
              "median_seconds_to_alert": round(statistics.median(ttas), 1) if ttas else None,
              "bursts": len(bursts), "alerts": len(alerts), "true_positive_alerts": tp_alerts, "bursts_detected": len(detected),
              "items": len(recs), "duplicates_dropped": n_dup, "burst_size": args.burst_size, "hours": args.hours,
              "rule": {k: getattr(rule, k) for k in ("window_minutes", "min_count", "z_threshold", "min_share")},
              "decoys": {"volume_bursts": len(bursts)}, "wall_seconds": round(wall, 1), "model": str(artifact),
              "seconds_to_alert": [round(x, 1) for x in ttas]}
    if rows:
        print_table(["ticker", "opened", "neg/window (final)", "z (final)", "match"], rows)
    print_table(["precision", "recall", "median s to alert", "bursts", "alerts"],
                [[f"{precision:.3f}", f"{recall:.3f}", result["median_seconds_to_alert"], len(bursts), len(alerts)]])
    write_result("finance_alerts", result)


if __name__ == "__main__":
    main()
