"""Model cards (README.md) for artifacts."""
from __future__ import annotations

import json
from typing import Any


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def model_card(kind: str, config: dict[str, Any], metrics: dict[str, Any], base_name: str,
               labels: list[str] | None, fingerprint: str | None) -> str:
    """A short human-readable model card."""
    lines = [f"# Verticore {kind} artifact", "",
             f"- Base model: `{base_name}` (spec `{config.get('base')}`)",
             f"- Method: {config.get('method', 'contrastive (in-batch negatives)')}"
             + (f" ({', '.join(f'{k}={v}' for k, v in config['method_args'].items())})"
                if config.get("method_args") else ""),
             f"- Training data fingerprint: `{fingerprint}`"]
    if labels:
        lines.append(f"- Labels ({len(labels)}): {', '.join(labels[:30])}{' ...' if len(labels) > 30 else ''}")
    lines += ["", "## Metrics", "", "| split | metric | value |", "|---|---|---|"]
    for split in ("dev", "test"):
        for k, v in (metrics.get(split) or {}).items():
            if isinstance(v, (int, float)):
                lines.append(f"| {split} | {k} | {_fmt(v)} |")
    lines += ["", "## Usage", "", "```python"]
    if kind == "classifier":
        lines += ["from verticore import TextClassifier", "clf = TextClassifier('<this directory>')",
                  "clf.predict(['some text'])"]
    elif kind == "token_classifier":
        lines += ["from verticore import TokenClassifier", "ner = TokenClassifier('<this directory>')",
                  "ner.predict('some text')  # entities with character offsets"]
    else:
        lines += ["from verticore import Embedder", "emb = Embedder('<this directory>')", "emb.encode(['some text'])"]
    lines += ["```", "", "## Training config", "", "```json", json.dumps(config, indent=2), "```", "",
              "Probabilities are temperature-calibrated on the dev set (see calibration.json)."
              if kind == "classifier" else ""]
    return "\n".join(lines) + "\n"
