"""Full fine-tuning: every weight trains (it has no options of its own)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from . import register_method


class FullMethodConfig(BaseModel):
    """Full fine-tuning reads the core config only (learning rate, weight decay)."""

    model_config = ConfigDict(extra="forbid")


@register_method("full", FullMethodConfig)
class FullFineTuning:
    """Train every weight; biases and LayerNorm weights get no weight decay."""

    def __init__(self, config: FullMethodConfig | None = None) -> None:
        self.config = config or FullMethodConfig()

    def prepare(self, model: Any) -> Any:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def parameter_groups(self, model: Any, training: Any) -> list[dict]:
        decay, no_decay = [], []
        for n, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n else decay).append(p)
        return [{"params": decay, "weight_decay": training.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def finalize(self, model: Any, out_dir: Path) -> Any:
        return model
