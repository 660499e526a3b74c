"""News sources: RSS/Atom feeds, a watched file or folder (JSONL/CSV), replay of a timestamped
dataset at N x speed, and (in :mod:`finance_sentiment.server`) an HTTP ``POST /news`` endpoint.

Each source yields raw records (dicts); the monitor validates them, so one bad record is logged
and skipped while the rest of the batch goes through.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from verticore.errors import DataError
from verticore.netguard import MAX_REDIRECTS, NetError, guarded_request

from .items import parse_timestamp
from .store import NewsStore
from .text import decode_bytes

log = logging.getLogger("finance_sentiment.sources")
MAX_FEED_BYTES = 20 * 1024 * 1024
# a scheme ("x:") or a scheme-relative "//host": URL-like, so never read as a local path
_URL_LIKE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*:|[/\\]{2})")


# -- RSS / Atom ---------------------------------------------------------------------------
def parse_feed(data: bytes | str, source: str) -> list[dict[str, Any]]:
    """Entries of an RSS/Atom document as raw records. Malformed XML: entries feedparser could
    recover are kept (with a warning); a document with none raises :class:`DataError`."""
    import feedparser

    parsed = feedparser.parse(data)
    if parsed.get("bozo") and not parsed.entries:
        exc = parsed.get("bozo_exception")
        raise DataError(f"feed {source} is not valid RSS/Atom: {str(exc).splitlines()[0] if exc else 'unparseable'}")
    if parsed.get("bozo"):
        log.warning("feed %s is malformed (%s); kept %d recoverable entries", source,
                    str(parsed.get("bozo_exception")).splitlines()[0][:120], len(parsed.entries))
    feed_title = (parsed.feed or {}).get("title") or source
    out = []
    for e in parsed.entries:
        rec: dict[str, Any] = {"id": e.get("id") or e.get("guid") or e.get("link"), "title": e.get("title"),
                               "url": e.get("link"), "source": feed_title}
        body = e.get("summary") or ""
        if e.get("content"):
            body = " ".join(c.get("value", "") for c in e["content"]) or body
        rec["body"] = _strip_html(body)
        ts = e.get("published_parsed") or e.get("updated_parsed")
        if ts:
            rec["published_at"] = parse_timestamp(ts)
        out.append(rec)
    return out


def _strip_html(html: str) -> str:
    import re
    from html import unescape

    return unescape(re.sub(r"<[^>]+>", " ", html or ""))


def fetch_feed(url: str | Path, *, timeout_s: float = 10.0, allow: Any = None) -> list[dict[str, Any]]:
    """Download and parse one feed: an ``http(s)://`` URL (any case), or a local file given as a
    :class:`~pathlib.Path` or as a plain path string without a scheme.

    URLs must reach public addresses (``allow`` and ``$VERTICORE_WEBHOOK_ALLOW`` can permit private
    ones); redirects are followed by hand, at most 5, each hop re-checked, and the connection goes
    to the checked address. Other schemes (``file:``, ``ftp:``, ``gopher:``) and scheme-relative
    ``//host`` are refused rather than read as paths. ``timeout_s`` is one overall deadline for the
    whole download. Every failure raises :class:`DataError`.
    """
    if isinstance(url, Path) or (isinstance(url, str) and not _URL_LIKE.match(url)):
        path = Path(url)
        if not path.is_file():
            raise DataError(f"feed file not found: {path}")
        return parse_feed(path.read_bytes(), str(path))
    try:
        resp = guarded_request("GET", url, allow=allow, deadline_s=timeout_s, max_bytes=MAX_FEED_BYTES,
                               max_redirects=MAX_REDIRECTS, what="feed URL",
                               headers={"User-Agent": "verticore-finance-sentiment/0.1"})
    except NetError as exc:
        if exc.timeout:
            raise DataError(f"feed {url} did not finish within {timeout_s:g}s (timed out); skipped") from None
        raise DataError(f"feed {url} could not be fetched: {exc}") from None
    except DataError as exc:
        raise DataError(f"feed {url} refused: {exc}") from None
    if resp.status >= 400:
        raise DataError(f"feed {url} answered HTTP {resp.status}")
    if resp.status >= 300:
        raise DataError(f"feed {url} answered HTTP {resp.status} without a usable redirect")
    return parse_feed(resp.body, url)


def poll_feeds(urls: Iterable[str | Path], *, timeout_s: float = 10.0, allow: Any = None) -> Iterator[tuple[str | Path, list[dict[str, Any]]]]:
    """Fetch each feed in turn; a failing or refused feed is logged and skipped, the others still come through."""
    for url in urls:
        try:
            yield url, fetch_feed(url, timeout_s=timeout_s, allow=allow)
        except DataError as exc:
            log.error("%s", exc)
            yield url, []


# -- files -------------------------------------------------------------------------------
def read_records(data: bytes, name: str) -> Iterator[dict[str, Any]]:
    """Records of a JSONL or CSV file. Non-UTF-8 bytes are decoded as cp1252 with a warning; a
    malformed JSONL line is logged with its line number and skipped."""
    text, lossy = decode_bytes(data)
    if lossy:
        log.warning("%s is not valid UTF-8; decoded as Windows-1252", name)
    if name.lower().endswith(".csv"):
        for row in csv.DictReader(io.StringIO(text)):
            yield {k: v for k, v in row.items() if k}
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            log.warning("%s line %d is not valid JSON (%s); skipped", name, n, exc.msg)
            continue
        if not isinstance(rec, dict):
            log.warning("%s line %d is not a JSON object; skipped", name, n)
            continue
        yield rec


class FolderSource:
    """Watch a JSONL/CSV file or a folder of them; each :meth:`poll` returns the new records.

    Progress is kept in the store (``kv``), so a restart neither re-reads nor skips anything:
    appended JSONL lines are read from the last complete-line offset; a new file in the folder
    is read once it has stopped growing (same size on two polls).
    """

    def __init__(self, path: str | Path, store: NewsStore, *, patterns: tuple[str, ...] = ("*.jsonl", "*.ndjson", "*.csv")) -> None:
        self.path = Path(path)
        self.store = store
        self.patterns = patterns
        self._key = f"folder_source:{self.path.resolve()}"
        self._sizes: dict[str, int] = {}

    def _files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.exists():
            raise DataError(f"watched path does not exist: {self.path}")
        files: set[Path] = set()
        for p in self.patterns:
            files.update(self.path.glob(p))
        return sorted(files, key=lambda f: (f.stat().st_mtime, f.name))

    def poll(self) -> list[dict[str, Any]]:
        state: dict[str, int] = self.store.kv_get(self._key) or {}
        out: list[dict[str, Any]] = []
        for f in self._files():
            name = str(f.resolve())
            size = f.stat().st_size
            done = int(state.get(name, 0))
            if size <= done:
                continue
            is_jsonl = f.suffix.lower() in (".jsonl", ".ndjson")
            if not is_jsonl and self._sizes.get(name) != size and not self.path.is_file():
                self._sizes[name] = size  # still being written: wait for one more poll
                continue
            with open(f, "rb") as fh:
                fh.seek(done if is_jsonl else 0)
                data = fh.read(size - (done if is_jsonl else 0))
            if is_jsonl:
                cut = data.rfind(b"\n") + 1  # only complete lines
                if cut == 0:
                    continue
                data = data[:cut]
                state[name] = done + cut
            else:
                state[name] = size
            recs = list(read_records(data, f.name))
            for r in recs:
                r.setdefault("source", f"file:{f.name}")
            out.extend(recs)
        self.store.kv_set(self._key, state)
        return out


# -- replay ------------------------------------------------------------------------------
class ReplaySource:
    """Play timestamped records in order at ``speed`` x real time (``speed=0`` = as fast as possible).

    Records need a ``published_at`` (or ``timestamp``); :meth:`batches` groups them into batches
    of at most ``batch_size`` records or ``batch_seconds`` of *stream* time, sleeping between
    batches so that stream time advances ``speed`` times faster than the wall clock.
    """

    def __init__(self, records: Iterable[dict[str, Any]], speed: float = 60.0, *,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        recs = []
        for r in records:
            ts = r.get("published_at", r.get("timestamp"))
            if ts is None:
                raise DataError(f"replay record {str(r.get('title', ''))[:60]!r} has no published_at/timestamp")
            recs.append((parse_timestamp(ts), r))
        recs.sort(key=lambda x: x[0])
        self.records = recs
        self.speed = float(speed)
        self.sleep = sleep
        self.clock = clock

    @classmethod
    def from_file(cls, path: str | Path, speed: float = 60.0, **kwargs: Any) -> "ReplaySource":
        path = Path(path)
        if not path.exists():
            raise DataError(f"replay file not found: {path}")
        return cls(list(read_records(path.read_bytes(), path.name)), speed, **kwargs)

    def __len__(self) -> int:
        return len(self.records)

    def batches(self, batch_size: int = 64, batch_seconds: float = 300.0) -> Iterator[list[dict[str, Any]]]:
        if not self.records:
            return
        t0_stream = self.records[0][0]
        t0_wall = self.clock()
        batch: list[dict[str, Any]] = []
        batch_start = t0_stream
        for ts, rec in self.records:
            if batch and (len(batch) >= batch_size or ts - batch_start > batch_seconds):
                yield batch
                batch = []
            if not batch:
                batch_start = ts
                if self.speed > 0:
                    due = t0_wall + (ts - t0_stream) / self.speed
                    delay = due - self.clock()
                    if delay > 0:
                        self.sleep(delay)
            batch.append({**rec, "published_at": ts})
        if batch:
            yield batch


def ensure_dir(path: Path) -> Path:
    os.makedirs(path, exist_ok=True)
    return path
