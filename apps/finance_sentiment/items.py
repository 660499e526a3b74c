"""The news item record and its validation (bad input is rejected with a one-line reason)."""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from verticore.errors import DataError

from .text import clean_text

log = logging.getLogger("finance_sentiment")

MAX_TITLE_CHARS = 1_000
MAX_BODY_CHARS = 100_000
# Accepted range of ``published_at`` around the ingest clock. A timestamp outside it (year 2099, a
# feed in the wrong time zone, NaN/inf, 1970) is clamped into it and the item marked, so one bad
# clock cannot push event time ahead and silence detection.
MAX_FUTURE_SKEW_S = 15 * 60.0
MAX_ITEM_AGE_S = 3650 * 86400.0
# below this share of ASCII letters among a text's letters it is taken for non-English (a cheap
# script test: Chinese, Arabic, Cyrillic... headlines; Latin-script languages pass as English)
MIN_ASCII_LETTER_SHARE = 0.5


def has_words(text: str) -> bool:
    """Whether ``text`` has any letter or digit (an emoji/symbol-only post has none)."""
    return any(ch.isalnum() for ch in text)


def looks_non_english(text: str, *, min_ascii_share: float = MIN_ASCII_LETTER_SHARE) -> bool:
    """Cheap language guess: True when fewer than ``min_ascii_share`` of the letters in ``text`` (its first
    5,000 characters) are ASCII. Texts with fewer than 3 letters are never flagged."""
    letters = [ch for ch in text[:5_000] if ch.isalpha()]
    if len(letters) < 3:
        return False
    return sum(ch.isascii() for ch in letters) / len(letters) < min_ascii_share


def mark_language(item: "NewsItem") -> "NewsItem":
    """Record ``meta["non_english"] = True`` on an item whose title and body look non-English (see
    :func:`looks_non_english`) and ``meta["no_words"] = True`` on one with no letter or digit at all
    (emoji-only). The monitor scores both with low confidence and keeps them out of surge statistics."""
    text = f"{item.title} {item.body[:5_000]}"
    if not has_words(text):
        item.meta["no_words"] = True
    elif looks_non_english(text):
        item.meta["non_english"] = True
    return item


@dataclass
class NewsItem:
    """One piece of news as ingested (before scoring).

    ``published_at`` and ``ingested_at`` are POSIX seconds (UTC). ``item_id`` is the source's
    id (RSS guid, API id); when absent it is derived from source + url + title.
    """

    item_id: str
    title: str
    body: str = ""
    url: str = ""
    source: str = "unknown"
    published_at: float = 0.0
    ingested_at: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """Title and body as one text (what the models read)."""
        if self.body and not self.body.startswith(self.title):
            return f"{self.title}. {self.body}" if not self.title.endswith((".", "!", "?")) else f"{self.title} {self.body}"
        return self.body or self.title

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None, now: float | None = None,
                  max_body_chars: int = MAX_BODY_CHARS, max_skew_s: float = MAX_FUTURE_SKEW_S,
                  max_age_s: float = MAX_ITEM_AGE_S) -> "NewsItem":
        """Validate and normalise a raw record (JSON object, CSV row, feed entry).

        Accepted keys: ``id``/``item_id``/``guid``, ``title``/``headline``, ``body``/``text``/``summary``/
        ``content``, ``url``/``link``, ``source``, ``published_at``/``published``/``timestamp``/``time``
        (epoch seconds, epoch ms, or ISO-8601). Raises :class:`DataError` for an empty title or an
        unparseable timestamp. Enormous bodies are truncated to ``max_body_chars`` with a log line.

        A timestamp outside ``[now - max_age_s, now + max_skew_s]`` (or NaN/inf) is clamped into that
        range; the item keeps the original in ``meta["original_published_at"]`` and gets
        ``meta["time_clamped"] = True``.
        """
        if not isinstance(data, Mapping):
            raise DataError(f"news item must be an object, got {type(data).__name__}")
        now = time.time() if now is None else now
        title = clean_text(_first(data, "title", "headline"), MAX_TITLE_CHARS)
        raw_body = _first(data, "body", "text", "summary", "content", "description")
        body = clean_text(raw_body)
        if not title:
            raise DataError("news item has an empty title")
        if len(body) > max_body_chars:
            log.warning("item %r: body of %d chars truncated to %d", title[:60], len(body), max_body_chars)
            body = body[:max_body_chars]
        url = clean_text(_first(data, "url", "link"), 2_000)
        src = clean_text(source or _first(data, "source") or "unknown", 200)
        ts_raw = _first(data, "published_at", "published", "timestamp", "time", "date")
        published = _parse_timestamp(ts_raw) if ts_raw not in (None, "") else now
        item_id = clean_text(_first(data, "item_id", "id", "guid"), 500)
        if not item_id:
            item_id = "h:" + hashlib.sha1(f"{src}\x1f{url}\x1f{title}".encode("utf-8")).hexdigest()[:20]
        meta = dict(data.get("meta")) if isinstance(data.get("meta"), dict) else {}
        clamped = clamp_timestamp(published, now, max_skew_s=max_skew_s, max_age_s=max_age_s)
        if clamped != published or meta.get("time_clamped"):
            if clamped != published:
                log.warning("item %r: published_at %s is outside [now - %gd, now + %gs]; clamped", title[:60],
                            str(ts_raw)[:40], max_age_s / 86400.0, max_skew_s)
                meta.setdefault("original_published_at", str(ts_raw)[:100])
            meta["time_clamped"] = True
        return mark_language(cls(item_id=item_id, title=title, body=body if body != title else "", url=url, source=src,
                                 published_at=float(clamped), ingested_at=float(now), meta=meta))


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        v = data.get(k)
        if v is not None and not (isinstance(v, float) and v != v) and v != "":
            return v
    return None


def clamp_timestamp(ts: float, now: float, *, max_skew_s: float = MAX_FUTURE_SKEW_S, max_age_s: float = MAX_ITEM_AGE_S) -> float:
    """``ts`` limited to ``[now - max_age_s, now + max_skew_s]``; NaN becomes ``now``."""
    if math.isnan(ts):
        return float(now)
    return float(min(max(ts, now - max_age_s), now + max_skew_s))


def parse_timestamp(value: Any) -> float:
    """Epoch seconds from epoch s/ms numbers, ISO-8601 strings or RFC-822 dates; :class:`DataError` otherwise
    (also for NaN and infinities, which are no point in time)."""
    ts = _parse_timestamp(value)
    if not math.isfinite(ts):
        raise DataError(f"timestamp {str(value)[:40]!r} is not a finite time; use ISO-8601 or epoch seconds")
    return ts


def _parse_timestamp(value: Any) -> float:
    """Like :func:`parse_timestamp` but lets NaN/inf through (ingest clamps them and keeps the item)."""
    if isinstance(value, _dt.datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        return dt.timestamp()
    if isinstance(value, time.struct_time):
        import calendar

        return float(calendar.timegm(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        return v / 1000.0 if v > 1e11 else v
    s = str(value).strip()
    try:
        v = float(s)
        return v / 1000.0 if v > 1e11 else v
    except ValueError:
        pass
    try:
        dt = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=_dt.timezone.utc)
        return dt.timestamp()
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return parsedate_to_datetime(s).timestamp()
    except (TypeError, ValueError, IndexError):
        raise DataError(f"unparseable timestamp {s[:40]!r}; use ISO-8601 or epoch seconds") from None


@dataclass
class SentenceEvidence:
    """One sentence of an article and its sentiment (kept so users can see why an item scored as it did)."""

    text: str
    label: str
    score: float  # P(positive) - P(negative), in [-1, 1]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "score": round(self.score, 4), "confidence": round(self.confidence, 4)}


@dataclass
class ScoredItem:
    """A news item after dedupe, classification and entity matching (what the store keeps)."""

    item: NewsItem
    title_hash: str
    duplicate_of: int | None = None
    sentiment: str | None = None
    sentiment_score: float | None = None  # P(positive) - P(negative)
    probabilities: dict[str, float] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    evidence: list[SentenceEvidence] = field(default_factory=list)
    model_version: str | None = None
    topic_model_version: str | None = None
    rowid: int | None = None
    #: per watched company, when the item names several and a target-aware model is installed:
    #: ticker -> {"label", "score"} (the company's series count the item with this label)
    entity_sentiment: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_duplicate(self) -> bool:
        return self.duplicate_of is not None
