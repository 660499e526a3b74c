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
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import httpx

from verticore.errors import DataError

from .items import parse_timestamp
from .store import NewsStore
from .text import decode_bytes

log = logging.getLogger("finance_sentiment.sources")
MAX_FEED_BYTES = 20 * 1024 * 1024


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


def fetch_feed(url: str, *, timeout_s: float = 10.0, client: httpx.Client | None = None) -> list[dict[str, Any]]:
    """Download and parse one feed (``http(s)://`` or a local path / ``file://``).

    A hanging server hits ``timeout_s`` (connect, read and overall) and raises :class:`DataError`;
    so do HTTP errors, oversized responses and malformed XML.
    """
    if url.startswith("file://") or not url.startswith(("http://", "https://")):
        path = Path(url[7:] if url.startswith("file://") else url)
        if not path.exists():
            raise DataError(f"feed file not found: {path}")
        return parse_feed(path.read_bytes(), str(path))
    own = client is None
    client = client or httpx.Client(follow_redirects=True)
    deadline = time.monotonic() + timeout_s
    try:
        with client.stream("GET", url, timeout=httpx.Timeout(timeout_s), headers={"User-Agent": "verticore-finance-sentiment/0.1"}) as resp:
            if resp.status_code >= 400:
                raise DataError(f"feed {url} answered HTTP {resp.status_code}")
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > MAX_FEED_BYTES:
                    raise DataError(f"feed {url} is larger than {MAX_FEED_BYTES // 2**20} MiB; skipped")
                if time.monotonic() > deadline:
                    raise DataError(f"feed {url} did not finish within {timeout_s:g}s; skipped")
    except httpx.TimeoutException:
        raise DataError(f"feed {url} timed out after {timeout_s:g}s; skipped") from None
    except httpx.HTTPError as exc:
        raise DataError(f"feed {url} could not be fetched: {type(exc).__name__}: {exc}") from None
    finally:
        if own:
            client.close()
    return parse_feed(bytes(buf), url)


def poll_feeds(urls: Iterable[str], *, timeout_s: float = 10.0) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Fetch each feed in turn; a failing feed is logged and skipped, the others still come through."""
    for url in urls:
        try:
            yield url, fetch_feed(url, timeout_s=timeout_s)
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
