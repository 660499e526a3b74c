""":class:`VectorIndex`: the facade over the index parts (see the package docstring for the design).

It owns the settings, validation and locking, and composes :class:`~.factory.IndexSpec` (FAISS
construction), :class:`~.idmap.IdMap` (keys and tombstones), :class:`~.store.FaissStore`
(vectors, training, rebuilds), :class:`~.search.IndexSearcher` and :mod:`~.persistence`.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ArtifactError, DataError, IndexMismatchError
from ..evaluation import check_k
from ..text import utc_iso
from .factory import GpuMirror, IndexSpec, faiss_module
from .idmap import IdMap, check_keys
from .persistence import SIDECAR, read_index, write_index
from .search import IndexSearcher, SearchHit, exact_top_k, to_hits
from .store import FaissStore

log = logging.getLogger(__name__)


class VectorIndex:
    """A FAISS vector index with string keys (see :mod:`verticore.index` for the design).

    Args:
        dimension: vector size (384 for the default model).
        metric: ``"ip"`` (default), ``"cosine"`` or ``"l2"``.
        factory: a FAISS index-factory string: ``"Flat"``, ``"HNSW32"``, ``"IVF1024,Flat"``,
            ``"IVF1024,PQ32"``...
        model_fingerprint: fingerprint of the embedding model (``Embedder.fingerprint``);
            :meth:`load` refuses the index when another model is in use.
        use_gpu: ``"auto"`` (GPU when FAISS has GPU support and a GPU exists), ``True`` or ``False``.
        nprobe: IVF lists visited per query (default ``min(nlist, max(8, nlist // 64))``).
        ef_search: HNSW search breadth (default 64; raised to ``k`` when ``k`` is larger).
        ef_construction: HNSW build breadth (default 40, FAISS's default).
        train_min: vectors needed before an index that needs training is trained
            (default ``39 * nlist``, at least 256 with PQ).
        rebuild_fraction: HNSW tombstone share that triggers an automatic rebuild (default 0.2).

    The constructor only validates and stores these settings; the FAISS index is created by
    :meth:`warm_up`, which every operation that needs it calls. :meth:`to_dict` /
    :meth:`from_dict` round-trip the settings (an empty index); :meth:`save` / :meth:`load`
    write and read settings *and* vectors.

    Example::

        index = VectorIndex(384, factory="HNSW32", model_fingerprint=embedder.fingerprint)
        index.add(["a", "b"], embedder.encode(["first text", "second text"]))
        hits = index.search_one(embedder.encode("query"), k=5)   # [SearchHit(key, score), ...]
        index.save("my_index"); index = VectorIndex.load("my_index", embedder.fingerprint)
    """

    #: the ``type`` written by :meth:`to_dict`
    kind: ClassVar[str] = "vector_index"
    #: allow-lists up to this size (or 4 * k) are scored exactly instead of through a FAISS filter
    exact_filter_max: int = 2048

    def __init__(self, dimension: int, metric: str = "ip", factory: str = "Flat",
                 model_fingerprint: str | None = None, use_gpu: bool | str = "auto", *,
                 nprobe: int | None = None, ef_search: int = 64, ef_construction: int = 40,
                 train_min: int | None = None, rebuild_fraction: float = 0.2) -> None:
        if use_gpu not in (True, False, "auto"):
            raise DataError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
        if not 0.0 < float(rebuild_fraction) <= 1.0:
            raise DataError(f"rebuild_fraction must be in (0, 1], got {rebuild_fraction}")
        spec = IndexSpec.parse(dimension, metric, factory, ef_construction)
        self.dimension = spec.dimension
        self.metric = spec.metric
        self.factory = spec.factory
        self.model_fingerprint = model_fingerprint
        self.ef_search = int(ef_search)
        self.ef_construction = spec.ef_construction
        self.rebuild_fraction = float(rebuild_fraction)
        self.nprobe = int(nprobe) if nprobe else spec.default_nprobe()
        self.train_min = int(train_min) if train_min is not None else spec.default_train_min()
        self.created = utc_iso()
        self.updated = self.created
        self._spec = spec
        self._gpu = GpuMirror(use_gpu)
        self._ids = IdMap()
        self._store: FaissStore | None = None  # heavy state: built by warm_up()
        self._lock = threading.RLock()

    # -- component contract ----------------------------------------------------------------
    def warm_up(self) -> None:
        """Create the (empty) FAISS index now rather than on first use; idempotent."""
        self._warm()

    def _warm(self) -> FaissStore:
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None:
                    self._store = FaissStore(self._spec, self.nprobe, self.train_min)
                store = self._store
        return store

    def settings(self) -> dict[str, Any]:
        """The JSON-serialisable init arguments (defaults resolved)."""
        return {"dimension": self.dimension, "metric": self.metric, "factory": self.factory,
                "model_fingerprint": self.model_fingerprint, "use_gpu": self.use_gpu, "nprobe": self.nprobe or None,
                "ef_search": self.ef_search, "ef_construction": self.ef_construction, "train_min": self.train_min,
                "rebuild_fraction": self.rebuild_fraction}

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "vector_index", "settings": {...}}``: the configuration, without the vectors."""
        return {"type": self.kind, "settings": self.settings()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VectorIndex":
        """An empty index with the settings of :meth:`to_dict` output."""
        if not isinstance(data, Mapping) or data.get("type") != cls.kind:
            raise DataError(f"not a vector index config (expected type {cls.kind!r}): {data!r}")
        settings = data.get("settings") or {}
        if not isinstance(settings, Mapping):
            raise DataError(f"vector index settings must be an object, got {settings!r}")
        try:
            return cls(**dict(settings))
        except TypeError as exc:
            raise DataError(f"bad vector index settings: {exc}") from None

    @property
    def use_gpu(self) -> bool | str:
        """``"auto"``, ``True`` or ``False`` (see the class docstring)."""
        return self._gpu.use_gpu

    @use_gpu.setter
    def use_gpu(self, value: bool | str) -> None:
        if value not in (True, False, "auto"):
            raise DataError(f"use_gpu must be 'auto', True or False, got {value!r}")
        self._gpu = GpuMirror(value)

    @property
    def _active(self) -> Any:
        """The CPU FAISS index currently holding the vectors (pending buffer until trained)."""
        return self._warm().active

    # -- introspection --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __repr__(self) -> str:
        return (f"VectorIndex(dimension={self.dimension}, metric={self.metric!r}, factory={self.factory!r}, "
                f"size={len(self)}, tombstones={self.tombstones}, trained={self.is_trained})")

    def keys(self) -> list[str]:
        """Live keys in insertion order."""
        return self._ids.keys()

    @property
    def is_trained(self) -> bool:
        """False while an IVF/PQ index still keeps its vectors in the exact pending buffer."""
        return self._store.trained if self._store is not None else not self._spec.needs_training

    @property
    def tombstones(self) -> int:
        """Number of deleted-but-not-yet-purged vectors (HNSW only)."""
        return len(self._ids.tombstones)

    @property
    def on_gpu(self) -> bool:
        """True when searches run on a GPU copy of the index."""
        return self._gpu.active

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary (size, factory, metric, training state, tombstones, GPU use)."""
        return {"size": len(self), "dimension": self.dimension, "metric": self.metric, "factory": self.factory,
                "kind": self._spec.kind, "trained": self.is_trained, "tombstones": self.tombstones,
                "nprobe": self.nprobe or None, "ef_search": self.ef_search if self._spec.kind == "hnsw" else None,
                "model_fingerprint": self.model_fingerprint, "on_gpu": self.on_gpu}

    # -- validation -------------------------------------------------------------------------
    def _check_vectors(self, vectors: Any, n: int | None, what: str = "vectors",
                       error: type[Exception] = DataError) -> np.ndarray:
        try:
            arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{what} must be a numeric array") from None
        if arr.ndim == 1 and arr.size > 0 and (n is None or n == 1):
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise DataError(f"{what} must be a 2-D array (n, {self.dimension}), got shape {arr.shape}")
        if arr.shape[1] != self.dimension:
            raise error(f"{what} have dimension {arr.shape[1]} but the index has dimension {self.dimension}"
                        + (" (were they made by another model?)" if error is IndexMismatchError else ""))
        if n is not None and arr.shape[0] != n:
            raise DataError(f"got {n} keys but {arr.shape[0]} vectors")
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise DataError(f"{what} row {bad} contains NaN or infinity")
        if self.metric == "cosine":
            arr = arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(arr, dtype=np.float32)

    _check_keys = staticmethod(check_keys)

    # -- mutation ----------------------------------------------------------------------------
    def add(self, keys: Sequence[str], vectors: Any, show_progress: bool = False) -> None:
        """Add new vectors. A key that already exists raises :class:`DataError` (use :meth:`upsert`)."""
        keys = check_keys(keys)
        arr = self._check_vectors(vectors, len(keys))
        with self._lock:
            for k in keys:
                if k in self._ids:
                    raise DataError(f"key {k!r} is already in the index; use upsert() to replace it")
            self._insert(keys, arr, show_progress)

    def upsert(self, keys: Sequence[str], vectors: Any, show_progress: bool = False) -> None:
        """Add vectors, replacing the vectors of keys that already exist."""
        keys = check_keys(keys)
        arr = self._check_vectors(vectors, len(keys))
        with self._lock:
            existing = [k for k in keys if k in self._ids]
            if existing:
                self._remove(existing, rebuild=False)
            self._insert(keys, arr, show_progress)
            self._maybe_rebuild()

    def delete(self, keys: Iterable[str], missing_ok: bool = True) -> int:
        """Delete keys; returns how many were removed. Unknown keys are skipped unless ``missing_ok=False``."""
        keys = check_keys(dict.fromkeys(keys if not isinstance(keys, str) else [keys]))
        with self._lock:
            present = [k for k in keys if k in self._ids]
            if not missing_ok and len(present) != len(keys):
                missing = next(k for k in keys if k not in self._ids)
                raise DataError(f"key {missing!r} is not in the index")
            if present:
                self._remove(present, rebuild=True)
            return len(present)

    def _insert(self, keys: list[str], arr: np.ndarray, show_progress: bool) -> None:
        if not keys:
            return
        store = self._warm()
        ids = self._ids.allocate(len(keys))
        training = store.due_for_training(len(keys))  # then the progress bar belongs to the training
        store.add(arr, ids, show_progress and not training)
        self._ids.register(keys, ids)
        self._touch()
        if training and store.train_if_due(show_progress):
            self._touch()

    def _remove(self, keys: list[str], rebuild: bool) -> None:
        store = self._warm()
        ids = self._ids.pop(keys)
        if not store.remove(ids):  # HNSW (or a type without removal): filter them out until a rebuild
            self._ids.tombstones.update(ids.tolist())
        self._touch()
        if rebuild:
            self._maybe_rebuild()

    def _touch(self) -> None:
        self._gpu.mark_dirty()
        self.updated = utc_iso()

    def _maybe_rebuild(self) -> None:
        dead = self._ids.tombstones
        if dead and len(dead) > self.rebuild_fraction * max(self._warm().ntotal, 1):
            self._rebuild()

    def _rebuild(self, show_progress: bool = False) -> None:
        self._warm().rebuild(self._ids.live_ids(), show_progress)
        self._ids.tombstones.clear()
        self._touch()

    def compact(self) -> int:
        """Purge tombstones now (rebuild the HNSW graph from live vectors); returns how many were purged."""
        with self._lock:
            n = len(self._ids.tombstones)
            if n:
                self._rebuild()
            return n

    def train(self, force: bool = True) -> bool:
        """Train an IVF/PQ index on the pending vectors now, even below ``train_min``.

        Returns True when the index is (now) trained. FAISS needs at least ``nlist`` vectors
        (256 for PQ codebooks); with fewer, :class:`DataError` says how many are missing.
        """
        with self._lock:
            store = self._warm()
            if store.trained:
                return True
            if not force and store.pending.ntotal < self.train_min:
                return False
            store.train_from_pending(False)
            self._touch()
            return True

    # -- search ----------------------------------------------------------------------------
    def search(self, queries: Any, k: int = 10, allow: Iterable[str] | None = None) -> list[list[SearchHit]]:
        """Top-``k`` hits for each query row: a list (one per query) of :class:`SearchHit`, best first.

        ``allow`` restricts results to those keys (unknown keys are ignored). ``k`` larger than
        the index returns every match. Queries of the wrong dimension raise
        :class:`~verticore.errors.IndexMismatchError`.
        """
        k = check_k(k)
        q = self._check_vectors(queries, None, what="query vectors", error=IndexMismatchError)
        with self._lock:
            if len(self) == 0 or len(q) == 0:
                return [[] for _ in range(len(q))]
            allow_ids = None
            if allow is not None:
                allow_ids = self._ids.allowed_ids([allow] if isinstance(allow, str) else allow)
                if len(allow_ids) == 0:
                    return [[] for _ in range(len(q))]
            if allow_ids is not None and len(allow_ids) <= max(self.exact_filter_max, 4 * k):
                # a small allow-list: scoring just those vectors is exact and cheaper than a filtered walk
                scores, ids = self._exact(q, k, allow_ids)
            else:
                store = self._warm()
                searcher = IndexSearcher(store, self._ids, self.metric, self.ef_search, self._exact)
                gpu = self._gpu.get(store.active, factory=self.factory,
                                    nprobe=self.nprobe if store.kind == "ivf" else None)
                scores, ids = searcher.search(q, k, allow_ids, gpu)
            return to_hits(scores, ids, self._ids, self.metric)

    def search_one(self, vector: Any, k: int = 10, allow: Iterable[str] | None = None) -> list[SearchHit]:
        """Search with one vector of shape ``(dimension,)``; returns its hits, best first."""
        v = np.asarray(vector, dtype=np.float32) if not isinstance(vector, np.ndarray) else vector
        if v.ndim != 1:
            raise DataError(f"search_one takes one vector of shape ({self.dimension},), got shape {v.shape}; "
                            "use search()")
        return self.search(v.reshape(1, -1), k=k, allow=allow)[0]

    def _exact(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score ``q`` against just the vectors of ``ids`` (reconstructed; lossy for PQ)."""
        return exact_top_k(self._warm().reconstruct(ids), q, k, ids, self.metric)

    # -- vectors -----------------------------------------------------------------------------
    def reconstruct(self, keys: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``keys`` as ``(n, dimension)`` float32 (approximate for PQ indexes)."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        with self._lock:
            for k in keys:
                if k not in self._ids:
                    raise DataError(f"key {k!r} is not in the index")
            if not keys:
                return np.zeros((0, self.dimension), dtype=np.float32)
            return self._warm().reconstruct(self._ids.ids_of(keys))

    # -- convenience -------------------------------------------------------------------------
    @classmethod
    def build(cls, keys: Sequence[str], texts: Sequence[str], embedder: Any, factory: str = "Flat",
              metric: str = "ip", show_progress: bool = False, **kwargs: Any) -> "VectorIndex":
        """Embed ``texts`` with ``embedder`` and index them under ``keys``, recording its fingerprint."""
        keys = check_keys(keys)
        texts = list(texts)
        if len(keys) != len(texts):
            raise DataError(f"got {len(keys)} keys but {len(texts)} texts")
        if texts:
            vectors = embedder.encode(texts, show_progress=show_progress)
        else:
            vectors = np.zeros((0, embedder.dimension), np.float32)
        index = cls(int(embedder.dimension), metric=metric, factory=factory,
                    model_fingerprint=getattr(embedder, "fingerprint", None), **kwargs)
        index.add(keys, vectors, show_progress=show_progress)
        return index

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Save settings and vectors atomically into ``directory`` (see :mod:`.persistence`); returns it."""
        with self._lock:
            store = self._warm()
            data = store.serialize()  # always the CPU index
            sidecar = {"dimension": self.dimension, "metric": self.metric, "factory": self.factory,
                       "model_fingerprint": self.model_fingerprint, "trained": store.trained,
                       "count": len(self._ids), "stored": store.ntotal, **self._ids.to_dict(),
                       "params": {"nprobe": self.nprobe, "ef_search": self.ef_search,
                                  "ef_construction": self.ef_construction, "train_min": self.train_min,
                                  "rebuild_fraction": self.rebuild_fraction},
                       "faiss_version": getattr(faiss_module(), "__version__", "unknown"),
                       "created": self.created, "updated": self.updated}
            return write_index(directory, data, sidecar)

    @classmethod
    def load(cls, directory: str | os.PathLike, expected_fingerprint: str | None = None,
             use_gpu: bool | str = "auto") -> "VectorIndex":
        """Load an index saved by :meth:`save`.

        Raises :class:`~verticore.errors.ArtifactError` (one line) for a missing or corrupt
        sidecar or FAISS file (including a sidecar naming other ids than FAISS stores), and
        :class:`~verticore.errors.IndexMismatchError` when ``expected_fingerprint`` is given and
        the index was built with another model.
        """
        found = read_index(directory, expected_fingerprint)
        params = found.params
        try:
            self = cls(found.dimension, metric=found.metric, factory=found.factory,
                       model_fingerprint=found.model_fingerprint, use_gpu=use_gpu,
                       nprobe=params.get("nprobe") or None, ef_search=int(params.get("ef_search", 64)),
                       ef_construction=int(params.get("ef_construction", 40)),
                       train_min=params.get("train_min"), rebuild_fraction=float(params.get("rebuild_fraction", 0.2)))
        except DataError as exc:
            raise ArtifactError(f"index sidecar {Path(directory) / SIDECAR} is invalid: {exc}") from None
        self._store = FaissStore.from_faiss(self._spec, found.faiss_index, found.trained, self.nprobe, self.train_min)
        self._ids = found.idmap
        self.created = found.created or self.created
        self.updated = found.updated or self.updated
        return self


__all__ = ["VectorIndex", "SearchHit"]
