"""Throughput bench: Embedder / TextClassifier backends against the plain libraries, side by side.

Data: 2,000 real sentences from the fixed Financial PhraseBank splits
(``financial_phrasebank/splits/50Agree``: all of test, then dev, then the first rows of train),
read from ``$VERTICORE_DATA`` (default ``../shared/data``).

Baselines (the "plain library"):

* embedder -- ``SentenceTransformer(<default model dir>).encode(texts, batch_size=64)``;
* classifier -- ``transformers.pipeline("text-classification", model=<artifact>, batch_size=64)`` (the
  artifact loaded with ``verticore.inference.heads.load_hf_classifier`` so its head pooling applies).

For every backend tried (``torch``, ``torch-int8``, ``onnx``, ``onnx-int8`` on CPU; ``torch`` on a
GPU), sentences/s is the median of ``--repeats`` timed passes after a warm-up on 256 texts; the passes of
all contenders are interleaved so machine-load drift hits them alike. CPU seconds per pass are
recorded too (useful on a shared machine). Fidelity:

* ``cosine_min`` -- smallest per-sentence cosine between Embedder vectors and the plain fp32
  SentenceTransformer vectors;
* ``argmax_agreement`` -- share of sentences where TextClassifier's label equals the pipeline's.

A backend passes at cosine_min >= 0.99 and argmax_agreement >= 0.99. The headline rows of
``bench/results/throughput.json`` use the fastest passing backend (or ``--backend``).

Classifier artifact: ``--classifier DIR``; else ``bench/results/artifacts/phrasebank_full`` when it
exists; else a checkpoint with a randomly initialised 3-way head on the default encoder is
written to ``$VERTICORE_CACHE/bench`` (fine for speed; its argmax agreement is flagged as coming
from an untrained head).

    python bench/throughput.py [--n 2000] [--batch-size 64] [--backend best|auto|torch|...] [--device auto]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from common import ARTIFACTS, DATA, print_table, write_result  # noqa: E402

FIDELITY_COS = 0.99
FIDELITY_ARGMAX = 0.99
CPU_BACKENDS = ["torch", "torch-int8", "onnx", "onnx-int8"]
GPU_BACKENDS = ["torch", "torch-compile"]


def load_sentences(n: int) -> tuple[list[str], str]:
    """``n`` real sentences: phrasebank 50Agree test, dev, then train (in file order)."""
    from verticore.errors import DataError
    from verticore.io import read_table

    split_dir = DATA / "financial_phrasebank" / "splits" / "50Agree"
    texts: list[str] = []
    for split in ("test", "dev", "train"):
        df = read_table(split_dir / f"{split}.csv", ["text"])
        texts.extend(str(t) for t in df["text"].tolist() if str(t).strip())
        if len(texts) >= n:
            break
    if len(texts) < n:
        raise DataError(f"only {len(texts)} sentences under {split_dir}; lower --n")
    return texts[:n], f"financial_phrasebank/splits/50Agree test+dev+train (first {n} rows in that order)"


def classifier_dir(explicit: str | None) -> tuple[Path, bool]:
    """The classifier artifact to bench and whether its head is trained."""
    from verticore.errors import ArtifactError

    if explicit:
        p = Path(explicit)
        if not p.is_dir():
            raise ArtifactError(f"classifier artifact not found: {p}")
        return p, True
    trained = ARTIFACTS / "phrasebank_full"
    if (trained / "config.json").exists():
        return trained, True
    return random_head_classifier(), False


def random_head_classifier() -> Path:
    """A 3-label classifier on the default encoder with an untrained head (cached)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from verticore import resolve_model
    from verticore.io import atomic_write_json
    from verticore.settings import get_settings

    out = get_settings().cache / "bench" / "random_head_classifier"
    if (out / "labels.json").exists() and (out / "model.safetensors").exists():
        return out
    src = resolve_model("default").path
    labels = ["negative", "neutral", "positive"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(src), num_labels=3, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(out))
    atomic_write_json(out / "labels.json", {"labels": labels, "multi_label": False, "threshold": 0.5})
    return out


def cpu_seconds() -> float:
    """CPU time of this process, all threads."""
    return time.process_time()


def bench_interleaved(contenders: dict[str, Callable[[list[str]], Any]], texts: list[str], repeats: int,
                      warmup: int = 256) -> dict[str, dict[str, Any]]:
    """Warm up each contender on ``warmup`` texts, then time ``repeats`` interleaved full passes.

    Returns per contender the median wall and CPU seconds and the output of the first timed pass.
    """
    from tqdm.auto import tqdm

    for fn in contenders.values():
        fn(texts[:warmup])
    outputs: dict[str, Any] = {}
    walls: dict[str, list[float]] = {k: [] for k in contenders}
    cpus: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in tqdm(range(repeats), desc="timed rounds", unit="round"):
        for name, fn in contenders.items():
            c0, t0 = cpu_seconds(), time.perf_counter()
            out = fn(texts)
            walls[name].append(time.perf_counter() - t0)
            cpus[name].append(cpu_seconds() - c0)
            outputs.setdefault(name, out)
    return {k: {"wall_s": statistics.median(walls[k]), "cpu_s": statistics.median(cpus[k]),
                "walls": walls[k], "output": outputs[k]} for k in contenders}


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def make_embedder(backend: str, device: str, batch_size: int):
    from verticore import Embedder

    compile_ = backend == "torch-compile"
    emb = Embedder("default", device=device, batch_size=batch_size,
                   backend="torch" if compile_ else backend, compile=compile_)
    emb.warm_up()
    return emb


def make_classifier(path: Path, backend: str, device: str, batch_size: int):
    from verticore import TextClassifier

    compile_ = backend == "torch-compile"
    clf = TextClassifier(str(path), device=device, batch_size=batch_size,
                         backend="torch" if compile_ else backend, compile=compile_)
    clf.warm_up()
    return clf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="sentences (default 2000)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backend", default="best",
                    help="best (fastest backend that passes fidelity, every backend tried), or one of "
                         "auto|torch|torch-int8|onnx|onnx-int8 (only that one is benched)")
    ap.add_argument("--backends", default=None, help="comma list of backends to try (overrides the 'best' set)")
    ap.add_argument("--device", default="auto", help="auto|cpu|cuda")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (median is reported)")
    ap.add_argument("--classifier", default=None, help="classifier artifact dir (default: see module docs)")
    ap.add_argument("--skip-classifier", action="store_true", help="bench the embedder only")
    ap.add_argument("--out", default="throughput", help="result name under bench/results/")
    args = ap.parse_args(argv)

    from verticore.errors import VerticoreError

    try:
        return _run(args)
    except VerticoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import pipeline

    from verticore import resolve_device, resolve_model
    from verticore.errors import DataError

    if args.n < 1 or args.batch_size < 1 or args.repeats < 1:
        raise DataError("--n, --batch-size and --repeats must be positive")
    device = resolve_device(args.device)
    texts, source = load_sentences(args.n)
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    elif args.backend == "best":
        backends = CPU_BACKENDS if device == "cpu" else GPU_BACKENDS
    else:
        backends = [args.backend]
    model_path = resolve_model("default").path
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"{len(texts)} sentences from {source}; device={device}; torch threads={torch.get_num_threads()}; "
          f"load avg {load0}")

    # -- embedder -------------------------------------------------------------------------
    st = SentenceTransformer(str(model_path), device=device)
    contenders: dict[str, Callable[[list[str]], Any]] = {
        "baseline": lambda t: st.encode(t, batch_size=args.batch_size, convert_to_numpy=True)}
    embedders = {}
    for b in backends:
        print(f"preparing embedder backend {b} ...", flush=True)
        embedders[b] = make_embedder(b, device, args.batch_size)
        contenders[b] = embedders[b].encode
    res = bench_interleaved(contenders, texts, args.repeats)
    ref = _normalize(res["baseline"]["output"])
    n = len(texts)
    emb_rows: dict[str, dict[str, Any]] = {}
    for b in backends:
        cos = np.sum(_normalize(res[b]["output"]) * ref, axis=1)
        emb_rows[b] = {"sentences_per_s": n / res[b]["wall_s"], "cpu_sentences_per_s": n / max(res[b]["cpu_s"], 1e-9),
                       "ratio": res["baseline"]["wall_s"] / res[b]["wall_s"],
                       "cpu_ratio": res["baseline"]["cpu_s"] / max(res[b]["cpu_s"], 1e-9),
                       "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
                       "passes": bool(cos.min() >= FIDELITY_COS), "wall_s_runs": res[b]["walls"]}
    emb_base = {"sentences_per_s": n / res["baseline"]["wall_s"],
                "cpu_sentences_per_s": n / max(res["baseline"]["cpu_s"], 1e-9), "wall_s_runs": res["baseline"]["walls"]}
    del embedders, contenders, res
    st = None  # noqa: F841 -- drop the baseline model before the classifier part

    # -- classifier -----------------------------------------------------------------------
    clf_rows: dict[str, dict[str, Any]] = {}
    clf_base: dict[str, Any] = {}
    clf_info: dict[str, Any] = {}
    if not args.skip_classifier:
        cdir, trained = classifier_dir(args.classifier)
        clf_info = {"artifact": str(cdir), "trained_head": trained}
        from transformers import AutoTokenizer

        from verticore.inference.heads import load_hf_classifier

        # The plain HF pipeline over the same weights; load_hf_classifier applies the artifact's
        # stored head pooling (mean for sentence-transformers bases), which the pipeline cannot read.
        pipe = pipeline("text-classification", model=load_hf_classifier(cdir), tokenizer=AutoTokenizer.from_pretrained(str(cdir)),
                        device=device if device != "cpu" else -1, batch_size=args.batch_size)
        label2id = {str(k): int(v) for k, v in pipe.model.config.label2id.items()}

        def run_pipe(t: list[str]) -> np.ndarray:
            out = pipe(t, batch_size=args.batch_size)
            return np.array([label2id[o["label"]] for o in out])

        contenders = {"baseline": run_pipe}
        classifiers = {}
        for b in backends:
            print(f"preparing classifier backend {b} ...", flush=True)
            classifiers[b] = make_classifier(cdir, b, device, args.batch_size)
            contenders[b] = (lambda c: lambda t: np.array([c.labels.index(p.label) for p in c.predict(t)]))(classifiers[b])
        res = bench_interleaved(contenders, texts, args.repeats)
        base_pred = res["baseline"]["output"]
        for b in backends:
            agree = float(np.mean(res[b]["output"] == base_pred))
            clf_rows[b] = {"sentences_per_s": n / res[b]["wall_s"], "cpu_sentences_per_s": n / max(res[b]["cpu_s"], 1e-9),
                           "ratio": res["baseline"]["wall_s"] / res[b]["wall_s"],
                           "cpu_ratio": res["baseline"]["cpu_s"] / max(res[b]["cpu_s"], 1e-9),
                           "argmax_agreement": agree, "passes": bool(agree >= FIDELITY_ARGMAX),
                           "wall_s_runs": res[b]["walls"]}
        clf_base = {"sentences_per_s": n / res["baseline"]["wall_s"],
                    "cpu_sentences_per_s": n / max(res["baseline"]["cpu_s"], 1e-9), "wall_s_runs": res["baseline"]["walls"]}

    # -- choose + report ------------------------------------------------------------------
    def best(rows: dict[str, dict[str, Any]]) -> str:
        ok = [b for b in rows if rows[b]["passes"]] or list(rows)
        return max(ok, key=lambda b: rows[b]["sentences_per_s"])

    table = []
    for task, rows, base, fid in (("embedder", emb_rows, emb_base, "cosine_min"),
                                  ("classifier", clf_rows, clf_base, "argmax_agreement")):
        if not rows:
            continue
        table.append([task, "plain library", f"{base['sentences_per_s']:.1f}", f"{base['cpu_sentences_per_s']:.1f}",
                      "1.00", "1.00", "-", "ref"])
        for b, r in rows.items():
            table.append([task, b, f"{r['sentences_per_s']:.1f}", f"{r['cpu_sentences_per_s']:.1f}",
                          f"{r['ratio']:.2f}", f"{r['cpu_ratio']:.2f}", f"{r[fid]:.4f}", "yes" if r["passes"] else "NO"])
    print()
    print_table(["task", "backend", "sent/s", "sent/cpu-s", "ratio", "cpu ratio", "fidelity", "passes"], table)

    emb_pick = best(emb_rows)
    result: dict[str, Any] = {
        "embedder": {"backend": emb_pick, "sentences_per_s": emb_rows[emb_pick]["sentences_per_s"],
                     "baseline_sentences_per_s": emb_base["sentences_per_s"], "ratio": emb_rows[emb_pick]["ratio"],
                     "cosine_min": emb_rows[emb_pick]["cosine_min"], "baseline": emb_base, "backends": emb_rows},
    }
    if clf_rows:
        clf_pick = best(clf_rows)
        result["classifier"] = {"backend": clf_pick, "sentences_per_s": clf_rows[clf_pick]["sentences_per_s"],
                                "baseline_sentences_per_s": clf_base["sentences_per_s"],
                                "ratio": clf_rows[clf_pick]["ratio"],
                                "argmax_agreement": clf_rows[clf_pick]["argmax_agreement"],
                                "baseline": clf_base, "backends": clf_rows, **clf_info}
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["setup"] = {"n": n, "source": source, "batch_size": args.batch_size, "repeats": args.repeats,
                       "device": device, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                       "load_avg_start": load0, "load_avg_end": load1,
                       "baselines": {"embedder": "SentenceTransformer.encode(batch_size)",
                                     "classifier": "transformers.pipeline('text-classification', batch_size)"},
                       "fidelity_bar": {"cosine_min": FIDELITY_COS, "argmax_agreement": FIDELITY_ARGMAX}}
    print(f"\nembedder: {emb_pick} {result['embedder']['ratio']:.2f}x (cosine_min {result['embedder']['cosine_min']:.4f})"
          + (f"; classifier: {result['classifier']['backend']} {result['classifier']['ratio']:.2f}x "
             f"(argmax agreement {result['classifier']['argmax_agreement']:.4f})" if clf_rows else ""))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
