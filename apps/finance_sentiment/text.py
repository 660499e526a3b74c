"""Text utilities: cleaning, normalised title hashing; sentence splitting is the core's
(:func:`verticore.text.split_sentences`, re-exported here)."""
from __future__ import annotations

import hashlib
import re
import unicodedata

from verticore.text import split_sentences as _split_sentences

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_SPACES = re.compile(r"\s+")
# " - Reuters", " | Bloomberg": syndication suffixes that make one story look like many
_SOURCE_SUFFIX = re.compile(r"\s+[-\u2013\u2014|:]\s+[A-Za-z0-9 .&'()]{2,40}$")
_WORDS = re.compile(r"[a-z0-9]+")
_UPDATE_PREFIX = re.compile(r"^(update\s*\d*|exclusive|breaking|corrected|refile)\s*[:\-]\s*", re.I)


def decode_bytes(raw: bytes) -> tuple[str, bool]:
    """Decode bytes as UTF-8; on failure decode as cp1252/latin-1 and report ``lossy=True``.

    Feeds and files in the wild are often Windows-1252; the caller logs when the fallback was used.
    """
    try:
        return raw.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252"), True
        except UnicodeDecodeError:
            return raw.decode("latin-1"), True


def clean_text(value: object, max_chars: int | None = None) -> str:
    """Normalise whitespace, drop control characters and lone surrogates; ``None`` -> ``""``."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = decode_bytes(value)[0]
    text = str(value)
    if isinstance(value, float) and value != value:  # NaN from pandas
        return ""
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates -> '?'
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", text))
    text = _SPACES.sub(" ", text).strip()
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars]
    return text


def normalize_title(title: str) -> str:
    """Case-folded, accent-stripped, punctuation-free title without syndication prefixes/suffixes."""
    t = clean_text(title)
    t = _UPDATE_PREFIX.sub("", t)
    t = _SOURCE_SUFFIX.sub("", t)
    t = unicodedata.normalize("NFKD", t.casefold())
    t = "".join(ch for ch in t if not unicodedata.combining(ch))
    return " ".join(_WORDS.findall(t))


def title_hash(title: str) -> str:
    """SHA-1 (16 hex chars) of :func:`normalize_title`: equal for the same story syndicated verbatim."""
    return hashlib.sha1(normalize_title(title).encode("utf-8")).hexdigest()[:16]


def split_sentences(text: str, max_sentences: int | None = None) -> list[str]:
    """Sentences of cleaned ``text`` (the core's splitter: abbreviations and decimals such as ``5.2`` kept)."""
    return _split_sentences(clean_text(text), max_sentences)
