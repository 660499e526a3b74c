"""The ``verticore`` command line: finetune, predict, embed, index, eval, serve, keys, dashboard-users, usage, info.

Every user mistake (missing file, missing column, non-UTF-8 input, corrupt artifact, ...)
prints one ``error: ...`` line and exits with status 3; usage errors exit 2 and Ctrl-C 130
(the conventions of all four CLIs live in :mod:`verticore.cli_support`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .cli_apps import AppsGroup, apps_command
from .cli_support import (
    RegistryChoicesCommand,
    add_version_option,
    backend_option,
    choice_option,
    device_option,
    method_option,
)
from .cli_support import run_app as run_app  # re-exported: the apps' entry points used to import it from here
from .errors import VerticoreError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=AppsGroup,
                  help="Verticore core: fine-tune, run and serve text classifiers and embedders; "
                       "`verticore apps` lists the installed apps, `verticore <app> ...` runs an app's commands.")
add_version_option(app)
app.command("apps")(apps_command)  # the installed apps; each one is also a subcommand (AppsGroup)
index_app = typer.Typer(no_args_is_help=True, help="Build and query a FAISS vector index.")
app.add_typer(index_app, name="index")
# `verticore models ...` (issue #14): the registry commands live beside the registry.
from .registry.cli import models_app  # noqa: E402

app.add_typer(models_app, name="models")
from .registry.retrain_cli import retrain_command  # noqa: E402

app.command("retrain")(retrain_command)  # `verticore retrain --app A --model M`: the retrain loop (issue #14)


def _split_labels(values, sep: str | None):
    return [v.split(sep) if sep else v for v in values] if sep else list(values)


def _training_config(method: str, method_args: list[str], lora_lr: float | None, **core: object):
    """The training config of ``verticore finetune``; a bad ``--method-arg`` is a usage error (exit 2)."""
    from .finetune import ClassifierTrainingConfig
    from .finetune.methods import parse_method_args

    legacy = {"lora_learning_rate": lora_lr} if lora_lr is not None else {}
    try:
        return ClassifierTrainingConfig(method=method, method_args=parse_method_args(method_args), **legacy, **core)
    except VerticoreError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--method-arg'") from None


def _ema_decay_option(value: float | None) -> float | None:
    """``--ema-decay`` checked by the training config's own rule (a usage error naming the flag)."""
    from .finetune.loop import check_ema_decay

    try:
        return None if value is None else check_ema_decay(value)
    except VerticoreError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command(cls=RegistryChoicesCommand)
def finetune(
    train: Path = typer.Option(..., help="training CSV/JSONL"),
    dev: Path = typer.Option(..., help="dev CSV/JSONL (model selection, calibration)"),
    out: Path = typer.Option(..., help="artifact directory to write"),
    test: Optional[Path] = typer.Option(None, help="optional test CSV/JSONL, reported in metrics.json"),
    text_col: str = typer.Option("text", help="text column"),
    label_col: str = typer.Option("label", help="label column"),
    method: str = method_option(help="fine-tuning method (every registered one, plugins included)"),
    method_arg: Optional[list[str]] = typer.Option(
        None, "--method-arg", metavar="KEY=VALUE",
        help="an option of the chosen method, repeatable, checked by the method's own config (e.g. --method lora "
             "--method-arg r=8 --method-arg target_modules=query,value); a wrong key lists the method's options"),
    base: str = typer.Option("default", help="default | model directory | hub id"),
    epochs: int = typer.Option(3, help="passes over the training data"),
    batch_size: int = typer.Option(32, help="training examples per optimiser step"),
    lr: float = typer.Option(5e-5, "--lr", help="learning rate (LoRA uses --lora-lr)"),
    lora_lr: Optional[float] = typer.Option(None, help="learning rate of the LoRA adapters (--method lora; same as "
                                                        "--method-arg learning_rate=X; default 5e-4)"),
    max_length: int = typer.Option(128, help="truncate texts to this many tokens"),
    multi_label: bool = typer.Option(False, help="labels are sets, separated by --label-sep"),
    label_sep: str = typer.Option("|", help="separator of labels in multi-label rows"),
    max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate on dev every N steps (default: each epoch)"),
    grad_accum: int = typer.Option(1, help="accumulate gradients over N batches per optimiser step"),
    patience: int = typer.Option(2, help="stop after N evaluations without dev improvement"),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", callback=_ema_decay_option,
                                              help="score, select and save an exponential moving average of the "
                                                   "weights with this decay per step (e.g. 0.99); default off"),
    seed: int = typer.Option(42, help="random seed (data order, head initialisation)"),
    device: str = device_option(),
    ensemble: bool = typer.Option(False, help="train an ensemble: random-head + LP-FT fine-tunes, a frozen-embedding "
                                              "probe and a TF-IDF n-gram probe, probabilities averaged (single-label; "
                                              "~2x the training time)"),
    nproc: int = typer.Option(1, "--nproc", min=1,
                              help="data-parallel processes through torchrun (gloo on CPU, NCCL on GPU); "
                                   "--batch-size stays the effective batch, split across them"),
    search: int = typer.Option(0, "--search", min=0, metavar="N",
                               help="run a hyperparameter search of N trials instead of one training (learning "
                                    "rate, epochs, head init, pooling, max length, LoRA rank; selected on dev "
                                    "macro-F1): --out becomes the search folder, the best artifact OUT/best and the "
                                    "trial table OUT/trials.json"),
    distributed: str = choice_option("none", ("none", "ray"), "--distributed",
                                     help="with --search: run the trials through Ray Tune on the cluster at "
                                          "RAY_ADDRESS, or on a local Ray when unset"),
    resume: bool = typer.Option(False, "--resume",
                                help="with --search: continue an interrupted search in --out from the trials its "
                                     "trials.json recorded (the same seed replays them exactly)"),
) -> None:
    """Fine-tune a text classifier and write a self-describing artifact directory."""
    from .errors import DataError
    from .finetune import default_ensemble_configs, train_classifier, train_classifier_ensemble
    from .io import read_table

    cfg = _training_config(method, method_arg or [], lora_lr, base=base, epochs=epochs, batch_size=batch_size,
                           learning_rate=lr, max_length=max_length, multi_label=multi_label, max_steps=max_steps,
                           eval_every=eval_every, grad_accum=grad_accum, patience=patience, seed=seed, device=device,
                           ema_decay=ema_decay)
    if distributed != "none" and not search:
        raise typer.BadParameter("--distributed runs a search: add --search N", param_hint="'--distributed'")
    if resume and not search:
        raise typer.BadParameter("--resume continues a search: add --search N", param_hint="'--resume'")
    if search and (ensemble or nproc > 1):
        raise typer.BadParameter("--search trains one model per trial; drop --ensemble/--nproc",
                                 param_hint="'--search'")
    if nproc > 1:
        if ensemble:
            raise typer.BadParameter("--ensemble trains in one process; drop --nproc", param_hint="'--nproc'")
        from .finetune.distributed import FinetuneJob, launch

        launch(FinetuneJob(str(train), str(dev), str(out), cfg.to_dict(), str(test) if test else None, text_col,
                           label_col, label_sep if multi_label else None), nproc)
        return
    cols = [text_col, label_col]
    tr, dv = read_table(train, cols), read_table(dev, cols)
    te = read_table(test, cols, allow_empty=True) if test else None  # optional: an empty test set = no test set
    te = None if te is not None and te.empty else te
    sep = label_sep if multi_label else None
    if ensemble:
        if multi_label or te is not None:
            raise DataError("--ensemble supports single-label training without --test; evaluate with `verticore eval`")
        res = train_classifier_ensemble(tr[text_col].astype(str).tolist(), tr[label_col].astype(str).tolist(),
                                        dv[text_col].astype(str).tolist(), dv[label_col].astype(str).tolist(), out,
                                        configs=default_ensemble_configs(cfg))
        typer.echo(json.dumps({k: v for k, v in res.metrics.items() if isinstance(v, (int, float))}, indent=2))
        typer.echo(f"ensemble written to {res.artifact_dir}")
        return
    if search:
        from .finetune.search import search_classifier

        found = search_classifier(
            (tr[text_col].tolist(), _split_labels(tr[label_col], sep)),
            (dv[text_col].tolist(), _split_labels(dv[label_col], sep)), out, n_trials=search,
            test=(te[text_col].tolist(), _split_labels(te[label_col], sep)) if te is not None else None,
            base_config=cfg, seed=seed, backend="ray" if distributed == "ray" else "optuna", resume=resume)
        typer.echo(json.dumps({"params": found.best_params, "dev_macro_f1": found.best_dev_macro_f1,
                               "test": {m: v for m, v in (found.test_metrics or {}).items()
                                        if isinstance(v, (int, float))} or None}, indent=2))
        typer.echo(f"best dev macro-F1 {found.best_dev_macro_f1:.4f} of {len(found.trials)} trials; best artifact "
                   f"written to {found.best_artifact}, trials to {found.trials_path}")
        return
    res = train_classifier(tr[text_col].tolist(), _split_labels(tr[label_col], sep), dv[text_col].tolist(),
                           _split_labels(dv[label_col], sep), out, cfg,
                           test_texts=te[text_col].tolist() if te is not None else None,
                           test_labels=_split_labels(te[label_col], sep) if te is not None else None)
    summary = {k: res.metrics[k] for k in ("dev", "test") if k in res.metrics}
    numbers = {s: {m: v for m, v in d.items() if isinstance(v, (int, float))} for s, d in summary.items()}
    typer.echo(json.dumps(numbers, indent=2))
    typer.echo(f"artifact written to {res.artifact_dir}")


@app.command()
def distill(
    teacher: Path = typer.Option(..., help="teacher: a classifier artifact or an ensemble directory"),
    train: Path = typer.Option(..., help="training CSV/JSONL; without the label column its rows get the teacher's "
                                         "soft labels only"),
    dev: Path = typer.Option(..., help="labelled dev CSV/JSONL (early stopping on accuracy, calibration)"),
    out: Path = typer.Option(..., help="student artifact directory to write"),
    unlabeled: Optional[Path] = typer.Option(None, help="optional CSV/JSONL of unlabeled in-domain texts (text "
                                                        "column), learnt from the teacher's soft labels"),
    test: Optional[Path] = typer.Option(None, help="optional labelled test CSV/JSONL, reported in metrics.json"),
    text_col: str = typer.Option("text", help="text column"),
    label_col: str = typer.Option("label", help="label column"),
    temperature: float = typer.Option(2.0, min=0.01, help="softening temperature T of teacher and student"),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0,
                                help="weight of the hard-label cross-entropy; 1 - alpha weighs T^2 * KL to the teacher"),
    base: str = typer.Option("default", help="student model: default | model directory | hub id (a fine-tuned "
                                              "classifier with the same labels, e.g. a teacher member, starts "
                                              "with its head)"),
    epochs: int = typer.Option(3, help="passes over the training data"),
    batch_size: int = typer.Option(32, help="training examples per optimiser step"),
    lr: float = typer.Option(5e-5, "--lr", help="learning rate"),
    max_length: int = typer.Option(128, help="truncate texts to this many tokens"),
    head_init: str = choice_option("auto", ("auto", "random", "linear_probe"), "--head-init",
                                   help="student head start (linear_probe: fitted on the teacher's probabilities)"),
    max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate on dev every N steps (default: each epoch)"),
    patience: int = typer.Option(2, help="stop after N evaluations without dev improvement"),
    seed: int = typer.Option(42, help="random seed (data order, head initialisation)"),
    teacher_batch_size: int = typer.Option(256, min=1, help="texts per teacher call"),
    device: str = device_option(),
) -> None:
    """Distil a teacher (a classifier or an ensemble) into one student classifier on its soft labels."""
    from .finetune import ClassifierTrainingConfig
    from .finetune.distill import distill_classifier
    from .inference import load_classifier
    from .io import read_table

    cfg = ClassifierTrainingConfig(base=base, epochs=epochs, batch_size=batch_size, learning_rate=lr,
                                   max_length=max_length, head_init=head_init, max_steps=max_steps,
                                   eval_every=eval_every, patience=patience, seed=seed, device=device,
                                   class_weights=None)
    tr = read_table(train, [text_col])
    dv = read_table(dev, [text_col, label_col])
    un = read_table(unlabeled, [text_col]) if unlabeled else None
    te = read_table(test, [text_col, label_col]) if test else None
    teacher_model = load_classifier(teacher, device=device, max_length=max_length)
    res = distill_classifier(
        teacher_model, tr[text_col].tolist(), tr[label_col].tolist() if label_col in tr.columns else None,
        dv[text_col].tolist(), dv[label_col].tolist(), out, cfg,
        unlabeled_texts=un[text_col].tolist() if un is not None else None, temperature=temperature, alpha=alpha,
        test_texts=te[text_col].tolist() if te is not None else None,
        test_labels=te[label_col].tolist() if te is not None else None, teacher_name=str(teacher),
        teacher_batch_size=teacher_batch_size)
    summary = {s: {m: v for m, v in res.metrics[s].items() if isinstance(v, (int, float))}
               for s in ("dev", "test") if s in res.metrics}
    summary["distillation"] = {k: v for k, v in res.metrics["distillation"].items() if isinstance(v, (int, float))}
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"student written to {res.artifact_dir}")


@app.command(cls=RegistryChoicesCommand)
def predict(
    model: Path = typer.Option(..., help="classifier artifact or ensemble directory"),
    input: Path = typer.Option(..., "--input", help="CSV/JSONL with a text column"),
    output: Path = typer.Option(..., help="CSV to write: input rows + label + p_<label> columns"),
    text_col: str = typer.Option("text", help="text column"),
    batch_size: int = typer.Option(64, help="texts per model call"),
    backend: str = backend_option(),
    device: str = device_option(),
) -> None:
    """Classify every row of a file; writes the input rows plus 'label' and 'p_<label>' columns."""
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


@app.command(cls=RegistryChoicesCommand)
def embed(
    input: Path = typer.Option(..., "--input", help="CSV/JSONL with a text column"),
    output: Path = typer.Option(..., help=".npy (float32 matrix) or .jsonl (one {row, embedding} per line)"),
    text_col: str = typer.Option("text", help="text column"),
    model: str = typer.Option("default", help="default | directory | hub id"),
    batch_size: int = typer.Option(64, help="texts per model call"),
    backend: str = backend_option(),
    device: str = device_option(),
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
    text_col: str = typer.Option("text", help="text column"),
    key_col: Optional[str] = typer.Option(None, help="key column (default: row number)"),
    model: str = typer.Option("default", help="embedder: default | directory | hub id"),
    factory: str = typer.Option("Flat", help="FAISS index factory string: Flat, HNSW32, IVF256,Flat ..."),
    device: str = device_option(),
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
    k: int = typer.Option(5, "-k", help="number of hits"),
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
    text_col: str = typer.Option("text", help="text column"),
    label_col: str = typer.Option("label", help="label column"),
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


def _serving_paths(home: Optional[Path], keys_db: Optional[Path] = None, usage_db: Optional[Path] = None):
    """Resolve --home / --keys-db / --usage-db (a --home also becomes $VERTICORE_HOME for the apps)."""
    import os

    from .dashboard import HOME_ENV
    from .dashboard import home as default_home

    if home is not None:
        os.environ[HOME_ENV] = str(home)
    base = home or default_home()
    return keys_db or base / "serving" / "keys.db", usage_db or base / "serving" / "usage.db"


@app.command(cls=RegistryChoicesCommand)
def serve(
    model: Optional[str] = typer.Option(None, help="classifier artifact directory for /v1/classify"),
    embedder: str = typer.Option("default", help="embedder for /v1/embed ('none' to serve no embedder)"),
    apps: str = typer.Option("all", "--apps", help="apps to mount: all | none | comma-separated names"),
    host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0: all)"),
    port: int = typer.Option(8000, help="TCP port"),
    device: str = device_option(),
    backend: str = backend_option(),
    insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                          help="serve WITHOUT API keys (trusted local machine only)"),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="micro-batch concurrent requests"),
    max_batch: int = typer.Option(64, help="texts per merged model call"),
    max_wait_ms: float = typer.Option(5.0, help="how long a micro-batch waits to fill"),
    max_queue: int = typer.Option(1024, help="texts waiting per model before 503"),
    home: Optional[Path] = typer.Option(None, help="VERTICORE_HOME (demo state, keys, usage)"),
    keys_db: Optional[Path] = typer.Option(None, help="API keys database (default HOME/serving/keys.db)"),
    usage_db: Optional[Path] = typer.Option(None, help="usage database (default HOME/serving/usage.db)"),
    warm: bool = typer.Option(True, "--warm/--no-warm", help="load the models before accepting requests"),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="one JSON log line per request"),
) -> None:
    """Serve the core (/v1/classify, /v1/embed) and every installed app's API (/v1/<app>/...) in one
    process, with API keys, quotas, metering, /metrics and OpenAPI docs at /docs."""
    import logging

    import uvicorn

    from .errors import DataError
    from .plugins import discover_apps
    from .server import create_app
    from .serving import ServingSettings
    from .serving.observability import configure_json_logging

    configure_json_logging()
    keys_path, usage_path = _serving_paths(home, keys_db, usage_db)
    if model:
        from .artifact import check_artifact_dir

        check_artifact_dir(Path(model))
    log = logging.getLogger("verticore.serving")
    found = {} if apps.strip() == "none" else discover_apps()
    if apps.strip() not in ("all", "none"):
        wanted = [a.strip() for a in apps.split(",") if a.strip()]
        unknown = [a for a in wanted if a not in found]
        if unknown:
            raise DataError(f"unknown app(s) {', '.join(unknown)}; installed: {', '.join(sorted(found)) or 'none'}")
        found = {a: found[a] for a in wanted}
    settings = ServingSettings(keys_db=keys_path, usage_db=usage_path, insecure_no_auth=insecure_no_auth,
                               batching=batching, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                               access_log=access_log)
    server_app = create_app(model, None if embedder.lower() == "none" else embedder, device=device, backend=backend,
                            serving=settings, apps=found, home=home)
    if warm:
        server_app.state.warm_up()
    log.info("serving on http://%s:%d (auth %s, batching %s, apps: %s)", host, port,
             "DISABLED" if insecure_no_auth else "on", "on" if batching else "off", ", ".join(found) or "none")
    uvicorn.run(server_app, host=host, port=port, log_config=None, timeout_graceful_shutdown=30)


keys_app = typer.Typer(no_args_is_help=True, help="Create, list, revoke and rotate API keys of `verticore serve`.")
app.add_typer(keys_app, name="keys")
_HOME_OPT = typer.Option(None, "--home", help="VERTICORE_HOME (default: $VERTICORE_HOME, <repo>/.verticore, ~/.verticore)")
_KEYS_OPT = typer.Option(None, "--keys-db", help="keys database (default HOME/serving/keys.db)")


def _key_store(home: Optional[Path], keys_db: Optional[Path]):
    from .serving import KeyStore

    return KeyStore(_serving_paths(home, keys_db)[0])


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., help="unique key name (shows up in usage and logs)"),
    scopes: str = typer.Option(..., help="comma-separated: classify, embed, support:chat, support:agent, "
                                         "finance:ingest, finance:read, rec:read, rec:write, admin"),
    rate: Optional[str] = typer.Option(None, help="rate limit, e.g. 20/s or 600/min"),
    quota: Optional[str] = typer.Option(None, help="daily quota, e.g. 100000/day"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (key included)"),
    home: Optional[Path] = _HOME_OPT,
    keys_db: Optional[Path] = _KEYS_OPT,
) -> None:
    """Create a key and print it ONCE (only its hash is stored)."""
    key, rec = _key_store(home, keys_db).create(name, scopes.split(","), rate=rate, quota=quota)
    if as_json:
        typer.echo(json.dumps({"key": key, **rec.to_dict()}))
        return
    typer.echo(key)
    typer.echo(f"created key {rec.name!r} (scopes {','.join(rec.scopes)}; rate {rec.rate or 'unlimited'}; "
               f"quota {rec.quota or 'unlimited'}). Store it now: it is not shown again.", err=True)


@keys_app.command("list")
def keys_list(
    as_json: bool = typer.Option(False, "--json", help="print pure JSON"),
    home: Optional[Path] = _HOME_OPT,
    keys_db: Optional[Path] = _KEYS_OPT,
) -> None:
    """List keys (name, prefix, scopes, limits, last use); never the keys themselves."""
    from datetime import datetime, timezone

    recs = _key_store(home, keys_db).list()
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in recs], indent=2))
        return

    def when(ts):
        return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else "-"

    typer.echo(f"{'name':<20} {'prefix':<12} {'status':<8} {'scopes':<36} {'rate':<10} {'quota':<12} last used (UTC)")
    for r in recs:
        typer.echo(f"{r.name:<20} {r.prefix + '…':<12} {'active' if r.active else 'revoked':<8} "
                   f"{','.join(r.scopes):<36} {r.rate or '-':<10} {r.quota or '-':<12} {when(r.last_used)}")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(..., help="key name"), home: Optional[Path] = _HOME_OPT,
                keys_db: Optional[Path] = _KEYS_OPT) -> None:
    """Revoke a key; it stops working at once (running servers included)."""
    _key_store(home, keys_db).revoke(name)
    typer.echo(f"revoked key {name!r}")


@keys_app.command("rotate")
def keys_rotate(name: str = typer.Argument(..., help="key name"),
                as_json: bool = typer.Option(False, "--json", help="print pure JSON (key included)"),
                home: Optional[Path] = _HOME_OPT, keys_db: Optional[Path] = _KEYS_OPT) -> None:
    """Give a key a new secret (same name, scopes, limits); prints it ONCE, the old one stops working."""
    key = _key_store(home, keys_db).rotate(name)
    if as_json:
        typer.echo(json.dumps({"name": name, "key": key}))
        return
    typer.echo(key)
    typer.echo(f"rotated key {name!r}; the old key no longer works. Store the new one now.", err=True)


dash_users_app = typer.Typer(no_args_is_help=True,
                             help="Users of the Streamlit hub (roles viewer, agent, admin; bcrypt-hashed passwords).")
app.add_typer(dash_users_app, name="dashboard-users")
_USERS_FILE_OPT = typer.Option(None, "--file", help="users file (default $VERTICORE_DASHBOARD_USERS, "
                                                    "else HOME/dashboard_users.yaml)")


def _users_file(home: Optional[Path], path: Optional[Path]) -> Path:
    from .dashboard.auth import users_path

    _serving_paths(home)  # a --home becomes $VERTICORE_HOME
    return path or users_path()


@dash_users_app.command("add")
def dashboard_users_add(
    username: str = typer.Argument(..., help="login name"),
    role: str = typer.Option("viewer", help="viewer (read-only) | agent (tickets, KB) | admin (also configs, API keys)"),
    name: Optional[str] = typer.Option(None, help="display name (default: the login name)"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin's first line"),
    replace: bool = typer.Option(False, "--replace", help="update an existing user (new password and role)"),
    home: Optional[Path] = _HOME_OPT,
    file: Optional[Path] = _USERS_FILE_OPT,
) -> None:
    """Add a hub user; the password is prompted for (or read with --password-stdin) and stored only as a bcrypt hash."""
    from .dashboard.auth import add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    path = _users_file(home, file)
    user = add_user(username, password, role, name, replace=replace, path=path)
    typer.echo(f"{'updated' if replace else 'added'} dashboard user {user.username!r} ({user.role}) in {path}")


@dash_users_app.command("list")
def dashboard_users_list(as_json: bool = typer.Option(False, "--json", help="print pure JSON"),
                         home: Optional[Path] = _HOME_OPT,
                         file: Optional[Path] = _USERS_FILE_OPT) -> None:
    """List hub users (name and role; never the hashes)."""
    from .dashboard.auth import load_users

    path = _users_file(home, file)
    users = sorted(load_users(path).users.values(), key=lambda u: u.username)
    if as_json:
        typer.echo(json.dumps([{"username": u.username, "name": u.name, "role": u.role} for u in users], indent=2))
        return
    if not users:
        typer.echo(f"no dashboard users in {path}")
        return
    typer.echo(f"{'username':<20} {'role':<7} name")
    for u in users:
        typer.echo(f"{u.username:<20} {u.role:<7} {u.name}")


@dash_users_app.command("remove")
def dashboard_users_remove(username: str = typer.Argument(..., help="login name"), home: Optional[Path] = _HOME_OPT,
                           file: Optional[Path] = _USERS_FILE_OPT) -> None:
    """Remove a hub user; their open sessions lose access at their next click."""
    from .dashboard.auth import remove_user

    path = _users_file(home, file)
    remove_user(username, path)
    typer.echo(f"removed dashboard user {username!r} from {path}")


@app.command()
def usage(
    key: Optional[str] = typer.Option(None, "--key", help="only this key name"),
    since: Optional[str] = typer.Option(None, help="from this UTC day on (YYYY-MM-DD)"),
    as_json: bool = typer.Option(False, "--json", help="JSON rows"),
    as_csv: bool = typer.Option(False, "--csv", help="CSV rows"),
    home: Optional[Path] = _HOME_OPT,
    usage_db: Optional[Path] = typer.Option(None, "--usage-db", help="usage database (default HOME/serving/usage.db)"),
) -> None:
    """Usage per key, endpoint and UTC day: requests, units, input tokens (approx.), errors, latency."""
    import csv
    import io as _io

    from .serving.metering import FIELDS, query_usage

    if as_json and as_csv:
        raise VerticoreError("give --json or --csv, not both")
    rows = query_usage(_serving_paths(home, None, usage_db)[1], key=key, since=since)
    cols = ["day", "key", "endpoint", *FIELDS, "mean_latency_ms"]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif as_csv:
        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        typer.echo(buf.getvalue(), nl=False)
    elif not rows:
        typer.echo("no usage recorded" + (f" for key {key!r}" if key else "") + (f" since {since}" if since else ""))
    else:
        typer.echo(f"{'day':<10} {'key':<16} {'endpoint':<40} {'requests':>9} {'units':>8} {'tokens':>9} "
                   f"{'errors':>7} {'mean ms':>8}")
        for r in rows:
            typer.echo(f"{r['day']:<10} {r['key']:<16} {r['endpoint']:<40} {r['requests']:>9} {r['units']:>8} "
                       f"{r['input_tokens']:>9} {r['errors']:>7} {r['mean_latency_ms']:>8.1f}")


@app.command()
def info(model: str = typer.Option("default", help="model to resolve: default | directory | hub id")) -> None:
    """Show the resolved model, device and available backends."""
    import torch

    from .inference.backends import available_backends
    from .models import resolve_device, resolve_model

    r = resolve_model(model)
    typer.echo(json.dumps({"model": r.name, "path": str(r.path), "fingerprint": r.fingerprint,
                           "device": resolve_device("auto"), "torch": torch.__version__,
                           "backends": available_backends()}, indent=2))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``verticore`` command."""
    run_app(app, argv)


if __name__ == "__main__":
    main()
