"""Watchlist of companies and robust entity matching (cashtags, exchange-prefixed tickers, names, aliases)."""
from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from verticore.errors import DataError
from verticore.io import atomic_write_text

from .text import decode_bytes

_CASHTAG = re.compile(r"(?<![A-Za-z0-9])\$([A-Za-z]{1,6}(?:[.\-][A-Za-z]{1,2})?)\b")
_EXCHANGE = re.compile(r"\b(?:NASDAQ|NYSE|NYSEARCA|AMEX|LSE|LON|TSX|XETRA|ETR|EPA|OMXH|HEL|STO|FRA|TYO|HKEX)\s*:\s*"
                       r"([A-Za-z]{1,6}(?:[.\-][A-Za-z]{1,2})?)\b", re.I)
_BARE = re.compile(r"\b([A-Z]{2,6})\b")
_WORD = re.compile(r"[a-z0-9]+")
# legal-form suffixes dropped from names so "Acme Corp." matches "Acme"
_SUFFIXES = {"inc", "incorporated", "corp", "corporation", "co", "company", "ltd", "limited", "plc", "ag", "sa",
             "nv", "oyj", "oy", "ab", "asa", "se", "spa", "llc", "group", "holdings", "holding"}


def _tokens(text: str) -> list[str]:
    t = unicodedata.normalize("NFKD", text.casefold())
    t = "".join(ch for ch in t if not unicodedata.combining(ch))
    t = t.replace("&", " and ")
    return _WORD.findall(t)


def _name_tokens(name: str) -> tuple[str, ...]:
    toks = _tokens(name)
    while len(toks) > 1 and toks[-1] in _SUFFIXES:
        toks.pop()
    return tuple(toks)


@dataclass
class WatchEntry:
    """One watched company: ``ticker`` is the canonical entity key."""

    ticker: str
    name: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class EntityMatch:
    ticker: str
    surface: str
    how: str  # "cashtag" | "exchange" | "ticker" | "name"


class Watchlist:
    """User-editable watchlist (CSV columns ``ticker,name,aliases``; aliases separated by ``|`` or ``;``).

    Every mention form links to the one entity keyed by the ticker: the name, each alias, the
    cashtag and the ticker itself ("Apple Inc.", "Apple", "Apple's", "$AAPL", "AAPL" -> AAPL).
    Matching is case-, accent- and punctuation-insensitive for names/aliases ("Nokia's", "NOKIA
    Oyj", "nokia" all hit), and legal-form suffixes are optional on both sides ("Apple Corp." and
    "Apple Inc" match the name "Apple Inc."). Names are compared as word sequences, never as regular
    expressions, so "AT&T", "C3.ai", "S&P 500", "Yahoo!" or "(Foo)" match literally. Cashtags
    (``$NOK``) and exchange tickers (``NYSE:NOK``) match exactly. Bare upper-case tickers (``NOK
    shares``) match only when ``bare_tickers`` is on and the ticker has 3+ letters, to avoid words
    like "IT" or "A".

    A name or alias that two rows share is refused when the list is built or loaded (one line naming
    both rows): attributing its mentions to either company would be a guess.
    """

    def __init__(self, entries: list[WatchEntry] | None = None, *, bare_tickers: bool = True) -> None:
        self.entries: list[WatchEntry] = []
        self.bare_tickers = bare_tickers
        self._by_ticker: dict[str, WatchEntry] = {}
        self._phrases: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for e in entries or []:
            self.add(e)

    # -- editing ---------------------------------------------------------------------
    def add(self, entry: WatchEntry) -> None:
        ticker = entry.ticker.strip().upper().lstrip("$")
        if not ticker or not re.fullmatch(r"[A-Z0-9]{1,6}(?:[.\-][A-Z0-9]{1,2})?", ticker):
            raise DataError(f"invalid ticker {entry.ticker!r}: use 1-6 letters/digits such as AAPL or BRK.B")
        if ticker in self._by_ticker:
            raise DataError(f"duplicate ticker {ticker} in watchlist")
        name = entry.name.strip()
        if not name:
            raise DataError(f"ticker {ticker} has an empty name")
        entry = WatchEntry(ticker, name, [a.strip() for a in entry.aliases if a.strip()])
        # names are matched as word sequences, never as regular expressions, so "S&P (US)*" is
        # literal text; a phrase with no letters or digits could never match and is refused
        phrases: list[tuple[str, ...]] = []
        for phrase in [name, *entry.aliases]:
            toks = _name_tokens(phrase)
            if not toks:
                raise DataError(f"{ticker}: name/alias {phrase!r} has no letters or digits to match")
            owner = next((t for p, t in self._phrases.get(toks[0], ()) if p == toks), None)
            if owner is not None and owner != ticker:
                # one phrase naming two companies would credit every mention to whichever row came first
                raise DataError(f"{ticker}: name/alias {phrase!r} already names {owner}; an alias must identify one "
                                f"company (remove it from one of the two rows)")
            if toks not in phrases:
                phrases.append(toks)
        self.entries.append(entry)
        self._by_ticker[ticker] = entry
        for toks in phrases:
            self._phrases.setdefault(toks[0], []).append((toks, ticker))
        for first in self._phrases:
            self._phrases[first].sort(key=lambda p: -len(p[0]))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, ticker: str) -> bool:
        return ticker.upper() in self._by_ticker

    def get(self, ticker: str) -> WatchEntry | None:
        return self._by_ticker.get(ticker.upper())

    @property
    def tickers(self) -> list[str]:
        return [e.ticker for e in self.entries]

    # -- IO --------------------------------------------------------------------------
    @classmethod
    def from_csv_text(cls, text: str, *, origin: str = "watchlist", bare_tickers: bool = True) -> "Watchlist":
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            raise DataError(f"{origin} has no rows (expected columns ticker,name,aliases)")
        cols = {c.strip().lower() for c in (rows[0].keys() if rows else []) if c}
        for need in ("ticker", "name"):
            if need not in cols:
                raise DataError(f"{origin} has no column {need!r}; columns are {sorted(cols)}")
        entries = []
        for i, row in enumerate(rows, start=2):
            row = {(k or "").strip().lower(): (v or "") for k, v in row.items()}
            if not row.get("ticker", "").strip() and not row.get("name", "").strip():
                continue
            aliases = re.split(r"[|;]", row.get("aliases", "") or "")
            entries.append(WatchEntry(row.get("ticker", ""), row.get("name", ""), aliases))
        try:
            return cls(entries, bare_tickers=bare_tickers)
        except DataError as exc:
            raise DataError(f"{origin}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path, *, bare_tickers: bool = True) -> "Watchlist":
        """Read a watchlist CSV; raises :class:`DataError` with the reason on bad input."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"watchlist not found: {path}")
        text, lossy = decode_bytes(path.read_bytes())
        if lossy:
            raise DataError(f"watchlist {path} is not UTF-8; re-save it as UTF-8")
        return cls.from_csv_text(text, origin=str(path), bare_tickers=bare_tickers)

    def to_csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["ticker", "name", "aliases"])
        for e in self.entries:
            w.writerow([e.ticker, e.name, "|".join(e.aliases)])
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_csv_text())

    # -- matching --------------------------------------------------------------------
    def match(self, text: str) -> list[EntityMatch]:
        """All watched companies mentioned in ``text`` (one match per ticker, first occurrence)."""
        found: dict[str, EntityMatch] = {}
        for m in _CASHTAG.finditer(text):
            t = m.group(1).upper()
            if t in self._by_ticker:
                found.setdefault(t, EntityMatch(t, m.group(0), "cashtag"))
        for m in _EXCHANGE.finditer(text):
            t = m.group(1).upper()
            if t in self._by_ticker:
                found.setdefault(t, EntityMatch(t, m.group(0), "exchange"))
        if self.bare_tickers:
            for m in _BARE.finditer(text):
                t = m.group(1)
                if len(t) >= 3 and t in self._by_ticker:
                    found.setdefault(t, EntityMatch(t, m.group(0), "ticker"))
        toks = _tokens(text)
        i = 0
        while i < len(toks):
            hit = None
            for phrase, ticker in self._phrases.get(toks[i], ()):
                if tuple(toks[i:i + len(phrase)]) == phrase:
                    hit = (phrase, ticker)
                    break
            if hit:
                found.setdefault(hit[1], EntityMatch(hit[1], " ".join(hit[0]), "name"))
                i += len(hit[0])
            else:
                i += 1
        return list(found.values())

    def tickers_in(self, text: str) -> list[str]:
        return [m.ticker for m in self.match(text)]

    def lookup(self, name: str) -> str | None:
        """The ticker that ``name`` denotes as a whole (a ticker, cashtag, name or alias, with or without
        a legal-form suffix or possessive), else ``None``. Links a discovered organisation mention
        ("Apple Inc", "AAPL") to its watchlist entry."""
        bare = name.strip().lstrip("$").strip()
        if bare.upper() in self._by_ticker and bare.isupper():
            return bare.upper()
        toks = list(_name_tokens(bare))
        if len(toks) > 1 and toks[-1] == "s" and not any(p == tuple(toks) for p, _ in self._phrases.get(toks[0], ())):
            toks.pop()  # "Apple's" -> "apple"
        while len(toks) > 1 and toks[-1] in _SUFFIXES:
            toks.pop()
        key = tuple(toks)
        return next((t for p, t in self._phrases.get(key[0], ()) if p == key), None) if key else None


DISCOVERED_PREFIX = "org:"


def discovered_key(name: str) -> str | None:
    """Entity key of an organisation found by the NER model but not on the watchlist: ``org:`` plus its
    normalised words without legal-form suffix ("Acme Widgets Ltd." -> ``org:acme widgets``), so spellings
    of one name share one trend; ``None`` when the text has no letters or digits."""
    toks = _name_tokens(name)
    if toks and toks[-1] == "s" and len(toks) > 1:
        toks = _name_tokens(" ".join(toks[:-1]))  # possessive
    return DISCOVERED_PREFIX + " ".join(toks) if toks else None


def entity_kind(key: str) -> str:
    """``"discovered"`` for keys from :func:`discovered_key`, else ``"watchlist"``."""
    return "discovered" if key.startswith(DISCOVERED_PREFIX) else "watchlist"


@runtime_checkable
class TokenTagger(Protocol):
    """What :class:`EntityExtractor` needs from a NER model: ``verticore.TokenClassifier.predict`` (a
    list of texts -> per text, spans with ``text``, ``type`` and ``score``)."""

    def predict(self, texts: Sequence[str]) -> Any: ...


@dataclass
class FoundEntity:
    """One organisation the extractor found: ``key`` is a watchlist ticker or a :func:`discovered_key`."""

    key: str
    text: str
    kind: str  # "watchlist" (linked by name/alias/ticker) | "discovered"
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "text": self.text, "kind": self.kind, "score": round(self.score, 4)}


class EntityExtractor:
    """Organisation mentions from a token classifier, as entities.

    Each span of an entity type in ``types`` with a score of at least ``min_score`` becomes an entity:
    the watchlist ticker when its text is a watchlist name, alias or ticker (:meth:`Watchlist.lookup`),
    otherwise a ``discovered`` entity keyed by :func:`discovered_key`. Only the first ``max_chars`` of a
    text are tagged, so a 1 MB article costs no more than a long one. ``tagger`` is a
    ``verticore.TokenClassifier`` or anything with its ``predict`` (tests pass a fake).
    """

    def __init__(self, tagger: TokenTagger, watchlist: Watchlist, *, types: Sequence[str] = ("ORG",),
                 min_score: float = 0.5, max_chars: int = 20_000) -> None:
        self.tagger = tagger
        self.watchlist = watchlist
        self.types = {t.upper() for t in types}
        self.min_score = float(min_score)
        self.max_chars = int(max_chars)

    def extract(self, texts: Sequence[str]) -> list[list[FoundEntity]]:
        """Per text, its organisations (one per key, first occurrence first)."""
        if not texts:
            return []
        spans = self.tagger.predict([t[:self.max_chars] for t in texts])
        out: list[list[FoundEntity]] = []
        for row in spans:
            found: dict[str, FoundEntity] = {}
            for sp in row:
                kind_of_span = str(_attr(sp, "type")).upper()
                score = float(_attr(sp, "score", 1.0))
                text = str(_attr(sp, "text")).strip()
                if kind_of_span not in self.types or score < self.min_score or not text:
                    continue
                ticker = self.watchlist.lookup(text)
                if ticker is not None:
                    found.setdefault(ticker, FoundEntity(ticker, text, "watchlist", score))
                elif (key := discovered_key(text)) is not None:
                    found.setdefault(key, FoundEntity(key, text, "discovered", score))
            out.append(list(found.values()))
        if len(out) != len(texts):
            raise DataError(f"entity tagger returned {len(out)} results for {len(texts)} texts")
        return out


def _attr(span: Any, name: str, default: Any = "") -> Any:
    """A span's field, whether the tagger returns objects (``Entity``) or mappings."""
    return span.get(name, default) if isinstance(span, Mapping) else getattr(span, name, default)
