"""Loading encoder weights with one-line errors.

Kept apart from the backend registry (:mod:`.backends`) so the heads, the torch backends and the
ONNX exporter can all load a model without importing each other.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError
from .heads import CONFIG_KEY, apply_pooling


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def load_torch_model(model_dir: Path, head: str, dtype=None, attn_implementation: str | None = None):
    """``AutoModel`` (``head="pool"``) or ``AutoModelForSequenceClassification`` (``"logits"``)
    from ``model_dir``, with the classifier pooling stored in its config applied.

    Missing, damaged or foreign weights raise :class:`~verticore.errors.ArtifactError`.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification

    cls = AutoModel if head == "pool" else AutoModelForSequenceClassification
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = cls.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ArtifactError(f"could not load model weights from {model_dir}: {_first_line(exc)}") from None
    except Exception as exc:  # safetensors raises its own error types on corrupt files
        raise ArtifactError(f"model files in {model_dir} are corrupt: {_first_line(exc)}") from None
    if head != "pool":
        apply_pooling(model, getattr(model.config, CONFIG_KEY, None) or "native")
    return model


def load_tokenizer(model_dir: Path):
    """The tokenizer saved in ``model_dir``; a missing or broken one is an :class:`ArtifactError`."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:  # tokenizers raises assorted types on bad files
        raise ArtifactError(f"could not load tokenizer from {model_dir}: {_first_line(exc)}") from None


__all__ = ["load_tokenizer", "load_torch_model"]
