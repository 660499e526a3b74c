"""Vector index over FAISS with string keys, filters, tombstones and crash-safe persistence.

:class:`VectorIndex` wraps one FAISS index built from an index-factory string:

* ``"Flat"`` -- exact search (the default; right for up to ~1M vectors on CPU).
* ``"HNSW32"`` (any ``HNSWn``) -- graph search. FAISS cannot remove vectors from HNSW, so
  deletes and upserts leave *tombstones*: the dead ids stay in the graph but are filtered out
  of every result (with an :class:`faiss.IDSelector` on CPU, or by over-fetching). When
  tombstones exceed ``rebuild_fraction`` (default 20%) of the stored vectors the graph is
  rebuilt from the live vectors automatically; :meth:`VectorIndex.compact` forces it.
* ``"IVF{nlist},Flat"`` / ``"IVF{nlist},PQ{m}"`` (and other factory strings that need training,
  e.g. ``"PQ16"``) -- IVF needs training. Training is *lazy*: vectors added before enough exist
  (``train_min``, default ``39 * nlist`` -- FAISS's own minimum for good k-means -- and at least
  256 for PQ codebooks) are kept in an exact, searchable pending buffer (a FAISS ``Flat`` index),
  so search is exact until then. When the buffer reaches ``train_min`` the index is trained on
  it, the buffer is moved into the IVF index and all later adds go there directly.
  :meth:`VectorIndex.train` forces training earlier. IVF removal is native (no tombstones);
  ``nprobe`` defaults to ``min(nlist, max(8, nlist // 64))``.

Metrics: ``"ip"`` (inner product; cosine when vectors are L2-normalised, as
:class:`~verticore.inference.Embedder` output is), ``"cosine"`` (like ``"ip"`` but the index
normalises added and query vectors itself) and ``"l2"``. Scores are always *higher is better*:
the inner product for ``ip``/``cosine`` and the **negative squared L2 distance** for ``l2``.

Keys are strings mapped to int64 ids owned by the index (never reused). ``add`` refuses a key
that exists (:class:`~verticore.errors.DataError` naming it), ``upsert`` replaces, ``delete``
ignores unknown keys and returns how many it removed (``missing_ok=False`` makes them an error).

Persistence (:meth:`save` / :meth:`load`) never pickles: the FAISS index goes through FAISS's
own serialiser into a new generation file ``index.<n>.faiss`` (written atomically), then the JSON
sidecar ``index.json`` naming that file (and holding dimension, metric, factory, model
fingerprint, key->id map, tombstones, counts, checksum) is atomically replaced, and only then
are older generations removed. A crash at any point leaves a sidecar that names a complete file.
Saves hold an exclusive ``flock`` on the directory (loads a shared one while a save runs), so the
temp files and orphan generations a killed save leaves are known to be dead and are removed by
the next save or load. Loading checks that the ids FAISS stores are exactly those the sidecar
names (a mismatch raises :class:`~verticore.errors.ArtifactError` instead of searching to nothing).

GPU: with a GPU build of FAISS and a visible GPU (``faiss.get_num_gpus() > 0``) and
``use_gpu`` ``"auto"`` or ``True``, searches run on a GPU copy of the index
(``faiss.index_cpu_to_gpu``). The CPU index stays the source of truth for mutations,
reconstruction and :meth:`save`; the GPU copy is refreshed lazily after a change. Index types
the GPU cannot hold (HNSW) quietly stay on CPU.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from .errors import ArtifactError, DataError, IndexMismatchError
from .io import DirLock, atomic_write_bytes, atomic_write_json, next_generation, remove_stale_temps

log = logging.getLogger(__name__)

SIDECAR = "index.json"
FORMAT = "verticore.vector_index"
FORMAT_VERSION = 1
_GEN_RE = re.compile(r"^index\.(\d+)\.faiss$")
_METRICS = ("ip", "cosine", "l2")


class SearchHit(NamedTuple):
    """One search result: the key and its score (higher is better)."""

    key: str
    score: float


def _faiss():
    try:
        import faiss  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency of the project
        raise ArtifactError("faiss is not installed: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


_GPU_RES: Any = None


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and at least one GPU is visible."""
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return int(faiss.get_num_gpus()) > 0
    except Exception:  # pragma: no cover - broken driver
        return False


def _to_gpu(index: Any) -> Any:
    """Copy a CPU index to GPU 0 (one shared StandardGpuResources per process)."""
    global _GPU_RES
    faiss = _faiss()
    if _GPU_RES is None:
        _GPU_RES = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_GPU_RES, 0, index)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[-1] if text else type(exc).__name__)[:200]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class VectorIndex:
    """A FAISS vector index with string keys (see the module docstring for the design).

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

    Example::

        index = VectorIndex(384, factory="HNSW32", model_fingerprint=embedder.fingerprint)
        index.add(["a", "b"], embedder.encode(["first text", "second text"]))
        hits = index.search_one(embedder.encode("query"), k=5)   # [SearchHit(key, score), ...]
        index.save("my_index"); index = VectorIndex.load("my_index", embedder.fingerprint)
    """

    #: allow-lists up to this size (or 4 * k) are scored exactly instead of through a FAISS filter
    exact_filter_max: int = 2048

    def __init__(self, dimension: int, metric: str = "ip", factory: str = "Flat",
                 model_fingerprint: str | None = None, use_gpu: bool | str = "auto", *,
                 nprobe: int | None = None, ef_search: int = 64, ef_construction: int = 40,
                 train_min: int | None = None, rebuild_fraction: float = 0.2) -> None:
        faiss = _faiss()
        try:
            dimension = int(dimension)
        except (TypeError, ValueError):
            raise DataError(f"index dimension must be a positive integer, got {dimension!r}") from None
        if dimension <= 0:
            raise DataError(f"index dimension must be a positive integer, got {dimension}")
        metric = str(metric).lower()
        if metric not in _METRICS:
            raise DataError(f"unknown metric {metric!r}; use one of {', '.join(_METRICS)}")
        factory = str(factory).strip()
        if not factory:
            raise DataError("empty index factory string; use e.g. 'Flat', 'HNSW32' or 'IVF1024,Flat'")
        if factory.upper().startswith("IDMAP"):
            raise DataError(f"factory {factory!r}: leave out the IDMap prefix, VectorIndex manages ids itself")
        if use_gpu not in (True, False, "auto"):
            raise DataError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
        if not 0.0 < float(rebuild_fraction) <= 1.0:
            raise DataError(f"rebuild_fraction must be in (0, 1], got {rebuild_fraction}")
        self.dimension = dimension
        self.metric = metric
        self.factory = factory
        self.model_fingerprint = model_fingerprint
        self.use_gpu = use_gpu
        self.ef_search = int(ef_search)
        self.ef_construction = int(ef_construction)
        self.rebuild_fraction = float(rebuild_fraction)
        self._faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT

        probe = self._new_main()  # validates the factory string
        self._kind = self._kind_of(probe)
        self._nlist = self._ivf(probe).nlist if self._kind == "ivf" else 0
        self.nprobe = int(nprobe) if nprobe else (min(self._nlist, max(8, self._nlist // 64)) if self._nlist else 0)
        if train_min is None:
            train_min = 39 * self._nlist if self._nlist else 0
            if "PQ" in factory.upper():
                train_min = max(train_min, 256)
            train_min = max(train_min, self._nlist, 1)
        self.train_min = int(train_min)
        self._trained = bool(probe.is_trained)
        self._main = probe
        self._pending = None if self._trained else self._new_flat()

        self._key_to_id: dict[str, int] = {}
        self._id_to_key: dict[int, str] = {}
        self._tombstones: set[int] = set()
        self._next_id = 0
        self._lock = threading.RLock()
        self._gpu_index: Any = None
        self._gpu_dirty = True
        self._gpu_failed = False
        self.created = _now()
        self.updated = self.created

    # -- construction helpers -----------------------------------------------------------
    def _new_main(self):
        faiss = _faiss()
        try:
            index = faiss.index_factory(self.dimension, self.factory, self._faiss_metric)
        except Exception as exc:
            raise DataError(f"invalid FAISS index factory {self.factory!r}: {_first_line(exc)}") from None
        kind = self._kind_of(index)
        if kind == "ivf":
            ivf = self._ivf(index)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct + remove by id
            return index
        if kind == "hnsw":
            faiss.downcast_index(index).hnsw.efConstruction = self.ef_construction
        return faiss.IndexIDMap2(index)

    def _new_flat(self):
        faiss = _faiss()
        return faiss.IndexIDMap2(faiss.IndexFlat(self.dimension, self._faiss_metric))

    @staticmethod
    def _ivf(index):
        faiss = _faiss()
        try:
            return faiss.extract_index_ivf(index)
        except Exception:
            return None

    @classmethod
    def _kind_of(cls, index) -> str:
        faiss = _faiss()
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else faiss.downcast_index(index)
        if isinstance(inner, faiss.IndexHNSW):
            return "hnsw"
        if cls._ivf(inner) is not None:
            return "ivf"
        return "other"

    @property
    def _active(self):
        """The CPU index currently holding the vectors (pending buffer until trained)."""
        return self._main if self._trained else self._pending

    # -- introspection --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._key_to_id)

    def __contains__(self, key: object) -> bool:
        return key in self._key_to_id

    def __repr__(self) -> str:
        return (f"VectorIndex(dimension={self.dimension}, metric={self.metric!r}, factory={self.factory!r}, "
                f"size={len(self)}, tombstones={len(self._tombstones)}, trained={self._trained})")

    def keys(self) -> list[str]:
        """Live keys in insertion order."""
        return list(self._key_to_id)

    @property
    def is_trained(self) -> bool:
        """False while an IVF/PQ index still keeps its vectors in the exact pending buffer."""
        return self._trained

    @property
    def tombstones(self) -> int:
        """Number of deleted-but-not-yet-purged vectors (HNSW only)."""
        return len(self._tombstones)

    @property
    def on_gpu(self) -> bool:
        """True when searches run on a GPU copy of the index."""
        return self._gpu_wanted() and not self._gpu_failed

    def info(self) -> dict[str, Any]:
        """A JSON-friendly summary (size, factory, metric, training state, tombstones, GPU use)."""
        return {"size": len(self), "dimension": self.dimension, "metric": self.metric, "factory": self.factory,
                "kind": self._kind, "trained": self._trained, "tombstones": len(self._tombstones),
                "nprobe": self.nprobe or None, "ef_search": self.ef_search if self._kind == "hnsw" else None,
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

    @staticmethod
    def _check_keys(keys: Iterable[str]) -> list[str]:
        if isinstance(keys, str):
            raise DataError("keys must be a list of strings, got a single string")
        out = list(keys)
        seen: set[str] = set()
        for i, k in enumerate(out):
            if not isinstance(k, str):
                raise DataError(f"key #{i} is {type(k).__name__}, keys must be strings")
            if not k:
                raise DataError(f"key #{i} is empty")
            if k in seen:
                raise DataError(f"key {k!r} appears twice in one batch")
            seen.add(k)
        return out

    # -- mutation ----------------------------------------------------------------------------
    def add(self, keys: Sequence[str], vectors: Any, show_progress: bool = False) -> None:
        """Add new vectors. A key that already exists raises :class:`DataError` (use :meth:`upsert`)."""
        keys = self._check_keys(keys)
        arr = self._check_vectors(vectors, len(keys))
        with self._lock:
            for k in keys:
                if k in self._key_to_id:
                    raise DataError(f"key {k!r} is already in the index; use upsert() to replace it")
            self._insert(keys, arr, show_progress)

    def upsert(self, keys: Sequence[str], vectors: Any, show_progress: bool = False) -> None:
        """Add vectors, replacing the vectors of keys that already exist."""
        keys = self._check_keys(keys)
        arr = self._check_vectors(vectors, len(keys))
        with self._lock:
            existing = [k for k in keys if k in self._key_to_id]
            if existing:
                self._remove(existing, rebuild=False)
            self._insert(keys, arr, show_progress)
            self._maybe_rebuild()

    def delete(self, keys: Iterable[str], missing_ok: bool = True) -> int:
        """Delete keys; returns how many were removed. Unknown keys are skipped unless ``missing_ok=False``."""
        keys = self._check_keys(dict.fromkeys(keys if not isinstance(keys, str) else [keys]))
        with self._lock:
            present = [k for k in keys if k in self._key_to_id]
            if not missing_ok and len(present) != len(keys):
                missing = next(k for k in keys if k not in self._key_to_id)
                raise DataError(f"key {missing!r} is not in the index")
            if present:
                self._remove(present, rebuild=True)
            return len(present)

    def _insert(self, keys: list[str], arr: np.ndarray, show_progress: bool) -> None:
        if not keys:
            return
        ids = np.arange(self._next_id, self._next_id + len(keys), dtype=np.int64)
        target = self._active
        if not self._trained and target.ntotal + len(keys) >= self.train_min:
            # enough vectors: train on pending + new, then move everything into the real index
            self._add_chunks(self._pending, arr, ids, False)
            self._register(keys, ids)
            try:
                self._train_from_pending(show_progress)
            except DataError as exc:  # e.g. train_min set below what FAISS needs: stay exact for now
                log.warning("%s; vectors stay in the exact pending buffer", exc)
            return
        self._add_chunks(target, arr, ids, show_progress)
        self._register(keys, ids)

    def _register(self, keys: list[str], ids: np.ndarray) -> None:
        for k, i in zip(keys, ids.tolist()):
            self._key_to_id[k] = i
            self._id_to_key[i] = k
        self._next_id = int(ids[-1]) + 1
        self._touch()

    def _add_chunks(self, index, arr: np.ndarray, ids: np.ndarray, show_progress: bool) -> None:
        step = 20_000
        starts = range(0, len(arr), step)
        if show_progress and len(arr) > step:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"index {self.factory}", unit="chunk")
        try:
            for s in starts:
                index.add_with_ids(arr[s:s + step], ids[s:s + step])
        except RuntimeError as exc:  # pragma: no cover - FAISS internal failure
            raise ArtifactError(f"FAISS could not add vectors to {self.factory}: {_first_line(exc)}") from None

    def _remove(self, keys: list[str], rebuild: bool) -> None:
        faiss = _faiss()
        ids = np.array([self._key_to_id.pop(k) for k in keys], dtype=np.int64)
        for i in ids.tolist():
            del self._id_to_key[i]
        if self._trained and self._kind == "hnsw":
            self._tombstones.update(ids.tolist())
        else:
            try:
                self._active.remove_ids(faiss.IDSelectorArray(ids))
            except RuntimeError:  # index type without removal: fall back to tombstones
                self._tombstones.update(ids.tolist())
        self._touch()
        if rebuild:
            self._maybe_rebuild()

    def _touch(self) -> None:
        self._gpu_dirty = True
        self.updated = _now()

    def _maybe_rebuild(self) -> None:
        if self._tombstones and len(self._tombstones) > self.rebuild_fraction * max(self._active.ntotal, 1):
            self._rebuild()

    def _live_ids(self) -> np.ndarray:
        return np.fromiter(self._id_to_key.keys(), dtype=np.int64, count=len(self._id_to_key))

    def _rebuild(self, show_progress: bool = False) -> None:
        ids = np.sort(self._live_ids())
        vecs = self._active.reconstruct_batch(ids) if len(ids) else np.zeros((0, self.dimension), np.float32)
        fresh = self._new_main()
        if not fresh.is_trained:  # tombstones on a type that needed training: retrain on live vectors
            fresh.train(vecs)
            ivf = self._ivf(fresh)
            if ivf is not None:
                ivf.nprobe = self.nprobe
        if len(ids):
            self._add_chunks(fresh, np.ascontiguousarray(vecs, dtype=np.float32), ids, show_progress)
        self._main = fresh
        self._tombstones.clear()
        self._touch()

    def compact(self) -> int:
        """Purge tombstones now (rebuild the HNSW graph from live vectors); returns how many were purged."""
        with self._lock:
            n = len(self._tombstones)
            if n:
                self._rebuild()
            return n

    def train(self, force: bool = True) -> bool:
        """Train an IVF/PQ index on the pending vectors now, even below ``train_min``.

        Returns True when the index is (now) trained. FAISS needs at least ``nlist`` vectors
        (256 for PQ codebooks); with fewer, :class:`DataError` says how many are missing.
        """
        with self._lock:
            if self._trained:
                return True
            if not force and self._pending.ntotal < self.train_min:
                return False
            self._train_from_pending(False)
            return True

    def _train_from_pending(self, show_progress: bool) -> None:
        faiss = _faiss()
        pending = self._pending
        n = pending.ntotal
        need = max(self._nlist, 256 if "PQ" in self.factory.upper() else 1)
        if n < need:
            raise DataError(f"{self.factory} needs at least {need} vectors to train, the index has {n}")
        ids = faiss.vector_to_array(pending.id_map).astype(np.int64)
        vecs = pending.index.reconstruct_n(0, n)
        main = self._new_main()
        try:
            main.train(vecs)
        except RuntimeError as exc:
            raise DataError(f"could not train {self.factory} on {n} vectors: {_first_line(exc)}") from None
        ivf = self._ivf(main)
        if ivf is not None:
            ivf.nprobe = self.nprobe
        self._add_chunks(main, vecs, ids, show_progress)
        self._main = main
        self._pending = None
        self._trained = True
        self._touch()

    # -- search ----------------------------------------------------------------------------
    def search(self, queries: Any, k: int = 10, allow: Iterable[str] | None = None) -> list[list[SearchHit]]:
        """Top-``k`` hits for each query row: a list (one per query) of :class:`SearchHit`, best first.

        ``allow`` restricts results to those keys (unknown keys are ignored). ``k`` larger than
        the index returns every match. Queries of the wrong dimension raise
        :class:`~verticore.errors.IndexMismatchError`.
        """
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise DataError(f"k must be a positive integer, got {k!r}") from None
        if k <= 0:
            raise DataError(f"k must be a positive integer, got {k}")
        q = self._check_vectors(queries, None, what="query vectors", error=IndexMismatchError)
        with self._lock:
            if len(self) == 0 or len(q) == 0:
                return [[] for _ in range(len(q))]
            allow_ids = None
            if allow is not None:
                if isinstance(allow, str):
                    allow = [allow]
                allow_ids = np.array(sorted({self._key_to_id[a] for a in allow if a in self._key_to_id}), dtype=np.int64)
                if len(allow_ids) == 0:
                    return [[] for _ in range(len(q))]
            if allow_ids is not None and len(allow_ids) <= max(self.exact_filter_max, 4 * k):
                # a small allow-list: scoring just those vectors is exact and cheaper than a filtered walk
                scores, ids = self._exact(q, k, allow_ids)
            else:
                scores, ids = self._search_index(q, k, allow_ids)
            return self._to_hits(scores, ids)

    def search_one(self, vector: Any, k: int = 10, allow: Iterable[str] | None = None) -> list[SearchHit]:
        """Search with one vector of shape ``(dimension,)``; returns its hits, best first."""
        v = np.asarray(vector, dtype=np.float32) if not isinstance(vector, np.ndarray) else vector
        if v.ndim != 1:
            raise DataError(f"search_one takes one vector of shape ({self.dimension},), got shape {v.shape}; use search()")
        return self.search(v.reshape(1, -1), k=k, allow=allow)[0]

    def _to_hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[SearchHit]]:
        sign = -1.0 if self.metric == "l2" else 1.0
        out: list[list[SearchHit]] = []
        for srow, irow in zip(scores.tolist(), ids.tolist()):
            row = []
            for s, i in zip(srow, irow):
                key = self._id_to_key.get(i) if i >= 0 else None
                if key is not None:
                    row.append(SearchHit(key, sign * float(s) + 0.0))  # + 0.0: no "-0.0" scores
            out.append(row)
        return out

    def _exact(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score ``q`` against just the vectors of ``ids`` (reconstructed; lossy for PQ)."""
        vecs = np.ascontiguousarray(self._active.reconstruct_batch(ids), dtype=np.float32)
        if self.metric == "l2":
            d = (q * q).sum(1)[:, None] - 2.0 * q @ vecs.T + (vecs * vecs).sum(1)[None, :]
            order_key = d
        else:
            d = q @ vecs.T
            order_key = -d
        kk = min(k, len(ids))
        part = np.argpartition(order_key, kk - 1, axis=1)[:, :kk] if kk < len(ids) else np.tile(np.arange(len(ids)), (len(q), 1))
        rows = np.arange(len(q))[:, None]
        order = np.argsort(order_key[rows, part], axis=1, kind="stable")
        top = part[rows, order]
        return d[rows, top], ids[top]

    def _params(self, sel: Any = None, k: int = 10):
        faiss = _faiss()
        if self._trained and self._kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, k))
        if self._trained and self._kind == "ivf":
            if not isinstance(faiss.downcast_index(self._main), faiss.IndexIVF):
                return None  # pre-transformed IVF: parameters do not pass through; nprobe is set on the index
            return faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def _search_index(self, q: np.ndarray, k: int, allow_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        index = self._active
        n_live = len(self._key_to_id) if allow_ids is None else len(allow_ids)
        want = min(k, n_live)
        gpu = self._gpu_search_index()
        if gpu is None:
            if allow_ids is not None:
                sel = faiss.IDSelectorBatch(allow_ids)
            elif self._tombstones:
                dead = faiss.IDSelectorBatch(np.fromiter(self._tombstones, dtype=np.int64))
                sel = faiss.IDSelectorNot(dead)
                sel._keep = dead  # keep the inner selector alive while searching
            else:
                sel = None
            params = self._params(sel, k)
            if params is not None or sel is None:
                D, I = index.search(q, want, params=params) if params is not None else index.search(q, want)
                short = (I >= 0).sum(1) < want
                if short.any() and self._kind == "hnsw" and self._trained:
                    # a restrictive filter starved the graph walk: widen it, then fall back to exact
                    params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(4 * self.ef_search, 4 * k, 256))
                    D2, I2 = index.search(q[short], want, params=params)
                    D[short], I[short] = D2, I2
                    short = (I >= 0).sum(1) < want
                    if short.any():
                        ids = allow_ids if allow_ids is not None else np.sort(self._live_ids())
                        D3, I3 = self._exact(q[short], want, ids)
                        D[short], I[short] = D3, I3
                return D, I
            return self._overfetch(index, q, k, want, allow_ids)
        return self._overfetch(gpu, q, k, want, allow_ids, gpu=True)

    def _overfetch(self, index, q: np.ndarray, k: int, want: int, allow_ids: np.ndarray | None,
                   gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Search without selectors: fetch more than ``k`` and drop tombstoned / disallowed ids."""
        total = index.ntotal
        allowed = set(allow_ids.tolist()) if allow_ids is not None else None
        dead = self._tombstones
        fetch = min(total, max(2 * k, k + len(dead)) if allowed is None else max(4 * k, 64))
        cap = 2048 if gpu else total  # FAISS GPU limit on k
        D_out = np.full((len(q), want), -np.inf if self.metric != "l2" else np.inf, dtype=np.float32)
        I_out = np.full((len(q), want), -1, dtype=np.int64)
        todo = np.arange(len(q))
        while len(todo):
            fetch = min(fetch, total, cap)
            params = None if gpu else self._params(None, fetch)
            D, I = index.search(q[todo], fetch, params=params) if params is not None else index.search(q[todo], fetch)
            still = []
            for row, (drow, irow) in zip(todo.tolist(), zip(D, I)):
                keep = [(d, i) for d, i in zip(drow.tolist(), irow.tolist())
                        if i >= 0 and i not in dead and (allowed is None or i in allowed)]
                if len(keep) >= want or fetch >= min(total, cap):
                    keep = keep[:want]
                    if keep:
                        D_out[row, :len(keep)] = [d for d, _ in keep]
                        I_out[row, :len(keep)] = [i for _, i in keep]
                    if len(keep) < want and fetch < total:  # GPU cap reached: finish exactly on CPU
                        ids = allow_ids if allow_ids is not None else np.sort(self._live_ids())
                        D3, I3 = self._exact(q[row:row + 1], want, ids)
                        D_out[row, :I3.shape[1]], I_out[row, :I3.shape[1]] = D3[0], I3[0]
                else:
                    still.append(row)
            todo = np.array(still, dtype=np.int64)
            fetch *= 4
        return D_out, I_out

    # -- GPU -----------------------------------------------------------------------------
    def _gpu_wanted(self) -> bool:
        return self.use_gpu in (True, "auto") and gpu_available()

    def _gpu_search_index(self):
        if self._gpu_failed or not self._gpu_wanted():
            if self.use_gpu is True and not self._gpu_failed and not gpu_available():
                log.warning("use_gpu=True but FAISS has no GPU support or no GPU is visible; searching on CPU")
                self._gpu_failed = True
            return None
        if self._gpu_dirty or self._gpu_index is None:
            try:
                self._gpu_index = _to_gpu(self._active)
                if self._trained and self._kind == "ivf":
                    try:
                        _faiss().GpuParameterSpace().set_index_parameter(self._gpu_index, "nprobe", self.nprobe)
                    except Exception:
                        pass
            except Exception as exc:
                log.info("FAISS cannot move %s to GPU (%s); searching on CPU", self.factory, _first_line(exc))
                self._gpu_failed = True
                self._gpu_index = None
                return None
            self._gpu_dirty = False
        return self._gpu_index

    # -- vectors -----------------------------------------------------------------------------
    def reconstruct(self, keys: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``keys`` as ``(n, dimension)`` float32 (approximate for PQ indexes)."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        with self._lock:
            for k in keys:
                if k not in self._key_to_id:
                    raise DataError(f"key {k!r} is not in the index")
            if not keys:
                return np.zeros((0, self.dimension), dtype=np.float32)
            ids = np.array([self._key_to_id[k] for k in keys], dtype=np.int64)
            return np.ascontiguousarray(self._active.reconstruct_batch(ids), dtype=np.float32)

    # -- convenience -------------------------------------------------------------------------
    @classmethod
    def build(cls, keys: Sequence[str], texts: Sequence[str], embedder: Any, factory: str = "Flat",
              metric: str = "ip", show_progress: bool = False, **kwargs: Any) -> "VectorIndex":
        """Embed ``texts`` with ``embedder`` and index them under ``keys``, recording its fingerprint."""
        keys = cls._check_keys(keys)
        texts = list(texts)
        if len(keys) != len(texts):
            raise DataError(f"got {len(keys)} keys but {len(texts)} texts")
        vectors = embedder.encode(texts, show_progress=show_progress) if texts else np.zeros((0, embedder.dimension), np.float32)
        index = cls(int(embedder.dimension), metric=metric, factory=factory,
                    model_fingerprint=getattr(embedder, "fingerprint", None), **kwargs)
        index.add(keys, vectors, show_progress=show_progress)
        return index

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Save atomically into ``directory`` (see the module docstring); returns the directory."""
        faiss = _faiss()
        d = Path(directory)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot create index directory {d}: {exc.strerror}") from None
        if d.exists() and not d.is_dir():
            raise ArtifactError(f"{d} is a file, not a directory")
        with self._lock, DirLock(d) as dlock:  # one writer per directory, across processes too
            remove_stale_temps(d, all_dead=dlock.held)  # holding the writer lock, any temp is a dead save's
            gen = self._next_generation(d)
            name = f"index.{gen}.faiss"
            data = faiss.serialize_index(self._active).tobytes()  # always the CPU index
            atomic_write_bytes(d / name, data)
            _fsync_dir(d)
            keys = list(self._key_to_id)
            sidecar = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "generation": gen, "index_file": name,
                "index_sha256": hashlib.sha256(data).hexdigest(), "index_bytes": len(data),
                "dimension": self.dimension, "metric": self.metric, "factory": self.factory,
                "model_fingerprint": self.model_fingerprint, "trained": self._trained,
                "count": len(keys), "stored": int(self._active.ntotal), "next_id": self._next_id,
                "keys": keys, "ids": [self._key_to_id[k] for k in keys], "tombstones": sorted(self._tombstones),
                "params": {"nprobe": self.nprobe, "ef_search": self.ef_search, "ef_construction": self.ef_construction,
                           "train_min": self.train_min, "rebuild_fraction": self.rebuild_fraction},
                "faiss_version": getattr(faiss, "__version__", "unknown"),
                "created": self.created, "updated": self.updated,
            }
            atomic_write_json(d / SIDECAR, sidecar)
            _fsync_dir(d)
            self._remove_other_generations(d, name)
        return d

    @staticmethod
    def _remove_other_generations(d: Path, keep: str) -> None:
        """Delete generation files other than ``keep`` (older ones and orphans of crashed saves).

        Only call with the directory's writer lock held and ``keep`` read from the sidecar."""
        for f in d.iterdir():
            if _GEN_RE.match(f.name) and f.name != keep:
                try:
                    f.unlink()
                except OSError:  # pragma: no cover
                    pass

    @classmethod
    def _clean_dead_saves(cls, d: Path) -> None:
        """Remove what killed saves left in ``d`` (temp files, orphan generations); call with the
        writer lock held so no live save owns any of it."""
        remove_stale_temps(d, all_dead=True)
        try:
            keep = json.loads((d / SIDECAR).read_text(encoding="utf-8"))["index_file"]
        except Exception:  # no readable sidecar: nothing is known to be garbage, keep everything
            return
        if isinstance(keep, str) and _GEN_RE.match(keep) and (d / keep).exists():
            cls._remove_other_generations(d, keep)

    @staticmethod
    def _next_generation(d: Path) -> int:
        return next_generation(d, _GEN_RE, d / SIDECAR)

    @classmethod
    def load(cls, directory: str | os.PathLike, expected_fingerprint: str | None = None,
             use_gpu: bool | str = "auto") -> "VectorIndex":
        """Load an index saved by :meth:`save`.

        Raises :class:`~verticore.errors.ArtifactError` (one line) for a missing or corrupt
        sidecar or FAISS file, and :class:`~verticore.errors.IndexMismatchError` when
        ``expected_fingerprint`` is given and the index was built with another model.
        """
        d = Path(directory)
        if not d.is_dir():
            raise ArtifactError(f"no index directory at {d}; build the index first")
        lock = DirLock(d)
        if lock.acquire(blocking=False) and lock.held:  # no save running: clear what killed saves left
            try:
                cls._clean_dead_saves(d)
            except OSError:  # read-only directory: loading still works
                pass
        else:  # a save may be running: wait for it, then read while it cannot delete our generation
            lock.acquire(shared=True)
        try:
            return cls._load_locked(d, expected_fingerprint, use_gpu)
        finally:
            lock.release()

    @classmethod
    def _load_locked(cls, d: Path, expected_fingerprint: str | None, use_gpu: bool | str) -> "VectorIndex":
        faiss = _faiss()
        side = d / SIDECAR
        if not side.exists():
            raise ArtifactError(f"{d} holds no index ({SIDECAR} is missing); build the index first")
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"index sidecar {side} is corrupt ({_first_line(exc)}); rebuild the index") from None
        if meta.get("format") != FORMAT:
            raise ArtifactError(f"{side} is not a Verticore vector index sidecar; rebuild the index")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ArtifactError(f"{side} has format version {meta.get('format_version')}, newer than this "
                                f"Verticore understands ({FORMAT_VERSION}); upgrade verticore")
        try:
            name = str(meta["index_file"])
            dimension, metric, factory = int(meta["dimension"]), str(meta["metric"]), str(meta["factory"])
            keys, ids = list(meta["keys"]), [int(i) for i in meta["ids"]]
            tombstones = {int(i) for i in meta.get("tombstones", [])}
            trained, next_id, params = bool(meta["trained"]), int(meta["next_id"]), dict(meta.get("params", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"index sidecar {side} is missing or has a bad field ({_first_line(exc)}); "
                                "rebuild the index") from None
        saved_fp = meta.get("model_fingerprint")
        if expected_fingerprint is not None and saved_fp != expected_fingerprint:
            if saved_fp is None:
                raise IndexMismatchError(f"index {d} records no model fingerprint, you are using {expected_fingerprint}; "
                                         "rebuild it with your model")
            raise IndexMismatchError(f"index {d} was built with model {saved_fp}, you are using "
                                     f"{expected_fingerprint}; rebuild it")
        if len(keys) != len(ids) or len(set(keys)) != len(keys) or len(set(ids)) != len(ids):
            raise ArtifactError(f"index sidecar {side} has an inconsistent key map; rebuild the index")
        if not _GEN_RE.match(name):
            raise ArtifactError(f"index sidecar {side} names an unexpected file {name!r}; rebuild the index")
        path = d / name
        if not path.exists():
            raise ArtifactError(f"index file {path} named by {SIDECAR} is missing; rebuild the index")
        data = path.read_bytes()
        if meta.get("index_sha256") and hashlib.sha256(data).hexdigest() != meta["index_sha256"]:
            raise ArtifactError(f"index file {path} is corrupt (checksum mismatch); rebuild the index")
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except Exception as exc:
            raise ArtifactError(f"index file {path} is corrupt ({_first_line(exc)}); rebuild the index") from None
        if index.d != dimension:
            raise ArtifactError(f"index file {path} has dimension {index.d} but {SIDECAR} says {dimension}; rebuild the index")
        if index.ntotal != len(ids) + len(tombstones):
            raise ArtifactError(f"index file {path} holds {index.ntotal} vectors but {SIDECAR} lists "
                                f"{len(ids) + len(tombstones)}; rebuild the index")
        stored = _stored_ids(index)
        if stored is not None:
            # ids that FAISS holds but the sidecar does not name would make every hit vanish in search
            listed = set(ids) | tombstones
            if len(stored) != len(listed) or not np.isin(stored, np.fromiter(listed, np.int64, len(listed))).all():
                unknown = np.setdiff1d(stored, np.fromiter(listed, np.int64, len(listed)))
                raise ArtifactError(f"index file {path} and {SIDECAR} disagree on vector ids ({len(unknown)} of "
                                    f"{len(stored)} stored ids are not in the sidecar); rebuild the index")
        try:
            self = cls(dimension, metric=metric, factory=factory, model_fingerprint=saved_fp, use_gpu=use_gpu,
                       nprobe=params.get("nprobe") or None, ef_search=int(params.get("ef_search", 64)),
                       ef_construction=int(params.get("ef_construction", 40)),
                       train_min=params.get("train_min"), rebuild_fraction=float(params.get("rebuild_fraction", 0.2)))
        except DataError as exc:
            raise ArtifactError(f"index sidecar {side} is invalid: {exc}") from None
        if trained:
            self._main, self._pending, self._trained = index, None, True
            ivf = self._ivf(index)
            if ivf is not None:
                ivf.nprobe = self.nprobe
        else:
            self._pending, self._trained = index, False
        self._key_to_id = dict(zip(keys, ids))
        self._id_to_key = dict(zip(ids, keys))
        self._tombstones = tombstones
        self._next_id = max([next_id, *(i + 1 for i in ids), *(i + 1 for i in tombstones)])
        self.created = str(meta.get("created", self.created))
        self.updated = str(meta.get("updated", self.updated))
        return self


def _stored_ids(index: Any) -> np.ndarray | None:
    """The int64 ids a deserialised FAISS index holds (``None`` for types that do not expose them)."""
    faiss = _faiss()
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    try:
        ivf = faiss.extract_index_ivf(index)
    except Exception:
        return None
    inv = ivf.invlists
    parts = []
    for lst in range(ivf.nlist):
        n = inv.list_size(lst)
        if n:
            ptr = inv.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, n).astype(np.int64).copy())
            inv.release_ids(lst, ptr)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


__all__ = ["VectorIndex", "SearchHit", "gpu_available"]
