"""Guardrails: PII redaction, prompt-injection detection, message limits, sentiment and handoff requests.

Everything here is pure Python (regexes and small lexicons) so it costs microseconds per message
and can run on every user turn.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from verticore.errors import DataError

MAX_MESSAGE_CHARS = 2000
"""Default maximum length of one customer message (characters)."""

# -- PII ------------------------------------------------------------------------------------
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# an IBAN candidate: country code, check digits, then up to 8 groups (any case, spaces optional);
# the candidate is trimmed to the longest prefix that passes the country length and mod-97 checks
_IBAN = re.compile(r"\b[A-Z]{2}[ ]?\d{2}(?:[ ]?[A-Z0-9]{1,4}){3,8}\b", re.IGNORECASE)
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
# card digits may be grouped with spaces, dashes, dots or slashes; a digit or a separator+digit
# right before/after means the run is part of a longer number
_CARD = re.compile(r"(?<!\d)(?<!\d[ ./-])(?:\d[ ./-]?){12,18}\d(?!\d)(?![./-]\d)")
# US social security number (area 000/666/9xx and group 00 / serial 0000 are never issued)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\d{1,3}?[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?![\w])")
# dates look like phone numbers to the pattern above: 2024-03-15, 15.03.2024, 03/15/2024
_DATE = re.compile(r"(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./](?:\d{4}|\d{2}))(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?")
# a number right after an order/reference keyword is an identifier, not a phone or card number
_ID_CONTEXT = re.compile(
    r"\b(?:order|purchase|invoice|parcel|package|shipment|tracking|booking|reservation|confirmation|ref(?:erence)?|"
    r"receipt|ticket|case|item|sku|article)\s*(?:number|no\.?|num|id|code|#)?\s*(?:is|was|:)?\s*#?\s*$", re.IGNORECASE)


def luhn_ok(digits: str) -> bool:
    """Luhn checksum of a digit string (payment card numbers pass it)."""
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """True when ``candidate`` (any case, spaces allowed) is an IBAN: country length and mod-97 check."""
    s = candidate.replace(" ", "").upper()
    want = _IBAN_LENGTHS.get(s[:2])
    if (want is not None and len(s) != want) or not 15 <= len(s) <= 34 or not s[2:4].isdigit() or not s.isalnum():
        return False
    num = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(num) % 97 == 1


def _iban(m: re.Match) -> str:
    # the pattern may run into the words after the IBAN ("... 00 for"): try prefixes, longest first
    raw = m.group(0)
    cuts = [i for i, ch in enumerate(raw) if ch == " "] + [len(raw)]
    for end in reversed(cuts):
        if iban_ok(raw[:end]):
            return "[IBAN]" + raw[end:]
    return raw


def _is_identifier(m: re.Match) -> bool:
    return bool(_ID_CONTEXT.search(m.string[max(0, m.start() - 40): m.start()]))


def _card(m: re.Match) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    if 13 <= len(digits) <= 19 and luhn_ok(digits) and not _is_identifier(m):
        return "[CARD]"
    return m.group(0)


def _phone(m: re.Match) -> str:
    raw = m.group(0)
    stripped = raw.strip()
    digits = re.sub(r"\D", "", raw)
    if _is_identifier(m) or any(d.start() < m.end() and m.start() < d.end() for d in _DATE.finditer(m.string)):
        return raw
    prefixed = stripped.startswith(("+", "00", "("))
    separated = bool(re.search(r"[ .()-]", stripped))
    # without a prefix or separators only 10-12 digit runs read as phone numbers (national numbers
    # are at most 12 digits); longer bare runs are order, invoice or tracking numbers
    if 8 <= len(digits) <= 15 and (prefixed or separated or len(digits) <= 12) and (prefixed or separated or len(digits) >= 10):
        return "[PHONE]"
    return raw


class PiiTagger(Protocol):
    """What the NER pass needs: ``verticore.TokenClassifier.predict`` (texts -> per text, spans with
    ``start``, ``end``, ``type`` and ``score``; objects or mappings)."""

    def predict(self, texts: Sequence[str]) -> Any: ...


@dataclass
class PiiNer:
    """The optional NER pass of :func:`redact_pii`: spans of ``placeholders``' types (``PER`` -> ``[NAME]``,
    ``LOC`` -> ``[ADDRESS]``) scoring at least ``min_score`` are replaced. A house number right before a
    location ("221B Baker Street") goes with it."""

    tagger: PiiTagger
    placeholders: Mapping[str, str]
    min_score: float = 0.5


_NER_LOCK = threading.Lock()
_NER: PiiNer | None = None
_PLACEHOLDER = re.compile(r"\[[A-Z]+\]")
_HOUSE_NUMBER = re.compile(r"\b\d{1,5}[A-Za-z]?,?\s+$")
DEFAULT_NER_PLACEHOLDERS = {"PER": "[NAME]", "LOC": "[ADDRESS]"}


def configure_pii_ner(tagger: PiiTagger | str | Path | None, *, placeholders: Mapping[str, str] | None = None,
                      min_score: float = 0.5, device: str = "auto") -> PiiNer | None:
    """Turn the NER pass of :func:`redact_pii` on (a tagger, or the path of a token-classifier artifact,
    opened as ``verticore.TokenClassifier``) or off (``None``) for every caller in this process; returns
    the new setting. Without it, redaction is the pattern rules only."""
    global _NER
    if tagger is not None and isinstance(tagger, (str, Path)):
        from verticore import TokenClassifier

        tagger = TokenClassifier(tagger, device=device)
    ner = None if tagger is None else PiiNer(tagger, dict(placeholders or DEFAULT_NER_PLACEHOLDERS), float(min_score))
    with _NER_LOCK:
        _NER = ner
    return ner


def _span_field(span: Any, name: str, default: Any = None) -> Any:
    return span.get(name, default) if isinstance(span, Mapping) else getattr(span, name, default)


def _redact_entities(text: str, ner: PiiNer) -> str:
    """Replace the tagger's person / location spans (ones that would cut into a pattern placeholder are kept
    as they are: the pattern rules already redacted that part)."""
    spans = ner.tagger.predict([text])[0]
    protected = [(m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
    cuts: list[tuple[int, int, str]] = []
    for sp in spans:
        label = ner.placeholders.get(str(_span_field(sp, "type", "")).upper())
        start, end = _span_field(sp, "start"), _span_field(sp, "end")
        if label is None or start is None or end is None or float(_span_field(sp, "score", 1.0)) < ner.min_score:
            continue
        start, end = max(0, int(start)), min(len(text), int(end))
        if end <= start or any(a < end and start < b for a, b in protected):
            continue
        if label == ner.placeholders.get("LOC") and (m := _HOUSE_NUMBER.search(text, 0, start)):
            start = m.start()
        cuts.append((start, end, label))
    out, pos = [], 0
    for start, end, label in sorted(cuts):
        if start < pos:  # overlapping spans: the earlier one wins
            continue
        out += [text[pos:start], label]
        pos = end
    return "".join(out) + text[pos:]


def redact_pii(text: str, *, ner: PiiNer | None = None) -> str:
    """Replace card numbers, IBANs, US SSNs, e-mail addresses and phone numbers with placeholders.

    Card numbers must pass the Luhn check and IBANs their country length and mod-97 check, so order
    ids and amounts are not redacted by accident; dates and numbers right after an order/reference
    keyword are never taken for phone numbers. When a NER model is configured
    (:func:`configure_pii_ner`, or ``ner`` for this call) person names become ``[NAME]`` and
    locations / street addresses ``[ADDRESS]`` after the pattern rules. Returns the redacted text.
    """
    if not text:
        return text
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub(_iban, text)
    text = _CARD.sub(_card, text)
    text = _SSN.sub("[SSN]", text)  # before phones: 123-45-6789 also fits the phone pattern
    text = _PHONE.sub(_phone, text)
    ner = ner if ner is not None else _NER
    return _redact_entities(text, ner) if ner is not None else text


# -- prompt injection ------------------------------------------------------------------------
# Deliberately narrow: only phrasings with no everyday customer-service reading. Retrieved KB text
# is never checked (it is quoted as data in LLM prompts instead); see bench/guard_false_positives.py.
_INJECTION_PATTERNS = [
    r"\b(?:ignore|disregard|forget|override)\s+(?:(?:all|any|of|the|your|these|those)\s+){0,3}"
    r"(?:previous|prior|above|earlier|preceding|original|system)\s+(?:instructions?|prompts?|rules|directions|guidelines)\b",
    r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+)?your\s+(?:instructions|system prompt|programming|guidelines)\b",
    r"\b(?:reveal|show|print|repeat|leak|output|display)\b[^.\n]{0,30}\b(?:system|hidden|initial|developer)\s+prompt\b",
    r"\byou are now (?:DAN\b|an? (?:unrestricted|unfiltered|uncensored|jailbroken)\b|in (?:developer|god|jailbreak|DAN) mode\b)",
    r"\bjailbreak(?:ing|ed)?\s+(?:mode|prompt|you|the (?:ai|bot|model|assistant))\b|\b(?:god|DAN) mode\b",
    r"\bdo anything now\b[^.\n]{0,20}\b(?:DAN|no (?:rules|restrictions|limits))\b|\bDAN\s*\(do anything now\)",
    r"<\|?(?:im_start|im_end|system|endoftext)\|?>|\[/?INST\]|<</?SYS>>",
    r"^\s*(?:system|assistant)\s*:\s*(?:you (?:are|must|will)|ignore|disregard|new (?:rules|instructions))\b",
]
_INJECTION = re.compile("|".join(f"(?:{p})" for p in _INJECTION_PATTERNS), re.IGNORECASE | re.MULTILINE)


def detect_injection(text: str) -> str | None:
    """Return the matched snippet if a customer message is a clear prompt-injection attempt, else None.

    Only for user messages: knowledge-base passages are never filtered with it.
    """
    m = _INJECTION.search(text or "")
    return m.group(0).strip()[:80] if m else None


# -- message validation ----------------------------------------------------------------------
def validate_message(text: object, max_chars: int = MAX_MESSAGE_CHARS) -> str:
    """Check one customer message; returns it stripped or raises :class:`DataError` with one line."""
    if text is None:
        raise DataError("the message is empty; please type a question")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError("the message is not valid UTF-8 text") from None
    text = str(text).replace("\x00", "").strip()
    if not text:
        raise DataError("the message is empty; please type a question")
    if len(text) > max_chars:
        raise DataError(f"the message is too long ({len(text):,} characters; the limit is {max_chars:,}); please shorten it")
    return text


# -- human request and sentiment -------------------------------------------------------------
_HUMAN = re.compile(
    r"\b(human|agent|real person|representative|operator|someone real|live (chat|support|person)|speak to (a|an|some)(one| person)|talk to (a|an|some)(one| person)|customer service rep)\b",
    re.IGNORECASE,
)


def wants_human(text: str) -> bool:
    """True when the customer explicitly asks for a human agent."""
    return bool(_HUMAN.search(text or ""))


_NEGATIVE = {
    "angry": 2, "furious": 3, "terrible": 2, "horrible": 2, "awful": 2, "worst": 2, "useless": 2, "ridiculous": 2,
    "unacceptable": 3, "scam": 3, "fraud": 1, "disgusting": 3, "hate": 2, "pathetic": 3, "incompetent": 3,
    "disappointed": 1, "frustrated": 2, "frustrating": 2, "annoyed": 1, "annoying": 1, "fed up": 3, "rubbish": 2,
    "garbage": 2, "never again": 3, "sue": 2, "lawyer": 2, "complaint": 1, "outraged": 3, "stupid": 2, "wtf": 2,
    "joke": 1, "shameful": 2, "nightmare": 2,
}
_NEGATIONS = re.compile(r"\b(not|n't|never|no)\s+(\w+\s+)?$", re.IGNORECASE)
_TOKEN = re.compile(r"[a-z']+(?: (?:up|again))?")


@dataclass(frozen=True)
class Sentiment:
    """Lexicon sentiment of one message: ``score`` <= -3 counts as strongly negative."""

    score: int
    terms: tuple[str, ...]

    @property
    def negative(self) -> bool:
        return self.score <= -3


def sentiment(text: str) -> Sentiment:
    """Score negative customer sentiment with a small lexicon (shouting and "!!!" add weight)."""
    low = (text or "").lower()
    score, terms = 0, []
    for term, weight in _NEGATIVE.items():
        for m in re.finditer(rf"\b{re.escape(term)}\b", low):
            if _NEGATIONS.search(low[: m.start()][-25:]):
                continue
            score -= weight
            terms.append(term)
    letters = [c for c in (text or "") if c.isalpha()]
    if len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        score -= 1
        terms.append("ALL CAPS")
    if "!!!" in (text or ""):
        score -= 1
        terms.append("!!!")
    return Sentiment(score, tuple(terms))
