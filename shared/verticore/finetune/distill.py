"""Knowledge distillation: train one student classifier on a teacher's soft labels.

The teacher is any :class:`~verticore.inference.protocols.Classifier` (a fine-tuned
:class:`~verticore.TextClassifier`, a :class:`~verticore.ClassifierEnsemble`, a larger model, an
app's own model). Its probabilities are computed once over the training texts (and any
unlabeled in-domain texts); the student -- ``config.base`` with a fresh classification head, the
same recipe as :func:`~verticore.finetune.train_classifier` -- then learns

    loss = alpha * CE(student, hard label) + (1 - alpha) * T^2 * KL(teacher_T || student_T)

on labelled rows and the pure ``T^2 * KL`` term on unlabeled rows (Hinton et al., 2015), where
``_T`` means softmax of the logits divided by the temperature ``T`` (the teacher's logits are taken
as the log of its probabilities). The result is an ordinary classifier artifact (loadable by
:class:`~verticore.TextClassifier`, calibrated on dev) at the single model's inference cost.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..artifact import LabelSpace
from ..errors import DataError
from ..io import atomic_write_json, clean_labels, clean_texts
from .calibration import expected_calibration_error
from .classifier import (
    ClassifierData,
    calibrate,
    linear_probe_head,
    probabilities,
    resolve_head_init,
    resolve_pooling,
    split_metrics,
    write_classifier_artifact,
)
from .common import StagedDir, TrainResult, autocast_context
from .config import ClassifierTrainingConfig
from .loop import batched_logits, fit, load_with_new_head, pad_tensors, save_model_files
from .methods import get_method

if TYPE_CHECKING:
    from ..inference.protocols import Classifier

log = logging.getLogger(__name__)
#: Hard label of an unlabeled row in the student's targets (ignored by the cross-entropy term).
UNLABELED = -1


def teacher_probabilities(teacher: Classifier, texts: Sequence[str], batch_size: int = 256,
                          show_progress: bool = True) -> np.ndarray:
    """``(len(texts), len(teacher.labels))`` float32 teacher probabilities, computed in batches
    (one progress bar over all of them); rows are checked and renormalised."""
    n_labels = len(teacher.labels)
    out = np.zeros((len(texts), n_labels), dtype=np.float32)
    bar = tqdm(total=len(texts), desc="teacher: soft labels", unit="text", disable=not show_progress)
    for s in range(0, len(texts), batch_size):
        chunk = list(texts[s : s + batch_size])
        probs = np.asarray(teacher.predict_proba(chunk), dtype=np.float64)
        if probs.shape != (len(chunk), n_labels):
            raise DataError(f"the teacher returned probabilities of shape {probs.shape}; expected "
                            f"{(len(chunk), n_labels)} (one column per teacher label)")
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise DataError("the teacher returned probabilities that are negative, NaN or infinite")
        out[s : s + len(chunk)] = probs / np.maximum(probs.sum(1, keepdims=True), 1e-12)
        bar.update(len(chunk))
    bar.close()
    return out


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Teacher targets at ``temperature``: softmax(log(p) / T) (T = 1 returns ``probs``)."""
    logits = np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0)) / temperature
    return probabilities(logits, False).astype(np.float32)


def distillation_loss(temperature: float, alpha: float):
    """``loss(logits, (hard, soft))``: per row ``alpha * CE + (1 - alpha) * T^2 * KL`` where the
    hard label is known, ``T^2 * KL`` where it is :data:`UNLABELED`; the batch mean."""
    import torch
    import torch.nn.functional as F

    def loss(logits, target):
        hard, soft = target
        log_q = F.log_softmax(logits / temperature, dim=-1)
        kl = (soft * (torch.log(soft.clamp_min(1e-12)) - log_q)).sum(-1) * temperature**2
        labelled = hard != UNLABELED
        ce = F.cross_entropy(logits, hard.clamp_min(0), reduction="none")
        per_row = torch.where(labelled, alpha * ce + (1.0 - alpha) * kl, kl)
        return per_row.mean()

    return loss


def _soft_cross_entropy(logits, soft):
    """Cross-entropy against soft targets (the linear probe's objective on teacher probabilities)."""
    import torch.nn.functional as F

    return -(soft * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def _describe(teacher: Any) -> str:
    path = getattr(teacher, "path", None) or getattr(teacher, "artifact_dir", None)
    return f"{type(teacher).__name__}({path})" if path else type(teacher).__name__


def distill_classifier(
    teacher: Classifier,
    train_texts: Sequence[str],
    train_labels: Sequence[str] | None,
    dev_texts: Sequence[str],
    dev_labels: Sequence[str],
    out_dir: str | Path,
    config: ClassifierTrainingConfig | None = None,
    unlabeled_texts: Sequence[str] | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    test_texts: Sequence[str] | None = None,
    test_labels: Sequence[str] | None = None,
    teacher_name: str | None = None,
    teacher_batch_size: int = 256,
    show_progress: bool = True,
) -> TrainResult:
    """Distil ``teacher`` into a single ``config.base`` classifier and write a classifier artifact.

    Args:
        teacher: any single-label :class:`Classifier`; the student gets its labels, in its order.
        train_texts / train_labels: labelled rows; ``train_labels=None`` = the texts are used with
            the teacher's soft labels only. Every hard label must be one of the teacher's labels.
        dev_texts / dev_labels: model selection (early stopping on dev accuracy) and calibration.
        unlabeled_texts: in-domain texts without labels, learnt from the teacher alone (pure KL).
        temperature: ``T`` (> 0) softening both teacher and student distributions.
        alpha: weight in [0, 1] of the hard-label cross-entropy against the soft-label term.
        test_texts / test_labels: optional, reported in ``metrics.json``.
        teacher_name: how ``metrics.json`` names the teacher (default: its class and path).

    Returns a :class:`TrainResult` like :func:`~verticore.finetune.train_classifier`; ``metrics.json``
    adds ``distillation`` (teacher, settings, row counts, teacher/student dev accuracy and agreement).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    cfg = config or ClassifierTrainingConfig()
    t0 = time.time()
    if cfg.multi_label or getattr(teacher, "multi_label", False):
        raise DataError("distillation supports single-label classifiers only")
    if not temperature > 0:
        raise DataError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"alpha must be between 0 and 1, got {alpha}")
    labels = [str(x) for x in teacher.labels]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise DataError(f"the teacher needs at least two distinct labels, has {labels}")
    space = LabelSpace(labels, False)
    index = {l: i for i, l in enumerate(labels)}

    train = clean_texts(train_texts, what="training text")
    unlabeled = clean_texts(unlabeled_texts or [], what="unlabeled text")
    dev = clean_texts(dev_texts, what="dev text")
    if train_labels is not None and len(train_labels) != len(train):
        raise DataError("training texts and labels differ in length")
    if len(dev) != len(dev_labels):
        raise DataError("dev texts and labels differ in length")
    if len(train) + len(unlabeled) < 2 or len(dev) < 1:
        raise DataError("need at least 2 training (or unlabeled) rows and 1 dev row")

    def encode(raw: Sequence[str], what: str) -> np.ndarray:
        cleaned = clean_labels(raw, False, what)
        unknown = sorted({l for l in cleaned if l not in index})
        if unknown:
            raise DataError(f"{what} label {unknown[0]!r} is not one of the teacher's labels {labels}")
        return np.asarray([index[l] for l in cleaned], dtype=np.int64)

    y_hard = encode(train_labels, "training") if train_labels is not None else np.full(len(train), UNLABELED)
    y_dev = encode(dev_labels, "dev")
    texts = train + unlabeled
    hard = np.concatenate([y_hard, np.full(len(unlabeled), UNLABELED)]).astype(np.int64)

    t_teacher = time.time()
    teacher_probs = teacher_probabilities(teacher, texts + dev, teacher_batch_size, show_progress)
    teacher_seconds = time.time() - t_teacher
    teacher_dev = teacher_probs[len(texts):]
    teacher_probs = teacher_probs[: len(texts)]
    soft = soften(teacher_probs, temperature)

    method = get_method(cfg.method, cfg.method_config())
    # The same order as train_classifier (seeded load, head init, method preparation).
    model, tokenizer, resolved, device = load_with_new_head(
        AutoModelForSequenceClassification, cfg, labels, problem_type="single_label_classification")
    pooling = resolve_pooling(model, resolved.path, cfg.pooling)
    head_init = resolve_head_init(model, cfg.head_init, pooling)
    enc_train = tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id or 0
    probe_info: dict[str, Any] | None = None
    if head_init == "linear_probe":  # the head starts from the teacher's (untempered) probabilities
        model.to(device)
        probe_info = linear_probe_head(model, pooling, enc_train, teacher_probs, _soft_cross_entropy, pad_id,
                                       device, show_progress)
    model = method.prepare(model).to(device)
    autocast, _ = autocast_context(device, cfg.mixed_precision)
    enc_dev = tokenizer(dev, truncation=True, max_length=cfg.max_length)["input_ids"]

    def dev_accuracy() -> float:
        logits = batched_logits(model, enc_dev, len(labels), pad_id, device, autocast)
        return float((logits.argmax(1) == y_dev).mean())

    soft_t = torch.from_numpy(soft)
    hard_t = torch.from_numpy(hard)

    def train_batch(idx: np.ndarray):
        ids, mask = pad_tensors([enc_train[i] for i in idx], pad_id, device)
        sel = torch.from_numpy(idx)
        return ids, mask, (hard_t[sel].to(device), soft_t[sel].to(device))

    loop = fit(model, cfg, method, [len(x) for x in enc_train], train_batch, distillation_loss(temperature, alpha),
               dev_accuracy, device, "dev_accuracy", f"distil ({cfg.method}, T={temperature:g}, alpha={alpha:g})",
               show_progress)

    staged = StagedDir(out_dir)
    try:
        final = save_model_files(method, model, tokenizer, staged.tmp, space)
        from ..inference.classifier import TextClassifier

        clf = TextClassifier.from_model(staged.tmp, final, tokenizer, device=device, max_length=cfg.max_length)
        temp, logits_dev = calibrate(clf, dev, y_dev, False)
        atomic_write_json(staged.tmp / "calibration.json",
                          {"temperature": temp, "fitted_on": "dev", "method": "temperature_scaling"})
        dev_probs = clf.predict_proba(dev)
        train_pred = clf.predict_proba(texts).argmax(1)
        distillation = {
            "teacher": teacher_name or _describe(teacher), "temperature": temperature, "alpha": alpha,
            "n_labelled": int((hard != UNLABELED).sum()), "n_unlabeled": int((hard == UNLABELED).sum()),
            "teacher_dev_accuracy": float((teacher_dev.argmax(1) == y_dev).mean()),
            "student_dev_accuracy": float((dev_probs.argmax(1) == y_dev).mean()),
            "dev_agreement_with_teacher": float((dev_probs.argmax(1) == teacher_dev.argmax(1)).mean()),
            "train_agreement_with_teacher": float((train_pred == teacher_probs.argmax(1)).mean()),
            "teacher_seconds": round(teacher_seconds, 2),
        }
        metrics: dict[str, Any] = {"dev": split_metrics(space, y_dev, dev_probs), "best_step": loop.best_step,
                                   "steps": loop.steps, "train_seconds": round(time.time() - t0, 2),
                                   "history": loop.history, "temperature": temp, "pooling": pooling,
                                   "head_init": head_init, "distillation": distillation}
        if probe_info is not None:
            metrics["linear_probe"] = probe_info
        metrics["dev"]["ece_uncalibrated"] = expected_calibration_error(probabilities(logits_dev, False), y_dev)
        if test_texts is not None and test_labels is not None:
            test = clean_texts(test_texts, what="test text")
            metrics["test"] = split_metrics(space, encode(test_labels, "test"), clf.predict_proba(test))
        data = ClassifierData(space, texts, [labels[i] if i != UNLABELED else "" for i in hard], hard, dev, y_dev)
        write_classifier_artifact(staged.tmp, cfg, data, metrics, resolved.name, pooling)
        atomic_write_json(staged.tmp / "distillation.json", distillation)
        artifact = staged.commit()
    except BaseException:
        staged.abort()
        raise
    return TrainResult(artifact_dir=artifact, metrics=metrics, dev_probabilities=dev_probs)


__all__ = ["distill_classifier", "teacher_probabilities", "soften", "distillation_loss", "UNLABELED"]
