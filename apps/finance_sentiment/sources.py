"""News sources: RSS/Atom feeds, a watched file or folder (JSONL/CSV), replay of a timestamped
dataset at N x speed, and (in :mod:`finance_sentiment.server`) an HTTP ``POST /news`` endpoint.

Each source yields raw records (dicts); the monitor validates them, so one bad record is logged
and skipped while the rest of the batch goes through.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from verticore.errors import DataError
from verticore.netguard import MAX_REDIRECTS, NetError, guarded_request
from verticore.text import html_to_text

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
        rec["body"] = html_to_text(body)
        ts = e.get("published_parsed") or e.get("updated_parsed")
        if ts:
            rec["published_at"] = parse_timestamp(ts)
        out.append(rec)
    return out


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


@dataclass
class FileBatch:
    """Records read from one file, and that file's read position just after them.

    Pass the batch to :meth:`FolderSource.commit` *inside the transaction that stores its records*
    (``Monitor.process(..., on_commit=...)`` does): then a crash loses nothing and repeats nothing.
    ``entry`` is ``None`` for a batch that must not move the position (all but the last batch of a CSV).
    """

    path: str
    records: list[dict[str, Any]]
    entry: dict[str, Any] | None


HEAD_BYTES = 4096
READ_BLOCK = 1 << 20


class FolderSource:
    """Watch a JSONL/CSV file or a folder of them and read what is new.

    Progress (per file: byte offset, inode, a hash of the first bytes) is kept in the store (``kv``)
    and only moves when the caller commits a batch together with its stored records, so a restart
    neither re-reads nor skips anything. JSONL is read line by line from the committed offset; a
    last line without its newline is taken only once it is a complete JSON object (a writer still
    appending is waited for). A file that shrank below the offset, got a new inode or different
    first bytes (rotated, truncated, replaced) is read again from the start; re-read items are
    skipped by their ids. A CSV is read whole once it has stopped growing: the same size on two
    polls, or unmodified for ``settle_s`` seconds (so one-shot ``ingest`` reads it too).
    """

    def __init__(self, path: str | Path, store: NewsStore, *, patterns: tuple[str, ...] = ("*.jsonl", "*.ndjson", "*.csv"),
                 settle_s: float = 2.0) -> None:
        self.path = Path(path)
        self.store = store
        self.patterns = patterns
        self.settle_s = float(settle_s)
        self._key = f"folder_source:{self.path.resolve()}"
        self._sizes: dict[str, int] = {}
        self._pending: list[FileBatch] = []

    def _files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.exists():
            raise DataError(f"watched path does not exist: {self.path}")
        files: set[Path] = set()
        for p in self.patterns:
            files.update(self.path.glob(p))
        out = []
        for f in files:
            try:
                out.append((f.stat().st_mtime, f.name, f))
            except FileNotFoundError:  # removed (rotated away) while listing
                continue
        return [f for _, _, f in sorted(out)]

    def _state(self) -> dict[str, Any]:
        return self.store.kv_get(self._key) or {}

    @staticmethod
    def _entry(raw: Any) -> dict[str, Any]:
        # databases written before per-file entries kept a bare offset
        return {"offset": int(raw)} if isinstance(raw, (int, float)) else dict(raw or {})

    def _start_offset(self, f: Path, entry: dict[str, Any], st: os.stat_result) -> int:
        """The committed offset, or 0 when the file is no longer the one it refers to."""
        offset = int(entry.get("offset", 0))
        if not offset:
            return 0
        why = None
        if st.st_size < offset:
            why = "shrank below the read position (truncated)"
        elif entry.get("ino") is not None and entry["ino"] != st.st_ino:
            why = "is a new file (rotated or replaced)"
        elif entry.get("head") and _head_hash(f, int(entry.get("head_len", 0))) != entry["head"]:
            why = "starts differently than before (replaced)"
        if why:
            log.warning("%s %s; reading it again from the start", f, why)
            return 0
        return offset

    def batches(self, batch_size: int = 64) -> Iterator[FileBatch]:
        """New records of every file, at most ``batch_size`` per batch. Nothing is marked as read
        until the batch is passed to :meth:`commit`."""
        state = self._state()
        single = self.path.is_file()
        for f in self._files():
            name = str(f.resolve())
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            entry = self._entry(state.get(name))
            if f.suffix.lower() in (".jsonl", ".ndjson"):
                yield from self._jsonl(f, name, self._start_offset(f, entry, st), st, batch_size)
                continue
            # CSV: read whole, once it is complete; again only if it changed
            if entry and entry.get("offset") == st.st_size and entry.get("mtime_ns") in (None, st.st_mtime_ns) \
                    and entry.get("ino") in (None, st.st_ino):
                continue
            settled = self._sizes.get(name) == st.st_size or time.time() - st.st_mtime >= self.settle_s
            if not single and not settled:
                self._sizes[name] = st.st_size  # still being written: wait
                continue
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                continue
            recs = list(read_records(data, f.name))
            for r in recs:
                r.setdefault("source", f"file:{f.name}")
            done = {"offset": len(data), "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}
            chunks = [recs[i:i + batch_size] for i in range(0, len(recs), batch_size)] or [[]]
            for i, chunk in enumerate(chunks):
                yield FileBatch(name, chunk, done if i == len(chunks) - 1 else None)

    def _jsonl(self, f: Path, name: str, offset: int, st: os.stat_result, batch_size: int) -> Iterator[FileBatch]:
        if st.st_size <= offset:
            return
        try:
            fh = open(f, "rb")
        except FileNotFoundError:
            return
        with fh:
            head = fh.read(HEAD_BYTES)
            fh.seek(offset)
            cursor = offset  # file offset just past the last consumed line
            lineno = 0
            lossy = False
            recs: list[dict[str, Any]] = []
            tail = b""

            def batch() -> FileBatch:
                n = min(cursor, len(head))
                return FileBatch(name, recs, {"offset": cursor, "ino": st.st_ino, "head_len": n,
                                              "head": hashlib.sha1(head[:n]).hexdigest()})

            while True:
                block = fh.read(READ_BLOCK)
                if not block:
                    break
                lines = (tail + block).split(b"\n")
                tail = lines.pop()  # no newline yet
                for raw in lines:
                    cursor += len(raw) + 1
                    lineno += 1
                    rec, bad = _jsonl_record(raw, f.name, lineno)
                    lossy |= bad
                    if rec is not None:
                        rec.setdefault("source", f"file:{f.name}")
                        recs.append(rec)
                        if len(recs) >= batch_size:
                            yield batch()
                            recs = []
            if tail.strip():
                # an unterminated last line counts only once it is a whole JSON object (a complete
                # object cannot be the prefix of a longer valid line, so nothing is cut short)
                rec = _complete_object(tail)
                if rec is not None:
                    cursor += len(tail)
                    rec.setdefault("source", f"file:{f.name}")
                    recs.append(rec)
            if lossy:
                log.warning("%s is not valid UTF-8; decoded as Windows-1252", f.name)
            if recs or cursor != offset:
                yield batch()

    def commit(self, batch: FileBatch) -> None:
        """Mark ``batch`` as read (call inside the transaction that stored its records)."""
        if batch.entry is None:
            return
        with self.store.transaction():
            state = self._state()
            state[batch.path] = batch.entry
            self.store.kv_set(self._key, state)

    def poll(self, batch_size: int = 1_000_000) -> list[dict[str, Any]]:
        """All new records. Nothing is marked as read until :meth:`ack` (call it once they are stored)."""
        self._pending = list(self.batches(batch_size))
        return [r for b in self._pending for r in b.records]

    def ack(self) -> None:
        """Mark what the last :meth:`poll` returned as read."""
        with self.store.transaction():
            for b in self._pending:
                self.commit(b)
        self._pending = []


def _head_hash(f: Path, n: int) -> str:
    try:
        with open(f, "rb") as fh:
            return hashlib.sha1(fh.read(n)).hexdigest()
    except FileNotFoundError:
        return ""


def _jsonl_record(raw: bytes, name: str, lineno: int) -> tuple[dict[str, Any] | None, bool]:
    """One JSONL line as a record (``None`` for a blank or bad line, logged) and whether it was not UTF-8."""
    text, lossy = decode_bytes(raw)
    if not text.strip():
        return None, lossy
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        log.warning("%s line %d is not valid JSON (%s); skipped", name, lineno, exc.msg)
        return None, lossy
    if not isinstance(rec, dict):
        log.warning("%s line %d is not a JSON object; skipped", name, lineno)
        return None, lossy
    return rec, lossy


def _complete_object(raw: bytes) -> dict[str, Any] | None:
    text, _ = decode_bytes(raw)
    try:
        rec = json.loads(text)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


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
