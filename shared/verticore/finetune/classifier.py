"""Fine-tune a text classifier (single- or multi-label; full or LoRA) into an artifact dir."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..artifact import ArtifactMeta, LabelSpace, write_meta
from ..errors import DataError
from ..io import atomic_write_json, atomic_write_text, clean_labels, clean_texts, fingerprint_texts
from .calibration import expected_calibration_error, fit_temperature
from .card import model_card
from .common import StagedDir, TrainResult, autocast_context
from .config import ClassifierTrainingConfig
from .loop import fit, load_with_new_head, save_model_files
from .methods import get_method

log = logging.getLogger(__name__)
LabelLike = str | Sequence[str]


def _encode_targets(labels: list[Any], space: LabelSpace, what: str) -> np.ndarray:
    index = {l: i for i, l in enumerate(space.labels)}
    if space.multi_label:
        y = np.zeros((len(labels), len(space.labels)), dtype=np.float32)
        for r, ls in enumerate(labels):
            for l in ls:
                if l not in index:
                    raise DataError(f"{what} has label {l!r} not seen in training; training labels are {space.labels}")
                y[r, index[l]] = 1.0
        return y
    unknown = sorted({l for l in labels if l not in index})
    if unknown:
        raise DataError(f"{what} has label {unknown[0]!r} not seen in training; training labels are {space.labels}")
    return np.asarray([index[l] for l in labels], dtype=np.int64)


def _metrics(space: LabelSpace, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    from ..evaluation import classification_metrics, multilabel_metrics

    if space.multi_label:
        true_sets = [{space.labels[j] for j in np.flatnonzero(row)} for row in y]
        pred_sets = [{space.labels[j] for j in np.flatnonzero(row >= space.threshold)} for row in probs]
        return multilabel_metrics(true_sets, pred_sets, space.labels)
    m = classification_metrics([space.labels[i] for i in y], [space.labels[i] for i in probs.argmax(1)], labels=space.labels)
    m["ece"] = expected_calibration_error(probs, y)
    return m


def train_classifier(
    train_texts: Sequence[str],
    train_labels: Sequence[LabelLike],
    dev_texts: Sequence[str],
    dev_labels: Sequence[LabelLike],
    out_dir: str | Path,
    config: ClassifierTrainingConfig | None = None,
    test_texts: Sequence[str] | None = None,
    test_labels: Sequence[LabelLike] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tune ``config.base`` on (text, label) pairs and write a self-describing artifact.

    Model selection: the checkpoint with the best dev macro-F1 is kept (early stopping after
    ``patience`` evaluations without gain). Probabilities are then calibrated by temperature
    scaling on dev. Multi-label rows give a list of labels (or ``"a|b"`` strings).

    Returns a :class:`TrainResult`; ``TextClassifier(result.artifact_dir)`` reproduces
    ``result.dev_probabilities`` exactly on CPU.
    """
    import torch

    cfg = config or ClassifierTrainingConfig()
    t0 = time.time()
    train_texts = clean_texts(train_texts, what="training text")
    dev_texts = clean_texts(dev_texts, what="dev text")
    if len(train_texts) != len(train_labels) or len(dev_texts) != len(dev_labels):
        raise DataError("texts and labels differ in length")
    if len(train_texts) < 2 or len(dev_texts) < 1:
        raise DataError("need at least 2 training rows and 1 dev row")
    y_train_raw = clean_labels(train_labels, cfg.multi_label, "training")
    y_dev_raw = clean_labels(dev_labels, cfg.multi_label, "dev")
    labels = sorted({l for ls in y_train_raw for l in ls}) if cfg.multi_label else sorted(set(y_train_raw))
    if len(labels) < 2:
        raise DataError(f"training data has only one label ({labels}); a classifier needs at least two")
    space = LabelSpace(labels, cfg.multi_label)
    y_train = _encode_targets(y_train_raw, space, "training data")
    y_dev = _encode_targets(y_dev_raw, space, "dev data")
    y_test = None
    if test_texts is not None and test_labels is not None:
        test_texts = clean_texts(test_texts, what="test text")
        y_test = _encode_targets(clean_labels(test_labels, cfg.multi_label, "test"), space, "test data")

    from transformers import AutoModelForSequenceClassification

    model, tokenizer, resolved, device = load_with_new_head(
        AutoModelForSequenceClassification, cfg, labels,
        problem_type="multi_label_classification" if cfg.multi_label else "single_label_classification")
    from ..inference.heads import apply_pooling, default_pooling, supports_mean_pooling

    pooling = cfg.pooling
    if pooling == "auto":
        pooling = "mean" if default_pooling(resolved.path) == "mean" and supports_mean_pooling(model) else "native"
    apply_pooling(model, pooling)
    if cfg.head_init not in ("auto", "random", "linear_probe"):
        raise DataError(f"head_init must be 'auto', 'random' or 'linear_probe', got {cfg.head_init!r}")
    head_init = cfg.head_init
    if head_init == "auto":
        head_init = "linear_probe" if isinstance(getattr(model, "classifier", None), torch.nn.Linear) and (
            pooling == "mean" or _has_pooler(model)) else "random"

    # Class weights counter imbalance (inverse frequency, mean 1).
    if cfg.class_weights == "balanced":
        counts = y_train.sum(0) if cfg.multi_label else np.bincount(y_train, minlength=len(labels))
        if cfg.multi_label:
            neg = len(y_train) - counts
            weight = torch.tensor(np.clip(neg / np.maximum(counts, 1), 1.0, 10.0), dtype=torch.float32, device=device)
            loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
        else:
            w = len(y_train) / (len(labels) * np.maximum(counts, 1))
            loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(w / w.mean(), dtype=torch.float32, device=device))
    else:
        loss_fn = torch.nn.BCEWithLogitsLoss() if cfg.multi_label else torch.nn.CrossEntropyLoss()

    enc_train = tokenizer(train_texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id or 0
    probe_info: dict[str, Any] | None = None
    if head_init == "linear_probe":
        model.to(device)
        probe_info = linear_probe_head(model, pooling, enc_train, y_train, loss_fn, pad_id, device, show_progress)
    method = get_method(cfg.method)
    model = method.prepare(model, cfg).to(device)
    autocast, _ = autocast_context(device, cfg.mixed_precision)

    def dev_logits(texts_ids: list[list[int]]) -> np.ndarray:
        model.eval()
        out = np.zeros((len(texts_ids), len(labels)), dtype=np.float32)
        order = np.argsort([-len(x) for x in texts_ids], kind="stable")
        with torch.inference_mode(), autocast:
            for s in range(0, len(order), 64):
                idx = order[s : s + 64]
                ids, mask = _pad([texts_ids[i] for i in idx], pad_id, device)
                out[idx] = model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()
        model.train()
        return out

    enc_dev = tokenizer(dev_texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    loop = fit(model, cfg, method, [len(x) for x in enc_train],
               lambda idx: (*_pad([enc_train[i] for i in idx], pad_id, device), torch.from_numpy(y_train[idx]).to(device)),
               loss_fn, lambda: _metrics(space, y_dev, _probs(dev_logits(enc_dev), cfg.multi_label))["macro_f1"],
               device, "dev_macro_f1", f"fine-tune ({cfg.method})", show_progress)
    best_step, step, history = loop.best_step, loop.steps, loop.history
    train_seconds = time.time() - t0

    staged = StagedDir(out_dir)
    try:
        final = save_model_files(method, model, tokenizer, staged.tmp, space)
        # Calibrate with the exact inference path (chunking, batching) of TextClassifier.
        from ..inference.backends import TorchBackend
        from ..inference.classifier import TextClassifier

        clf = TextClassifier(str(staged.tmp), device=device, max_length=cfg.max_length)
        clf._tokenizer = tokenizer
        clf._max_len = cfg.max_length
        clf._backend = TorchBackend(staged.tmp, head="logits", device=device, model=final)
        clf.resolved_device = device
        logits_dev, _ = clf.predict_logits(dev_texts)
        temperature = fit_temperature(logits_dev, y_dev, cfg.multi_label)
        clf.temperature = temperature
        atomic_write_json(staged.tmp / "calibration.json", {"temperature": temperature, "fitted_on": "dev", "method": "temperature_scaling"})
        dev_probs = clf.predict_proba(dev_texts)
        metrics: dict[str, Any] = {
            "dev": _metrics(space, y_dev, dev_probs),
            "best_step": best_step, "steps": step, "train_seconds": round(train_seconds, 2), "history": history,
            "temperature": temperature, "pooling": pooling, "head_init": head_init,
        }
        if probe_info is not None:
            metrics["linear_probe"] = probe_info
        if not cfg.multi_label:
            metrics["dev"]["ece_uncalibrated"] = expected_calibration_error(_probs(logits_dev, False), y_dev)
        if y_test is not None:
            metrics["test"] = _metrics(space, y_test, clf.predict_proba(list(test_texts)))
        atomic_write_json(staged.tmp / "metrics.json", metrics)
        atomic_write_json(staged.tmp / "training_config.json", cfg.to_json())
        fp = fingerprint_texts(train_texts, ["|".join(l) if isinstance(l, list) else l for l in y_train_raw])
        write_meta(staged.tmp, ArtifactMeta(kind="classifier", base_model=cfg.base, base_model_name=resolved.name,
                                            data_fingerprint=fp, method=cfg.method,
                                            extra={"pooling": pooling, "n_train": len(train_texts), "n_dev": len(dev_texts), "labels": labels,
                                                   "multi_label": cfg.multi_label}))
        atomic_write_text(staged.tmp / "README.md", model_card("classifier", cfg.to_json(), metrics, resolved.name, labels, fp))
        artifact = staged.commit()
    except BaseException:
        staged.abort()
        raise
    return TrainResult(artifact_dir=artifact, metrics=metrics, dev_probabilities=dev_probs)


def _has_pooler(model) -> bool:
    base = getattr(model, "base_model", None)
    return getattr(base, "pooler", None) is not None


def linear_probe_head(model, pooling: str, enc_train: list[list[int]], y_train: np.ndarray, loss_fn, pad_id: int,
                      device: str, show_progress: bool = False, l2: float = 1e-3, max_iter: int = 200) -> dict[str, Any]:
    """LP-FT (Kumar et al., 2022): fit the new head on frozen features first, so fine-tuning
    starts from a sensible classifier instead of pushing random-head gradients into the encoder.

    Features are what the head reads (mean-pooled states, or the architecture's pooled output);
    the head is fitted full-batch with L-BFGS on the training loss plus an L2 penalty.
    """
    import torch

    from ..errors import VerticoreError
    from ..inference.backends import pool

    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear):
        raise VerticoreError("head_init='linear_probe' needs a model whose head is one Linear layer (BERT-like)")
    feats = np.zeros((len(enc_train), head.in_features), dtype=np.float32)
    order = np.argsort([-len(x) for x in enc_train], kind="stable")
    model.eval()
    with torch.inference_mode():
        for s in tqdm(range(0, len(order), 64), desc="linear probe: features", unit="batch", disable=not show_progress):
            idx = order[s : s + 64]
            ids, mask = _pad([enc_train[i] for i in idx], pad_id, device)
            out = model.base_model(input_ids=ids, attention_mask=mask)
            if pooling == "mean":
                f = pool(out.last_hidden_state, mask, "mean")
            else:
                f = getattr(out, "pooler_output", None)
                if f is None:
                    raise VerticoreError("head_init='linear_probe' with native pooling needs a model with a pooler output")
            feats[idx] = f.float().cpu().numpy()
    model.train()
    x = torch.from_numpy(feats).to(device)
    y = torch.from_numpy(y_train).to(device)
    w = torch.zeros_like(head.weight, requires_grad=True)
    b = torch.zeros_like(head.bias, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(x @ w.T + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    loss = float(opt.step(closure).detach())
    with torch.no_grad():
        head.weight.copy_(w.detach())
        head.bias.copy_(b.detach())
        logits = x @ w.T + b
    train_acc = None
    if y.dim() == 1:
        train_acc = float((logits.argmax(1) == y).float().mean())
    return {"loss": round(loss, 5), "train_accuracy": train_acc, "l2": l2, "n": len(enc_train)}


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                           mega: int = 50) -> list[np.ndarray]:
    """Shuffled batches of similar-length rows (HF ``group_by_length``): shuffle, sort inside
    windows of ``mega`` batches, cut, shuffle the batch order. Padding (and CPU time) drops a lot
    on short-text data while every epoch still sees a random order."""
    perm = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    window = batch_size * mega
    batches: list[np.ndarray] = []
    for s in range(0, len(perm), window):
        chunk = perm[s : s + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def _pad(seqs: list[list[int]], pad_id: int, device: str):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _probs(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
