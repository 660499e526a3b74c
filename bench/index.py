"""Benchmark VectorIndex types: build time, queries/second at k=10 and recall@10 against Flat.

Datasets (384-d, L2-normalised, inner product):

* ``clustered`` -- synthetic Gaussian mixture (1,000 clusters), ``--n`` vectors + held-out queries
  from the same mixture. This is the primary dataset (top-level entries of the JSON).
* ``real`` -- sentences from ../shared/data (bitext customer-support questions and answer
  sentences, banking77, financial phrasebank, MovieLens titles and tags), deduplicated, embedded
  with the default Embedder (cached as .npy under bench/results/artifacts/), up to
  ``--real-limit`` indexed vectors + held-out query sentences.

Usage::

    python bench/index.py                       # full size: --n 100000
    python bench/index.py --n 5000 --real-limit 3000 --queries 200    # quick
    python bench/index.py --factory Flat --factory HNSW32 --factory IVF1024,PQ48

Writes bench/results/index.json: ``{"Flat": {...}, "HNSW32": {...}, "IVF1024,Flat": {...}, ...,
"datasets": {"clustered": {...}, "real": {...}}, "config": {...}}`` where every entry holds
``build_seconds``, ``qps`` and ``recall_at_10``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "shared"))

import numpy as np  # noqa: E402

from verticore.io import atomic_write_json, read_table  # noqa: E402

DATA = (ROOT / ".." / "shared" / "data").resolve()
RESULTS = ROOT / "bench" / "results"
ARTIFACTS = RESULTS / "artifacts"
DIM = 384
K = 10
# IVF+PQ is opt-in (--factory IVF1024,PQ48): its codebook training is slow on small CPUs
DEFAULT_FACTORIES = ["Flat", "HNSW32", "IVF1024,Flat"]


# -- datasets ------------------------------------------------------------------------------------
def clustered(n: int, n_queries: int, dim: int = DIM, clusters: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture on the unit sphere: points = centre + noise (|noise| ~ 1), normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(clusters, 2.0))
    total = n + n_queries
    assign = rng.choice(clusters, size=total, p=weights)
    x = centres[assign] + rng.standard_normal((total, dim)).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def real_texts() -> list[str]:
    """Unique sentences from the shared datasets, in a fixed shuffled order."""
    texts: list[str] = []
    kb_dir = DATA / "bitext_customer_support" / "splits"
    for name in ("kb.csv", "queries.csv"):
        if (kb_dir / name).exists():
            df = read_table(kb_dir / name, ["question", "answer"])
            texts += df["question"].tolist()
            for ans in df["answer"].tolist():
                texts += _SENT.split(ans)
    for name in ("train.csv", "dev.csv", "test.csv"):
        f = DATA / "banking77" / "splits" / name
        if f.exists():
            texts += read_table(f, ["text"])["text"].tolist()
    for name in ("train.csv", "dev.csv", "test.csv"):
        f = DATA / "financial_phrasebank" / "splits" / "50Agree" / name
        if f.exists():
            texts += read_table(f, ["text"])["text"].tolist()
    ml = DATA / "movielens_latest_small"
    if (ml / "movies.csv").exists():
        texts += read_table(ml / "movies.csv", ["title"])["title"].tolist()
    if (ml / "tags.csv").exists():
        texts += read_table(ml / "tags.csv", ["tag"])["tag"].tolist()
    seen: set[str] = set()
    uniq = []
    for t in texts:
        t = " ".join(str(t).split())
        if len(t) >= 3 and t.lower() not in seen:
            seen.add(t.lower())
            uniq.append(t)
    rng = np.random.default_rng(42)
    order = rng.permutation(len(uniq))
    return [uniq[i] for i in order]


def real(limit: int, n_queries: int, chunk: int = 2000) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Embed up to ``limit + n_queries`` real sentences (cached in chunks); returns (base, queries, available)."""
    texts = real_texts()
    available = len(texts)
    if available < n_queries + 100:
        print(f"real: only {available} sentences under {DATA}; skipping")
        return None
    n_queries = min(n_queries, available // 5)
    from verticore import Embedder

    emb = Embedder("default", batch_size=128)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # chunks of the full (fixed-order) sentence list: a larger --real-limit reuses the smaller run's cache
    tag = hashlib.sha256((emb.fingerprint + "\x1e" + "\x1f".join(texts)).encode()).hexdigest()[:16]
    full, texts = texts, texts[: min(available, limit + n_queries)]
    parts = []
    todo = list(range(0, len(texts), chunk))
    missing = [s for s in todo if not (ARTIFACTS / f"real_{tag}_{s}.npy").exists()]
    if missing:
        print(f"real: embedding {sum(min(chunk, len(full) - s) for s in missing)} sentences for {len(texts)} "
              f"with the default model (cached in {ARTIFACTS.relative_to(ROOT)})")
    from tqdm.auto import tqdm

    for s in tqdm(todo, desc="embed chunks", unit="chunk", disable=not missing):
        f = ARTIFACTS / f"real_{tag}_{s}.npy"
        if not f.exists():
            vecs = emb.encode(full[s:s + chunk], show_progress=False).astype(np.float32)
            if len(vecs) != min(chunk, len(full) - s):  # pragma: no cover
                raise RuntimeError("embedding count mismatch")
            tmp = f.with_suffix(".tmp.npy")
            np.save(tmp, vecs, allow_pickle=False)
            os.replace(tmp, f)
        parts.append(np.load(f, allow_pickle=False)[: len(texts) - s])
    x = np.ascontiguousarray(np.concatenate(parts))
    # held-out queries are the last sentences (never indexed)
    return np.ascontiguousarray(x[:-n_queries]), np.ascontiguousarray(x[-n_queries:]), available


# -- measurement -----------------------------------------------------------------------------------
def run_dataset(name: str, base: np.ndarray, queries: np.ndarray, factories: list[str], nprobe: int,
                repeats: int) -> dict[str, dict]:
    from verticore.index import VectorIndex

    keys = [str(i) for i in range(len(base))]
    results: dict[str, dict] = {}
    truth: list[set[str]] | None = None
    order = ["Flat"] + [f for f in factories if f != "Flat"]
    for factory in order:
        idx = VectorIndex(DIM, metric="ip", factory=factory, nprobe=nprobe if factory.startswith("IVF") else None,
                          train_min=1 if factory.startswith("IVF") or "PQ" in factory else None)
        t0 = time.perf_counter()
        idx.add(keys, base, show_progress=True)
        build = time.perf_counter() - t0
        idx.search(queries[:10], k=K)  # warm-up
        best = float("inf")
        hits = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            hits = idx.search(queries, k=K)
            best = min(best, time.perf_counter() - t0)
        found = [{h.key for h in row} for row in hits]
        if factory == "Flat":
            truth = found
        recall = float(np.mean([len(f & t) / max(len(t), 1) for f, t in zip(found, truth)]))
        results[factory] = {"build_seconds": round(build, 3), "qps": round(len(queries) / best, 1),
                            "recall_at_10": round(recall, 4), "n": len(base), "queries": len(queries),
                            "nprobe": idx.nprobe or None, "on_gpu": idx.on_gpu}
        print(f"  {name:9s} {factory:14s} build {build:8.2f}s  qps {len(queries) / best:10.1f}  recall@10 {recall:.4f}",
              flush=True)
        del idx
    return results


def table(datasets: dict[str, dict[str, dict]]) -> str:
    lines = [f"{'dataset':10s} {'index':14s} {'n':>8s} {'build_s':>9s} {'qps@10':>10s} {'recall@10':>10s}",
             "-" * 66]
    for ds, res in datasets.items():
        for fac, r in res.items():
            lines.append(f"{ds:10s} {fac:14s} {r['n']:8d} {r['build_seconds']:9.2f} {r['qps']:10.1f} {r['recall_at_10']:10.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="indexed vectors for the clustered dataset")
    ap.add_argument("--real-limit", type=int, default=100_000, help="max indexed real sentences (0: skip real)")
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries per dataset (one batch)")
    ap.add_argument("--factory", action="append", help=f"index factory (repeatable); default {DEFAULT_FACTORIES}")
    ap.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query")
    ap.add_argument("--repeats", type=int, default=3, help="search repeats (best time is reported)")
    ap.add_argument("--threads", type=int, default=0,
                    help="FAISS OpenMP threads (0: FAISS default = all cores); 1 is faster on an oversubscribed machine")
    ap.add_argument("--out", type=Path, default=RESULTS / "index.json")
    args = ap.parse_args(argv)
    if args.threads > 0:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    factories = args.factory or DEFAULT_FACTORIES
    datasets: dict[str, dict[str, dict]] = {}
    print(f"clustered: {args.n} x {DIM} + {args.queries} queries")
    base, queries = clustered(args.n, args.queries)
    datasets["clustered"] = run_dataset("clustered", base, queries, factories, args.nprobe, args.repeats)
    del base, queries
    real_info = None
    write_results(args, datasets, real_info)  # partial results survive an interrupted real-data run
    if args.real_limit > 0:
        got = real(args.real_limit, args.queries)
        if got is not None:
            base, queries, available = got
            real_info = {"available_sentences": available, "indexed": len(base), "queries": len(queries)}
            print(f"real: {len(base)} x {DIM} + {len(queries)} queries ({available} unique sentences available)")
            datasets["real"] = run_dataset("real", base, queries, factories, args.nprobe, args.repeats)
    write_results(args, datasets, real_info)
    print()
    print(table(datasets))
    print(f"\nwrote {args.out}")
    return 0


def write_results(args: argparse.Namespace, datasets: dict[str, dict[str, dict]], real_info: dict | None) -> None:
    import faiss

    out: dict = {fac: dict(r) for fac, r in datasets["clustered"].items()}
    out["datasets"] = datasets
    out["primary"] = "clustered"
    out["config"] = {"dimension": DIM, "k": K, "n": args.n, "queries": args.queries, "nprobe": args.nprobe,
                     "repeats": args.repeats, "real": real_info, "faiss_version": faiss.__version__,
                     "faiss_threads": faiss.omp_get_max_threads(), "cpu_count": os.cpu_count(),
                     "platform": platform.platform(), "python": platform.python_version(),
                     "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_1m": round(os.getloadavg()[0], 2),
                     "notes": "qps = 1000-query batch through VectorIndex.search (key mapping included), best of "
                              "repeats; recall_at_10 = overlap with Flat's top 10"}
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    raise SystemExit(main())
