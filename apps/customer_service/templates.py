"""Answer templates per intent, with slots filled from the conversation.

A template file (YAML or JSON) maps intents to answers::

    track_order:
      answer: "Order {order_id} is on its way; track it at https://example.com/track/{order_id}."
      slots: [order_id]
      escalate: false          # optional: hand over to a human after answering

Slots are extracted from the customer's messages with the patterns in :data:`SLOT_PATTERNS`
(extensible per template with ``patterns: {slot: regex}``). A missing slot makes the bot ask
for it (``SLOT_QUESTIONS``) and remember the pending intent in the session.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verticore.errors import DataError

SLOT_PATTERNS: dict[str, str] = {
    "order_id": r"(?:order|purchase|parcel|package)\s*(?:number|no\.?|num|id|#|ref(?:erence)?)?\s*(?:is|:|#)?\s*#?\s*([A-Z]{0,4}-?\d{4,}[A-Z0-9-]*)",
    "email": r"\b([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})\b",
    "amount": r"((?:[$€£]\s?\d+(?:[.,]\d{1,2})?)|(?:\d+(?:[.,]\d{1,2})?\s?(?:eur|euros?|usd|dollars?|gbp|pounds?)))\b",
    "date": r"\b(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|(?:today|yesterday|tomorrow))\b",
    "card_last4": r"(?:card|ending(?: in)?)\D{0,20}(\d{4})\b",
    "tracking_number": r"\b(?:tracking\s*(?:number|no\.?|#|id)?\s*(?:is|:)?\s*)([A-Z0-9]{8,})\b",
}
# a bare id answers an order-id question ("12345678")
_BARE_ID = re.compile(r"^\s*#?([A-Z]{0,4}-?\d{4,}[A-Z0-9-]*)\s*\.?\s*$", re.IGNORECASE)

SLOT_QUESTIONS: dict[str, str] = {
    "order_id": "Could you give me your order number?",
    "email": "Which e-mail address is on the account?",
    "amount": "What amount is it about?",
    "date": "On which date did this happen?",
    "card_last4": "What are the last four digits of the card?",
    "tracking_number": "Could you give me the tracking number?",
}


@dataclass
class AnswerTemplate:
    """An intent's answer with ``{slot}`` placeholders."""

    intent: str
    answer: str
    slots: list[str] = field(default_factory=list)
    patterns: dict[str, str] = field(default_factory=dict)
    escalate: bool = False

    def missing(self, values: dict[str, str]) -> list[str]:
        return [s for s in self.slots if not values.get(s)]

    def render(self, values: dict[str, str]) -> str:
        missing = self.missing(values)
        if missing:
            raise DataError(f"template {self.intent!r} is missing slot(s) {missing}")
        return self.answer.format_map({s: values.get(s, "") for s in self.slots})

    def question_for(self, slot: str) -> str:
        return SLOT_QUESTIONS.get(slot, f"Could you tell me the {slot.replace('_', ' ')}?")


def extract_slots(text: str, slots: list[str] | None = None, patterns: dict[str, str] | None = None,
                  expecting: str | None = None) -> dict[str, str]:
    """Find slot values in ``text``. ``expecting`` is the slot the bot just asked for, so a bare
    answer ("12345678") fills it."""
    pats = {**SLOT_PATTERNS, **(patterns or {})}
    names = slots if slots is not None else list(pats)
    found: dict[str, str] = {}
    for name in names:
        pat = pats.get(name)
        if not pat:
            continue
        m = re.search(pat, text, re.IGNORECASE)
        if m:
            found[name] = (m.group(1) if m.groups() else m.group(0)).strip()
    if expecting and expecting not in found:
        if expecting in {"order_id", "tracking_number"}:
            m = _BARE_ID.match(text)
            if m:
                found[expecting] = m.group(1)
        elif expecting not in pats and text.strip() and len(text.split()) <= 6:
            found[expecting] = text.strip().rstrip(".")
    return found


class TemplateSet:
    """Templates by intent, loaded from YAML/JSON (see module docstring)."""

    def __init__(self, templates: dict[str, AnswerTemplate] | None = None) -> None:
        self.templates = templates or {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TemplateSet":
        if not isinstance(data, dict):
            raise DataError("a template file must map intent names to {answer, slots}")
        out: dict[str, AnswerTemplate] = {}
        for intent, spec in data.items():
            if isinstance(spec, str):
                spec = {"answer": spec}
            if not isinstance(spec, dict) or not str(spec.get("answer", "")).strip():
                raise DataError(f"template {intent!r} has no 'answer'")
            answer = str(spec["answer"])
            placeholders = [f for _, f, _, _ in string.Formatter().parse(answer) if f]
            slots = list(spec.get("slots") or placeholders)
            unknown = [p for p in placeholders if p not in slots]
            if unknown:
                raise DataError(f"template {intent!r} uses {unknown} but does not list them in 'slots'")
            out[str(intent)] = AnswerTemplate(str(intent), answer, slots, dict(spec.get("patterns") or {}), bool(spec.get("escalate", False)))
        return cls(out)

    @classmethod
    def load(cls, path: str | Path | None) -> "TemplateSet":
        """Load templates from a .yaml/.yml/.json file (a missing path gives an empty set)."""
        if path is None:
            return cls()
        path = Path(path)
        if not path.exists():
            raise DataError(f"template file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"template file {path} is not UTF-8") from None
        import yaml

        try:
            data = yaml.safe_load(text) if path.suffix.lower() in {".yaml", ".yml"} else __import__("json").loads(text)
        except Exception as exc:
            raise DataError(f"template file {path} could not be parsed: {str(exc).splitlines()[0][:160]}") from None
        return cls.from_dict(data or {})

    def get(self, intent: str | None) -> AnswerTemplate | None:
        return self.templates.get(intent) if intent else None

    def __len__(self) -> int:
        return len(self.templates)
