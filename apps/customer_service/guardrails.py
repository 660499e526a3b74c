"""Guardrails: PII redaction, prompt-injection detection, message limits, sentiment and handoff requests.

Everything here is pure Python (regexes and small lexicons) so it costs microseconds per message
and can run on every user turn and on every retrieved passage.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from verticore.errors import DataError

MAX_MESSAGE_CHARS = 2000
"""Default maximum length of one customer message (characters)."""

# -- PII ------------------------------------------------------------------------------------
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\d{1,3}?[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?![\w])")


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


def _iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        num = "".join(str(int(c, 36)) for c in rearranged)
    except ValueError:
        return False
    return int(num) % 97 == 1


def redact_pii(text: str) -> str:
    """Replace card numbers, IBANs, e-mail addresses and phone numbers with placeholders.

    Card numbers must pass the Luhn check and IBANs their mod-97 check, so order ids and
    amounts are not redacted by accident. Returns the redacted text.
    """
    if not text:
        return text
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub(lambda m: "[IBAN]" if _iban_ok(m.group(0)) else m.group(0), text)

    def card(m: re.Match) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)

    text = _CARD.sub(card, text)

    def phone(m: re.Match) -> str:
        raw = m.group(0)
        digits = re.sub(r"\D", "", raw)
        # a phone number has 8-15 digits and is written with a + / separators, or is 10+ digits long
        if 8 <= len(digits) <= 15 and (raw.strip().startswith(("+", "00", "(")) or re.search(r"[ .()-]", raw.strip()) or len(digits) >= 10):
            return "[PHONE]"
        return raw

    return _PHONE.sub(phone, text)


# -- prompt injection ------------------------------------------------------------------------
_INJECTION_PATTERNS = [
    r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|your|the|system)\b[^.\n]{0,30}\b(instructions?|prompts?|rules?|directions?|guidelines?)",
    r"\b(reveal|show|print|repeat|leak|output)\b[^.\n]{0,30}\b(system prompt|hidden prompt|initial prompt|your instructions|your prompt)",
    r"\byou are now\b|\bfrom now on,? you (are|will|must)\b|\bpretend (to be|you are)\b",
    r"\b(developer|god|dan|jailbreak) mode\b|\bjailbreak\b",
    r"<\|?(im_start|im_end|system|endoftext)\|?>|\[/?INST\]|<<SYS>>",
    r"^\s*(system|assistant)\s*:",
    r"\bnew instructions?\s*:",
    r"\bdo anything now\b",
]
_INJECTION = re.compile("|".join(f"(?:{p})" for p in _INJECTION_PATTERNS), re.IGNORECASE | re.MULTILINE)


def detect_injection(text: str) -> str | None:
    """Return the matched snippet if ``text`` looks like a prompt-injection attempt, else None."""
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
