"""Fine-tuning: text classifiers (any registered method: full, LoRA, plugins; single / multi-label), token
classifiers (NER) and the sentence embedder."""
from .classifier import train_classifier
from .common import TrainResult
from .config import ClassifierTrainingConfig, EmbedderTrainingConfig
from .embedder import train_embedder
from .ensemble import default_ensemble_configs, train_classifier_ensemble
from .methods import METHODS, available_methods, get_method, method_config, register_method
from .token_classifier import TokenClassifierTrainingConfig, read_conll, train_token_classifier

__all__ = ["train_classifier", "train_embedder", "ClassifierTrainingConfig", "EmbedderTrainingConfig",
           "TrainResult", "train_classifier_ensemble", "default_ensemble_configs", "available_methods", "get_method",
           "register_method", "METHODS", "method_config",
           "train_token_classifier", "TokenClassifierTrainingConfig", "read_conll"]
