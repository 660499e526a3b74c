"""Text and table helpers shared by the core and the apps (one copy of each).

* :func:`split_sentences`: rule-based sentence splitter (abbreviations and decimals kept intact).
* :func:`html_to_markdown` / :func:`html_to_text`: HTML to readable text (scripts, styles and
  navigation dropped; headings and list items kept as Markdown, or plain for the latter).
* :func:`read_table`: CSV/TSV/JSON/JSONL/Parquet with one-line errors (missing file, not UTF-8,
  empty, missing column); ``allow_empty=True`` for optional inputs.
* :func:`minmax_normalise`: scale scores to [0, 1]; an all-equal input maps to all zeros.
* :func:`utc_now` / :func:`utc_iso`: timezone-aware UTC time and its ISO 8601 text.

Not to be confused with :mod:`verticore.text_safety` (prompt-injection / unsafe-text checks).
"""
from __future__ import annotations

import io as _io
import os
import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import DataError

# -- sentences ---------------------------------------------------------------------------------

_ABBREV = frozenset({"inc", "corp", "co", "ltd", "plc", "mr", "mrs", "ms", "dr", "st", "vs", "u.s", "e.g", "i.e",
                     "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "no",
                     "approx", "est", "etc", "fig", "jr", "sr", "prof"})
# end punctuation, optional closing quotes/brackets (kept with the sentence), blanks, then a
# sentence-like start: a capital, a digit or a currency sign, maybe after an opening quote
_SENT_END = re.compile(r"(?<=[.!?])([\"')\]\u201d\u2019]*)\s+(?=[\"'(\[\u201c\u2018]?[A-Z0-9$\u00a3\u20ac])")
_BLANKS = re.compile(r"\s+")
_LIST_MARKER = re.compile(r"\d{1,3}\.")  # "1." opening a numbered list item


def _split_prose(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        candidate = text[start:m.end(1)].strip()
        body = candidate.rstrip("\"')]\u201d\u2019")
        last_word = body.rsplit(" ", 1)[-1].rstrip(".").lower() if body else ""
        if last_word in _ABBREV or (len(last_word) == 1 and last_word.isalpha()) or _LIST_MARKER.fullmatch(body):
            continue  # "Acme Inc. said", "J. Smith", "2. Tap": not a sentence end
        if candidate:
            out.append(candidate)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def split_sentences(text: str, max_sentences: int | None = None, *, line_breaks: bool = False) -> list[str]:
    """Split ``text`` into sentences (rule-based; ``5.2``, ``Inc.``, ``Mr.``, ``J.`` do not end one).

    Whitespace inside a sentence is collapsed. ``line_breaks=True`` also ends a sentence at every
    line break (FAQ answers, lists, Markdown), otherwise lines are joined as prose.
    ``max_sentences`` keeps only the first ones.
    """
    if not text:
        return []
    blocks = str(text).splitlines() if line_breaks else [str(text)]
    out: list[str] = []
    for block in blocks:
        block = _BLANKS.sub(" ", block).strip()
        if block:
            out.extend(_split_prose(block))
    return out[:max_sentences] if max_sentences is not None else out


# -- HTML --------------------------------------------------------------------------------------

_HEADING = re.compile(r"h[1-6]")


class _HTMLToText(HTMLParser):
    """HTML -> text; with ``markdown`` headings become ``#`` and list items ``- ``."""

    _SKIP = frozenset({"script", "style", "noscript", "nav", "footer", "header", "svg", "template"})
    _BLOCK = frozenset({"p", "div", "li", "tr", "br", "section", "article", "ul", "ol", "table", "dd", "dt",
                        "blockquote", "pre"})

    def __init__(self, markdown: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.markdown = markdown
        self.out: list[str] = []
        self.skip = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self.skip += 1
        elif tag == "title":
            self._in_title = True
        elif _HEADING.fullmatch(tag):
            self.out.append("\n\n" + ("#" * min(int(tag[1]), 3) + " " if self.markdown else ""))
        elif tag in self._BLOCK:
            self.out.append("\n")
            if tag == "li" and self.markdown:
                self.out.append("- ")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "title":
            self._in_title = False
        elif _HEADING.fullmatch(tag) or tag in self._BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self.skip:
            self.out.append(re.sub(r"[ \t\r\f\v]+", " ", data))

    def text(self) -> str:
        text = re.sub(r"[ \t]+\n", "\n", "".join(self.out))
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def _parse_html(html: str, markdown: bool) -> _HTMLToText:
    parser = _HTMLToText(markdown)
    parser.feed(html or "")
    parser.close()
    return parser


def html_to_markdown(html: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML page: ``<title>``, and the body as Markdown-ish text (headings
    as ``#``, list items as ``- ``, paragraphs on their own lines; scripts, styles, nav dropped)."""
    parser = _parse_html(html, markdown=True)
    return parser.title.strip(), parser.text()


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment (feed summaries): tags and entities resolved, blocks on their
    own lines, scripts/styles/nav dropped, no Markdown markers added."""
    return _parse_html(html, markdown=False).text()


# -- tables ------------------------------------------------------------------------------------

_JSON_LINES = {".jsonl", ".ndjson"}
_PARQUET = {".parquet", ".pq"}


def read_table(path: str | os.PathLike, required: Sequence[str] = (), *, allow_empty: bool = False) -> pd.DataFrame:
    """Read a CSV, TSV, JSON, JSONL or Parquet file with one-line :class:`DataError` messages.

    Refused: a missing file, a folder, and everything :func:`parse_table` refuses.
    ``allow_empty=True`` is for optional inputs (an empty file, or a header without rows, gives
    an empty frame).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if path.is_dir():
        raise DataError(f"expected a file, got a directory: {path}")
    return parse_table(path.read_bytes(), path, required, allow_empty=allow_empty)


def parse_table(data: bytes | str, name: str | os.PathLike, required: Sequence[str] = (), *,
                allow_empty: bool = False) -> pd.DataFrame:
    """Parse a table's bytes (or decoded text) by the suffix of ``name`` (an upload's file name, a path).

    Refused with a one-line :class:`DataError` naming ``name``: non-UTF-8 bytes (text formats), a
    table that does not parse, an empty one (unless ``allow_empty``), a missing ``required``
    column (the message lists the columns that exist). CSV/TSV cells are read as strings (no NaN
    guessing) and all-blank lines dropped; JSON and Parquet keep their types. With
    ``allow_empty`` an empty input gives an empty frame with the ``required`` columns.
    """
    path = Path(name)
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        if isinstance(data, str):
            raise DataError(f"{path} is parquet: pass its bytes, not text")
        df = _read_parquet(path, data, allow_empty)
        if df is None:
            return pd.DataFrame(columns=list(required))
    else:
        if isinstance(data, str):
            text = data.removeprefix("\ufeff")
        else:
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path} is not UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                                "re-save it as UTF-8") from None
        if not text.strip():
            if allow_empty:
                return pd.DataFrame(columns=list(required))
            raise DataError(f"{path} is empty")
        df = _read_text_table(path, suffix, text)
    if df.empty and not allow_empty:
        raise DataError(f"{path} has a header but no rows")
    missing = [c for c in required if c not in df.columns]
    if missing:
        if df.empty and len(df.columns) == 0:  # e.g. "[]" in a .json file: no header to check
            return pd.DataFrame(columns=list(required))
        raise DataError(f"{path} has no column {missing[0]!r}; columns are {list(map(str, df.columns))}")
    return df


def _read_text_table(path: Path, suffix: str, text: str) -> pd.DataFrame:
    try:
        if suffix in _JSON_LINES:
            df = pd.read_json(_io.StringIO(text), lines=True, dtype=False)
        elif suffix == ".json":
            df = pd.read_json(_io.StringIO(text), dtype=False)
        elif suffix in {".tsv", ".tab"}:
            df = pd.read_csv(_io.StringIO(text), sep="\t", dtype=str, keep_default_na=False, skip_blank_lines=False)
        else:
            df = pd.read_csv(_io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=False)
    except ValueError as exc:
        raise DataError(f"{path} could not be parsed as {suffix.lstrip('.') or 'csv'}: "
                        f"{(str(exc).splitlines() or ['unknown error'])[0]}") from None
    if suffix not in _JSON_LINES | {".json"} and len(df):
        # truly blank lines carry no data; whitespace-only fields are kept so they get flagged
        df = df[~(df == "").all(axis=1)].reset_index(drop=True)
    return df


def _read_parquet(path: Path, raw: bytes, allow_empty: bool) -> pd.DataFrame | None:
    if not raw:
        if allow_empty:
            return None
        raise DataError(f"{path} is empty")
    try:
        return pd.read_parquet(_io.BytesIO(raw))
    except ImportError as exc:
        raise DataError(f"reading {path} needs pyarrow ({exc})") from None
    except Exception as exc:  # pyarrow raises its own error types for a corrupt file
        raise DataError(f"{path} could not be parsed as parquet: "
                        f"{(str(exc).splitlines() or [type(exc).__name__])[0]}") from None


# -- scores ------------------------------------------------------------------------------------


def minmax_normalise(values: Iterable[float] | np.ndarray) -> np.ndarray:
    """Scale to [0, 1]: the smallest value becomes 0, the largest 1 (float64 array).

    An all-equal input (no spread, including a single value) becomes all 0.0, as in
    scikit-learn's ``MinMaxScaler``: equal scores say nothing about which item is better, and
    all-zero scores (e.g. BM25 with no query term matched) must not read as perfect matches.
    Adding a constant never changes a ranking, so fusion and MMR may use this one rule.
    """
    x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = float(np.min(x)), float(np.max(x))
    span = hi - lo
    if not span > 1e-12:  # also catches NaN spans
        return np.zeros_like(x)
    return (x - lo) / span


# -- time --------------------------------------------------------------------------------------


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC ``datetime`` (never local time)."""
    return datetime.now(timezone.utc)


def utc_iso(ts: float | datetime | None = None, *, timespec: str = "seconds") -> str:
    """ISO 8601 text in UTC (``2025-01-31T12:00:00+00:00``) of ``ts``: epoch seconds, a datetime
    (a naive one is taken as UTC) or ``None`` for now. The one timestamp format of saved state."""
    if ts is None:
        moment = utc_now()
    elif isinstance(ts, datetime):
        moment = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    else:
        moment = datetime.fromtimestamp(float(ts), tz=timezone.utc)
    return moment.isoformat(timespec=timespec)


__all__ = ["html_to_markdown", "html_to_text", "minmax_normalise", "parse_table", "read_table", "split_sentences",
           "utc_iso", "utc_now"]
