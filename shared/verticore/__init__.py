"""Verticore: the shared fine-tuning and inference core.

Public API::

    from verticore import Embedder, TextClassifier, VectorIndex, resolve_model
    from verticore.finetune import train_classifier, train_embedder, train_token_classifier
    from verticore.evaluation import classification_metrics, ranking_metrics
"""
from __future__ import annotations

import os as _os

# Quiet, deterministic defaults; users can override before import.
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .errors import ArtifactError, DataError, IndexMismatchError, ModelResolutionError, VerticoreError  # noqa: E402
from .models import DEFAULT_MODEL, resolve_device, resolve_dtype, resolve_model  # noqa: E402

__version__ = "0.1.0"


_INFERENCE_NAMES = {"Embedder", "TextClassifier", "Prediction", "ClassifierEnsemble", "EmbeddingProbe", "TfidfProbe",
                    "load_classifier", "TokenClassifier", "Entity", "Classifier", "EnsembleMember", "Component"}


def __getattr__(name: str):
    # Lazy imports keep `import verticore` light (no torch until needed).
    if name in _INFERENCE_NAMES:
        from . import inference

        return getattr(inference, name)
    if name in {"VectorIndex", "SearchHit"}:
        from . import index

        return getattr(index, name)
    raise AttributeError(name)


__all__ = ["ArtifactError", "DataError", "IndexMismatchError", "ModelResolutionError", "VerticoreError",
           "DEFAULT_MODEL", "resolve_model", "resolve_device", "resolve_dtype", "Embedder", "TextClassifier",
           "Prediction", "ClassifierEnsemble", "EmbeddingProbe", "TfidfProbe", "load_classifier", "TokenClassifier", "Entity",
           "Classifier", "EnsembleMember", "Component", "VectorIndex", "SearchHit", "__version__"]
