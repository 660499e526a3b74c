"""Fine-tuning methods, one module each, registered by name with their own config class (peft style).

peft maps a ``PeftType`` to a (config class, model class) pair; here a method name maps to a
:class:`FineTuningMethod` class whose ``config_class`` (a pydantic model) holds the method's
own hyperparameters -- LoRA's rank, alpha, dropout, target modules and learning rate live in
:class:`~verticore.finetune.methods.lora.LoraMethodConfig`, not in the core training config.

A method adapts a freshly loaded model before training (:meth:`FineTuningMethod.prepare`),
names the optimiser parameter groups, and turns the trained model into plain weights for
inference (:meth:`FineTuningMethod.finalize`). Adding one is one module plus an entry point;
the training loop, the core config and the CLI are never touched::

    # my_pkg/head_only.py
    from pydantic import BaseModel
    from verticore.finetune.methods import register_method

    class HeadOnlyConfig(BaseModel):
        learning_rate: float = 1e-3

    @register_method("head_only", HeadOnlyConfig)
    class HeadOnly:
        def __init__(self, config: HeadOnlyConfig) -> None:
            self.config = config
        def prepare(self, model): ...
        def parameter_groups(self, model, training): ...
        def finalize(self, model, out_dir): return model

    # pyproject.toml of my_pkg
    [project.entry-points."verticore.finetune_methods"]
    head_only = "my_pkg.head_only"

``verticore finetune --method head_only --method-arg learning_rate=3e-3`` then trains with it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol

from pydantic import BaseModel, ValidationError

from ...errors import VerticoreError
from ...registries import Registry


class FineTuningMethod(Protocol):
    """What a registered method provides; an instance holds its validated config."""

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    config: BaseModel

    def __init__(self, config: BaseModel) -> None: ...

    def prepare(self, model: Any) -> Any:
        """Return the model to train (e.g. wrapped with adapters); set ``requires_grad``."""

    def parameter_groups(self, model: Any, training: Any) -> list[dict]:
        """Optimiser parameter groups; ``training`` is the core training config (learning rate, weight decay)."""

    def finalize(self, model: Any, out_dir: Path) -> Any:
        """Save method-specific extras into ``out_dir`` and return a plain model for inference."""


#: Every fine-tuning method: built-ins register at import, plugins through the entry-point group.
METHODS: Registry[type[FineTuningMethod]] = Registry("fine-tuning method", group="verticore.finetune_methods")


def register_method(name: str, config_class: type[BaseModel]) -> Callable[[type], type]:
    """Class decorator: register a method class under ``name`` with its hyperparameter model.

    A duplicate name is refused (see :class:`verticore.registries.Registry`).
    """
    def deco(cls: type) -> type:
        cls.name = name
        cls.config_class = config_class
        METHODS.register(name, cls)
        return cls

    return deco


def method_class(name: str) -> type[FineTuningMethod]:
    """The registered class of method ``name`` (unknown names raise with the list of choices)."""
    return METHODS.get(name)


def method_config(name: str, args: Mapping[str, Any] | BaseModel | None = None) -> BaseModel:
    """Validate ``args`` against method ``name``'s config class; errors name the method and option.

    ``args`` may already be an instance of the config class (it is returned as is).
    """
    cls = method_class(name)
    config_class = cls.config_class
    if isinstance(args, config_class):
        return args
    if isinstance(args, BaseModel):
        args = args.model_dump()
    try:
        return config_class.model_validate(dict(args or {}))
    except ValidationError as exc:
        raise VerticoreError(_explain(name, config_class, exc)) from None


def get_method(name: str, args: Mapping[str, Any] | BaseModel | None = None) -> FineTuningMethod:
    """An instance of method ``name`` configured with ``args`` (the config class's defaults when None)."""
    return method_class(name)(method_config(name, args))


def available_methods() -> list[str]:
    """Sorted names of every registered method, plugins included."""
    return METHODS.names()


def method_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of method ``name`` (for help texts and error messages)."""
    fields = method_class(name).config_class.model_fields
    return {k: (None if f.is_required() else f.get_default(call_default_factory=True)) for k, f in fields.items()}


def parse_method_args(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["r=8", "target_modules=query,value"]`` -> ``{"r": 8, "target_modules": "query,value"}``.

    Values that read as JSON (numbers, booleans, lists, null) are decoded; anything else stays a
    string for the method's config class to coerce. A pair without ``=`` raises.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise VerticoreError(f"method option {pair!r} is not key=value")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _explain(name: str, config_class: type[BaseModel], exc: ValidationError) -> str:
    known = ", ".join(config_class.model_fields) or "none"
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(config)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown option {where!r}")
        else:
            problems.append(f"option {where!r}: {err['msg']} (got {err.get('input')!r})")
    return f"fine-tuning method {name!r}: {'; '.join(problems)}; its options are: {known}"


from . import full, lora  # noqa: E402,F401  (registers the built-in methods)

__all__ = ["METHODS", "FineTuningMethod", "register_method", "method_class", "method_config", "get_method",
           "available_methods", "method_options", "parse_method_args"]
