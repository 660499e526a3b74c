"""Inference engine: :class:`Embedder`, :class:`TextClassifier`, :class:`TokenClassifier` and classifier ensembles.

Every class here is a :class:`Component` (settings in ``__init__``, weights in ``warm_up()``,
``to_dict``/``from_dict``, ``save``/``load``); every classifier satisfies :class:`Classifier`.
"""
from .backends import available_backends, register_backend
from .classifier import Prediction, TextClassifier
from .component import COMPONENTS, Component, register_component
from .embedder import Embedder
from .ensemble import ClassifierEnsemble, EmbeddingProbe, load_classifier, register_member_kind
from .lexical import TfidfProbe
from .protocols import Classifier, EnsembleMember
from .token_classifier import Entity, TokenClassifier

__all__ = ["COMPONENTS", "Classifier", "ClassifierEnsemble", "Component", "Embedder", "EmbeddingProbe", "EnsembleMember",
           "Entity", "Prediction", "TextClassifier", "TfidfProbe", "TokenClassifier", "available_backends",
           "load_classifier", "register_backend", "register_component", "register_member_kind"]
