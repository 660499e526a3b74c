"""Training configurations (plain dataclasses, saved as ``training_config.json``).

The core config holds what every method shares (data, schedule, model selection); a
fine-tuning method's own hyperparameters live in its config class (see
:mod:`verticore.finetune.methods`) and arrive here as ``method_args``.
"""
from __future__ import annotations

from dataclasses import InitVar, asdict, dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

#: Keyword arguments of the configs before methods had their own config classes, kept working:
#: they set the LoRA method's options and are ignored for other methods (as they always were).
LEGACY_LORA_ARGS = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
                    "lora_target_modules": "target_modules", "lora_learning_rate": "learning_rate"}
_UNSET: Any = object()


@dataclass
class ClassifierTrainingConfig:
    """Fine-tuning a sequence classifier.

    Attributes:
        base: ``"default"``, a model directory or a hub id.
        method: a registered method (``full``, ``lora`` or a plugin's; see :func:`available_methods`).
        method_args: the method's own options, validated by its config class (e.g. LoRA's
            ``{"r": 8, "learning_rate": 1e-3}``); unset options take the class defaults.
            ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules`` and
            ``lora_learning_rate`` are still accepted as keywords and attributes for LoRA.
        class_weights: ``"balanced"`` (inverse frequency) or ``None``.
        patience: early stopping after this many evaluations without dev macro-F1 gain.
        eval_every: evaluate on dev every N optimiser steps (``None`` = once per epoch).
        max_steps: stop after this many optimiser steps (tests, smoke runs).
        mixed_precision: ``auto`` = bf16/fp16 autocast on CUDA, off on CPU.
        pooling: what the head reads: ``mean`` (masked mean of the last hidden states, how
            sentence-transformers checkpoints were trained), ``native`` (the architecture's own,
            e.g. BERT's [CLS] pooler) or ``auto`` (mean for sentence-transformers bases).
        head_init: ``random`` (HF default), ``linear_probe`` (fit the head on frozen features
            first, then fine-tune everything: LP-FT, Kumar et al. 2022) or ``auto`` (linear_probe
            when the head is one Linear layer, else random). On PhraseBank 50Agree LP-FT took the
            default model from 0.835 to 0.872 test accuracy; on BANKING77 it was level (0.928 vs 0.930).
        ema_decay: keep an exponential moving average of the weights with this decay per step
            (e.g. ``0.99``) and evaluate, select and save the averaged weights; ``None`` = off.
    """

    base: str = "default"
    method: str = "full"
    method_args: dict[str, Any] = field(default_factory=dict)
    pooling: str = "auto"
    head_init: str = "auto"
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 128
    multi_label: bool = False
    class_weights: str | None = "balanced"
    seed: int = 42
    patience: int = 2
    eval_every: int | None = None
    grad_accum: int = 1
    max_steps: int | None = None
    mixed_precision: str = "auto"
    device: str = "auto"
    ema_decay: float | None = None
    lora_r: InitVar[int | None] = _UNSET
    lora_alpha: InitVar[int | None] = _UNSET
    lora_dropout: InitVar[float | None] = _UNSET
    lora_target_modules: InitVar[list[str] | None] = _UNSET
    lora_learning_rate: InitVar[float | None] = _UNSET

    #: per-method defaults that differ from the method's config class (a subclass may set them)
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self, lora_r: Any, lora_alpha: Any, lora_dropout: Any, lora_target_modules: Any,
                      lora_learning_rate: Any) -> None:
        legacy = dict(zip(LEGACY_LORA_ARGS.values(), (lora_r, lora_alpha, lora_dropout, lora_target_modules,
                                                       lora_learning_rate)))
        if self.method == "lora":
            self.method_args = {**{k: v for k, v in legacy.items() if v is not _UNSET}, **dict(self.method_args)}
        self.method_config()  # an unknown method or option fails here, not minutes into training
        if self.ema_decay is not None:
            from .loop import check_ema_decay

            check_ema_decay(self.ema_decay)

    def method_config(self) -> BaseModel:
        """The validated config of ``method`` (its class defaults, then ``method_defaults``, then ``method_args``)."""
        from .methods import method_config

        return method_config(self.method, {**self.method_defaults.get(self.method, {}), **dict(self.method_args)})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "method_args": self.method_config().model_dump(mode="json")}


def _legacy_lora_property(option: str) -> property:
    def get(self: ClassifierTrainingConfig) -> Any:
        # like the old fields: the LoRA value even when another method is chosen
        from .methods import method_config

        args = {**self.method_defaults.get("lora", {}), **(dict(self.method_args) if self.method == "lora" else {})}
        return getattr(method_config("lora", args), option)

    def set_(self: ClassifierTrainingConfig, value: Any) -> None:
        if self.method == "lora":  # other methods never read the LoRA options
            self.method_args = {**dict(self.method_args), option: value}

    return property(get, set_, doc=f"Deprecated: ``method_args[{option!r}]`` of the LoRA method.")


# The dataclass keeps the InitVar defaults in __init__'s signature; the class attributes become
# properties so ``cfg.lora_learning_rate = x`` keeps reaching the LoRA options.
for _name, _option in LEGACY_LORA_ARGS.items():
    setattr(ClassifierTrainingConfig, _name, _legacy_lora_property(_option))


@dataclass
class EmbedderTrainingConfig:
    """Contrastive fine-tuning of the sentence embedder on (anchor, positive) pairs."""

    base: str = "default"
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_length: int = 128
    scale: float = 20.0
    seed: int = 42
    max_steps: int | None = None
    mixed_precision: str = "auto"
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
