"""The knowledge base: documents -> chunks in SQLite, a dense core ``VectorIndex`` and BM25.

Layout of a knowledge-base directory::

    kb.json         embedder spec + fingerprint, chunking settings
    kb.sqlite       documents and chunks (text, title, section, source, updated-at, metadata)
    dense/          the core VectorIndex (FAISS format), keyed by chunk id

Chunk ids are ``<doc_id>#<hash of the embedded text>``, so re-ingesting a changed document
embeds only the chunks whose text changed, removes the ones that disappeared and never
duplicates. BM25 is rebuilt in memory from SQLite (milliseconds for thousands of chunks).

The knowledge base is storage plus configuration: retrieval, fusion and calibration are the
core's components (:mod:`verticore.retrieval`): a :class:`~verticore.retrieval.BM25Retriever`
(bm25s, Snowball stems), a :class:`~verticore.retrieval.DenseRetriever` over the embedder and
the ``dense/`` index, fused by a :class:`~verticore.retrieval.HybridRetriever` with reciprocal-rank
fusion (RRF) or a calibrated convex combination of normalised scores
(:meth:`KnowledgeBase.calibrate_fusion`, a :class:`~verticore.retrieval.FusionCalibrator`).
``kb.json`` records the fusion and the BM25 settings (a KB saved before BM25 settings were
recorded opens with the defaults).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from verticore.errors import DataError, IndexMismatchError
from verticore.io import atomic_write_json, read_json
from verticore.retrieval import (
    FUSION_METHODS,
    BM25Retriever,
    Candidates,
    DenseRetriever,
    FusionCalibrator,
    HybridRetriever,
    rrf_fuse,
    tokenize,
    two_way_fusion,
)
from verticore.storage import connect

from .loaders import MAX_FILE_BYTES, SUPPORTED_SUFFIXES, ParsedDocument, ingestable_files, parse_bytes, parse_file

KB_MIGRATIONS = [
    """
    CREATE TABLE documents (
        doc_id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        title TEXT NOT NULL,
        kind TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        ingested_at TEXT NOT NULL,
        n_chunks INTEGER NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE chunks (
        chunk_id TEXT PRIMARY KEY,
        doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
        ord INTEGER NOT NULL,
        text TEXT NOT NULL,
        embed_text TEXT NOT NULL,
        title TEXT NOT NULL,
        section TEXT NOT NULL,
        answer TEXT,
        meta TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX chunks_doc ON chunks(doc_id, ord);
    """,
]

@dataclass
class RetrievedChunk:
    """One retrieval result with its provenance and scores.

    ``score`` is the fused (RRF) score used for ranking; ``dense_score`` is the cosine
    similarity between query and passage, used as the evidence score (None in BM25-only mode).
    """

    chunk_id: str
    doc_id: str
    text: str
    title: str
    section: str
    source: str
    updated_at: str
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None
    dense_rank: int | None = None
    bm25_rank: int | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Hybrid fusion methods; ``dense_weight`` w weighs dense against BM25 (RRF weights 2w and 2(1-w)).
FUSIONS = FUSION_METHODS
#: Fusion of a knowledge base nobody has calibrated yet (`kb calibrate` replaces it). Dense-leaning
#: because dense is the stronger retriever on natural questions: on 1,000 Bitext kb questions
#: (leave-one-out) weighted RRF gets hit@1 0.964 at weight 0.5, 0.968 at 0.8, 0.974 at 0.9. It
#: stays below 1 so BM25 still decides between dense neighbours of similar rank (exact tokens such
#: as order numbers or product names).
DEFAULT_FUSION: dict[str, Any] = {"method": "rrf", "dense_weight": 0.8, "rrf_k": 60}


@dataclass
class IngestReport:
    """What one ingestion did to the knowledge base."""

    doc_id: str
    status: str  # added | updated | unchanged
    chunks: int
    embedded: int
    removed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class KnowledgeBase:
    """A persistent, incrementally updated hybrid (BM25 + dense) knowledge base.

    Args:
        directory: where the KB lives (created if missing).
        embedder: a core :class:`~verticore.inference.Embedder`, a model spec, or ``None`` to use
            the spec recorded in ``kb.json`` (``"default"`` for a new KB).
        chunk_size / chunk_overlap: character sizes for the text splitter.
        strict: if the dense index was built by another embedder, raise
            :class:`~verticore.errors.IndexMismatchError` (True) instead of re-indexing (False).

    Raises :class:`IndexMismatchError` with a one-line fix when ``kb.json`` names another
    embedder than the one given.
    """

    def __init__(self, directory: str | Path, embedder: Any = None, chunk_size: int = 800, chunk_overlap: int = 120,
                 strict: bool = True) -> None:
        from verticore import Embedder

        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise DataError(f"knowledge base path {self.directory} is a file; pass a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        cfg_path = self.directory / "kb.json"
        cfg = read_json(cfg_path, "knowledge-base config") if cfg_path.exists() else {}
        if embedder is None:
            embedder = cfg.get("embedder", "default")
        self.embedder = embedder if isinstance(embedder, Embedder) else Embedder(str(embedder))
        self.chunk_size = int(cfg.get("chunk_size", chunk_size))
        self.chunk_overlap = int(cfg.get("chunk_overlap", chunk_overlap))
        recorded = cfg.get("embedder_fingerprint")
        if recorded and recorded != self.embedder.fingerprint:
            msg = (f"knowledge base {self.directory} was indexed with embedder {cfg.get('embedder')!r} "
                   f"({recorded}), not {self.embedder.model!r} ({self.embedder.fingerprint}); "
                   "open it with that embedder or run `customer-service kb reindex` to re-embed it")
            if strict:
                raise IndexMismatchError(msg)
        self.conn = connect(self.directory / "kb.sqlite", KB_MIGRATIONS)
        self._lock = threading.RLock()
        self._index = None
        self.fusion: dict[str, Any] = {**DEFAULT_FUSION, **(cfg.get("fusion") or {})}
        # BM25 settings: recorded in kb.json, so a KB keeps its analysis when defaults change
        bm25_cfg = cfg.get("bm25")
        self._bm25 = BM25Retriever.from_dict(bm25_cfg) if bm25_cfg else BM25Retriever()
        self._bm25_ready = False
        self._save_config()
        if recorded and recorded != self.embedder.fingerprint:
            self.reindex()

    # -- config / index -----------------------------------------------------------------
    def _save_config(self) -> None:
        atomic_write_json(self.directory / "kb.json", {
            "format": "customer-service-kb/1", "embedder": self.embedder.model,
            "embedder_fingerprint": self.embedder.fingerprint, "dimension": self.embedder.dimension,
            "chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap, "fusion": self.fusion,
            "bm25": self._bm25.to_dict()})

    @property
    def index(self):
        """The dense :class:`~verticore.index.VectorIndex` (loaded or created lazily, repaired if stale)."""
        if self._index is None:
            from verticore import VectorIndex

            dense = self.directory / "dense"
            # only a sidecar marks a saved index: a first save killed midway leaves just temp/orphan
            # files, which must not make the KB unopenable (SQLite is the truth; repair re-embeds)
            if (dense / "index.json").exists():
                try:
                    self._index = VectorIndex.load(dense, expected_fingerprint=self.embedder.fingerprint)
                except IndexMismatchError as exc:
                    raise IndexMismatchError(
                        f"{exc}; run `customer-service kb reindex --kb {self.directory}`") from None
            else:
                self._index = VectorIndex(self.embedder.dimension, metric="ip",
                                          model_fingerprint=self.embedder.fingerprint)
            self._repair_index()
        return self._index

    def _repair_index(self) -> None:
        """Bring the dense index in line with SQLite (after a crash between the two writes)."""
        idx = self._index
        want = {r[0]: r[1] for r in self.conn.execute("SELECT chunk_id, embed_text FROM chunks")}
        have = set(idx.keys())
        extra = [k for k in have if k not in want]
        missing = [k for k in want if k not in have]
        if extra:
            idx.delete(extra)
        if missing:
            idx.add(missing, self.embedder.encode([want[k] for k in missing], show_progress=len(missing) > 256))
        if extra or missing:
            idx.save(self.directory / "dense")

    # -- documents ----------------------------------------------------------------------
    max_file_bytes: int | None = MAX_FILE_BYTES
    """Per-file ingest limit in bytes (None: no limit); set it on an instance to change it."""

    def ingest(self, path: str | Path, doc_id: str | None = None, show_progress: bool = False) -> IngestReport:
        """Ingest one file (Markdown, text, HTML, CSV/JSONL FAQ, PDF); re-ingesting replaces its chunks."""
        doc = parse_file(path, doc_id=doc_id, chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap,
                         max_bytes=self.max_file_bytes)
        return self.add_document(doc, show_progress=show_progress)

    def ingest_bytes(self, raw: bytes, name: str, doc_id: str | None = None,
                     show_progress: bool = False) -> IngestReport:
        """Ingest an uploaded file's bytes (the dashboard's upload path)."""
        doc = parse_bytes(raw, name, doc_id=doc_id, chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap,
                          max_bytes=self.max_file_bytes)
        return self.add_document(doc, show_progress=show_progress)

    def ingest_dir(self, directory: str | Path, show_progress: bool = True,
                   on_progress: Callable[[int, int, str], None] | None = None) -> list[IngestReport]:
        """Ingest every supported file under ``directory`` (recursively); ids are relative paths.

        Like any other bad file, links leading outside ``directory`` and files over
        :attr:`max_file_bytes` raise :class:`DataError` (naming every such file) before anything
        is ingested.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"not a directory: {directory}")
        files, refused = ingestable_files(directory, self.max_file_bytes)
        if refused:
            more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
            raise DataError(f"refusing to ingest {directory}: {'; '.join(refused[:5])}{more}; nothing was ingested")
        if not files:
            raise DataError(f"no supported documents in {directory} (looked for {sorted(SUPPORTED_SUFFIXES)})")
        reports = []
        for i, f in enumerate(tqdm(files, desc="ingest", unit="doc", disable=not show_progress)):
            reports.append(self.ingest(f, doc_id=f.relative_to(directory).as_posix()))
            if on_progress:
                on_progress(i + 1, len(files), f.name)
        return reports

    def add_document(self, doc: ParsedDocument, show_progress: bool = False) -> IngestReport:
        """Insert or replace ``doc``: only new chunk texts are embedded; stale chunks are removed."""
        with self._lock:
            row = self.conn.execute("SELECT sha256, n_chunks FROM documents WHERE doc_id=?", (doc.doc_id,)).fetchone()
            if row is not None and row["sha256"] == doc.sha256:
                return IngestReport(doc.doc_id, "unchanged", int(row["n_chunks"]), 0, 0)
            old_ids = {r[0] for r in self.conn.execute("SELECT chunk_id FROM chunks WHERE doc_id=?", (doc.doc_id,))}
            ids: list[str] = []
            seen: set[str] = set()
            for c in doc.chunks:
                base = f"{doc.doc_id}#{hashlib.sha1((c.embed_text + chr(0) + c.text).encode('utf-8')).hexdigest()[:12]}"
                cid, n = base, 1
                while cid in seen:
                    n += 1
                    cid = f"{base}.{n}"
                seen.add(cid)
                ids.append(cid)
            index = self.index
            new = [(cid, c) for cid, c in zip(ids, doc.chunks) if cid not in old_ids or cid not in index]
            vectors = (self.embedder.encode([c.embed_text for _, c in new], show_progress=show_progress)
                       if new else np.zeros((0, self.embedder.dimension), np.float32))
            removed = sorted(old_ids - set(ids))
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute("DELETE FROM chunks WHERE doc_id=?", (doc.doc_id,))
                self.conn.execute(
                    "INSERT INTO documents(doc_id, source, title, kind, sha256, updated_at, ingested_at, n_chunks, "
                    "meta) "
                    "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(doc_id) DO UPDATE SET source=excluded.source, "
                    "title=excluded.title, kind=excluded.kind, sha256=excluded.sha256, updated_at=excluded.updated_at, "
                    "ingested_at=excluded.ingested_at, n_chunks=excluded.n_chunks, meta=excluded.meta",
                    (doc.doc_id, doc.source, doc.title, doc.kind, doc.sha256, doc.updated_at, _now(), len(ids),
                     json.dumps(doc.meta, ensure_ascii=False)))
                self.conn.executemany(
                    "INSERT INTO chunks(chunk_id, doc_id, ord, text, embed_text, title, section, answer, meta) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    [(cid, doc.doc_id, i, c.text, c.embed_text, c.title, c.section, c.answer,
                      json.dumps(c.meta, ensure_ascii=False))
                     for i, (cid, c) in enumerate(zip(ids, doc.chunks))])
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            if removed:
                index.delete([k for k in removed if k in index])
            if new:
                index.upsert([cid for cid, _ in new], vectors)
            index.save(self.directory / "dense")
            self._bm25_ready = False
            status = "added" if row is None else "updated"
            return IngestReport(doc.doc_id, status, len(ids), len(new), len(removed))

    def delete(self, doc_id: str) -> int:
        """Remove a document and its chunks; returns the number of chunks removed."""
        with self._lock:
            ids = [r[0] for r in self.conn.execute("SELECT chunk_id FROM chunks WHERE doc_id=?", (doc_id,))]
            exists = self.conn.execute("SELECT 1 FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
            if not exists:
                raise DataError(f"no document {doc_id!r} in the knowledge base; see `customer-service kb list`")
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
                self.conn.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            index = self.index
            present = [k for k in ids if k in index]
            if present:
                index.delete(present)
            index.save(self.directory / "dense")
            self._bm25_ready = False
            return len(ids)

    def reindex(self, show_progress: bool = True, on_progress: Callable[[int, int], None] | None = None,
                batch: int = 256) -> int:
        """Re-embed every chunk with the current embedder into a fresh index; returns the chunk count."""
        from verticore import VectorIndex

        with self._lock:
            rows = [(r[0], r[1]) for r in
                    self.conn.execute("SELECT chunk_id, embed_text FROM chunks ORDER BY doc_id, ord")]
            index = VectorIndex(self.embedder.dimension, metric="ip", model_fingerprint=self.embedder.fingerprint)
            for s in tqdm(range(0, len(rows), batch), desc="re-index", unit="batch", disable=not show_progress):
                part = rows[s : s + batch]
                index.add([r[0] for r in part], self.embedder.encode([r[1] for r in part]))
                if on_progress:
                    on_progress(min(s + batch, len(rows)), len(rows))
            index.save(self.directory / "dense")
            self._index = index
            self._save_config()
            self._bm25_ready = False
            return len(rows)

    def documents(self) -> list[dict[str, Any]]:
        """All documents: doc_id, source, title, kind, updated_at, ingested_at, n_chunks."""
        return [dict(r) for r in self.conn.execute(
            "SELECT doc_id, source, title, kind, updated_at, ingested_at, n_chunks FROM documents ORDER BY doc_id")]

    def chunk_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def __len__(self) -> int:
        return self.chunk_count()

    def get_chunks(self, chunk_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Chunk rows (with their document's source and updated-at) by id."""
        ids = list(dict.fromkeys(chunk_ids))
        out: dict[str, dict[str, Any]] = {}
        for s in range(0, len(ids), 500):
            part = ids[s : s + 500]
            q = ("SELECT c.chunk_id, c.doc_id, c.text, c.title, c.section, c.answer, c.meta, d.source, d.updated_at, "
                 "d.kind "
                 f"FROM chunks c JOIN documents d USING(doc_id) WHERE c.chunk_id IN ({','.join('?' * len(part))})")
            for r in self.conn.execute(q, part):
                d = dict(r)
                d["meta"] = json.loads(d["meta"] or "{}")
                out[d["chunk_id"]] = d
        return out

    # -- retrieval ----------------------------------------------------------------------
    def _retriever(self) -> HybridRetriever:
        """The hybrid retriever over this KB's chunks (BM25 rebuilt from SQLite after a change)."""
        with self._lock:
            if not self._bm25_ready:
                rows = list(self.conn.execute("SELECT chunk_id, text, title FROM chunks ORDER BY rowid"))
                # the title is indexed too unless the text already contains it (FAQ questions)
                self._bm25.set_texts([r[0] for r in rows], [f"{r[2] if r[2] not in r[1] else ''} {r[1]}" for r in rows])
                self._bm25_ready = True
            dense = DenseRetriever(self.embedder, index=self.index)
            return HybridRetriever(dense, self._bm25, method=self.fusion["method"],
                                   dense_weight=float(self.fusion["dense_weight"]),
                                   rrf_k=int(self.fusion.get("rrf_k", 60)))

    def _allowed(self, filters: dict[str, Any] | None) -> set[str] | None:
        """Chunk ids matching metadata filters ({field: value or [values]}); None = no filter."""
        if not filters:
            return None
        cols = {"doc_id": "c.doc_id", "source": "d.source", "title": "c.title", "section": "c.section",
                "kind": "d.kind", "doc_title": "d.title"}
        where, params, meta_filters = [], [], {}
        for key, value in filters.items():
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            if key in cols:
                where.append(f"{cols[key]} IN ({','.join('?' * len(values))})")
                params.extend(str(v) for v in values)
            elif key in {"updated_after", "updated_before"}:
                where.append(f"d.updated_at {'>=' if key == 'updated_after' else '<='} ?")
                params.append(str(value))
            else:
                meta_filters[key] = {str(v) for v in values}
        q = "SELECT c.chunk_id, c.meta FROM chunks c JOIN documents d USING(doc_id)"
        if where:
            q += f" WHERE {' AND '.join(where)}"
        allowed = set()
        for cid, meta in self.conn.execute(q, params):
            if meta_filters:
                m = json.loads(meta or "{}")
                if not all(str(m.get(k)) in vs for k, vs in meta_filters.items()):
                    continue
            allowed.add(cid)
        return allowed

    def search(self, query: str, k: int = 5, mode: str = "hybrid", filters: dict[str, Any] | None = None,
               candidates: int = 50, rrf_k: int | None = None,
               query_vector: np.ndarray | None = None) -> list[RetrievedChunk]:
        """Retrieve the top ``k`` chunks for ``query``.

        ``mode``: ``bm25``, ``dense`` or ``hybrid`` (both top-``candidates`` lists fused as set in
        ``kb.json``: weighted RRF by default, or the setting :meth:`calibrate_fusion` picked).
        ``filters``: metadata filters, e.g. ``{"source": "returns.md"}``, ``{"category": ["ORDER"]}``,
        ``{"updated_after": "2024-01-01"}``. An empty knowledge base returns ``[]``.
        """
        return self.search_many([query], k=k, mode=mode, filters=filters, candidates=candidates, rrf_k=rrf_k,
                                query_vectors=None if query_vector is None else query_vector[None, :])[0]

    def search_many(self, queries: Sequence[str], k: int = 5, mode: str = "hybrid",
                    filters: dict[str, Any] | None = None,
                    candidates: int = 50, rrf_k: int | None = None, query_vectors: np.ndarray | None = None,
                    show_progress: bool = False, fusion: str | None = None, dense_weight: float | None = None,
                    exclude: Sequence[str | None] | None = None) -> list[list[RetrievedChunk]]:
        """Batch version of :meth:`search` (queries embedded in one pass).

        Hybrid fusion (defaults from ``kb.json``, see :meth:`calibrate_fusion`):
        ``rrf`` = weighted reciprocal-rank fusion; ``convex`` = ``w * dense + (1 - w) * bm25`` with
        both scores min-max normalised over the union of candidates (Weaviate's relative-score
        fusion). ``exclude`` drops one chunk id per query (leave-one-out calibration).
        """
        if mode not in {"bm25", "dense", "hybrid"}:
            raise DataError(f"unknown retrieval mode {mode!r}; use bm25, dense or hybrid")
        fusion = fusion or self.fusion["method"]
        if fusion not in FUSIONS:
            raise DataError(f"unknown fusion {fusion!r}; use one of {list(FUSIONS)}")
        w = float(self.fusion["dense_weight"] if dense_weight is None else dense_weight)
        if not 0.0 <= w <= 1.0:
            raise DataError(f"dense_weight must be in [0, 1], got {w}")
        rrf_k = int(self.fusion.get("rrf_k", 60) if rrf_k is None else rrf_k)
        queries = [str(q) for q in queries]
        if not queries:
            return []
        cand = self._candidates(queries, k, mode, filters, candidates, query_vectors, show_progress, exclude)
        if cand is None:
            return [[] for _ in queries]
        retriever, cands = cand
        fuser = two_way_fusion(fusion, w, rrf_k)
        results: list[list[RetrievedChunk]] = []
        for c in cands:
            hits = retriever.explain(c, retriever.fuse(c, mode, fuser)[:k])
            rows = self.get_chunks(h.key for h in hits)
            results.append([RetrievedChunk(chunk_id=h.key, doc_id=r["doc_id"], text=r["text"], title=r["title"],
                                           section=r["section"], source=r["source"], updated_at=r["updated_at"],
                                           score=h.score, dense_score=h.dense_score, bm25_score=h.bm25_score,
                                           dense_rank=h.dense_rank, bm25_rank=h.bm25_rank, answer=r["answer"],
                                           meta=r["meta"])
                            for h in hits if (r := rows.get(h.key)) is not None])
        return results

    def _candidates(self, queries, k, mode, filters, candidates, query_vectors, show_progress,
                    exclude) -> tuple[HybridRetriever, list[Candidates]] | None:
        """Dense and BM25 candidate lists per query, each candidate scored by both retrievers."""
        if self.chunk_count() == 0:
            return None
        allowed = self._allowed(filters)
        if allowed is not None and not allowed:
            return None
        retriever = self._retriever()
        retriever.candidates = int(candidates)
        return retriever, retriever.collect(queries, k, mode, allow=allowed, exclude=exclude,
                                            query_vectors=query_vectors, show_progress=show_progress)

    def calibrate_fusion(self, queries: Sequence[str], relevant: Callable[[int, RetrievedChunk], bool],
                         exclude: Sequence[str | None] | None = None, k: int = 10,
                         weights: Sequence[float] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2)),
                         save: bool = True, show_progress: bool = False) -> dict[str, Any]:
        """Pick the hybrid fusion (method and dense weight) on labelled dev queries.

        ``relevant(i, chunk)`` says whether ``chunk`` answers query ``i``; ``exclude`` optionally
        names one chunk per query to leave out (e.g. the FAQ entry the query was taken from, so
        the knowledge base's own questions can serve as dev queries). The setting with the best
        hit@1 (ties: MRR@k) is stored in ``kb.json`` and used by every later hybrid search.
        """
        queries = [str(q) for q in queries]
        if not queries:
            raise DataError("calibrate_fusion needs at least one dev query")
        cand = self._candidates(queries, k, "hybrid", None, 50, None, show_progress, exclude)
        if cand is None:
            raise DataError("the knowledge base is empty: nothing to calibrate")
        retriever, cands = cand
        rows = self.get_chunks({key for c in cands for key in c.keys()})
        chunk_of = {key: RetrievedChunk(chunk_id=key, doc_id=r["doc_id"], text=r["text"], title=r["title"],
                                        section=r["section"], source=r["source"], updated_at=r["updated_at"], score=0.0,
                                        answer=r["answer"], meta=r["meta"]) for key, r in rows.items()}
        relevant_keys = [{key for key in c.keys() if key in chunk_of and relevant(qi, chunk_of[key])}
                         for qi, c in enumerate(cands)]
        calibrator = FusionCalibrator(FUSIONS, weights, k=k, rrf_k=int(self.fusion.get("rrf_k", 60)))
        result = calibrator.calibrate(retriever, cands, relevant_keys)
        c = result["chosen"]
        # each retriever alone on the same questions, so users see whether fusion pays off on their KB
        chosen = {"method": c["method"], "dense_weight": c["dense_weight"], "rrf_k": c["rrf_k"],
                  "calibrated_on": len(queries), "dev_hit1": c["dev_hit1"], "dev_mrr": c["dev_mrr"],
                  "dev_dense_only_hit1": c["dev_dense_only_hit1"], "dev_bm25_only_hit1": c["dev_bm25_only_hit1"]}
        if save:
            self.fusion = chosen
            self._save_config()
        return {"chosen": chosen, "table": result["table"]}

    def close(self) -> None:
        self.conn.close()


__all__ = ["KnowledgeBase", "RetrievedChunk", "IngestReport", "FUSIONS", "DEFAULT_FUSION", "rrf_fuse", "tokenize",
           "KB_MIGRATIONS"]
