"""Classifier heads over sentence-transformer encoders.

``AutoModelForSequenceClassification`` on a BERT checkpoint feeds the classifier from the
``[CLS]`` token through BERT's pooler. Sentence-transformers checkpoints such as
all-MiniLM-L6-v2 were trained with *mean* pooling and their pooler was never trained for it, so
the ``[CLS]`` route throws away the part of the checkpoint that makes it good (on BANKING77 a
CLS fine-tune lands below a logistic regression on frozen mean embeddings). With
``pooling="mean"`` the same ``classifier`` Linear reads the masked mean of the last hidden
states instead. The choice is stored in the model's ``config.json`` (``verticore_pooling``), so
it travels with the weights and every loader (torch, ONNX, HF pipeline via
:func:`load_hf_classifier`) applies it.
"""
from __future__ import annotations

import json
import types
from pathlib import Path

from .pooling import pool

CONFIG_KEY = "verticore_pooling"
POOLINGS = ("native", "mean")


def supports_mean_pooling(model) -> bool:
    """True for models whose head is one Linear over the encoder's pooled output (BERT-like)."""
    import torch

    clf = getattr(model, "classifier", None)
    hidden = getattr(model.config, "hidden_size", None)
    return isinstance(clf, torch.nn.Linear) and clf.in_features == hidden and getattr(model, "base_model", None) is not None


def default_pooling(base_dir: Path) -> str:
    """``mean`` for a sentence-transformers folder trained with mean pooling (or a model that
    already carries ``verticore_pooling``), ``native`` otherwise."""
    base_dir = Path(base_dir)
    cfg = base_dir / "config.json"
    if cfg.exists():
        try:
            stored = json.loads(cfg.read_text(encoding="utf-8")).get(CONFIG_KEY)
        except (OSError, ValueError):
            stored = None
        if stored in POOLINGS:
            return stored
    st_pool = base_dir / "1_Pooling" / "config.json"
    if (base_dir / "modules.json").exists() and st_pool.exists():
        try:
            if json.loads(st_pool.read_text(encoding="utf-8")).get("pooling_mode_mean_tokens"):
                return "mean"
        except (OSError, ValueError):
            pass
    return "native"


def _mean_pooled_forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    enc_kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        enc_kwargs["token_type_ids"] = token_type_ids
    pooled = pool(self.base_model(**enc_kwargs).last_hidden_state, attention_mask, "mean")
    dropout = getattr(self, "dropout", None)
    if dropout is not None:
        pooled = dropout(pooled)
    logits = self.classifier(pooled)
    return SequenceClassifierOutput(logits=logits)


def apply_pooling(model, pooling: str):
    """Make ``model`` (an ``AutoModelForSequenceClassification``) use ``pooling``; records it in
    ``model.config`` so ``save_pretrained`` keeps it. Returns the same instance."""
    from ..errors import VerticoreError

    if pooling not in POOLINGS:
        raise VerticoreError(f"unknown classifier pooling {pooling!r}; choose one of {list(POOLINGS)}")
    if pooling == "mean":
        if not supports_mean_pooling(model):
            raise VerticoreError(f"{type(model).__name__} has no single Linear head over the pooled output; "
                                 "use pooling='native' for this model")
        # An instance attribute wins over the class method, so nn.Module.__call__, peft, ONNX
        # export and HF pipelines all route through the mean-pooled forward.
        model.forward = types.MethodType(_mean_pooled_forward, model)
    setattr(model.config, CONFIG_KEY, pooling)
    return model


def load_hf_classifier(model_dir: str | Path, **kwargs):
    """Load a Verticore classifier artifact as a plain HF model (for ``transformers.pipeline``)
    with its stored pooling applied."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), **kwargs)
    return apply_pooling(model, getattr(model.config, CONFIG_KEY, "native") or "native")
