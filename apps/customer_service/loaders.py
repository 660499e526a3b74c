"""Document loaders: Markdown, plain text, HTML, CSV/JSONL FAQ and PDF into chunk records.

Every loader returns a :class:`ParsedDocument` whose chunks carry metadata (source, title,
section, updated-at). Text is split with LangChain text splitters: Markdown and HTML by
headings first (so a chunk knows its section), then recursively by size.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verticore.errors import DataError
from verticore.text import html_to_markdown, parse_table, utc_iso

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".csv", ".tsv", ".jsonl", ".ndjson", ".pdf"}
MAX_FILE_BYTES = 20 * 1024 * 1024
"""Default per-file size limit for ingestion (20 MiB); help articles are far smaller, and parsing a
huge upload would stall the bot's process."""


def _human(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"


def check_size(size: int, name: str, max_bytes: int | None) -> None:
    """Raise :class:`DataError` when a ``size``-byte file is over the ``max_bytes`` limit (None: no limit)."""
    if max_bytes is not None and size > max_bytes:
        raise DataError(f"{name} is too large ({_human(size)}; the per-file limit is {_human(max_bytes)}); "
                        "split it into smaller documents or raise the limit (`kb ingest --max-file-mb`)")


@dataclass
class ChunkRecord:
    """One retrievable passage before indexing.

    ``text`` is shown to the customer and searched by BM25; ``embed_text`` is what the dense
    index embeds (for an FAQ row: the question, which matches customer wording best).
    """

    text: str
    embed_text: str
    title: str
    section: str = ""
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedDocument:
    """A parsed source document and its chunks."""

    doc_id: str
    source: str
    title: str
    kind: str  # markdown | text | html | faq | pdf
    sha256: str
    updated_at: str
    chunks: list[ChunkRecord]
    meta: dict[str, Any] = field(default_factory=dict)


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{name} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); re-save it as UTF-8"
        ) from None


def _splitter(chunk_size: int, chunk_overlap: int):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                          separators=["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""])


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    import yaml

    try:
        data = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError:
        return {}, text
    if not isinstance(data, dict):
        return {}, text
    return {str(k): (v.isoformat() if isinstance(v, (_dt.date, _dt.datetime)) else v) for k, v in data.items()}, text[m.end():]


def split_markdown(text: str, default_title: str, chunk_size: int = 800, chunk_overlap: int = 120) -> tuple[str, list[ChunkRecord]]:
    """Split Markdown by headings (#, ##, ###) and then by size; returns (title, chunks)."""
    from langchain_text_splitters import MarkdownHeaderTextSplitter

    header_splitter = MarkdownHeaderTextSplitter(headers_to_split_on=[("#", "h1"), ("##", "h2"), ("###", "h3")],
                                                 strip_headers=True)
    sections = header_splitter.split_text(text)
    title = next((s.metadata["h1"] for s in sections if s.metadata.get("h1")), default_title)
    splitter = _splitter(chunk_size, chunk_overlap)
    chunks: list[ChunkRecord] = []
    for sec in sections:
        body = sec.page_content.strip()
        if not body:
            continue
        path = [sec.metadata[h] for h in ("h2", "h3") if sec.metadata.get(h)]
        section = " > ".join(path)
        heading = " - ".join([title] + path)
        for piece in splitter.split_text(body):
            piece = piece.strip()
            if piece:
                # the heading is embedded with the passage so a section's topic is searchable
                chunks.append(ChunkRecord(text=piece, embed_text=f"{heading}\n{piece}", title=title, section=section))
    return title, chunks


def _faq_chunks(path: Path, text: str) -> list[ChunkRecord]:
    # a header-only FAQ parses to no rows; parse_bytes then says the document has no text to index
    df = parse_table(text, path.name, allow_empty=True)
    cols = {str(c).strip().lower(): c for c in df.columns}
    q_col = cols.get("question") or cols.get("instruction") or cols.get("q")
    a_col = cols.get("answer") or cols.get("response") or cols.get("a")
    if q_col is None or a_col is None:
        raise DataError(f"{path.name} needs 'question' and 'answer' columns for an FAQ; columns are {list(map(str, df.columns))}")
    extra = [c for c in df.columns if c not in (q_col, a_col)]
    chunks: list[ChunkRecord] = []
    for _, row in df.iterrows():
        q, a = str(row[q_col] if row[q_col] is not None else "").strip(), str(row[a_col] if row[a_col] is not None else "").strip()
        if not q or not a or q == "nan" or a == "nan":
            continue
        meta = {str(c): (None if row[c] is None else str(row[c])) for c in extra}
        section = str(meta.get("category") or meta.get("section") or "FAQ")
        chunks.append(ChunkRecord(text=f"{q}\n{a}", embed_text=q, title=q, section=section, answer=a, meta=meta))
    return chunks


def _pdf_chunks(path: Path, raw: bytes, chunk_size: int, chunk_overlap: int) -> tuple[str, list[ChunkRecord]]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:  # pragma: no cover - dependency of the project
        raise DataError("PDF support needs pypdf: pip install pypdf") from None
    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [(i + 1, (p.extract_text() or "")) for i, p in enumerate(reader.pages)]
        info = reader.metadata
        title = str(info.title).strip() if info is not None and info.title else ""
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError, IndexError) as exc:
        raise DataError(f"{path.name} is not a readable PDF ({type(exc).__name__}: {str(exc)[:120]})") from None
    except Exception as exc:  # pypdf raises assorted errors on damaged files
        raise DataError(f"{path.name} is not a readable PDF ({type(exc).__name__})") from None
    title = title or path.stem.replace("_", " ").replace("-", " ")
    splitter = _splitter(chunk_size, chunk_overlap)
    chunks = []
    for page_no, page_text in pages:
        page_text = re.sub(r"[ \t]+", " ", page_text).strip()
        for piece in splitter.split_text(page_text):
            if piece.strip():
                chunks.append(ChunkRecord(text=piece.strip(), embed_text=f"{title}\n{piece.strip()}", title=title,
                                          section=f"page {page_no}"))
    if not chunks:
        raise DataError(f"{path.name} has no extractable text (scanned PDF?); add a text version")
    return title, chunks


def parse_bytes(raw: bytes, name: str, doc_id: str | None = None, *, chunk_size: int = 800, chunk_overlap: int = 120,
                updated_at: str | None = None, max_bytes: int | None = MAX_FILE_BYTES) -> ParsedDocument:
    """Parse a document's bytes according to its file name's suffix.

    Raises :class:`DataError` with one line for an unsupported type, a file over ``max_bytes``,
    non-UTF-8 text, a corrupt PDF, an FAQ without question/answer columns or a document with no text.
    """
    path = Path(name)
    check_size(len(raw), path.name, max_bytes)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path.name}: unsupported file type {suffix or '(none)'}; use one of {sorted(SUPPORTED_SUFFIXES)}")
    sha = hashlib.sha256(raw).hexdigest()
    default_title = path.stem.replace("_", " ").replace("-", " ").strip() or path.name
    meta: dict[str, Any] = {}
    if suffix == ".pdf":
        kind = "pdf"
        title, chunks = _pdf_chunks(path, raw, chunk_size, chunk_overlap)
    else:
        text = _decode(raw, path.name)
        if not text.strip():
            raise DataError(f"{path.name} is empty")
        if suffix in {".csv", ".tsv", ".jsonl", ".ndjson"}:
            kind, title = "faq", default_title
            chunks = _faq_chunks(path, text)
        elif suffix in {".html", ".htm"}:
            kind = "html"
            html_title, md = html_to_markdown(text)
            title, chunks = split_markdown(md, html_title or default_title, chunk_size, chunk_overlap)
            title = html_title or title
            for c in chunks:
                c.title = title
        elif suffix in {".md", ".markdown"}:
            kind = "markdown"
            meta, body = _front_matter(text)
            title, chunks = split_markdown(body, str(meta.get("title") or default_title), chunk_size, chunk_overlap)
            if meta.get("title"):
                title = str(meta["title"])
        else:
            kind = "text"
            lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
            title = lines[0][:80] if lines and len(lines[0]) <= 80 and len(lines) > 1 else default_title
            splitter = _splitter(chunk_size, chunk_overlap)
            chunks = [ChunkRecord(text=p.strip(), embed_text=f"{title}\n{p.strip()}", title=title)
                      for p in splitter.split_text(text) if p.strip()]
        if meta.get("updated") or meta.get("updated_at"):
            updated_at = str(meta.get("updated") or meta.get("updated_at"))
    if not chunks:
        raise DataError(f"{path.name} contains no text to index")
    stamp = updated_at or utc_iso()
    return ParsedDocument(doc_id=doc_id or path.name, source=path.name, title=title, kind=kind, sha256=sha,
                          updated_at=stamp, chunks=chunks, meta={k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))})


def parse_file(path: str | Path, doc_id: str | None = None, *, max_bytes: int | None = MAX_FILE_BYTES,
               **kwargs) -> ParsedDocument:
    """Read and parse one file (see :func:`parse_bytes`); ``updated_at`` defaults to the file's mtime.

    A file over ``max_bytes`` is refused before it is read.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if path.is_dir():
        raise DataError(f"expected a file, got a directory: {path}")
    st = path.stat()
    check_size(st.st_size, path.name, max_bytes)
    if "updated_at" not in kwargs:
        kwargs["updated_at"] = utc_iso(st.st_mtime)
    try:
        with path.open("rb") as f:  # read at most one byte past the limit: the file may grow after stat()
            raw = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_bytes(raw, path.name, doc_id=doc_id or path.name, max_bytes=max_bytes, **kwargs)


def ingestable_files(directory: str | Path, max_bytes: int | None = MAX_FILE_BYTES) -> tuple[list[Path], list[str]]:
    """The supported files under ``directory`` (recursively) and one line per file refused.

    Refused: links (or files under linked folders) that resolve outside ``directory``, broken or
    looping links, and files over ``max_bytes``. Unsupported suffixes are ignored, as before.
    """
    directory = Path(directory)
    root = directory.resolve()
    files: list[Path] = []
    refused: list[str] = []
    for p in sorted(directory.rglob("*")):
        if p.suffix.lower() not in SUPPORTED_SUFFIXES or (p.is_dir() and not p.is_symlink()):
            continue
        rel = p.relative_to(directory).as_posix()
        try:
            target = p.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling link or a link loop
            refused.append(f"{rel}: broken or looping link")
            continue
        if not target.is_relative_to(root):
            refused.append(f"{rel}: links outside {directory} (to {target}); copy the file in instead")
            continue
        if not target.is_file():
            continue
        try:
            check_size(target.stat().st_size, rel, max_bytes)
        except DataError as exc:
            refused.append(str(exc))
            continue
        files.append(p)
    return files, refused
