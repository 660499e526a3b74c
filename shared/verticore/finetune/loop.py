"""The supervised fine-tuning loop shared by the sequence and token classifiers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError
from .common import autocast_context, linear_schedule, optimizer_step

if TYPE_CHECKING:
    from .distributed import DataParallel


@dataclass
class LoopResult:
    """Where the loop stopped and what it kept (the model holds the best checkpoint)."""

    best_score: float = -1.0
    best_step: int = 0
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def load_with_new_head(model_cls, cfg, labels: Sequence[str], **kwargs):
    """Seed, pick the device, and load ``cfg.base`` as ``model_cls`` with a fresh head over
    ``labels``; returns ``(model, tokenizer, resolved model, device)``."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ..models import resolve_device, resolve_model
    from .common import seed_everything

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    resolved = resolve_model(cfg.base)
    tokenizer = AutoTokenizer.from_pretrained(str(resolved.path))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    try:
        model, info = model_cls.from_pretrained(str(resolved.path), num_labels=len(labels),
                                                id2label=dict(enumerate(labels)),
                                                label2id={l: i for i, l in enumerate(labels)},
                                                ignore_mismatched_sizes=True, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    # read by resolve_head_init: "auto" keeps a warm-started head instead of fitting a new one
    model.verticore_warm_head = _check_loaded_head(model_cls, model, info, resolved.path, labels)
    return model, tokenizer, resolved, device


def _check_loaded_head(model_cls, model, info: dict[str, Any], base_path: Path, labels: Sequence[str]) -> bool:
    """Starting from a fine-tuned classifier (``base`` = an artifact or a labelled checkpoint) with
    as many labels as this task, transformers loads its head, because the shapes match. That is a
    warm start when the labels are the same, in the same order (e.g. a student starting from a
    teacher member, a retrain from production); with other labels or another order the rows would
    mean other classes, so the head is re-initialised instead. True when a head was kept."""
    import logging

    import torch

    from ..artifact import read_labels

    prefix = getattr(model, "base_model_prefix", "") + "."
    skipped = set(info.get("missing_keys", ())) | {k[0] if isinstance(k, tuple) else k
                                                    for k in info.get("mismatched_keys", ())}
    head = [k for k in model.state_dict() if not k.startswith(prefix)]
    if not head or all(k in skipped for k in head):
        return False  # a fresh head: the usual case
    try:
        space = read_labels(Path(base_path))
    except Exception:  # an unreadable label file: treat the head as foreign
        space = None
    log = logging.getLogger(__name__)
    if space is not None and list(space.labels) == list(labels):
        log.info("warm start: kept the classification head of %s (same labels)", base_path)
        return True
    fresh = model_cls.from_config(model.config).state_dict()
    state = model.state_dict()
    with torch.no_grad():
        for k in head:
            if k not in skipped and k in fresh:
                state[k].copy_(fresh[k])
    log.info("%s has a head for other labels: re-initialised it", base_path)
    return False


def save_model_files(method, model, tokenizer, out: Path, space) -> Any:
    """Finalise the method (LoRA: merge, keeping ``adapter/``) and write weights, tokenizer and
    ``labels.json`` (``space`` is a :class:`~verticore.artifact.LabelSpace`) into ``out``;
    returns the plain model."""
    from ..io import atomic_write_json

    final = method.finalize(model, out).eval()
    final.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    atomic_write_json(out / "labels.json", space.to_dict())
    return final


def fit(model, cfg, method, lengths: Sequence[int], batch: Callable[[np.ndarray], tuple[Any, Any, Any]],
        loss: Callable[[Any, Any], Any], evaluate: Callable[[], float], device: str, metric: str,
        desc: str, show_progress: bool = True, data_parallel: DataParallel | None = None) -> LoopResult:
    """Train ``model`` on length-grouped batches with AdamW + linear warm-up/decay, evaluating
    every ``cfg.eval_every`` steps (default once per epoch); keeps the checkpoint with the best
    ``evaluate()`` score and stops after ``cfg.patience`` evaluations without gain.

    ``batch(idx)`` gives ``(input_ids, attention_mask, target)`` on the device for row indices
    ``idx`` (``input_ids`` may be a dict of model inputs, see :func:`model_inputs`); ``loss(logits, target)`` the training loss; ``evaluate()`` the dev score (it may
    switch the model to eval mode; the loop switches it back). History rows name the score ``metric``.

    With ``data_parallel`` (see :mod:`verticore.finetune.distributed`) every rank walks the same
    global batches, trains on its slice of each and sums gradients before the step; rank 0 alone
    evaluates (the score is broadcast) and keeps the best checkpoint.

    With ``cfg.ema_decay`` set, an exponential moving average of the trainable weights (Polyak
    averaging, as timm's ``ModelEmaV2``) is what gets evaluated and kept; the raw weights' score at
    each evaluation is logged beside it as ``<metric>_raw``.
    """
    import torch

    n_batches = (len(lengths) + cfg.batch_size - 1) // cfg.batch_size
    steps_per_epoch = max(1, n_batches // cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(method.parameter_groups(model, cfg), lr=cfg.learning_rate)
    scheduler = linear_schedule(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    autocast, scaler = autocast_context(device, cfg.mixed_precision)
    eval_every = cfg.eval_every or steps_per_epoch
    rng = np.random.default_rng(cfg.seed)
    res, best_state, evals_without_gain, stop = LoopResult(), None, 0, False
    ema = WeightAverage(model, cfg.ema_decay) if getattr(cfg, "ema_decay", None) else None
    score_now = (lambda: float(evaluate())) if data_parallel is None else \
        (lambda: data_parallel.broadcast_score(evaluate))
    model.train()
    bar = tqdm(total=total_steps, desc=desc, unit="step", disable=not show_progress)
    while not stop:
        for b, idx in enumerate(length_grouped_batches(lengths, cfg.batch_size, rng)):
            if data_parallel is None:
                ids, mask, target = batch(idx)
                with autocast:
                    logits = model(**model_inputs(ids), attention_mask=mask).logits
                value = loss(logits.float(), target) / cfg.grad_accum
                (scaler.scale(value) if scaler else value).backward()
            else:
                value = data_parallel.backward_shard(model, idx, batch, loss, autocast, scaler, cfg.grad_accum)
            if (b + 1) % cfg.grad_accum and b + 1 != n_batches:
                continue
            if data_parallel is not None:
                data_parallel.all_reduce_gradients(model)
                value = data_parallel.global_loss(value)
            optimizer_step(model, optimizer, scheduler, scaler)
            if ema is not None:
                ema.update(model)
            res.steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value.item() * cfg.grad_accum:.3f}", best=f"{max(res.best_score, 0):.3f}")
            if res.steps % eval_every == 0 or res.steps == total_steps:
                row: dict[str, Any] = {"step": res.steps}
                if ema is not None:
                    row[f"{metric}_raw"] = score_now()
                    ema.swap(model)  # the averaged weights are scored (and kept) in place of the raw ones
                score = score_now()
                model.train()
                res.history.append({**row, metric: score, "loss": float(value.item() * cfg.grad_accum)})
                if score > res.best_score:
                    res.best_score, res.best_step, evals_without_gain = score, res.steps, 0
                    if data_parallel is None or data_parallel.is_main:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    evals_without_gain += 1
                    stop = evals_without_gain >= cfg.patience
                if ema is not None:
                    ema.swap(model)  # training goes on from the raw weights
            if res.steps >= total_steps or stop:
                stop = True
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return res


def check_ema_decay(decay: Any) -> float:
    """``decay`` as a float; :class:`DataError` unless it lies in (0, 1)."""
    try:
        value = float(decay)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise DataError(f"ema_decay must be in (0, 1) or None, got {decay!r}")
    return value


class WeightAverage:
    """Exponential moving average of a model's trainable weights.

    ``decay`` is warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TF's
    ``ExponentialMovingAverage`` with ``num_updates``), so the first steps do not pin the average
    to the starting weights. Kept in float32 on the weights' device; :meth:`swap` exchanges the
    averaged and the live values in place (twice restores the live ones).
    """

    def __init__(self, model, decay: float) -> None:
        self.decay, self.updates = check_ema_decay(decay), 0
        self.params = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.params:
                    self.params[n].mul_(d).add_(p.detach().float(), alpha=1.0 - d)

    def swap(self, model) -> None:
        import torch

        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.params:
                    live = p.detach().float().clone()
                    p.copy_(self.params[n].to(p.dtype))
                    self.params[n] = live


def model_inputs(ids: Any) -> dict[str, Any]:
    """Keyword inputs of the model from a batch's first element: a tensor of input ids, or a dict
    of model inputs (a token classifier's case feature adds ``token_type_ids``)."""
    return dict(ids) if isinstance(ids, dict) else {"input_ids": ids}


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


def pad_tensors(seqs: list[list[int]], pad_id: int, device: str):
    """Right-pad token-id rows into ``(input_ids, attention_mask)`` long tensors on ``device``."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def batched_logits(model, rows: list[list[int]], n_outputs: int, pad_id: int, device: str, autocast,
                   batch_size: int = 64) -> np.ndarray:
    """``(len(rows), n_outputs)`` float32 logits of ``model`` in eval mode, longest rows first
    (less padding); the model is switched back to train mode afterwards."""
    import torch

    model.eval()
    out = np.zeros((len(rows), n_outputs), dtype=np.float32)
    order = np.argsort([-len(x) for x in rows], kind="stable")
    with torch.inference_mode(), autocast:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = pad_tensors([rows[i] for i in idx], pad_id, device)
            out[idx] = model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()
    model.train()
    return out
