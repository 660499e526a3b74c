"""LoRA via peft. The new classifier head (and the pooler feeding it) are trained in full and
saved through ``modules_to_save`` -- peft would otherwise drop a freshly initialised head.
For inference the adapter is merged into the base weights; the adapter itself is kept under
``adapter/`` so it can be reloaded or stacked with peft."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import VerticoreError
from . import register_method


class LoraMethodConfig(BaseModel):
    """LoRA hyperparameters (Hu et al., 2021).

    Attributes:
        r: rank of the update matrices.
        alpha: scaling numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the LoRA input.
        target_modules: names of the Linear layers that get adapters (those missing in the
            model are skipped; none present is an error). A comma-separated string is accepted.
        learning_rate: learning rate of the adapters and the head (``None``: the core
            ``learning_rate``); LoRA wants a larger one than full fine-tuning.
    """

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "key", "value", "dense"], min_length=1)
    learning_rate: float | None = Field(5e-4, gt=0)

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split_comma_string(cls, value: Any) -> Any:
        # the CLI passes `--method-arg target_modules=query,value` as one string
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _head_modules(model) -> list[str]:
    names = {n.split(".")[0] for n, _ in model.named_children()}
    heads = [h for h in ("classifier", "score", "pre_classifier") if h in names]
    # BERT's classifier reads the pooler output: it must train (and be saved) with the head.
    for n, _ in model.named_modules():
        if n.endswith("pooler") and n.count(".") <= 1:
            heads.append(n.split(".")[-1])
            break
    return heads


@register_method("lora", LoraMethodConfig)
class LoraFineTuning:
    """Low-rank adapters on the encoder, full training of the new head; merged for inference."""

    def __init__(self, config: LoraMethodConfig | None = None) -> None:
        self.config = config or LoraMethodConfig()

    def prepare(self, model: Any) -> Any:
        from peft import LoraConfig, TaskType, get_peft_model

        cfg = self.config
        linear_names = {n.split(".")[-1] for n, m in model.named_modules() if m.__class__.__name__ == "Linear"}
        targets = [t for t in cfg.target_modules if t in linear_names]
        if not targets:
            raise VerticoreError(
                f"none of the LoRA target modules {cfg.target_modules} exist in this model; "
                f"linear layers are named {sorted(linear_names)[:12]}"
            )
        heads = _head_modules(model)
        peft_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.r, lora_alpha=cfg.alpha,
                                 lora_dropout=cfg.dropout, target_modules=targets, modules_to_save=heads)
        return get_peft_model(model, peft_config)

    def parameter_groups(self, model: Any, training: Any) -> list[dict]:
        lr = self.config.learning_rate or training.learning_rate
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": 0.0, "lr": lr}]

    def finalize(self, model: Any, out_dir: Path) -> Any:
        model.save_pretrained(str(out_dir / "adapter"), safe_serialization=True)
        return model.merge_and_unload()
