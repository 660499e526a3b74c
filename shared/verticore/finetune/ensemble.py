"""Train a classifier ensemble: fine-tuned members (different configs/seeds), a frozen-embedding
probe and a TF-IDF n-gram probe.

Members differ in what makes their errors differ (head initialisation, seed); the embedding
probe reads the base model's frozen sentence embeddings, which fine-tuning has not moved; the
TF-IDF probe reads no encoder at all. Each member is a normal artifact in its own subfolder, so
any of them can also be used alone.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..evaluation import classification_metrics
from .classifier import train_classifier
from .common import TrainResult
from .config import ClassifierTrainingConfig


def default_ensemble_configs(base: ClassifierTrainingConfig | None = None) -> list[ClassifierTrainingConfig]:
    """Two fine-tunes of ``base`` that differ in head initialisation: random head, and LP-FT."""
    base = base or ClassifierTrainingConfig()
    return [replace(base, head_init="random"), replace(base, head_init="linear_probe")]


def weaker_than_best_member(metrics: dict[str, Any]) -> str | None:
    """Advice when the ensemble's dev accuracy is below its best member's, else None.

    Equal-weight averaging pays off when members are of similar strength (BANKING77: members
    0.911-0.930, ensemble 0.944). When one member is far stronger it drags the ensemble down:
    on Financial PhraseBank a fine-tune (0.872 test) averaged with the two probes (0.758 / 0.783)
    gives 0.845.
    """
    scored = {n: m["dev_accuracy"] for n, m in (metrics.get("members") or {}).items() if "dev_accuracy" in m}
    if not scored or "dev_accuracy" not in metrics:
        return None
    best = max(scored, key=scored.get)
    metrics["best_member_on_dev"] = best
    if metrics["dev_accuracy"] >= scored[best]:
        return None
    return (f"the ensemble's dev accuracy {metrics['dev_accuracy']:.4f} is below its member {best!r} "
            f"({scored[best]:.4f}): the members differ too much in strength; use {best}/ alone, or train "
            f"the ensemble without the weaker members (embedding_probe=False / tfidf_probe=False)")


def train_classifier_ensemble(
    train_texts: Sequence[str],
    train_labels: Sequence[Any],
    dev_texts: Sequence[str],
    dev_labels: Sequence[Any],
    out_dir: str | Path,
    configs: Sequence[ClassifierTrainingConfig] | None = None,
    embedding_probe: bool = True,
    probe_c: float = 10.0,
    tfidf_probe: bool = True,
    tfidf_c: float = 10.0,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tune one member per config into ``out_dir/member{i}``, fit a probe on the frozen
    embeddings of the first config's base model into ``out_dir/probe`` and a TF-IDF n-gram probe
    into ``out_dir/tfidf``, and write ``ensemble.json`` (equal weights). Dev accuracy / macro-F1
    of every member and of the ensemble go into its metrics.
    """
    from ..inference.ensemble import ClassifierEnsemble, EmbeddingProbe
    from ..inference.lexical import TfidfProbe

    configs = list(configs) if configs is not None else default_ensemble_configs()
    if not configs:
        raise DataError("an ensemble needs at least one member config")
    if len(configs) + int(embedding_probe) + int(tfidf_probe) < 2:
        raise DataError("an ensemble needs at least two members (two configs, or one config and a probe)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    members: list[tuple[str, str, float]] = []
    metrics: dict[str, Any] = {"members": {}}
    labels: list[str] | None = None
    for i, cfg in enumerate(configs):
        name = f"member{i}"
        res = train_classifier(list(train_texts), list(train_labels), list(dev_texts), list(dev_labels), out / name,
                               config=cfg, show_progress=show_progress)
        members.append((name, "classifier", 1.0))
        metrics["members"][name] = {"config": cfg.to_dict(), "best_step": res.metrics.get("best_step"),
                                    "train_seconds": res.metrics.get("train_seconds")}
        if labels is None:
            from ..artifact import read_labels

            labels = read_labels(res.artifact_dir).labels
    if embedding_probe:
        EmbeddingProbe.fit(train_texts, train_labels, out / "probe", embedder=configs[0].base, c=probe_c,
                           show_progress=show_progress)
        members.append(("probe", "embedding_probe", 1.0))
    if tfidf_probe:
        TfidfProbe.fit(train_texts, train_labels, out / "tfidf", c=tfidf_c)
        members.append(("tfidf", "tfidf_probe", 1.0))
    ClassifierEnsemble.write(out, members, labels or sorted({str(y) for y in train_labels}))
    ens = ClassifierEnsemble(out, max_length=configs[0].max_length)
    if len(dev_texts):
        y = [str(v) for v in dev_labels]
        per_member = ens.member_probabilities(list(dev_texts))
        for (name, _, _), p in zip(members, per_member):
            m = classification_metrics(y, [ens.labels[i] for i in p.argmax(1)])
            metrics["members"].setdefault(name, {}).update({"dev_accuracy": float(m["accuracy"]),
                                                            "dev_macro_f1": float(m["macro_f1"])})
        mean = np.mean(per_member, axis=0)
        m = classification_metrics(y, [ens.labels[i] for i in mean.argmax(1)])
        metrics.update({"dev_accuracy": float(m["accuracy"]), "dev_macro_f1": float(m["macro_f1"])})
    metrics["train_seconds"] = round(time.time() - t0, 1)
    advice = weaker_than_best_member(metrics)
    if advice:
        warnings.warn(f"{out}: {advice}", stacklevel=2)
        metrics["warning"] = advice
    ClassifierEnsemble.write(out, members, ens.labels, metrics=metrics)
    return TrainResult(artifact_dir=out, metrics=metrics)
