"""Full fine-tuning: every weight trains."""
from __future__ import annotations

from pathlib import Path

from . import register_method


@register_method("full")
class FullFineTuning:
    name = "full"

    def prepare(self, model, config):
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def parameter_groups(self, model, config) -> list[dict]:
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n else decay).append(p)
        return [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def finalize(self, model, out_dir: Path):
        return model
