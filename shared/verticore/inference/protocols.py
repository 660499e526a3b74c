"""Protocols the core and the apps type against.

:class:`Classifier` is what any text classifier offers: a fine-tuned :class:`~verticore.TextClassifier`,
a :class:`~verticore.ClassifierEnsemble`, the probes, or an app's own model. Apps take a
``Classifier`` instead of naming a concrete class, so tests can pass a small fake.
:class:`EnsembleMember` adds what :class:`~verticore.ClassifierEnsemble` needs from a member.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .classifier import Prediction


@runtime_checkable
class Classifier(Protocol):
    """A text classifier over a fixed, ordered label set."""

    @property
    def labels(self) -> list[str]:
        """Label names; column ``i`` of :meth:`predict_proba` belongs to ``labels[i]``."""
        ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), len(labels))`` probabilities."""
        ...

    def predict(self, texts: Sequence[str] | str) -> "list[Prediction] | Prediction":
        """One :class:`~verticore.inference.classifier.Prediction` per text (one for a single string)."""
        ...


@runtime_checkable
class EnsembleMember(Classifier, Protocol):
    """A :class:`Classifier` that a :class:`~verticore.ClassifierEnsemble` can average.

    ``temperature`` divides the logits (members are calibrated on their own); ``warm_up``
    loads heavy state; ``predict_proba_and_logits`` returns both from one pass.
    """

    temperature: float

    def warm_up(self) -> None: ...

    def predict_proba_and_logits(self, texts: Sequence[str]) -> tuple[np.ndarray, Any]: ...


__all__ = ["Classifier", "EnsembleMember"]
