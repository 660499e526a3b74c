"""Inference engine: :class:`Embedder` and :class:`TextClassifier`."""
from .embedder import Embedder
from .classifier import Prediction, TextClassifier

__all__ = ["Embedder", "TextClassifier", "Prediction"]
