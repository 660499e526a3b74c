"""Pieces shared by the classifier and embedder training loops."""
from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TrainResult:
    """What a training run produced."""

    artifact_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    dev_probabilities: np.ndarray | None = None


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def autocast_context(device: str, mode: str):
    """bf16 (or fp16) autocast on CUDA when ``mode`` is auto/bf16/fp16; nothing on CPU."""
    import torch

    if not device.startswith("cuda") or mode in {"no", "off", "fp32", "none"}:
        return contextlib.nullcontext(), None
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    return torch.autocast("cuda", dtype=torch.bfloat16), None


class StagedDir:
    """Write an artifact into a temp dir beside ``out`` and swap it in at the end.

    A crash mid-training leaves any previous artifact at ``out`` intact; the swap itself is
    fsynced and atomic where the OS allows (see :func:`verticore.artifact.swap_in`). Opening a
    new one first repairs an interrupted swap and removes staging folders of killed runs.
    """

    def __init__(self, out: str | Path) -> None:
        from ..artifact import recover_artifact, remove_stale_staging, staging_prefix

        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        recover_artifact(self.out)
        remove_stale_staging(self.out)
        self.tmp = Path(tempfile.mkdtemp(prefix=staging_prefix(self.out), suffix=".staging", dir=self.out.parent))

    def commit(self) -> Path:
        from ..artifact import swap_in

        return swap_in(self.tmp, self.out)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm: float = 1.0) -> None:
    """Clip gradients, step optimiser and schedule (through the fp16 GradScaler when there is one)."""
    import torch

    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def linear_schedule(optimizer, warmup: int, total: int):
    import torch

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)
