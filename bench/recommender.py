"""Recommender bench on MovieLens (fixed splits): popularity, EASE, text, behaviour-fine-tuned text, hybrid.

Reads ``<data>/movies.csv``, ``<data>/tags.csv`` and ``<data>/splits/{train,test,cold_items}.csv``
(positives = rating >= 4, per-user temporal 80/20, 10% cold items never seen in train).
Item text = title (with year), year, genres and the user tags.

Protocols (metrics from the core evaluator, ``verticore.evaluation.ranking_metrics``):

* ``all``: rank every catalog item except the user's train items; Recall@10, NDCG@10, coverage.
* ``cold``: rank only the cold items (``cold_items.csv``) against the user's test interactions
  with cold items; Recall@10, NDCG@10. Popularity and EASE cannot score cold items (null).

Writes ``bench/results/recommender.json``: for each of random, popularity, ease, text,
text_finetuned, hybrid: ``{"all": {"recall10", "ndcg10", "coverage"}, "cold": {"recall10",
"ndcg10"} | null, "ms_per_user"}``, plus ``api`` (p50/p95 latency of ``/recommend``) and
``settings``. ``--quick`` runs a smoke version (few users, a few fine-tuning steps).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "shared", ROOT / "apps", ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

try:  # shared bench helpers (written by another agent); small local fallbacks otherwise
    from common import print_table, write_result  # type: ignore  # noqa: E402
except Exception:  # pragma: no cover - fallback
    def print_table(headers, rows) -> None:
        cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
        width = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for r in cells:
            print("  ".join(c.ljust(w) for c, w in zip(r, width)))

    def write_result(name: str, data: dict) -> Path:
        from verticore.io import atomic_write_json

        return atomic_write_json(ROOT / "bench" / "results" / f"{name}.json", data)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def ranking(recommended: dict[str, list[str]], relevant: dict[str, set[str]], k: int, catalog_size: int) -> dict:
    """Recall, NDCG and coverage at ``k`` from the core evaluator."""
    from verticore.evaluation import ranking_metrics

    m = ranking_metrics(recommended, relevant, k=k, catalog_size=catalog_size)
    return {"recall": m[f"recall@{k}"], "ndcg": m[f"ndcg@{k}"], "coverage": m.get("coverage")}


def evaluate(name: str, rank_all, rank_cold, users: list[str], rel_all: dict, rel_cold: dict, n_items: int,
             n_cold: int) -> dict:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    recs = {u: rank_all(u) for u in tqdm(users, desc=f"{name}: all", unit="user", leave=False)}
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(users))
    m = ranking(recs, {u: rel_all[u] for u in users}, 10, n_items)
    out = {"all": {"recall10": m["recall"], "ndcg10": m["ndcg"], "coverage": m["coverage"]}, "cold": None,
           "ms_per_user": round(ms, 3)}
    if rank_cold is not None:
        cu = [u for u in users if rel_cold.get(u)]
        crecs = {u: rank_cold(u) for u in tqdm(cu, desc=f"{name}: cold", unit="user", leave=False)}
        c = ranking(crecs, {u: rel_cold[u] for u in cu}, 10, n_cold)
        out["cold"] = {"recall10": c["recall"], "ndcg10": c["ndcg"]}
    print(f"{name:15s} all ndcg10={out['all']['ndcg10']:.4f} recall10={out['all']['recall10']:.4f} "
          f"cold recall10={(out['cold'] or {}).get('recall10')} ms/user={out['ms_per_user']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "movielens_latest_small"))
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "artifacts" / "recommender"),
                    help="embedded catalogs and the fine-tuned model are kept here (reused when present)")
    ap.add_argument("--limit-users", type=int, default=None, help="evaluate only the first N users (smoke runs)")
    ap.add_argument("--limit-items", type=int, default=None,
                    help="smoke runs: catalog = the eval users' items + cold items + a sample, about N items")
    ap.add_argument("--max-steps", type=int, default=400, help="fine-tuning steps")
    ap.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch (in-batch negatives)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--window", type=int, default=5, help="co-interaction window (next N items of a user)")
    ap.add_argument("--l2", type=float, default=200.0, help="EASE regularisation")
    ap.add_argument("--alpha", type=float, default=None, help="hybrid CF weight (default: tuned on a train holdout)")
    ap.add_argument("--latency-requests", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 users, 4 fine-tuning steps")
    ap.add_argument("--retrain", action="store_true", help="ignore a fine-tuned model already in --workdir")
    ap.add_argument("--out", default="recommender", help="result name under bench/results/")
    args = ap.parse_args(argv)
    if args.quick:
        args.limit_users = args.limit_users or 40
        args.limit_items = args.limit_items or 1500
        args.max_steps = 4
        args.latency_requests = 20
        args.out = args.out if args.out != "recommender" else "recommender_quick"

    from recommender import EASE, Catalog, Popularity, Recommender
    from recommender.movielens import MOVIELENS_TEMPLATE, load_splits, movie_records
    from recommender.training import finetune_on_behaviour, tune_alpha
    from verticore import Embedder
    from verticore.errors import VerticoreError

    t_start = time.time()
    data = Path(args.data)
    work = Path(args.workdir) / ("quick" if args.quick else "full")
    try:
        records = movie_records(data)
        train, test, cold = load_splits(data)
    except VerticoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    item_ids = [r["item_id"] for r in records]
    known = set(item_ids)
    rel_all: dict[str, set[str]] = {}
    for u, i in zip(test["user"], test["item"]):
        if i in known:
            rel_all.setdefault(u, set()).add(i)
    train_users = set(train.users)
    users = sorted((u for u in rel_all if u in train_users), key=lambda s: int(s) if s.isdigit() else s)
    if args.limit_users:
        users = users[: args.limit_users]
    if args.limit_items:  # smoke runs only: a smaller catalog so embedding takes seconds
        keep = set(cold)
        for u in users:
            keep |= rel_all[u] | set(train.history(u)["item"])
        rest = [i for i in item_ids if i not in keep]
        keep |= set(np.random.default_rng(0).permutation(rest)[: max(0, args.limit_items - len(keep))].tolist())
        records = [r for r in records if r["item_id"] in keep]
        item_ids = [r["item_id"] for r in records]
        known = set(item_ids)
        rel_all = {u: rel_all[u] & known for u in users}
    rel_cold = {u: rel_all[u] & cold for u in users if rel_all[u] & cold}
    cold_list = sorted(cold & known)
    seen = {u: set(h["item"]) for u, h in train.by_user().items()}
    n_items = len(item_ids)
    print(f"{n_items} items ({len(cold_list)} cold), {len(train)} train interactions, {len(users)} eval users "
          f"({len(rel_cold)} with cold test items)", flush=True)

    def build_catalog(model: str, name: str) -> Catalog:
        d = work / name
        emb = Embedder(model, batch_size=128, max_length=128)
        if (d / "catalog.json").exists():
            try:
                cat = Catalog.load(d, embedder=emb)
                if len(cat) == n_items:
                    return cat
            except VerticoreError as exc:
                print(f"rebuilding {name}: {exc}")
        t0 = time.time()
        cat = Catalog.from_records(records, embedder=emb, template=MOVIELENS_TEMPLATE, show_progress=True)
        cat.save(d)
        print(f"embedded {len(cat)} items with {name} in {time.time() - t0:.1f}s", flush=True)
        return cat

    results: dict[str, dict] = {}
    rng = np.random.default_rng(42)

    # random
    def rand_all(u):
        out = []
        for j in rng.permutation(n_items):
            if item_ids[j] not in seen[u]:
                out.append(item_ids[j])
                if len(out) == 10:
                    break
        return out

    results["random"] = evaluate("random", rand_all,
                                 lambda u: [cold_list[j] for j in rng.permutation(len(cold_list))[:10]],
                                 users, rel_all, rel_cold, n_items, len(cold_list))
    # popularity
    pop = Popularity().fit(train)
    results["popularity"] = evaluate("popularity", lambda u: [i for i, _ in pop.recommend(10, exclude=seen[u])], None,
                                     users, rel_all, rel_cold, n_items, len(cold_list))
    # EASE
    t0 = time.time()
    ease = EASE(l2=args.l2).fit(train)
    ease_fit_s = time.time() - t0
    hist = {u: list(h["item"]) for u, h in train.by_user().items()}
    results["ease"] = evaluate("ease", lambda u: [i for i, _ in ease.recommend(hist[u], 10)], None,
                               users, rel_all, rel_cold, n_items, len(cold_list))
    results["ease"]["fit_seconds"] = round(ease_fit_s, 2)

    # text, default model
    cat0 = build_catalog("default", "catalog_default")
    rec0 = Recommender(cat0, train, mode="text")
    results["text"] = evaluate("text", lambda u: [r.item for r in rec0.recommend(u, 10, explain=False)],
                               lambda u: [r.item for r in rec0.recommend(u, 10, candidates=cold_list, explain=False)],
                               users, rel_all, rel_cold, n_items, len(cold_list))

    # text, fine-tuned on co-interaction pairs from the train interactions
    ft_dir = work / "embedder_behaviour"
    ft_info: dict = {}
    stale_ft = True
    if (ft_dir / "training_config.json").exists():  # reuse only a model trained with the same settings
        tc = json.loads((ft_dir / "training_config.json").read_text())
        stale_ft = (tc.get("max_steps"), tc.get("batch_size"), tc.get("learning_rate")) != \
            (args.max_steps, args.batch_size, args.lr)
    if args.retrain or stale_ft or not (ft_dir / "config.json").exists():
        t0 = time.time()
        res = finetune_on_behaviour(train, cat0.texts, ft_dir, window=args.window, max_gap_days=None,
                                    batch_size=args.batch_size, learning_rate=args.lr, max_length=64,
                                    max_steps=args.max_steps, show_progress=True)
        kept = ("steps", "n_pairs", "dev", "dev_before")
        ft_info = {"train_seconds": round(time.time() - t0, 1), **{k: v for k, v in res.metrics.items() if k in kept}}
        ft_dir = Path(res.artifact_dir)
        print(f"fine-tuned in {ft_info['train_seconds']}s: {ft_info}", flush=True)
        for stale in ("catalog_finetuned",):
            import shutil

            shutil.rmtree(work / stale, ignore_errors=True)
    else:
        mf = ft_dir / "metrics.json"
        if mf.exists():
            m = json.loads(mf.read_text())
            ft_info = {"reused": True, **{k: v for k, v in m.items() if k in ("steps", "n_pairs", "dev", "dev_before",
                                                                            "train_seconds")}}
    cat1 = build_catalog(str(ft_dir), "catalog_finetuned")
    rec1 = Recommender(cat1, train, mode="text")
    results["text_finetuned"] = evaluate(
        "text_finetuned", lambda u: [r.item for r in rec1.recommend(u, 10, explain=False)],
        lambda u: [r.item for r in rec1.recommend(u, 10, candidates=cold_list, explain=False)],
        users, rel_all, rel_cold, n_items, len(cold_list))
    results["text_finetuned"]["finetune"] = ft_info

    # hybrid: EASE + fine-tuned text; alpha picked on a holdout of the train interactions (never on test)
    alpha = args.alpha
    tuning = {}
    if alpha is None:  # the app's own tuning (what `recommender build` does), on the eval users' histories
        tuned = tune_alpha(cat1, train, l2=args.l2, users=users, max_users=300)
        alpha, tuning = tuned.alpha, tuned.scores
        print(f"hybrid alpha tuned on train holdout: {tuning} -> {alpha}", flush=True)
    rech = Recommender(cat1, train, cf=ease, mode="hybrid", alpha=alpha)
    results["hybrid"] = evaluate("hybrid", lambda u: [r.item for r in rech.recommend(u, 10, explain=False)],
                                 lambda u: [r.item for r in rech.recommend(u, 10, candidates=cold_list, explain=False)],
                                 users, rel_all, rel_cold, n_items, len(cold_list))
    results["hybrid"]["alpha"] = alpha
    results["hybrid"]["alpha_tuning_ndcg10"] = {str(k): v for k, v in tuning.items()}

    # API latency: /recommend on the full catalog (~10k items), hybrid, with explanations
    from fastapi.testclient import TestClient

    from recommender.api import create_app
    from verticore.serving import ServingSettings

    # route latency as before API keys existed (the auth overhead is bench/serving.py's figure)
    client = TestClient(create_app(rech, settings=ServingSettings(insecure_no_auth=True)))
    lat = []
    sample = [users[j] for j in rng.integers(0, len(users), size=args.latency_requests)]
    client.get(f"/recommend/{sample[0]}")  # warm-up
    for u in sample:
        t0 = time.perf_counter()
        r = client.get(f"/recommend/{u}", params={"k": 10})
        lat.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    api = {"endpoint": "/recommend/{user}", "mode": "hybrid", "items": n_items, "requests": len(lat),
           "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
           "device": "cpu" if not cat1.index.on_gpu else "gpu"}
    print(f"/recommend latency over {len(lat)} requests: p50 {api['p50_ms']} ms, p95 {api['p95_ms']} ms", flush=True)

    out = {**results, "api": api, "settings": {
        "data": str(data), "users": len(users), "cold_users": len(rel_cold), "items": n_items,
        "cold_items": len(cold_list), "k": 10, "ease_l2": args.l2, "finetune_max_steps": args.max_steps,
        "finetune_batch_size": args.batch_size, "finetune_lr": args.lr, "window": args.window,
        "quick": bool(args.quick), "template": MOVIELENS_TEMPLATE, "threads": _threads(),
        "total_seconds": round(time.time() - t_start, 1)}}
    rows = [{"model": m, "all_recall10": r["all"]["recall10"], "all_ndcg10": r["all"]["ndcg10"],
             "coverage": r["all"]["coverage"], "cold_recall10": (r["cold"] or {}).get("recall10"),
             "cold_ndcg10": (r["cold"] or {}).get("ndcg10"), "ms_per_user": r["ms_per_user"]}
            for m, r in results.items()]
    path = write_result(args.out, out)
    print(f"\nrecommender bench ({len(users)} users, {n_items} items)")
    print_table(list(rows[0]), [[_fmt(r[c]) for c in rows[0]] for r in rows])
    print(f"wrote {path}")
    return 0


def _threads() -> int:
    try:
        import torch

        return torch.get_num_threads()
    except Exception:  # pragma: no cover
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
