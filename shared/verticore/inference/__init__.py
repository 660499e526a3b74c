"""Inference engine: :class:`Embedder`, :class:`TextClassifier` and classifier ensembles."""
from .embedder import Embedder
from .classifier import Prediction, TextClassifier
from .ensemble import ClassifierEnsemble, EmbeddingProbe, load_classifier

__all__ = ["Embedder", "TextClassifier", "Prediction", "ClassifierEnsemble", "EmbeddingProbe", "load_classifier"]
