"""The ``verticore`` command line: finetune, predict, embed, index, eval, serve, info.

Every user mistake (missing file, missing column, non-UTF-8 input, corrupt artifact, ...)
prints one ``error: ...`` line and exits with status 2.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import VerticoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Verticore core: fine-tune, run and serve text classifiers and embedders.")
index_app = typer.Typer(no_args_is_help=True, help="Build and query a FAISS vector index.")
app.add_typer(index_app, name="index")


def _split_labels(values, sep: str | None):
    return [v.split(sep) if sep else v for v in values] if sep else list(values)


@app.command()
def finetune(
    train: Path = typer.Option(..., help="training CSV/JSONL"),
    dev: Path = typer.Option(..., help="dev CSV/JSONL (model selection, calibration)"),
    out: Path = typer.Option(..., help="artifact directory to write"),
    test: Optional[Path] = typer.Option(None, help="optional test CSV/JSONL, reported in metrics.json"),
    text_col: str = typer.Option("text", help="text column"),
    label_col: str = typer.Option("label", help="label column"),
    method: str = typer.Option("full", help="full | lora"),
    base: str = typer.Option("default", help="default | model directory | hub id"),
    epochs: int = typer.Option(3),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(5e-5, "--lr", help="learning rate (LoRA uses --lora-lr)"),
    lora_lr: float = typer.Option(5e-4),
    max_length: int = typer.Option(128),
    multi_label: bool = typer.Option(False, help="labels are sets, separated by --label-sep"),
    label_sep: str = typer.Option("|", help="separator of labels in multi-label rows"),
    max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate on dev every N steps (default: each epoch)"),
    grad_accum: int = typer.Option(1),
    patience: int = typer.Option(2),
    seed: int = typer.Option(42),
    device: str = typer.Option("auto"),
    ensemble: bool = typer.Option(False, help="train an ensemble: random-head + LP-FT fine-tunes, a frozen-embedding "
                                              "probe and a TF-IDF n-gram probe, probabilities averaged (single-label; "
                                              "~2x the training time)"),
) -> None:
    """Fine-tune a text classifier and write a self-describing artifact directory."""
    from .errors import DataError
    from .finetune import ClassifierTrainingConfig, default_ensemble_configs, train_classifier, train_classifier_ensemble
    from .io import read_table

    cols = [text_col, label_col]
    tr, dv = read_table(train, cols), read_table(dev, cols)
    te = read_table(test, cols) if test else None
    sep = label_sep if multi_label else None
    cfg = ClassifierTrainingConfig(base=base, method=method, epochs=epochs, batch_size=batch_size, learning_rate=lr,
                                   lora_learning_rate=lora_lr, max_length=max_length, multi_label=multi_label,
                                   max_steps=max_steps, eval_every=eval_every, grad_accum=grad_accum, patience=patience,
                                   seed=seed, device=device)
    if ensemble:
        if multi_label or te is not None:
            raise DataError("--ensemble supports single-label training without --test; evaluate with `verticore eval`")
        res = train_classifier_ensemble(tr[text_col].astype(str).tolist(), tr[label_col].astype(str).tolist(),
                                        dv[text_col].astype(str).tolist(), dv[label_col].astype(str).tolist(), out,
                                        configs=default_ensemble_configs(cfg))
        typer.echo(json.dumps({k: v for k, v in res.metrics.items() if isinstance(v, (int, float))}, indent=2))
        typer.echo(f"ensemble written to {res.artifact_dir}")
        return
    res = train_classifier(tr[text_col].tolist(), _split_labels(tr[label_col], sep), dv[text_col].tolist(),
                           _split_labels(dv[label_col], sep), out, cfg,
                           test_texts=te[text_col].tolist() if te is not None else None,
                           test_labels=_split_labels(te[label_col], sep) if te is not None else None)
    summary = {k: res.metrics[k] for k in ("dev", "test") if k in res.metrics}
    typer.echo(json.dumps({s: {m: v for m, v in d.items() if isinstance(v, (int, float))} for s, d in summary.items()}, indent=2))
    typer.echo(f"artifact written to {res.artifact_dir}")


@app.command()
def predict(
    model: Path = typer.Option(..., help="classifier artifact or ensemble directory"),
    input: Path = typer.Option(..., "--input", help="CSV/JSONL with a text column"),
    output: Path = typer.Option(..., help="CSV to write: input rows + label + p_<label> columns"),
    text_col: str = typer.Option("text"),
    batch_size: int = typer.Option(64),
    backend: str = typer.Option("torch"),
    device: str = typer.Option("auto"),
) -> None:
    """Classify every row of a file; writes the input rows plus ``label`` and ``p_<label>`` columns."""
    from .inference import load_classifier
    from .io import atomic_write_text, read_table

    clf = load_classifier(model, device=device, batch_size=batch_size, backend=backend)
    df = read_table(input, [text_col])
    probs = clf.predict_proba(df[text_col].tolist(), show_progress=True)
    out = df.copy()
    if clf.multi_label:
        out["label"] = ["|".join(l for l, p in zip(clf.labels, row) if p >= clf.label_space.threshold) for row in probs]
    else:
        out["label"] = [clf.labels[i] for i in probs.argmax(1)]
    for j, lab in enumerate(clf.labels):
        out[f"p_{lab}"] = probs[:, j]
    atomic_write_text(output, out.to_csv(index=False))
    typer.echo(f"wrote {len(out)} rows to {output}")


@app.command()
def embed(
    input: Path = typer.Option(..., "--input", help="CSV/JSONL with a text column"),
    output: Path = typer.Option(..., help=".npy (float32 matrix) or .jsonl (one {row, embedding} per line)"),
    text_col: str = typer.Option("text"),
    model: str = typer.Option("default", help="default | directory | hub id"),
    batch_size: int = typer.Option(64),
    backend: str = typer.Option("torch"),
    device: str = typer.Option("auto"),
) -> None:
    """Embed every row of a file (L2-normalised float32)."""
    import io as _io

    import numpy as np

    from .inference import Embedder
    from .io import atomic_write_bytes, atomic_write_text, read_table

    df = read_table(input, [text_col])
    vecs = Embedder(model, device=device, batch_size=batch_size, backend=backend).encode(df[text_col].tolist(), show_progress=True)
    if output.suffix == ".npy":
        buf = _io.BytesIO()
        np.save(buf, vecs, allow_pickle=False)
        atomic_write_bytes(output, buf.getvalue())
    elif output.suffix in {".jsonl", ".ndjson"}:
        atomic_write_text(output, "".join(json.dumps({"row": i, "embedding": v.tolist()}) + "\n" for i, v in enumerate(vecs)))
    else:
        raise VerticoreError(f"unsupported output {output.suffix!r}; use .npy or .jsonl")
    typer.echo(f"wrote {vecs.shape[0]} x {vecs.shape[1]} embeddings to {output}")


@index_app.command("build")
def index_build(
    input: Path = typer.Option(..., "--input", help="CSV/JSONL with text (and key) columns"),
    out: Path = typer.Option(..., help="index directory"),
    text_col: str = typer.Option("text"),
    key_col: Optional[str] = typer.Option(None, help="key column (default: row number)"),
    model: str = typer.Option("default"),
    factory: str = typer.Option("Flat", help="FAISS index factory string: Flat, HNSW32, IVF256,Flat ..."),
    device: str = typer.Option("auto"),
) -> None:
    """Embed a file and write a FAISS index with its JSON sidecar."""
    from .index import VectorIndex
    from .inference import Embedder
    from .io import atomic_write_json, read_table

    df = read_table(input, [text_col] + ([key_col] if key_col else []))
    keys = df[key_col].astype(str).tolist() if key_col else [str(i) for i in range(len(df))]
    emb = Embedder(model, device=device)
    vecs = emb.encode(df[text_col].tolist(), show_progress=True)
    index = VectorIndex(emb.dimension, metric="ip", factory=factory, model_fingerprint=emb.fingerprint)
    index.add(keys, vecs)
    index.save(out)
    atomic_write_json(out / "texts.json", {"model": model, "texts": dict(zip(keys, df[text_col].tolist()))})
    typer.echo(f"indexed {len(keys)} texts into {out} ({factory})")


@index_app.command("search")
def index_search(
    index: Path = typer.Option(..., help="index directory from `verticore index build`"),
    query: str = typer.Argument(..., help="query text"),
    k: int = typer.Option(5, "-k"),
    model: Optional[str] = typer.Option(None, help="embedder (default: the one the index was built with)"),
) -> None:
    """Search an index with a text query."""
    from .index import VectorIndex
    from .inference import Embedder
    from .io import read_json

    meta = read_json(index / "texts.json", "index texts") if (index / "texts.json").exists() else {"texts": {}}
    emb = Embedder(model or meta.get("model", "default"))
    vi = VectorIndex.load(index, expected_fingerprint=emb.fingerprint)
    for hit in vi.search_one(emb.encode(query), k=k):
        typer.echo(f"{hit.score:.4f}\t{hit.key}\t{meta['texts'].get(hit.key, '')[:100]}")


@app.command("eval")
def evaluate(
    model: Path = typer.Option(..., help="classifier artifact or ensemble directory"),
    input: Path = typer.Option(..., "--input", help="labelled CSV/JSONL"),
    text_col: str = typer.Option("text"),
    label_col: str = typer.Option("label"),
    output: Optional[Path] = typer.Option(None, help="write the metrics JSON here"),
) -> None:
    """Accuracy, macro/weighted F1, per-class report and confusion matrix on a labelled file."""
    from .evaluation import classification_metrics
    from .inference import load_classifier
    from .io import atomic_write_json, read_table

    clf = load_classifier(model)
    df = read_table(input, [text_col, label_col])
    y_true = df[label_col].astype(str).str.strip().tolist()
    for lab in sorted(set(y_true)):
        clf.label_space.index(lab)  # unknown label -> DataError naming it
    probs = clf.predict_proba(df[text_col].tolist(), show_progress=True)
    m = classification_metrics(y_true, [clf.labels[i] for i in probs.argmax(1)], labels=clf.labels)
    if output:
        atomic_write_json(output, m)
    typer.echo(json.dumps({k: v for k, v in m.items() if isinstance(v, (int, float))}, indent=2))


@app.command()
def serve(
    model: Optional[str] = typer.Option(None, help="classifier artifact directory for /classify"),
    embedder: str = typer.Option("default", help="embedder for /embed"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    device: str = typer.Option("auto"),
    backend: str = typer.Option("torch"),
) -> None:
    """Serve /classify, /embed and /health over HTTP (OpenAPI docs at /docs)."""
    import uvicorn

    from .server import create_app

    if model:
        from .artifact import check_artifact_dir

        check_artifact_dir(Path(model))
    uvicorn.run(create_app(model, embedder, device=device, backend=backend), host=host, port=port)


@app.command()
def info(model: str = typer.Option("default")) -> None:
    """Show the resolved model, device and available backends."""
    import torch

    from .inference.backends import available_backends
    from .models import resolve_device, resolve_model

    r = resolve_model(model)
    typer.echo(json.dumps({"model": r.name, "path": str(r.path), "fingerprint": r.fingerprint,
                           "device": resolve_device("auto"), "torch": torch.__version__,
                           "backends": available_backends()}, indent=2))


def run_app(typer_app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run any Verticore typer app (the core's or an app's): user errors become one
    ``error: ...`` line on stderr and exit code 2; Ctrl-C exits 130."""
    try:
        typer_app(args=argv, standalone_mode=True)
    except VerticoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``verticore`` command."""
    run_app(app, argv)


if __name__ == "__main__":
    main()
