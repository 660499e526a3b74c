"""Fine-tune a token classifier (NER, IOB2 tags; any registered method: full, LoRA, ...) into an artifact dir."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from ..artifact import ArtifactMeta, LabelSpace, write_meta
from ..errors import DataError
from ..inference.token_classifier import (
    CASE_FEATURES,
    TokenClassifier,
    WordTagger,
    _check_word_rows,
    case_type_ids,
    entity_f1,
    parse_tag,
)
from ..io import atomic_write_json, atomic_write_text, fingerprint_texts
from .card import model_card
from .common import StagedDir, TrainResult, autocast_context
from .config import ClassifierTrainingConfig
from .loop import fit, load_with_new_head, save_model_files
from .methods import get_method

log = logging.getLogger(__name__)
IGNORE = -100  # label of special tokens and of every sub-token after a word's first


#: ClassifierTrainingConfig fields that only mean something for a sequence classifier
_SEQUENCE_ONLY = ("pooling", "head_init", "multi_label", "class_weights")


@dataclass
class TokenClassifierTrainingConfig(ClassifierTrainingConfig):
    """Fine-tuning a token classifier: the fields of :class:`ClassifierTrainingConfig` (``pooling``,
    ``head_init``, ``multi_label`` and ``class_weights`` are not used); model selection uses dev
    entity F1.

    Attributes:
        max_length: training sentences longer than this (in sub-tokens) are truncated; inference
            windows long texts instead.
        eval_max_length: window of the dev/test evaluation.
        case_feature: ``auto`` (``token_type`` when the tokenizer lower-cases and the model has a
            second token type, else ``none``), ``token_type`` or ``none``; see
            :data:`verticore.inference.token_classifier.CASE_FEATURES`.
    """

    learning_rate: float = 1e-4
    class_weights: str | None = None
    eval_max_length: int = 256
    case_feature: str = "auto"

    #: LoRA on token classification wants a larger adapter learning rate than on sequences
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {"lora": {"learning_rate": 1e-3}}

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if k not in _SEQUENCE_ONLY}


def clean_tagged_rows(tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]], what: str,
                      known: Sequence[str] | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """Validate word/tag rows: as many rows and, per row, as many tags as words, IOB2 tags, and
    (when ``known`` is given) only labels the model knows. Errors name the row."""
    rows = _check_word_rows(tokens, what)
    if len(rows) != len(tags):
        raise DataError(f"{what} has {len(rows)} token rows but {len(tags)} tag rows")
    known_set = set(known) if known is not None else None
    out_tags = []
    for i, (row, t) in enumerate(zip(rows, tags)):
        if isinstance(t, str):
            raise DataError(f"{what} row {i}: tags is a string; pass a list of tags")
        t = list(t)
        if not row:
            raise DataError(f"{what} row {i} has no tokens")
        if len(t) != len(row):
            raise DataError(f"{what} row {i} has {len(row)} tokens but {len(t)} tags")
        for k, tag in enumerate(t):
            parse_tag(tag, f"{what} row {i}, tag {k}")
            if known_set is not None and tag not in known_set:
                raise DataError(f"{what} row {i}, tag {k}: {tag!r} not seen in training; "
                                f"training labels are {sorted(known_set)}")
        out_tags.append(t)
    return rows, out_tags


def read_conll(path: str | Path, tag_column: int = -1) -> tuple[list[list[str]], list[list[str]]]:
    """Read a CoNLL file (one ``token ... tag`` line per word, blank lines end sentences,
    ``-DOCSTART-`` lines are skipped) into word rows and tag rows; tags are not validated here."""
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    row: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if words:
                    tokens.append(words)
                    tags.append(row)
                words, row = [], []
                continue
            if len(parts) < 2:
                raise DataError(f"{path}:{n}: expected 'token ... tag', got {line.strip()!r}")
            words.append(parts[0])
            row.append(parts[tag_column])
    if words:
        tokens.append(words)
        tags.append(row)
    return tokens, tags


def label_list(tags: Sequence[Sequence[str]]) -> list[str]:
    """``O`` then ``B-X``, ``I-X`` for every entity type X in ``tags`` (sorted)."""
    types = sorted({parse_tag(t)[1] for row in tags for t in row if t != "O"})
    return ["O"] + [f"{p}-{typ}" for typ in types for p in "BI"]


def align_labels(word_ids: Sequence[int | None], tags: Sequence[str], index: dict[str, int]) -> list[int]:
    """Label the first sub-token of each word; other sub-tokens and special tokens get -100."""
    out, prev = [], None
    for wid in word_ids:
        out.append(IGNORE if wid is None or wid == prev else index[tags[wid]])
        prev = wid
    return out


def resolve_case_feature(case_feature: str, tokenizer, model) -> str:
    """``auto`` -> ``token_type`` when ``tokenizer`` lower-cases text (case is otherwise lost) and
    ``model`` has at least two token types to carry it; else ``none``."""
    if case_feature != "auto" and case_feature not in CASE_FEATURES:
        raise DataError(f"case_feature must be 'auto' or one of {list(CASE_FEATURES)}, got {case_feature!r}")
    types = int(getattr(model.config, "type_vocab_size", 0) or 0)
    if case_feature == "token_type" and types < 2:
        raise DataError(f"case_feature 'token_type' needs a model with 2 token types; this one has {types}")
    if case_feature != "auto":
        return case_feature
    lowercases = tokenizer.tokenize("Apple Paris") == tokenizer.tokenize("apple paris")
    return "token_type" if lowercases and types >= 2 else "none"


def train_token_classifier(
    train_tokens: Sequence[Sequence[str]],
    train_tags: Sequence[Sequence[str]],
    dev_tokens: Sequence[Sequence[str]],
    dev_tags: Sequence[Sequence[str]],
    out_dir: str | Path,
    config: TokenClassifierTrainingConfig | None = None,
    test_tokens: Sequence[Sequence[str]] | None = None,
    test_tags: Sequence[Sequence[str]] | None = None,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tune ``config.base`` on word-split sentences with IOB2 tags and write an artifact
    (``labels.json``, ``metrics.json``, ``training_config.json``, ``verticore.json``, model card).

    The checkpoint with the best dev entity-level micro F1 is kept (early stopping after
    ``patience`` evaluations without gain). ``TokenClassifier(result.artifact_dir)`` loads it;
    the dev/test metrics in ``metrics.json`` are computed through that loaded artifact.
    """
    import torch

    cfg = config or TokenClassifierTrainingConfig()
    t0 = time.time()
    train_tokens, train_tags = clean_tagged_rows(train_tokens, train_tags, "training data")
    labels = label_list(train_tags)
    if len(labels) < 3:
        raise DataError("training data has no entities (every tag is O)")
    dev_tokens, dev_tags = clean_tagged_rows(dev_tokens, dev_tags, "dev data", labels)
    if not dev_tokens:
        raise DataError("need at least 1 dev row")
    if test_tokens is not None and test_tags is not None:
        test_tokens, test_tags = clean_tagged_rows(test_tokens, test_tags, "test data", labels)
    index = {l: i for i, l in enumerate(labels)}
    method = get_method(cfg.method, cfg.method_config())

    from transformers import AutoModelForTokenClassification

    model, tokenizer, resolved, device = load_with_new_head(AutoModelForTokenClassification, cfg, labels)

    case_feature = resolve_case_feature(cfg.case_feature, tokenizer, model)
    enc = tokenizer(train_tokens, is_split_into_words=True, truncation=True, max_length=cfg.max_length)
    enc_ids = enc["input_ids"]
    enc_labels = [align_labels(enc.word_ids(i), train_tags[i], index) for i in range(len(enc_ids))]
    enc_types = ([case_type_ids(train_tokens[i], enc.word_ids(i)) for i in range(len(enc_ids))]
                 if case_feature == "token_type" else None)
    truncated = sum(1 for i, row in enumerate(train_tokens)
                    if max((w for w in enc.word_ids(i) if w is not None), default=-1) < len(row) - 1)
    if truncated:
        log.warning("%d training sentences were truncated to %d sub-tokens", truncated, cfg.max_length)

    model = method.prepare(model).to(device)
    pad_id = tokenizer.pad_token_id or 0
    ce = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    autocast, _ = autocast_context(device, cfg.mixed_precision)
    from ..inference.backends import TorchBackend

    dev_tagger = WordTagger(tokenizer, TorchBackend(Path(resolved.path), head="logits", device=device, pooling="mean",
                                                    model=model), labels, cfg.eval_max_length, batch_size=64,
                            case_feature=case_feature)

    def dev_f1() -> float:
        model.eval()
        with autocast:
            pred, _ = dev_tagger.tag(dev_tokens)
        return float(entity_f1(dev_tags, pred)["f1"])

    loop = fit(model, cfg, method, [len(x) for x in enc_ids],
               lambda idx: _pad_with_labels([enc_ids[i] for i in idx], [enc_labels[i] for i in idx], pad_id, device,
                                            [enc_types[i] for i in idx] if enc_types is not None else None),
               lambda logits, target: ce(logits.reshape(-1, len(labels)), target.reshape(-1)),
               dev_f1, device, "dev_f1", f"token fine-tune ({cfg.method})", show_progress)
    train_seconds = time.time() - t0

    staged = StagedDir(out_dir)
    try:
        save_model_files(method, model, tokenizer, staged.tmp, LabelSpace(labels))
        # The case feature must be in verticore.json before the artifact is loaded for its metrics.
        write_meta(staged.tmp, ArtifactMeta(kind="token_classifier", base_model=cfg.base, base_model_name=resolved.name,
                                            method=cfg.method, extra={"case_feature": case_feature}))
        # Metrics through the saved artifact, i.e. exactly what users will load.
        clf = TokenClassifier(staged.tmp, device=device, max_length=cfg.eval_max_length, dtype="fp32")
        metrics: dict[str, Any] = {"dev": entity_f1(dev_tags, clf.predict_words(dev_tokens)),
                                   "best_step": loop.best_step, "steps": loop.steps,
                                   "train_seconds": round(train_seconds, 2), "history": loop.history,
                                   "truncated_training_rows": truncated}
        if test_tokens is not None and test_tags is not None:
            metrics["test"] = entity_f1(test_tags, clf.predict_words(test_tokens))
        atomic_write_json(staged.tmp / "metrics.json", metrics)
        atomic_write_json(staged.tmp / "training_config.json", cfg.to_dict())
        fp = fingerprint_texts([" ".join(r) for r in train_tokens], [" ".join(t) for t in train_tags])
        types = sorted({l[2:] for l in labels if l != "O"})
        write_meta(staged.tmp, ArtifactMeta(kind="token_classifier", base_model=cfg.base, base_model_name=resolved.name,
                                            data_fingerprint=fp, method=cfg.method,
                                            extra={"n_train": len(train_tokens), "n_dev": len(dev_tokens),
                                                   "labels": labels,
                                                   "entity_types": types, "tagging": "IOB2",
                                                   "case_feature": case_feature}))
        card = model_card("token_classifier", cfg.to_dict(), metrics, resolved.name, labels, fp)
        atomic_write_text(staged.tmp / "README.md", card)
        artifact = staged.commit()
    except BaseException:
        staged.abort()
        raise
    return TrainResult(artifact_dir=artifact, metrics=metrics)


def _pad_with_labels(seqs: list[list[int]], labels: list[list[int]], pad_id: int, device: str,
                     types: list[list[int]] | None = None):
    """Padded ``(input_ids, attention_mask, target)``; with ``types`` (the case feature) the first
    element is ``{"input_ids", "token_type_ids"}``."""
    import torch

    from .loop import pad_tensors

    ids, mask = pad_tensors(seqs, pad_id, device)
    target = torch.full(ids.shape, IGNORE, dtype=torch.long)
    for r, l in enumerate(labels):
        target[r, : len(l)] = torch.tensor(l, dtype=torch.long)
    if types is None:
        return ids, mask, target.to(device)
    return {"input_ids": ids, "token_type_ids": pad_tensors(types, 0, device)[0]}, mask, target.to(device)
