"""Retrieval bench on Bitext customer support: BM25 vs dense vs hybrid vs hybrid + fine-tuned embedder.

The knowledge base is ``kb.csv`` ingested as an FAQ through the app's KnowledgeBase (BM25 over
question + answer, dense over the question), the questions are ``queries.csv``. A hit is a
retrieved KB entry whose intent equals the query's intent. The hybrid's fusion (weighted RRF or
convex score combination, and the dense weight) is calibrated per embedder on 1,000 kb questions
used as leave-one-out dev queries; the test queries are never used for tuning. ``paired_hit1``
counts the queries only the hybrid (or only its part) gets right at hit@1, with the exact McNemar
p-value, because on 902 queries one query is 0.0011 of hit@1. ``kb_leave_one_out`` repeats
the default-embedder comparison on the other 2,612 kb questions (own entry left out), a larger
sample of the same distribution; ``fusion.*.dev_dense_only_hit1`` is dense alone on the dev
queries. Writes
bench/results/retrieval_bitext.json: {"bm25"|"dense"|"hybrid"|"hybrid_finetuned": {"hit1", "hit5", "mrr10"}}.

Usage: python bench/retrieval_bitext.py [--quick] [--limit N] [--skip-finetune]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA as _DATA  # noqa: E402  (also puts shared/ and apps/ on sys.path)
from common import write_result

DATA = _DATA / "bitext_customer_support" / "splits"


def score(results, intents) -> dict:
    """hit@1, hit@5 and MRR@10 where relevant = any KB entry of the query's intent."""
    from verticore.evaluation import ranking_metrics

    rec = {i: [r.chunk_id for r in rs] for i, rs in enumerate(results)}
    rel = {i: {r.chunk_id for r in rs if r.meta.get("intent") == intents[i]} for i, rs in enumerate(results)}
    m1 = ranking_metrics(rec, rel, k=1)
    m5 = ranking_metrics(rec, rel, k=5)
    m10 = ranking_metrics(rec, rel, k=10)
    return {"hit1": round(float(m1["hit@1"]), 4), "hit5": round(float(m5["hit@5"]), 4),
            "mrr10": round(float(m10["mrr"]), 4)}


def top1_hits(results, intents) -> list[bool]:
    """Per query: is the top hit relevant (hit@1 of one query, for the paired McNemar test)."""
    from verticore.evaluation import hit_at_k

    return [bool(hit_at_k([r.chunk_id for r in rs], {r.chunk_id for r in rs if r.meta.get("intent") == intents[i]},
                          k=1)) for i, rs in enumerate(results)]


def paired(a: list[bool], b: list[bool]) -> dict:
    """Queries ``a`` gets right at hit@1 and ``b`` misses, and vice versa, with the exact McNemar
    p-value: on 902 queries a 0.001 difference is one query, so say whether it is signal."""
    from math import comb

    a_only = sum(x and not y for x, y in zip(a, b))
    b_only = sum(y and not x for x, y in zip(a, b))
    n = a_only + b_only
    p = min(1.0, 2 * sum(comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2 ** n) if n else 1.0
    return {"only_first_right": a_only, "only_second_right": b_only, "mcnemar_p": round(p, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small KB/query subsets and a few fine-tuning steps")
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first N queries")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--ft-epochs", type=int, default=3)
    ap.add_argument("--ft-max-length", type=int, default=64)
    ap.add_argument("--ft-lr", type=float, default=5e-5)
    ap.add_argument("--ft-batch-size", type=int, default=24)
    ap.add_argument("--no-ft-grouped", dest="ft_grouped", action="store_false",
                    help="plain random batches (same-intent pairs can be in-batch negatives)")
    ap.add_argument("--ft-max-steps", type=int, default=None,
                    help="cap the embedder fine-tune (CPU budget; recorded in the JSON)")
    ap.add_argument("--dev-queries", type=int, default=1000,
                    help="kb questions used (leave-one-out) to calibrate fusion")
    ap.add_argument("--work", default=None)
    ap.add_argument("--name", default="retrieval_bitext")
    args = ap.parse_args(argv)

    from customer_service.kb import KnowledgeBase
    from verticore import Embedder
    from verticore.io import read_table

    kb_df = read_table(DATA / "kb.csv", ["question", "answer", "intent"])
    q_df = read_table(DATA / "queries.csv", ["question", "intent"])
    if args.quick:
        kb_df = kb_df.groupby("intent", group_keys=False).head(20)
        q_df = q_df.groupby("intent", group_keys=False).head(6)
    if args.limit:
        q_df = q_df.head(args.limit)
    work = Path(args.work or tempfile.mkdtemp(prefix="bitext_"))
    work.mkdir(parents=True, exist_ok=True)
    faq = work / "bitext_kb.csv"
    kb_df[["question", "answer", "intent", "category"]].to_csv(faq, index=False)
    queries, intents = q_df["question"].astype(str).tolist(), q_df["intent"].astype(str).tolist()
    result: dict = {"dataset": "Bitext customer support splits (kb.csv as knowledge base, queries.csv as questions)",
                    "n_kb": len(kb_df), "n_queries": len(queries), "quick": args.quick,
                    "relevance": "hit = a retrieved KB entry with the query's intent"}
    timings = {}

    # Fusion is tuned on the knowledge base itself, never on the test queries: a sample of kb
    # questions are dev queries (their own entry left out), relevant = same intent.
    dev = kb_df.sample(n=min(args.dev_queries, len(kb_df)), random_state=42)
    dev_q, dev_intents = dev["question"].astype(str).tolist(), dev["intent"].astype(str).tolist()

    def own_entries(kb: KnowledgeBase) -> dict:
        own = {}
        for cid, emb in kb.conn.execute("SELECT chunk_id, embed_text FROM chunks"):
            own.setdefault(emb, cid)
        return own

    def calibrate(kb: KnowledgeBase, prefix=""):
        own = own_entries(kb)
        t0 = time.time()
        cal = kb.calibrate_fusion(dev_q, lambda i, c: c.meta.get("intent") == dev_intents[i],
                                  exclude=[own.get(q.strip()) for q in dev_q])
        timings[prefix + "calibrate_s"] = round(time.time() - t0, 1)
        return cal["chosen"]  # includes dev_dense_only_hit1 / dev_bm25_only_hit1 on the same queries

    # A second, larger check of fusion than the 902 test queries: every kb question not used for
    # calibration, asked with its own entry left out (same distribution as the test queries).
    # Default embedder only: the fine-tuned one was trained on these very questions.
    rest = kb_df.drop(index=dev.index)
    rest_q, rest_intents = rest["question"].astype(str).tolist(), rest["intent"].astype(str).tolist()

    def leave_one_out(kb: KnowledgeBase) -> dict:
        if not rest_q:  # --quick: every kb question is a dev query
            return {"n_queries": 0}
        own = own_entries(kb)
        exclude = [own.get(q.strip()) for q in rest_q]
        qv = kb.embedder.encode(rest_q, show_progress=True)
        hits = {m: top1_hits(kb.search_many(rest_q, k=10, mode=m, query_vectors=qv, exclude=exclude), rest_intents)
                for m in ("bm25", "dense", "hybrid")}
        return {"n_queries": len(rest_q), **{f"{m}_hit1": round(sum(h) / max(len(h), 1), 4) for m, h in hits.items()},
                "hybrid_vs_dense": paired(hits["hybrid"], hits["dense"]),
                "hybrid_vs_bm25": paired(hits["hybrid"], hits["bm25"])}

    def run(kb: KnowledgeBase, modes, prefix=""):
        t0 = time.time()
        qv = kb.embedder.encode(queries, show_progress=True)
        timings[prefix + "encode_queries_s"] = round(time.time() - t0, 1)
        out, hits = {}, {}
        for mode in modes:
            t0 = time.time()
            res = kb.search_many(queries, k=10, mode=mode, query_vectors=qv)
            out[mode] = score(res, intents)
            hits[mode] = top1_hits(res, intents)
            timings[prefix + mode + "_s"] = round(time.time() - t0, 2)
        out["paired"] = {f"hybrid_vs_{m}": paired(hits["hybrid"], hits[m]) for m in modes if m != "hybrid"}
        return out

    t0 = time.time()
    kb = KnowledgeBase(work / "kb_default", embedder=Embedder("default"))
    kb.ingest(faq, show_progress=True)
    timings["ingest_default_s"] = round(time.time() - t0, 1)
    result["fusion"] = {"default": calibrate(kb)}
    base = run(kb, ["bm25", "dense", "hybrid"])
    result["paired_hit1"] = base.pop("paired")
    result.update(base)
    result["kb_leave_one_out"] = {"default": leave_one_out(kb)}

    if not args.skip_finetune:
        from verticore.finetune import EmbedderTrainingConfig, train_embedder

        t0 = time.time()
        pairs = list(zip(kb_df["question"].astype(str), kb_df["answer"].astype(str)))
        cfg = EmbedderTrainingConfig(base="default", epochs=args.ft_epochs, batch_size=args.ft_batch_size,
                                     learning_rate=args.ft_lr, max_length=args.ft_max_length,
                                     max_steps=4 if args.quick else args.ft_max_steps, seed=42)
        # No two pairs of one intent share a batch: same-intent answers are not negatives.
        ft = train_embedder(pairs, work / "embedder_ft", config=cfg, show_progress=True,
                            groups=kb_df["intent"].astype(str).tolist() if args.ft_grouped else None)
        timings["finetune_s"] = round(time.time() - t0, 1)
        t0 = time.time()
        kb_ft = KnowledgeBase(work / "kb_ft", embedder=Embedder(str(ft.artifact_dir)))
        kb_ft.ingest(faq, show_progress=True)
        timings["ingest_finetuned_s"] = round(time.time() - t0, 1)
        result["fusion"]["finetuned"] = calibrate(kb_ft, prefix="ft_")
        ft_res = run(kb_ft, ["bm25", "dense", "hybrid"], prefix="ft_")
        result["paired_hit1_finetuned"] = ft_res.pop("paired")
        result["hybrid_finetuned"] = ft_res["hybrid"]
        result["dense_finetuned"] = ft_res["dense"]
        result["finetune"] = {"pairs": len(pairs), "epochs": args.ft_epochs, "max_length": args.ft_max_length,
                              "lr": args.ft_lr,
                              "batch_size": args.ft_batch_size, "grouped_batches_by_intent": args.ft_grouped,
                              "max_steps": cfg.max_steps,
                              "loss": "MultipleNegativesRanking (in-batch negatives), kb question -> answer"
                              + (", no two pairs of one intent in a batch" if args.ft_grouped else "")}
    configs = [k for k in ("bm25", "dense", "hybrid", "dense_finetuned", "hybrid_finetuned") if k in result]
    result["best"] = max(configs, key=lambda k: (result[k]["hit1"], result[k]["mrr10"]))
    result["timings"] = timings
    path = write_result(args.name, result)
    print(f"\n{'config':<18} {'hit@1':>7} {'hit@5':>7} {'MRR@10':>7}")
    for k in configs:
        print(f"{k:<18} {result[k]['hit1']:>7.4f} {result[k]['hit5']:>7.4f} {result[k]['mrr10']:>7.4f}")
    for key in ("paired_hit1", "paired_hit1_finetuned"):
        for name, d in result.get(key, {}).items():
            print(f"{key}: {name}: hybrid alone right {d['only_first_right']}, "
                  f"other alone right {d['only_second_right']}, "
                  f"McNemar p {d['mcnemar_p']}")
    print(f"best: {result['best']}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
