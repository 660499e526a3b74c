"""Answer latency of the customer-service bot on CPU (extractive path) vs retrieval alone.

Knowledge base: Bitext ``kb.csv`` ingested as an FAQ; questions: Bitext ``queries.csv``. For every
query we time (1) hybrid retrieval alone (query embedding + BM25 + dense + RRF) and (2) the whole
``Bot.ask`` (guardrails, memory, optional intent model, retrieval, extractive answer, SQLite logging),
one query at a time, after a warm-up. Writes bench/results/customer_service_latency.json:
{"p50_ms", "p95_ms", "retrieval_only_p95_ms", ...}.

Usage: python bench/customer_service.py [--limit N] [--intents DIR] [--kb DIR (reuse)] [--device cpu] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import DATA as _DATA  # noqa: E402  (also puts shared/ and apps/ on sys.path)
from common import write_result

DATA = _DATA / "bitext_customer_support" / "splits"


def pct(xs, q):
    return round(float(np.percentile(np.asarray(xs), q)), 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="time only the first N queries")
    ap.add_argument("--quick", action="store_true", help="small KB and 30 queries")
    ap.add_argument("--kb", default=None, help="reuse this knowledge-base directory (built from kb.csv if empty)")
    ap.add_argument("--intents", default=None, help="intent model directory to include in the answer path")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="torch", help="core embedder backend: torch, torch-int8, onnx, onnx-int8")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads per request (default 1: the serving setup, one request per core; "
                         "0 keeps torch's default, which thrashes on a busy CPU)")
    ap.add_argument("--name", default="customer_service_latency")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from customer_service.bot import Bot, BotConfig
    from customer_service.intents import IntentModel
    from customer_service.kb import KnowledgeBase
    from customer_service.store import BotStore
    from verticore import Embedder
    from verticore.io import read_table

    kb_df = read_table(DATA / "kb.csv", ["question", "answer", "intent"])
    q_df = read_table(DATA / "queries.csv", ["question", "intent"])
    if args.quick:
        kb_df = kb_df.groupby("intent", group_keys=False).head(20)
        q_df = q_df.head(30)
    if args.limit:
        q_df = q_df.head(args.limit)
    work = Path(tempfile.mkdtemp(prefix="cs_latency_"))
    kb_dir = Path(args.kb) if args.kb else work / "kb"
    kb = KnowledgeBase(kb_dir, embedder=Embedder("default", device=args.device, backend=args.backend))
    if kb.chunk_count() == 0:
        faq = work / "bitext_kb.csv"
        kb_df[["question", "answer", "intent", "category"]].to_csv(faq, index=False)
        kb.ingest(faq, show_progress=True)
    # the KB embedder is shared with an ensemble's probe, so the bot embeds each query once
    intents = IntentModel(args.intents, device=args.device, embedder=kb.embedder) if args.intents else None
    bot = Bot(kb, intents, config=BotConfig(), store=BotStore(work / "bot.sqlite"))
    bot.warm_up()
    queries = q_df["question"].astype(str).tolist()
    for q in queries[:5]:  # warm-up (allocator, BM25 build, SQLite pages)
        kb.search(q, k=3)
        bot.ask(q)

    from tqdm.auto import tqdm

    retr, full, statuses = [], [], {}
    for q in tqdm(queries, desc="latency", unit="query"):
        t0 = time.perf_counter()
        kb.search(q, k=bot.config.top_k, mode="hybrid")
        retr.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        r = bot.ask(q)
        full.append((time.perf_counter() - t0) * 1000)
        statuses[r.status] = statuses.get(r.status, 0) + 1
    result = {"p50_ms": pct(full, 50), "p95_ms": pct(full, 95), "retrieval_only_p50_ms": pct(retr, 50),
              "retrieval_only_p95_ms": pct(retr, 95), "mean_ms": round(float(np.mean(full)), 2),
              "n_queries": len(queries), "n_kb": kb.chunk_count(), "path": "extractive (no LLM), hybrid retrieval top-3",
              "intent_model": str(args.intents) if args.intents else None, "statuses": statuses,
              "device": args.device, "backend": args.backend, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_average_1m": round(os.getloadavg()[0], 2), "machine": platform.machine(), "quick": args.quick}
    path = write_result(args.name, result)
    print(f"\n{'path':<18} {'p50 ms':>8} {'p95 ms':>8}")
    print(f"{'retrieval only':<18} {result['retrieval_only_p50_ms']:>8.1f} {result['retrieval_only_p95_ms']:>8.1f}")
    print(f"{'full answer':<18} {result['p50_ms']:>8.1f} {result['p95_ms']:>8.1f}")
    print(f"queries={len(queries)} kb={result['n_kb']} load(1m)={result['load_average_1m']} statuses={statuses}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
