"""Fine-tune a text classifier (single- or multi-label; any registered method) into an artifact dir.

:func:`train_classifier` is the recipe; each step is its own function: :func:`prepare_data`
(validate and encode), :func:`resolve_pooling` / :func:`resolve_head_init` /
:func:`linear_probe_head` (head initialisation), :func:`make_loss` (class weights), the loop
(:func:`verticore.finetune.loop.fit`), :func:`calibrate` (temperature on dev) and
:func:`write_classifier_artifact`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..artifact import ArtifactMeta, LabelSpace, write_meta
from ..errors import DataError
from ..io import atomic_write_json, atomic_write_text, clean_labels, clean_texts, fingerprint_texts
from .calibration import expected_calibration_error, fit_temperature
from .card import model_card
from .common import StagedDir, TrainResult, autocast_context
from .config import ClassifierTrainingConfig
from .loop import batched_logits, fit, length_grouped_batches, load_with_new_head, pad_tensors, save_model_files
from .methods import get_method

if TYPE_CHECKING:
    from .distributed import DataParallel

log = logging.getLogger(__name__)
LabelLike = str | Sequence[str]
HEAD_INITS = ("auto", "random", "linear_probe")


@dataclass
class ClassifierData:
    """Validated training data: cleaned texts, the label space and encoded targets
    (class indices, or a 0/1 matrix for multi-label)."""

    space: LabelSpace
    train_texts: list[str]
    train_labels: list[Any]  # cleaned raw labels (fingerprint)
    y_train: np.ndarray
    dev_texts: list[str]
    y_dev: np.ndarray
    test_texts: list[str] | None = None
    y_test: np.ndarray | None = None


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


def prepare_data(train_texts: Sequence[str], train_labels: Sequence[LabelLike], dev_texts: Sequence[str],
                 dev_labels: Sequence[LabelLike], multi_label: bool, test_texts: Sequence[str] | None = None,
                 test_labels: Sequence[LabelLike] | None = None) -> ClassifierData:
    """Clean texts and labels, build the (sorted) label space from training and encode every split.

    Raises :class:`DataError` on empty texts, length mismatches, fewer than two labels or a
    dev/test label unseen in training.
    """
    train = clean_texts(train_texts, what="training text")
    dev = clean_texts(dev_texts, what="dev text")
    if len(train) != len(train_labels) or len(dev) != len(dev_labels):
        raise DataError("texts and labels differ in length")
    if len(train) < 2 or len(dev) < 1:
        raise DataError("need at least 2 training rows and 1 dev row")
    y_train_raw = clean_labels(train_labels, multi_label, "training")
    y_dev_raw = clean_labels(dev_labels, multi_label, "dev")
    labels = sorted({l for ls in y_train_raw for l in ls}) if multi_label else sorted(set(y_train_raw))
    if len(labels) < 2:
        raise DataError(f"training data has only one label ({labels}); a classifier needs at least two")
    space = LabelSpace(labels, multi_label)
    data = ClassifierData(space, train, y_train_raw, _encode_targets(y_train_raw, space, "training data"),
                          dev, _encode_targets(y_dev_raw, space, "dev data"))
    if test_texts is not None and test_labels is not None:
        data.test_texts = clean_texts(test_texts, what="test text")
        data.y_test = _encode_targets(clean_labels(test_labels, multi_label, "test"), space, "test data")
    return data


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Softmax (single-label) or element-wise sigmoid (multi-label) of ``logits``."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def split_metrics(space: LabelSpace, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Classification metrics of ``probs`` against encoded targets ``y`` (multi-label: at ``space.threshold``)."""
    from ..evaluation import classification_metrics, multilabel_metrics

    if space.multi_label:
        true_sets = [{space.labels[j] for j in np.flatnonzero(row)} for row in y]
        pred_sets = [{space.labels[j] for j in np.flatnonzero(row >= space.threshold)} for row in probs]
        return multilabel_metrics(true_sets, pred_sets, space.labels)
    m = classification_metrics([space.labels[i] for i in y], [space.labels[i] for i in probs.argmax(1)],
                               labels=space.labels)
    m["ece"] = expected_calibration_error(probs, y)
    return m


def resolve_pooling(model, model_path: Path, pooling: str) -> str:
    """``auto`` -> ``mean`` for sentence-transformers bases whose architecture allows it, else ``native``;
    the chosen pooling is applied to ``model``."""
    from ..inference.heads import apply_pooling, default_pooling, supports_mean_pooling

    if pooling == "auto":
        pooling = "mean" if default_pooling(model_path) == "mean" and supports_mean_pooling(model) else "native"
    apply_pooling(model, pooling)
    return pooling


def resolve_head_init(model, head_init: str, pooling: str) -> str:
    """``auto`` -> ``warm_start`` when the base is a fine-tuned classifier with the same labels (its head
    is kept, see :func:`~verticore.finetune.loop.load_with_new_head`), else ``linear_probe`` when the
    head is one Linear layer reading usable features, else ``random``."""
    import torch

    if head_init not in HEAD_INITS:
        raise DataError(f"head_init must be 'auto', 'random' or 'linear_probe', got {head_init!r}")
    if head_init != "auto":
        return head_init
    if getattr(model, "verticore_warm_head", False):  # a fine-tuned base with these very labels
        return "warm_start"
    one_linear = isinstance(getattr(model, "classifier", None), torch.nn.Linear)
    return "linear_probe" if one_linear and (pooling == "mean" or _has_pooler(model)) else "random"


def make_loss(y_train: np.ndarray, n_labels: int, multi_label: bool, class_weights: str | None, device: str):
    """The training loss: cross-entropy (single-label) or BCE-with-logits (multi-label).

    ``class_weights="balanced"`` counters imbalance: single-label classes are weighted by
    inverse frequency (normalised to mean 1); multi-label positives by ``negatives / positives``
    per label, clipped to [1, 10].
    """
    import torch

    if class_weights == "balanced":
        counts = y_train.sum(0) if multi_label else np.bincount(y_train, minlength=n_labels)
        if multi_label:
            neg = len(y_train) - counts
            weight = torch.tensor(np.clip(neg / np.maximum(counts, 1), 1.0, 10.0), dtype=torch.float32, device=device)
            return torch.nn.BCEWithLogitsLoss(pos_weight=weight)
        w = len(y_train) / (n_labels * np.maximum(counts, 1))
        return torch.nn.CrossEntropyLoss(weight=torch.tensor(w / w.mean(), dtype=torch.float32, device=device))
    if class_weights is not None:
        raise DataError(f"class_weights must be 'balanced' or None, got {class_weights!r}")
    return torch.nn.BCEWithLogitsLoss() if multi_label else torch.nn.CrossEntropyLoss()


def calibrate(clf, dev_texts: list[str], y_dev: np.ndarray, multi_label: bool) -> tuple[float, np.ndarray]:
    """Fit the temperature on dev logits computed through ``clf`` (the exact inference path), set it
    on ``clf`` and return ``(temperature, uncalibrated dev logits)``."""
    logits_dev, _ = clf.predict_logits(dev_texts)
    temperature = fit_temperature(logits_dev, y_dev, multi_label)
    clf.temperature = temperature
    return temperature, logits_dev


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
    data_parallel: DataParallel | None = None,
) -> TrainResult:
    """Fine-tune ``config.base`` on (text, label) pairs and write a self-describing artifact.

    Model selection: the checkpoint with the best dev macro-F1 is kept (early stopping after
    ``patience`` evaluations without gain). Probabilities are then calibrated by temperature
    scaling on dev. Multi-label rows give a list of labels (or ``"a|b"`` strings).

    Returns a :class:`TrainResult`; ``TextClassifier(result.artifact_dir)`` reproduces
    ``result.dev_probabilities`` exactly on CPU.

    ``data_parallel``: this process is one rank of ``verticore finetune --nproc N`` (see
    :mod:`verticore.finetune.distributed`); ranks other than 0 train but write nothing and return
    a result without metrics.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    cfg = config or ClassifierTrainingConfig()
    dp = data_parallel
    show_progress = show_progress and (dp is None or dp.is_main)
    t0 = time.time()
    data = prepare_data(train_texts, train_labels, dev_texts, dev_labels, cfg.multi_label, test_texts, test_labels)
    space, labels = data.space, data.space.labels
    method = get_method(cfg.method, cfg.method_config())

    # The order below (seeded load, head init, method preparation) fixes the RNG stream: keep it.
    model, tokenizer, resolved, device = load_with_new_head(
        AutoModelForSequenceClassification, cfg, labels,
        problem_type="multi_label_classification" if cfg.multi_label else "single_label_classification")
    pooling = resolve_pooling(model, resolved.path, cfg.pooling)
    head_init = resolve_head_init(model, cfg.head_init, pooling)
    loss_fn = make_loss(data.y_train, len(labels), cfg.multi_label, cfg.class_weights, device)
    enc_train = tokenizer(data.train_texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id or 0
    probe_info: dict[str, Any] | None = None
    if head_init == "linear_probe" and (dp is None or dp.is_main):  # other ranks get the head by broadcast
        model.to(device)
        probe_info = linear_probe_head(model, pooling, enc_train, data.y_train, loss_fn, pad_id, device, show_progress)
    model = method.prepare(model).to(device)
    if dp is not None:
        dp.sync_parameters(model, cfg.seed)
    autocast, _ = autocast_context(device, cfg.mixed_precision)

    enc_dev = tokenizer(data.dev_texts, truncation=True, max_length=cfg.max_length)["input_ids"]

    def dev_macro_f1() -> float:
        logits = batched_logits(model, enc_dev, len(labels), pad_id, device, autocast)
        return split_metrics(space, data.y_dev, probabilities(logits, cfg.multi_label))["macro_f1"]

    def train_batch(idx: np.ndarray):
        ids, mask = pad_tensors([enc_train[i] for i in idx], pad_id, device)
        return ids, mask, torch.from_numpy(data.y_train[idx]).to(device)

    loop = fit(model, cfg, method, [len(x) for x in enc_train], train_batch, loss_fn, dev_macro_f1,
               device, "dev_macro_f1", f"fine-tune ({cfg.method})", show_progress, data_parallel=dp)
    run_info = {"best_step": loop.best_step, "steps": loop.steps, "train_seconds": round(time.time() - t0, 2),
                "history": loop.history}
    if dp is not None:
        if not dp.is_main:
            return TrainResult(artifact_dir=Path(out_dir))
        run_info["data_parallel"] = {"world_size": dp.world_size, "backend": dp.backend}

    staged = StagedDir(out_dir)
    try:
        final = save_model_files(method, model, tokenizer, staged.tmp, space)
        from ..inference.classifier import TextClassifier

        clf = TextClassifier.from_model(staged.tmp, final, tokenizer, device=device, max_length=cfg.max_length)
        temperature, logits_dev = calibrate(clf, data.dev_texts, data.y_dev, cfg.multi_label)
        atomic_write_json(staged.tmp / "calibration.json",
                          {"temperature": temperature, "fitted_on": "dev", "method": "temperature_scaling"})
        dev_probs = clf.predict_proba(data.dev_texts)
        metrics: dict[str, Any] = {"dev": split_metrics(space, data.y_dev, dev_probs), **run_info,
                                   "temperature": temperature, "pooling": pooling, "head_init": head_init}
        if probe_info is not None:
            metrics["linear_probe"] = probe_info
        if not cfg.multi_label:
            uncalibrated = probabilities(logits_dev, False)
            metrics["dev"]["ece_uncalibrated"] = expected_calibration_error(uncalibrated, data.y_dev)
        if data.y_test is not None:
            metrics["test"] = split_metrics(space, data.y_test, clf.predict_proba(list(data.test_texts)))
        write_classifier_artifact(staged.tmp, cfg, data, metrics, resolved.name, pooling)
        artifact = staged.commit()
    except BaseException:
        staged.abort()
        raise
    return TrainResult(artifact_dir=artifact, metrics=metrics, dev_probabilities=dev_probs)


def write_classifier_artifact(directory: Path, cfg: ClassifierTrainingConfig, data: ClassifierData,
                              metrics: dict[str, Any], base_model_name: str, pooling: str) -> None:
    """Write ``metrics.json``, ``training_config.json``, ``verticore.json`` and the model card into
    ``directory`` (the weights, tokenizer, labels and calibration are already there)."""
    labels = data.space.labels
    atomic_write_json(directory / "metrics.json", metrics)
    atomic_write_json(directory / "training_config.json", cfg.to_dict())
    fp = fingerprint_texts(data.train_texts, ["|".join(l) if isinstance(l, list) else l for l in data.train_labels])
    write_meta(directory, ArtifactMeta(kind="classifier", base_model=cfg.base, base_model_name=base_model_name,
                                       data_fingerprint=fp, method=cfg.method,
                                       extra={"pooling": pooling, "n_train": len(data.train_texts),
                                              "n_dev": len(data.dev_texts), "labels": labels,
                                              "multi_label": cfg.multi_label}))
    card = model_card("classifier", cfg.to_dict(), metrics, base_model_name, labels, fp)
    atomic_write_text(directory / "README.md", card)


def _has_pooler(model) -> bool:
    base = getattr(model, "base_model", None)
    return getattr(base, "pooler", None) is not None


def linear_probe_head(model, pooling: str, enc_train: list[list[int]], y_train: np.ndarray, loss_fn, pad_id: int,
                      device: str, show_progress: bool = False, l2: float = 1e-3,
                      max_iter: int = 200) -> dict[str, Any]:
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
            ids, mask = pad_tensors([enc_train[i] for i in idx], pad_id, device)
            out = model.base_model(input_ids=ids, attention_mask=mask)
            if pooling == "mean":
                f = pool(out.last_hidden_state, mask, "mean")
            else:
                f = getattr(out, "pooler_output", None)
                if f is None:
                    raise VerticoreError(
                        "head_init='linear_probe' with native pooling needs a model with a pooler output")
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


# Names of the module before the split (kept for importers).
_pad = pad_tensors
_probs = probabilities
_metrics = split_metrics
__all__ = ["train_classifier", "prepare_data", "ClassifierData", "resolve_pooling", "resolve_head_init", "make_loss",
           "linear_probe_head", "calibrate", "write_classifier_artifact", "split_metrics", "probabilities",
           "length_grouped_batches"]
