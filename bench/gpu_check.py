"""GPU check: every GPU path of the core in one run (under 5 minutes on one GPU).

Through the core's own code paths (no raw torch for what the core does itself):

* device pick: :func:`verticore.resolve_device` (``auto`` = cuda, then mps, then cpu) and the
  dtype it pairs with, :func:`verticore.resolve_dtype` (bf16, or fp16 where bf16 is unsupported);
* embedding: :class:`verticore.Embedder` at the GPU dtype vs fp32 on the same GPU: sentences/s and
  the smallest cosine between the two embeddings of a sentence;
* fine-tuning: :func:`verticore.finetune.train_classifier` for a few dozen steps with mixed
  precision (``mixed_precision="auto"``: bf16/fp16 autocast) on the bundled
  ``core_sentiment.csv`` sample; its artifact is the classifier below unless ``--classifier``
  names one;
* classification: :class:`verticore.TextClassifier` at the GPU dtype vs fp32: sentences/s and the
  share of sentences whose argmax label agrees;
* FAISS: :class:`verticore.VectorIndex` searched on its GPU copy (``use_gpu=True``) vs a CPU
  ``Flat`` index (exact): recall@10 and queries/s, on random unit vectors;
* ONNX Runtime: the ``onnx`` embedder backend on ``CUDAExecutionProvider`` when that provider is
  installed (cosine vs torch fp32, sentences/s); skipped otherwise.

Writes ``bench/results/gpu_check.json``::

    {"device", "embedder": {"sentences_per_s", "cosine_min_vs_fp32"},
     "classifier": {"sentences_per_s", "argmax_agreement"}, "finetune_seconds",
     "faiss_gpu": {"recall_at_10", "qps"}, ...extras: "onnx_cuda", "details", "errors"}

A step that breaks is recorded under ``errors`` (its figures ``null``) and the script exits 1
after writing the file; a path the machine lacks (FAISS without GPU support, onnxruntime
without CUDA) is recorded as skipped, not as an error. On a machine without a CUDA GPU it prints
one ``no GPU ...`` line, writes nothing and exits 0.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "gpu_check.json"

#: the result's required structure: top-level key -> required sub-keys (``None``: a plain value)
RESULT_KEYS: dict[str, tuple[str, ...] | None] = {
    "device": None,
    "embedder": ("sentences_per_s", "cosine_min_vs_fp32"),
    "classifier": ("sentences_per_s", "argmax_agreement"),
    "finetune_seconds": None,
    "faiss_gpu": ("recall_at_10", "qps"),
}


# -- result structure -------------------------------------------------------------------
def build_result(device: str, embedder: Mapping[str, Any] | None, classifier: Mapping[str, Any] | None,
                 finetune_seconds: float | None, faiss_gpu: Mapping[str, Any] | None,
                 **extra: Any) -> dict[str, Any]:
    """The JSON written by this script: the required keys (missing figures become ``None``), then ``extra``.

    Each required section keeps exactly its required sub-keys; anything else a step measured
    belongs in ``extra`` (e.g. ``details``), so readers can rely on the shape.
    """
    sections = {"embedder": embedder, "classifier": classifier, "faiss_gpu": faiss_gpu}
    out: dict[str, Any] = {"device": device}
    for name, sub in RESULT_KEYS.items():
        if sub is not None:
            given = sections[name] or {}
            out[name] = {k: given.get(k) for k in sub}
    out["finetune_seconds"] = finetune_seconds
    out.update(extra)  # the required names are parameters, so ``extra`` cannot replace them
    return out


def check_result(result: Mapping[str, Any]) -> list[str]:
    """Problems with ``result``'s shape against :data:`RESULT_KEYS` (empty list when it fits)."""
    problems = []
    for key, sub in RESULT_KEYS.items():
        if key not in result:
            problems.append(f"missing {key!r}")
        elif sub is not None:
            if not isinstance(result[key], Mapping):
                problems.append(f"{key!r} is not an object")
            elif set(result[key]) != set(sub):
                problems.append(f"{key!r} has keys {sorted(result[key])}, expected {sorted(sub)}")
    return problems


# -- device -----------------------------------------------------------------------------
def pick_cuda_device(requested: str = "auto") -> tuple[str | None, str]:
    """The CUDA device the core picks for ``requested``, or ``(None, reason)`` when there is none."""
    from verticore import ModelResolutionError, resolve_device

    try:
        device = resolve_device(requested)
    except ModelResolutionError as exc:
        return None, str(exc)
    if not device.startswith("cuda"):
        return None, f"the core picked {device!r} for --device {requested}"
    return device, ""


# -- data -------------------------------------------------------------------------------
def sample_rows() -> tuple[list[str], list[str]]:
    """Texts and labels of the bundled ``core_sentiment.csv`` sample."""
    from verticore.io import read_table
    from verticore.samples import sample_path

    df = read_table(sample_path("core_sentiment.csv"), ["text", "label"])
    return df["text"].astype(str).tolist(), df["label"].astype(str).tolist()


def make_sentences(base: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentences of varied length: sample sentences alone, in pairs and in triples."""
    rng = np.random.default_rng(seed)
    out = list(base[:n])
    while len(out) < n:
        parts = rng.choice(len(base), size=int(rng.integers(2, 4)), replace=False)
        out.append(" ".join(base[j] for j in parts))
    return out


def _timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """``fn()`` result and its best wall time over ``repeats`` runs (after one warm-up call)."""
    fn()
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def _dtype_name(device: str) -> str:
    from verticore import resolve_dtype

    return str(resolve_dtype(device, "auto")).replace("torch.", "")


# -- checks -----------------------------------------------------------------------------
def check_embedder(device: str, sentences: Sequence[str], batch_size: int = 128) -> tuple[dict, dict]:
    """Embedder at the GPU dtype vs fp32 on ``device``: ``(section, details)``."""
    from verticore import Embedder

    low = Embedder("default", device=device, dtype="auto", batch_size=batch_size)
    ref = Embedder("default", device=device, dtype="fp32", batch_size=batch_size)
    low.warm_up()
    ref.warm_up()
    v_low, s_low = _timed(lambda: low.encode(list(sentences)), repeats=2)
    v_ref, s_ref = _timed(lambda: ref.encode(list(sentences)), repeats=2)
    cos = _rowwise_cosine(v_low, v_ref)
    section = {"sentences_per_s": round(len(sentences) / s_low, 1), "cosine_min_vs_fp32": float(cos.min())}
    details = {"dtype": _dtype_name(device), "sentences": len(sentences), "batch_size": batch_size,
               "fp32_sentences_per_s": round(len(sentences) / s_ref, 1), "cosine_mean_vs_fp32": float(cos.mean())}
    return section, details


def finetune_tiny_classifier(device: str, out_dir: Path, max_steps: int = 40) -> tuple[float, dict, Path]:
    """A short mixed-precision full fine-tune on the bundled sample: ``(seconds, details, artifact)``."""
    from verticore.finetune import ClassifierTrainingConfig, train_classifier

    texts, labels = sample_rows()
    dev = [i % 5 == 4 for i in range(len(texts))]
    tr_x = [t for t, d in zip(texts, dev) if not d]
    tr_y = [y for y, d in zip(labels, dev) if not d]
    dv_x = [t for t, d in zip(texts, dev) if d]
    dv_y = [y for y, d in zip(labels, dev) if d]
    cfg = ClassifierTrainingConfig(epochs=100, batch_size=16, max_steps=max_steps, eval_every=max_steps,
                                   learning_rate=1e-4, max_length=64, device=device, mixed_precision="auto")
    t0 = time.perf_counter()
    result = train_classifier(tr_x, tr_y, dv_x, dv_y, out_dir, cfg, show_progress=False)
    seconds = time.perf_counter() - t0
    metrics = getattr(result, "metrics", {}) or {}
    details = {"steps": max_steps, "mixed_precision": _dtype_name(device), "train_rows": len(tr_x),
               "dev": {k: v for k, v in (metrics.get("dev") or {}).items() if isinstance(v, (int, float))}}
    return round(seconds, 2), details, Path(result.artifact_dir)


def check_classifier(device: str, artifact: Path, sentences: Sequence[str], batch_size: int = 128) -> tuple[dict, dict]:
    """TextClassifier at the GPU dtype vs fp32 on ``device``: ``(section, details)``."""
    from verticore import TextClassifier

    low = TextClassifier.load(artifact, device=device, dtype="auto", batch_size=batch_size)
    ref = TextClassifier.load(artifact, device=device, dtype="fp32", batch_size=batch_size)
    p_low, s_low = _timed(lambda: low.predict_proba(list(sentences)), repeats=2)
    p_ref, s_ref = _timed(lambda: ref.predict_proba(list(sentences)), repeats=2)
    agree = float((np.argmax(p_low, axis=1) == np.argmax(p_ref, axis=1)).mean())
    section = {"sentences_per_s": round(len(sentences) / s_low, 1), "argmax_agreement": agree}
    details = {"artifact": str(artifact), "dtype": _dtype_name(device), "sentences": len(sentences),
               "fp32_sentences_per_s": round(len(sentences) / s_ref, 1),
               "max_abs_proba_diff": float(np.abs(np.asarray(p_low, np.float64) - p_ref).max())}
    return section, details


def check_faiss_gpu(n_vectors: int = 200_000, n_queries: int = 2_000, dim: int = 384, k: int = 10,
                    seed: int = 0) -> tuple[dict, dict]:
    """VectorIndex searched on its GPU copy vs an exact CPU Flat index: ``(section, details)``."""
    from verticore import VectorIndex

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_vectors, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((n_queries, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    keys = [str(i) for i in range(n_vectors)]
    cpu = VectorIndex(dim, metric="ip", factory="Flat", use_gpu=False)
    gpu = VectorIndex(dim, metric="ip", factory="Flat", use_gpu=True)
    cpu.add(keys, x)
    gpu.add(keys, x)
    cpu_hits, cpu_s = _timed(lambda: cpu.search(q, k))
    gpu_hits, gpu_s = _timed(lambda: gpu.search(q, k), repeats=3)  # the warm-up call copies the index to the GPU
    on_gpu = bool(getattr(gpu, "on_gpu", False))
    details = {"vectors": n_vectors, "queries": n_queries, "dim": dim, "factory": "Flat",
               "cpu_qps": round(n_queries / cpu_s, 1), "on_gpu": on_gpu}
    if not on_gpu:
        details["skipped"] = "FAISS has no GPU support here (faiss-cpu build) or the index could not move to the GPU"
        return {"recall_at_10": None, "qps": None}, details
    recall = float(np.mean([len({h.key for h in a} & {h.key for h in b}) / k for a, b in zip(gpu_hits, cpu_hits)]))
    return {"recall_at_10": recall, "qps": round(n_queries / gpu_s, 1)}, details


def check_onnx_cuda(device: str, sentences: Sequence[str], reference: np.ndarray | None = None) -> dict:
    """The ``onnx`` embedder backend on CUDAExecutionProvider vs torch fp32 (skipped without the provider)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"available": False, "skipped": "onnxruntime is not installed"}
    providers = list(ort.get_available_providers())
    if "CUDAExecutionProvider" not in providers:
        return {"available": False, "providers": providers,
                "skipped": "this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)"}
    from verticore import Embedder

    onnx = Embedder("default", device=device, backend="onnx", batch_size=128)
    onnx.warm_up()
    vecs, secs = _timed(lambda: onnx.encode(list(sentences)), repeats=2)
    if reference is None:
        ref = Embedder("default", device=device, dtype="fp32", batch_size=128)
        reference = ref.encode(list(sentences))
    cos = _rowwise_cosine(vecs, reference)
    return {"available": True, "providers": providers, "sentences_per_s": round(len(sentences) / secs, 1),
            "cosine_min_vs_fp32": float(cos.min())}


# -- main -------------------------------------------------------------------------------
def _gpu_facts(device: str) -> dict[str, Any]:
    try:
        import torch

        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        return {"name": torch.cuda.get_device_name(idx), "torch": torch.__version__, "cuda": torch.version.cuda,
                "bf16_supported": bool(torch.cuda.is_bf16_supported())}
    except Exception as exc:  # facts are informative only
        return {"error": str(exc).splitlines()[0]}


def run(device: str, *, classifier: Path | None = None, n_sentences: int = 4096, faiss_vectors: int = 200_000,
        faiss_queries: int = 2_000, finetune_steps: int = 40, work_dir: Path | None = None) -> dict[str, Any]:
    """Run every check on ``device``; a failing step is recorded under ``errors``, never fatal."""
    errors: dict[str, str] = {}
    details: dict[str, Any] = {"gpu": _gpu_facts(device)}
    t_start = time.perf_counter()

    def step(name: str, fn: Callable[[], Any], default: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # one broken path must not hide the others
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return default
        finally:
            print(f"{name}: {time.perf_counter() - t0:.1f}s" + (f" (error: {errors[name]})" if name in errors else ""),
                  flush=True)

    texts, _ = step("sample data", sample_rows, ([], []))
    sentences = make_sentences(texts, n_sentences) if texts else []
    emb, emb_details = step("embedder", lambda: check_embedder(device, sentences), (None, {}))
    details["embedder"] = emb_details
    tmp = tempfile.TemporaryDirectory(prefix="gpu_check_")
    with tmp:
        base = work_dir or Path(tmp.name)
        ft_seconds, ft_details, artifact = step(
            "finetune", lambda: finetune_tiny_classifier(device, base / "classifier", finetune_steps), (None, {}, None))
        details["finetune"] = ft_details
        if classifier is not None:
            artifact = classifier
        if artifact is not None:
            clf, clf_details = step("classifier", lambda: check_classifier(device, artifact, sentences), (None, {}))
        else:
            clf, clf_details = None, {}
            errors.setdefault("classifier", "no classifier artifact (the fine-tune failed, no --classifier given)")
        details["classifier"] = clf_details
    faiss_section, faiss_details = step("faiss", lambda: check_faiss_gpu(faiss_vectors, faiss_queries), (None, {}))
    details["faiss"] = faiss_details
    onnx = step("onnx_cuda", lambda: check_onnx_cuda(device, sentences[:1024]), None)
    details["total_seconds"] = round(time.perf_counter() - t_start, 1)
    return build_result(device, emb, clf, ft_seconds, faiss_section, onnx_cuda=onnx, details=details, errors=errors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (the core's pick), cuda or cuda:N")
    ap.add_argument("--classifier", type=Path, default=None,
                    help="classifier artifact to check (default: the one the short fine-tune writes)")
    ap.add_argument("--sentences", type=int, default=4096, help="sentences embedded and classified per dtype")
    ap.add_argument("--faiss-vectors", type=int, default=200_000, help="random unit vectors in the FAISS indexes")
    ap.add_argument("--faiss-queries", type=int, default=2_000, help="FAISS queries timed")
    ap.add_argument("--finetune-steps", type=int, default=40, help="optimiser steps of the mixed-precision fine-tune")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON path")
    args = ap.parse_args(argv)

    device, why = pick_cuda_device(args.device)
    if device is None:
        print(f"no GPU: {why}; nothing to check, nothing written")
        return 0
    result = run(device, classifier=args.classifier, n_sentences=args.sentences, faiss_vectors=args.faiss_vectors,
                 faiss_queries=args.faiss_queries, finetune_steps=args.finetune_steps)
    problems = check_result(result)
    if problems:  # a bug in this script, not in the paths it checks
        raise RuntimeError(f"gpu_check result has the wrong shape: {problems}")
    from verticore.io import atomic_write_json

    path = atomic_write_json(args.out, result)
    summary = {k: result[k] for k in RESULT_KEYS}
    print(f"{summary}\nwrote {path}", flush=True)
    if result["errors"]:
        print(f"{len(result['errors'])} GPU path(s) failed: {result['errors']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
