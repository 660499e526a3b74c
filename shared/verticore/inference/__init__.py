"""Inference engine: :class:`Embedder`, :class:`TextClassifier`, :class:`TokenClassifier` and classifier ensembles."""
from .embedder import Embedder
from .classifier import Prediction, TextClassifier
from .ensemble import ClassifierEnsemble, EmbeddingProbe, load_classifier
from .lexical import TfidfProbe
from .token_classifier import Entity, TokenClassifier

__all__ = ["Embedder", "TextClassifier", "Prediction", "ClassifierEnsemble", "EmbeddingProbe", "TfidfProbe", "load_classifier", "TokenClassifier", "Entity"]
