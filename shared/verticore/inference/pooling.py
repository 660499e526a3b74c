"""Pooling of token states into sentence vectors.

A leaf module (torch only, imported lazily): the backends, the classifier heads and the ONNX
exporter all pool the same way, and none of them has to import another to do it.
"""
from __future__ import annotations

import json
from pathlib import Path

POOLING_MODES = ("mean", "cls", "max")


def pooling_mode(model_dir: Path) -> str:
    """Pooling of a sentence-transformers folder (mean by default, as in SBERT)."""
    cfg = Path(model_dir) / "1_Pooling" / "config.json"
    if cfg.exists():
        data = json.loads(cfg.read_text(encoding="utf-8"))
        if data.get("pooling_mode_cls_token"):
            return "cls"
        if data.get("pooling_mode_max_tokens"):
            return "max"
    return "mean"


def pool(hidden, mask, mode: str):
    """Pool token states ``(batch, tokens, dim)`` (torch tensors) into one vector per sequence."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


__all__ = ["POOLING_MODES", "pool", "pooling_mode"]
