"""Contrastive fine-tuning of the sentence embedder on (anchor, positive) pairs.

Loss: sentence-transformers' MultipleNegativesRankingLoss (in-batch negatives, scaled cosine).
Batches never hold the same text twice, since a duplicate would be a false negative.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..artifact import ArtifactMeta, write_meta
from ..errors import DataError
from ..io import atomic_write_json, atomic_write_text, clean_texts, fingerprint_texts
from ..models import resolve_device, resolve_model
from .card import model_card
from .common import StagedDir, TrainResult, autocast_context, linear_schedule, optimizer_step, seed_everything
from .config import EmbedderTrainingConfig

log = logging.getLogger(__name__)


def _batches(pairs: list[tuple[str, str]], batch_size: int, rng: np.random.Generator,
             groups: Sequence[Any] | None = None) -> list[list[int]]:
    """Shuffle, then fill batches greedily so no anchor or positive text repeats inside one, and
    (with ``groups``) no two pairs of the same group meet: they would be false negatives."""
    batches: list[list[int]] = []
    open_batches: list[tuple[list[int], set]] = []
    for i in rng.permutation(len(pairs)):
        a, p = pairs[i]
        keys = {("t", a), ("t", p)}
        if groups is not None:
            keys.add(("g", groups[i]))
        for members, seen in open_batches:
            if not (keys & seen):
                members.append(int(i))
                seen.update(keys)
                if len(members) == batch_size:
                    batches.append(members)
                    open_batches.remove((members, seen))
                break
        else:
            open_batches.append(([int(i)], set(keys)))
    batches.extend(m for m, _ in open_batches if len(m) > 1)
    order = rng.permutation(len(batches))
    return [batches[j] for j in order]


def _retrieval_metrics(model, pairs: list[tuple[str, str]]) -> dict[str, float]:
    """recall@1 and MRR of finding each anchor's positive among all dev positives."""
    anchors = [a for a, _ in pairs]
    positives = sorted({p for _, p in pairs})
    pos_index = {p: i for i, p in enumerate(positives)}
    qa = model.encode(anchors, normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
    pe = model.encode(positives, normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
    from ..evaluation import score_matrix_metrics

    m = score_matrix_metrics(qa @ pe.T, [pos_index[p] for _, p in pairs], ks=(1,))
    return {"recall@1": m["recall@1"], "mrr": m["mrr"]}


def train_embedder(
    pairs: Sequence[tuple[str, str]],
    out_dir: str | Path,
    config: EmbedderTrainingConfig | None = None,
    dev_pairs: Sequence[tuple[str, str]] | None = None,
    show_progress: bool = True,
    groups: Sequence[Any] | None = None,
) -> TrainResult:
    """Fine-tune the embedder so each anchor lands nearest its positive.

    ``groups`` (one label per pair, e.g. the intent of an FAQ entry) keeps pairs of the same
    group out of each other's batch, so an answer of the same intent is never used as a
    negative (with 27 intents and batch 32 most batches would otherwise hold several).

    The artifact is a sentence-transformers folder (plus ``verticore.json``, ``metrics.json``,
    ``training_config.json`` and a model card) that ``Embedder(artifact_dir)`` loads.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    cfg = config or EmbedderTrainingConfig()
    t0 = time.time()
    clean = [(a, p) for a, p in zip(clean_texts([a for a, _ in pairs], what="anchor"),
                                      clean_texts([p for _, p in pairs], what="positive"))]
    if groups is not None:
        groups = list(groups)
        if len(groups) != len(clean):
            raise DataError(f"groups has {len(groups)} entries for {len(clean)} pairs")
        n_groups = len(set(groups))
        if n_groups < 2:
            raise DataError("groups must hold at least two distinct values (one group leaves no negatives)")
        if cfg.batch_size > n_groups:
            log.info("batch size %d > %d groups: batches hold at most %d pairs", cfg.batch_size, n_groups, n_groups)
    if len(clean) < 2:
        raise DataError("need at least 2 (anchor, positive) pairs")
    dev = [(a, p) for a, p in (dev_pairs or [])]
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    resolved = resolve_model(cfg.base)
    model = SentenceTransformer(str(resolved.path), device=device, local_files_only=True)
    model.max_seq_length = cfg.max_length
    loss_fn = MultipleNegativesRankingLoss(model, scale=cfg.scale)
    rng = np.random.default_rng(cfg.seed)
    epoch_batches = [_batches(clean, cfg.batch_size, rng, groups) for _ in range(cfg.epochs)]
    total = sum(len(b) for b in epoch_batches)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    if total == 0:
        raise DataError("pairs are too repetitive to form a batch of distinct texts")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    scheduler = linear_schedule(optimizer, int(cfg.warmup_ratio * total), total)
    autocast, scaler = autocast_context(device, cfg.mixed_precision)
    metrics: dict[str, Any] = {}
    if dev:
        model.eval()
        metrics["dev_before"] = _retrieval_metrics(model, dev)
    model.train()
    step = 0
    bar = tqdm(total=total, desc="fine-tune embedder", unit="step", disable=not show_progress)
    for batches in epoch_batches:
        for idx in batches:
            if step >= total:
                break
            feats = []
            for col in (0, 1):
                texts = [clean[i][col] for i in idx]
                f = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
                feats.append({k: (v.to(device) if hasattr(v, "to") else v) for k, v in f.items()})
            with autocast:
                loss = loss_fn(feats, None)
            (scaler.scale(loss) if scaler else loss).backward()
            optimizer_step(model, optimizer, scheduler, scaler)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    if dev:
        metrics["dev"] = _retrieval_metrics(model, dev)
    metrics.update({"steps": step, "train_seconds": round(time.time() - t0, 2), "n_pairs": len(clean)})
    staged = StagedDir(out_dir)
    try:
        model.save(str(staged.tmp), safe_serialization=True)
        atomic_write_json(staged.tmp / "metrics.json", metrics)
        atomic_write_json(staged.tmp / "training_config.json", cfg.to_dict())
        fp = fingerprint_texts([a for a, _ in clean], [p for _, p in clean])
        write_meta(staged.tmp, ArtifactMeta(kind="embedder", base_model=cfg.base, base_model_name=resolved.name,
                                            data_fingerprint=fp, method="contrastive-mnrl",
                                            extra={"n_pairs": len(clean), "grouped_batches": groups is not None}))
        atomic_write_text(staged.tmp / "README.md", model_card("embedder", cfg.to_dict(), metrics, resolved.name, None, fp))
        artifact = staged.commit()
    except BaseException:
        staged.abort()
        raise
    return TrainResult(artifact_dir=artifact, metrics=metrics)
