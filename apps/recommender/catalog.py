"""The item catalog: items with text fields and metadata, embedded and indexed for retrieval.

A :class:`Catalog` turns each item into one text through a configurable template, embeds the
texts with the core :class:`~verticore.inference.Embedder` and keeps the vectors in a core
:class:`~verticore.index.VectorIndex`. Adding, updating and removing items updates the index
incrementally; :meth:`Catalog.save` / :meth:`Catalog.load` persist it (JSON + FAISS's own format) as one
atomic generation, so a crash mid-save leaves the previous complete catalog.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from verticore.errors import ArtifactError, DataError, IndexMismatchError
from verticore.io import atomic_write_bytes, atomic_write_json, next_generation, read_json, read_table

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{title}. {description} Tags: {tags}"
CATALOG_FORMAT = "verticore-recommender-catalog/2"  # one atomic generation per save
LEGACY_CATALOG_FORMAT = "verticore-recommender-catalog/1"  # items.jsonl + index/ side by side
ID_CANDIDATES = ("item_id", "item", "id", "movieId", "itemId")

Filters = Mapping[str, Any] | Callable[[dict[str, Any]], bool] | None


@dataclass
class UpsertReport:
    """What an :meth:`Catalog.upsert` did; ``skipped`` maps a reason to a count."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged, "skipped": dict(self.skipped)}


class _Blank(dict):
    def __missing__(self, key: str) -> str:  # unknown template fields render as ""
        return ""


def _clean_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_clean_value(x) for x in v]
    return v


def render_template(template: str, record: Mapping[str, Any]) -> str:
    """Render ``template`` (``str.format`` placeholders) with ``record``; missing fields become "".

    Lists render comma-separated. Dangling separators left by empty fields (``". ."``,
    ``"Tags: "`` at the end) are tidied so an item with only a title still gives a clean text.
    """
    values = _Blank()
    for k, v in record.items():
        v = _clean_value(v)
        if v is None:
            values[k] = ""
        elif isinstance(v, list):
            values[k] = ", ".join(str(x) for x in v if x is not None and str(x).strip())
        elif isinstance(v, str) and "|" in v:  # "a|b|c" lists from CSV
            values[k] = ", ".join(p.strip() for p in v.split("|") if p.strip())
        else:
            values[k] = str(v).strip()
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    except ValueError as exc:
        raise DataError(f"item template {template!r} is invalid: {exc}") from None
    for f in fields:
        if not f.isidentifier():
            raise DataError(f"item template field {{{f}}} is not a plain field name")
    text = template.format_map(values)
    # tidy: collapse whitespace, drop labels whose value is empty ("Tags: " at the end)
    text = " ".join(text.split())
    for _ in range(3):
        text = text.replace(" .", ".").replace("..", ".").replace(": .", ".").replace(" ,", ",")
    text = text.strip().lstrip(" .,;:")
    while text.endswith(":"):
        text = text.rsplit(" ", 1)[0] if " " in text else ""
        text = text.strip()
    if not any(ch.isalnum() for ch in text):
        return ""
    return text.strip()


def _auto_id_field(columns: Iterable[str]) -> str:
    cols = list(columns)
    for c in ID_CANDIDATES:
        if c in cols:
            return c
    raise DataError(f"catalog has no id column (looked for {list(ID_CANDIDATES)}); columns are {cols}")


class Catalog:
    """Items (id, text fields, metadata) embedded with the core Embedder and indexed in FAISS.

    Args:
        embedder: an :class:`~verticore.inference.Embedder` or a model spec (``"default"`` or an
            artifact directory, e.g. the behaviour-fine-tuned model).
        template: how an item becomes one text, with ``{field}`` placeholders for any item field
            (missing fields render empty).
        id_field: column holding the item id (auto-detected from common names if ``None``).
        factory: FAISS factory string of the :class:`~verticore.index.VectorIndex`.
        use_gpu: ``"auto"`` moves the index to the GPU when faiss-gpu and a GPU are present.
    """

    def __init__(self, embedder: Any = "default", template: str = DEFAULT_TEMPLATE, id_field: str | None = None,
                 factory: str = "Flat", use_gpu: str | bool = "auto", batch_size: int = 64) -> None:
        from verticore.index import VectorIndex
        from verticore.inference import Embedder

        if isinstance(embedder, (str, Path)):
            embedder = Embedder(str(embedder), batch_size=batch_size)
        self.embedder = embedder
        render_template(template, {})  # validate early
        self.template = template
        self.id_field = id_field
        self.factory = factory
        self.use_gpu = use_gpu
        self.items: dict[str, dict[str, Any]] = {}
        self.texts: dict[str, str] = {}
        self.index = VectorIndex(embedder.dimension, metric="ip", factory=factory,
                                 model_fingerprint=embedder.fingerprint, use_gpu=use_gpu)
        self._matrix_cache: tuple[list[str], np.ndarray] | None = None
        #: generation last saved or loaded (0: never saved, or loaded from the pre-generation layout)
        self.generation = 0

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, show_progress: bool = False, **kwargs: Any) -> "Catalog":
        """Build a catalog from dict records (see :meth:`upsert` for what is skipped)."""
        cat = cls(**kwargs)
        report = cat.upsert(records, show_progress=show_progress)
        if len(cat) == 0:
            raise DataError(f"catalog is empty: no usable items (skipped {report.skipped})")
        return cat

    @classmethod
    def from_dataframe(cls, df: Any, *, show_progress: bool = False, **kwargs: Any) -> "Catalog":
        """Build a catalog from a pandas DataFrame (one row per item)."""
        if df is None or len(df) == 0:
            raise DataError("catalog is empty: the table has no rows")
        return cls.from_records(df.to_dict(orient="records"), show_progress=show_progress, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path, *, show_progress: bool = False, **kwargs: Any) -> "Catalog":
        """Build a catalog from CSV/TSV/JSONL; list fields in CSV may be ``|``-separated."""
        df = read_table(path)
        return cls.from_dataframe(df, show_progress=show_progress, **kwargs)

    # -- basic access -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self.items

    @property
    def ids(self) -> list[str]:
        """Item ids in insertion order."""
        return list(self.items)

    def get(self, item_id: Any) -> dict[str, Any]:
        """The item record; :class:`DataError` for an unknown id."""
        key = str(item_id)
        if key not in self.items:
            raise DataError(f"unknown item {key!r}: it is not in the catalog ({len(self)} items)")
        return self.items[key]

    def title(self, item_id: Any) -> str:
        """A short display name: ``title``/``name`` field or the id."""
        rec = self.items.get(str(item_id), {})
        for f in ("title", "name"):
            if rec.get(f):
                return str(rec[f])
        return str(item_id)

    def text(self, item_id: Any) -> str:
        """The rendered item text that was embedded."""
        self.get(item_id)
        return self.texts[str(item_id)]

    def item_text(self, record: Mapping[str, Any]) -> str:
        """Render ``record`` through the catalog's template."""
        return render_template(self.template, record)

    # -- mutation -----------------------------------------------------------------------
    def upsert(self, records: Iterable[Mapping[str, Any]] | Any, *, show_progress: bool = False) -> UpsertReport:
        """Add new items and update changed ones; only new/changed texts are embedded.

        Skipped with a warning that counts them: records without an id, duplicate ids within
        ``records`` (the first wins), items whose rendered text is empty.
        """
        if hasattr(records, "to_dict") and hasattr(records, "columns"):
            records = records.to_dict(orient="records")
        records = list(records)
        report = UpsertReport()
        if not records:
            return report
        id_field = self.id_field or _auto_id_field(records[0].keys())
        self.id_field = id_field
        seen: set[str] = set()
        new_keys: list[str] = []
        new_texts: list[str] = []
        new_recs: list[dict[str, Any]] = []
        for rec in records:
            raw_id = _clean_value(rec.get(id_field))
            if raw_id is None or not str(raw_id).strip():
                report.skipped["missing id"] = report.skipped.get("missing id", 0) + 1
                continue
            if isinstance(raw_id, float) and raw_id.is_integer():
                raw_id = int(raw_id)
            key = str(raw_id).strip()
            if key in seen:
                report.skipped["duplicate id"] = report.skipped.get("duplicate id", 0) + 1
                continue
            seen.add(key)
            clean = {str(k): _clean_value(v) for k, v in rec.items()}
            clean[id_field] = key
            text = self.item_text(clean)
            if not text.strip():
                report.skipped["empty text"] = report.skipped.get("empty text", 0) + 1
                continue
            if key in self.items and self.texts.get(key) == text:
                self.items[key] = clean  # metadata-only change: no re-embedding
                report.unchanged += 1
                continue
            if key in self.items:
                report.updated += 1
            else:
                report.added += 1
            new_keys.append(key)
            new_texts.append(text)
            new_recs.append(clean)
        if report.skipped:
            log.warning("catalog: skipped %d item(s): %s", report.total_skipped,
                        ", ".join(f"{n} {why}" for why, n in report.skipped.items()))
        if new_keys:
            vecs = self.embedder.encode(new_texts, show_progress=show_progress)
            self.index.upsert(new_keys, vecs)
            for key, text, rec in zip(new_keys, new_texts, new_recs):
                self.items[key] = rec
                self.texts[key] = text
        self._matrix_cache = None
        return report

    def remove(self, item_ids: Iterable[Any], *, missing_ok: bool = False) -> int:
        """Remove items from the catalog and the index; returns how many were removed."""
        keys = [str(i) for i in item_ids]
        unknown = [k for k in keys if k not in self.items]
        if unknown and not missing_ok:
            raise DataError(f"unknown item {unknown[0]!r}: cannot remove it ({len(unknown)} unknown id(s))")
        keys = [k for k in dict.fromkeys(keys) if k in self.items]
        if keys:
            self.index.delete(keys)
            for k in keys:
                self.items.pop(k, None)
                self.texts.pop(k, None)
        self._matrix_cache = None
        return len(keys)

    # -- vectors & retrieval --------------------------------------------------------------
    def vectors(self, item_ids: Sequence[Any]) -> np.ndarray:
        """Stored (L2-normalised) vectors of ``item_ids``, in that order."""
        keys = [str(i) for i in item_ids]
        for k in keys:
            if k not in self.items:
                raise DataError(f"unknown item {k!r}: it is not in the catalog")
        if not keys:
            return np.zeros((0, self.embedder.dimension), dtype=np.float32)
        return np.asarray(self.index.reconstruct(keys), dtype=np.float32)

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """All ids and their vectors (cached until the next change)."""
        if self._matrix_cache is None:
            ids = self.ids
            self._matrix_cache = (ids, self.vectors(ids))
        return self._matrix_cache

    def embed_query(self, text: str) -> np.ndarray:
        """Embed a free-text query with the catalog's model (:class:`DataError` if empty)."""
        if not isinstance(text, str) or not text.strip():
            raise DataError("query text is empty")
        return np.asarray(self.embedder.encode([text])[0], dtype=np.float32)

    def allowed(self, filters: Filters = None, candidates: Iterable[Any] | None = None,
                exclude: Iterable[Any] = ()) -> list[str] | None:
        """Ids passing ``filters`` (dict of field -> value(s), or a predicate) and ``candidates``.

        Returns ``None`` when nothing restricts the search. A dict filter matches when the item
        field equals the value, or contains it (lists, ``|``/``,``-separated strings); a list of
        values matches any of them.
        """
        excl = {str(e) for e in exclude}
        if filters is None and candidates is None:
            return None
        pool = [str(c) for c in candidates if str(c) in self.items] if candidates is not None else self.ids
        if filters is not None:
            pred = filters if callable(filters) else _dict_predicate(filters)
            pool = [k for k in pool if pred(self.items[k])]
        return [k for k in pool if k not in excl]

    def search_vectors(self, queries: np.ndarray, k: int, allow: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        """ANN search; ``allow`` restricts to a subset of ids. Returns (id, score) lists."""
        if len(self) == 0:
            raise DataError("the catalog is empty: add items before searching")
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = max(1, min(int(k), len(self) if allow is None else max(len(allow), 1)))
        if allow is not None and len(allow) == 0:
            return [[] for _ in range(len(q))]
        hits = self.index.search(q, k=k, allow=list(allow) if allow is not None else None)
        return [[(h.key, float(h.score)) for h in row] for row in hits]

    # -- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Persist the catalog under ``directory`` as one atomic generation; returns the directory.

        Items (JSONL) and the FAISS index go into a fresh ``gen-<n>/`` folder; only when both are
        complete and fsynced is ``catalog.json`` atomically replaced to name it (the commit point),
        then older generations are removed. A crash at any step leaves ``catalog.json`` naming a
        complete generation whose texts and vectors belong together. Catalogs saved by older
        versions (``items.jsonl`` + ``index/`` at the top) are migrated by the first save.
        """
        from verticore.io import DirLock, fsync_dir, remove_stale_temps

        d = Path(directory)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot create catalog directory {d}: {exc.strerror}") from None
        with DirLock(d) as dlock:  # one writer per catalog directory, across processes too
            remove_stale_temps(d, all_dead=dlock.held)
            gen = _next_generation(d)
            gdir = d / f"gen-{gen}"
            if gdir.exists():  # a dead save's half-written folder (numbers only grow, so never a live one)
                shutil.rmtree(gdir)
            gdir.mkdir()
            self.index.save(gdir / "index")
            lines = [json.dumps({"id": k, "text": self.texts[k], "record": self.items[k]}, ensure_ascii=False,
                                default=str) for k in self.items]
            data = ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")
            atomic_write_bytes(gdir / "items.jsonl", data)
            fsync_dir(gdir)
            fsync_dir(d)  # the gen-<n> entry itself must be durable before catalog.json names it
            atomic_write_json(d / "catalog.json", {
                "format": CATALOG_FORMAT, "generation": gen, "generation_dir": gdir.name,
                "items_sha256": hashlib.sha256(data).hexdigest(), "n_items": len(self),
                "template": self.template, "id_field": self.id_field, "factory": self.factory,
                "model": self.embedder.model, "model_fingerprint": self.embedder.fingerprint,
                "dimension": self.embedder.dimension})
            self.generation = gen
            _remove_stale_generations(d, gdir.name)
        return d

    @classmethod
    def load(cls, directory: str | Path, embedder: Any = None, use_gpu: str | bool = "auto") -> "Catalog":
        """Load a saved catalog (its last committed generation). ``embedder`` defaults to the model
        recorded at save time.

        Raises :class:`~verticore.errors.IndexMismatchError` when the index was built with
        another model than ``embedder``, :class:`ArtifactError` for a missing/corrupt directory
        or items that disagree with the index.
        """
        from verticore.io import lock_for_reading

        d = Path(directory)
        if not (d / "catalog.json").exists():
            raise ArtifactError(f"no saved catalog in {d} (catalog.json missing)")
        lock = lock_for_reading(d, _clean_dead_saves)
        try:
            return cls._load_locked(d, embedder, use_gpu)
        finally:
            lock.release()

    @classmethod
    def _load_locked(cls, d: Path, embedder: Any, use_gpu: str | bool) -> "Catalog":
        from verticore.index import VectorIndex

        try:
            meta = read_json(d / "catalog.json", "catalog config")
        except DataError as exc:
            raise ArtifactError(str(exc)) from None
        if not isinstance(meta, dict) or meta.get("format") not in (CATALOG_FORMAT, LEGACY_CATALOG_FORMAT):
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise ArtifactError(f"{d}/catalog.json is not a recommender catalog (format {fmt!r})")
        if meta["format"] == LEGACY_CATALOG_FORMAT:  # written before generations: files at the top
            gdir, gen, items_sha = d, 0, None
        else:
            name = str(meta.get("generation_dir", ""))
            if not _GEN_DIR_RE.match(name) or not (d / name).is_dir():
                raise ArtifactError(f"catalog in {d} names generation folder {name!r}, which is missing; "
                                    "rebuild it with `recommender build`")
            gdir, gen, items_sha = d / name, int(meta["generation"]), meta.get("items_sha256")
        cat = cls(embedder if embedder is not None else meta["model"], template=meta["template"],
                  id_field=meta.get("id_field"), factory=meta.get("factory", "Flat"), use_gpu=use_gpu)
        if meta.get("model_fingerprint") and meta["model_fingerprint"] != cat.embedder.fingerprint:
            raise IndexMismatchError(
                f"catalog in {d} was embedded with model {meta.get('model')!r} ({meta['model_fingerprint']}), "
                f"not with {cat.embedder.model!r} ({cat.embedder.fingerprint}); rebuild it with `recommender build`")
        cat.index = VectorIndex.load(gdir / "index", expected_fingerprint=cat.embedder.fingerprint)
        try:
            raw = (gdir / "items.jsonl").read_bytes()
            if items_sha and hashlib.sha256(raw).hexdigest() != items_sha:
                raise ValueError("checksum mismatch")
            for line in raw.decode("utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    cat.items[row["id"]] = row["record"]
                    cat.texts[row["id"]] = row["text"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{gdir}/items.jsonl is missing or corrupt: {exc}") from None
        if len(cat.index) != len(cat.items):
            raise ArtifactError(f"catalog in {d} is inconsistent: {len(cat.items)} items but {len(cat.index)} vectors")
        if set(cat.index.keys()) != set(cat.items):
            odd = next(iter(set(cat.index.keys()) ^ set(cat.items)))
            raise ArtifactError(f"catalog in {d} is inconsistent: item {odd!r} is in only one of items.jsonl "
                                "and the index; rebuild it with `recommender build`")
        cat.generation = gen
        return cat


_GEN_DIR_RE = re.compile(r"^gen-(\d+)$")


def _next_generation(d: Path) -> int:
    """One more than any generation on disk (committed or left half-written by a crash)."""
    return next_generation(d, _GEN_DIR_RE, d / "catalog.json")


def _remove_stale_generations(d: Path, keep: str) -> None:
    """Delete generation folders other than ``keep`` and files of the pre-generation layout.

    Only call with the catalog's writer lock held and ``keep`` committed in catalog.json.
    """
    for f in d.iterdir():
        if f.name == keep:
            continue
        try:
            if _GEN_DIR_RE.match(f.name) and f.is_dir():
                shutil.rmtree(f)
            elif f.name == "index" and f.is_dir() and (f / "index.json").exists():  # legacy layout
                shutil.rmtree(f)
            elif f.name == "items.jsonl" and f.is_file():  # legacy layout
                f.unlink()
        except OSError:  # pragma: no cover - removed at the next save
            pass


def _clean_dead_saves(d: Path) -> None:
    """With the writer lock held: remove temps, half-written and superseded generations."""
    from verticore.io import remove_stale_temps

    remove_stale_temps(d, all_dead=True)
    try:
        meta = read_json(d / "catalog.json")
    except DataError:
        return
    keep = meta.get("generation_dir") if isinstance(meta, dict) and meta.get("format") == CATALOG_FORMAT else None
    if isinstance(keep, str) and _GEN_DIR_RE.match(keep) and (d / keep).is_dir():
        _remove_stale_generations(d, keep)


def _dict_predicate(filters: Mapping[str, Any]) -> Callable[[dict[str, Any]], bool]:
    def norm_values(v: Any) -> set[str]:
        if v is None:
            return set()
        if isinstance(v, (list, tuple, set)):
            out: set[str] = set()
            for x in v:
                out |= norm_values(x)
            return out
        s = str(v).strip().lower()
        parts = {s}
        for sep in ("|", ","):
            if sep in s:
                parts |= {p.strip() for p in s.split(sep) if p.strip()}
        return parts

    wanted = {f: ({str(x).strip().lower() for x in v} if isinstance(v, (list, tuple, set)) else {str(v).strip().lower()})
              for f, v in filters.items()}

    def pred(rec: dict[str, Any]) -> bool:
        for f, vals in wanted.items():
            if not norm_values(rec.get(f)) & vals:
                return False
        return True

    return pred
