"""Fine-tuning methods, one module each, registered by name (peft style).

A method adapts a freshly loaded model before training (:meth:`prepare`) and turns the trained
model into plain weights for inference (:meth:`finalize`). Adding a method = adding a module
here that calls :func:`register_method`; the training loop is never touched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from ...errors import VerticoreError


class FineTuningMethod(Protocol):
    name: str

    def prepare(self, model, config) -> object:
        """Return the model to train (e.g. wrapped with adapters); set requires_grad."""

    def parameter_groups(self, model, config) -> list[dict]:
        """Optimiser parameter groups."""

    def finalize(self, model, out_dir: Path) -> object:
        """Save method-specific extras into ``out_dir`` and return a plain model for inference."""


_METHODS: dict[str, Callable[[], FineTuningMethod]] = {}


def register_method(name: str):
    def deco(factory):
        _METHODS[name] = factory
        return factory

    return deco


def get_method(name: str) -> FineTuningMethod:
    if name not in _METHODS:
        raise VerticoreError(f"unknown fine-tuning method {name!r}; choose one of {sorted(_METHODS)}")
    return _METHODS[name]()


def available_methods() -> list[str]:
    return sorted(_METHODS)


from . import full, lora  # noqa: E402,F401  (registers the built-in methods)
