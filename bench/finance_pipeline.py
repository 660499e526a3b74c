"""End-to-end throughput of the finance_sentiment monitor on CPU (or GPU when present).

Pipeline = validate -> dedupe (title hash + embedding near-duplicates) -> sentiment (article
level, per-sentence) -> topics (zero-shot, embedding similarity) -> entities -> SQLite store
(WAL) -> surge detection -> alerts/outbox, in batches. Compared with classification alone
(the sentiment model scoring the same items, already warm).

Items: Financial PhraseBank 50Agree test+dev sentences as headlines; every 4th item also gets a
body of 3-5 other sentences; 10% syndicated copies ("UPDATE 1-... - Reuters") are mixed in.

Writes ``bench/results/finance_pipeline.json``: {"items_per_s", "classify_only_items_per_s", "ratio", ...}.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _finance_common import ARTIFACTS, DATA, PHRASEBANK, ROOT, print_table, read_split, sentiment_artifact, write_result  # noqa: E402,F401


def build_items(limit: int | None, seed: int = 0) -> list[dict]:
    df = read_split("test")
    dv = read_split("dev")
    texts = list(dict.fromkeys(list(df.text) + list(dv.text)))
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    wl_names = ["Northwind Motors", "Aurora Bank", "Helix Pharmaceuticals", "Cascade Semiconductors", "Kestrel Logistics"]
    items = []
    for i, t in enumerate(texts):
        rec = {"id": f"pb-{i}", "title": t, "published_at": t0 + i * 30, "source": "phrasebank", "url": f"https://n.example/{i}"}
        if i % 4 == 0:
            rec["body"] = " ".join(rng.sample(texts, rng.randint(3, 5)))
        if i % 3 == 0:
            rec["title"] = f"{rng.choice(wl_names)}: {t}"
        items.append(rec)
        if rng.random() < 0.1:
            items.append({**rec, "id": f"pb-{i}-syn", "title": f"UPDATE 1-{rec['title']} - Reuters", "published_at": rec["published_at"] + 60})
    return items[:limit] if limit else items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="sentiment artifact dir (default: bench/artifacts/finance_sentiment_phrasebank)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N items (smoke runs)")
    ap.add_argument("--quick", action="store_true", help="small run: 200 items, quick model if none exists")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    limit = args.limit or (200 if args.quick else None)

    from finance_sentiment.config import MonitorConfig
    from finance_sentiment.entities import Watchlist
    from finance_sentiment.items import NewsItem
    from finance_sentiment.paths import SAMPLES
    from finance_sentiment.pipeline import Monitor
    from finance_sentiment.scoring import SentimentModel, TopicModel
    from finance_sentiment.store import SQLiteStore
    from verticore import Embedder, resolve_device

    artifact = sentiment_artifact(args.model, args.quick)
    records = build_items(limit)
    device = resolve_device(args.device)
    cfg = MonitorConfig()
    embedder = Embedder("default", device=device, batch_size=args.batch_size, max_length=128)
    sentiment = SentimentModel.load(artifact, device=device, batch_size=args.batch_size)
    topics = TopicModel(embedder, cfg.topics, threshold=cfg.zero_shot_threshold)
    watchlist = Watchlist.load(SAMPLES / "watchlist.csv")
    # warm up every model outside the timed region
    sentiment.score(["Warm-up sentence ."])
    embedder.encode(["warm up"])
    topics.assign(["warm up"])

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        mon = Monitor(store, sentiment, topics, watchlist, cfg, embedder)
        t = time.perf_counter()
        stats = {"accepted": 0, "duplicates": 0, "alerts_opened": 0}
        for i in range(0, len(records), args.batch_size):
            r = mon.process(records[i:i + args.batch_size], source="bench", now=records[min(i + args.batch_size, len(records)) - 1]["published_at"])
            stats["accepted"] += r.accepted
            stats["duplicates"] += r.duplicates
            stats["alerts_opened"] += r.opened
        e2e_s = time.perf_counter() - t
        mon.close()

    items = [NewsItem.from_dict(r) for r in records]
    t = time.perf_counter()
    for i in range(0, len(items), args.batch_size):
        chunk = items[i:i + args.batch_size]
        sentiment.score([it.title for it in chunk], [it.body for it in chunk])
    cls_s = time.perf_counter() - t

    n = len(records)
    result = {"items_per_s": round(n / e2e_s, 2), "classify_only_items_per_s": round(n / cls_s, 2),
              "ratio": round((n / e2e_s) / (n / cls_s), 3), "items": n, "device": device, "batch_size": args.batch_size,
              "end_to_end_seconds": round(e2e_s, 2), "classify_only_seconds": round(cls_s, 2), **stats,
              "model": str(artifact), "note": "classify-only = the sentiment model alone on the same items; "
              "end-to-end adds embedding (dedupe + zero-shot topics), entities, SQLite and detection"}
    print_table(["stage", "items", "seconds", "items/s"],
                [["end to end", n, f"{e2e_s:.1f}", f"{n / e2e_s:.1f}"], ["classify only", n, f"{cls_s:.1f}", f"{n / cls_s:.1f}"]])
    print(f"ratio end-to-end / classify-only: {result['ratio']:.3f}  (duplicates caught: {stats['duplicates']})")
    write_result("finance_pipeline", result)


if __name__ == "__main__":
    main()
