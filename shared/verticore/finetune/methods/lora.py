"""LoRA via peft. The new classifier head (and the pooler feeding it) are trained in full and
saved through ``modules_to_save`` -- peft would otherwise drop a freshly initialised head.
For inference the adapter is merged into the base weights; the adapter itself is kept under
``adapter/`` so it can be reloaded or stacked with peft."""
from __future__ import annotations

from pathlib import Path

from ...errors import VerticoreError
from . import register_method


def _head_modules(model) -> list[str]:
    names = {n.split(".")[0] for n, _ in model.named_children()}
    heads = [h for h in ("classifier", "score", "pre_classifier") if h in names]
    # BERT's classifier reads the pooler output: it must train (and be saved) with the head.
    for n, _ in model.named_modules():
        if n.endswith("pooler") and n.count(".") <= 1:
            heads.append(n.split(".")[-1])
            break
    return heads


@register_method("lora")
class LoraFineTuning:
    name = "lora"

    def prepare(self, model, config):
        from peft import LoraConfig, TaskType, get_peft_model

        linear_names = {n.split(".")[-1] for n, m in model.named_modules() if m.__class__.__name__ == "Linear"}
        targets = [t for t in config.lora_target_modules if t in linear_names]
        if not targets:
            raise VerticoreError(
                f"none of the LoRA target modules {config.lora_target_modules} exist in this model; "
                f"linear layers are named {sorted(linear_names)[:12]}"
            )
        heads = _head_modules(model)
        peft_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
                                 lora_dropout=config.lora_dropout, target_modules=targets, modules_to_save=heads)
        return get_peft_model(model, peft_config)

    def parameter_groups(self, model, config) -> list[dict]:
        lr = config.lora_learning_rate or config.learning_rate
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": 0.0, "lr": lr}]

    def finalize(self, model, out_dir: Path):
        model.save_pretrained(str(out_dir / "adapter"), safe_serialization=True)
        return model.merge_and_unload()
