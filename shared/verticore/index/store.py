"""The FAISS side of a vector index: the main index, the exact pending buffer used until an
IVF/PQ index is trained, adding in chunks, removal, lazy training and rebuilds.

:class:`FaissStore` holds vectors under int64 ids and nothing else; which key an id belongs to
and which ids are tombstones is the :class:`~verticore.index.idmap.IdMap`'s business.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import ArtifactError, DataError
from .factory import IndexSpec, faiss_module, first_line, ivf_of

log = logging.getLogger(__name__)

#: vectors handed to FAISS per ``add_with_ids`` call (bounds peak memory and drives the progress bar)
ADD_CHUNK = 20_000


class FaissStore:
    """FAISS indexes for one :class:`IndexSpec`.

    Args:
        spec: construction settings.
        nprobe: IVF lists visited per query (set on every trained IVF index).
        train_min: vectors gathered in the pending buffer before an index that needs training is trained.
    """

    def __init__(self, spec: IndexSpec, nprobe: int, train_min: int) -> None:
        self.spec = spec
        self.nprobe = nprobe
        self.train_min = train_min
        main = spec.new_main()
        self.trained = bool(main.is_trained)
        self.main: Any = main
        self.pending: Any = None if self.trained else spec.new_flat()

    @classmethod
    def from_faiss(cls, spec: IndexSpec, index: Any, trained: bool, nprobe: int, train_min: int) -> "FaissStore":
        """Wrap a deserialised FAISS index: the main index when ``trained``, else the pending buffer."""
        store = cls.__new__(cls)
        store.spec, store.nprobe, store.train_min = spec, nprobe, train_min
        if trained:
            store.main, store.pending, store.trained = index, None, True
            store._set_nprobe(index)
        else:
            store.main, store.pending, store.trained = spec.new_main(), index, False
        return store

    @property
    def active(self) -> Any:
        """The CPU index currently holding the vectors (the pending buffer until trained)."""
        return self.main if self.trained else self.pending

    @property
    def ntotal(self) -> int:
        """Vectors stored, tombstones included."""
        return int(self.active.ntotal)

    @property
    def kind(self) -> str:
        """The spec's kind once trained; the pending buffer behaves like ``"other"`` (exact, removable)."""
        return self.spec.kind if self.trained else "other"

    def _set_nprobe(self, index: Any) -> None:
        ivf = ivf_of(index)
        if ivf is not None:
            ivf.nprobe = self.nprobe

    # -- writing -------------------------------------------------------------------------------
    def due_for_training(self, n_new: int) -> bool:
        """True when adding ``n_new`` vectors brings the pending buffer to ``train_min``."""
        return not self.trained and self.pending.ntotal + n_new >= self.train_min

    def add(self, vectors: np.ndarray, ids: np.ndarray, show_progress: bool = False) -> None:
        """Store ``vectors`` under ``ids`` in the active index (the pending buffer until trained)."""
        add_chunks(self.active, vectors, ids, show_progress, self.spec.factory)

    def train_if_due(self, show_progress: bool = False) -> bool:
        """Train once the pending buffer holds ``train_min`` vectors; True when this call trained.

        A training FAISS refuses (``train_min`` set below what it needs) is logged and the vectors
        stay in the exact pending buffer.
        """
        if not self.due_for_training(0):
            return False
        try:
            self.train_from_pending(show_progress)
        except DataError as exc:
            log.warning("%s; vectors stay in the exact pending buffer", exc)
            return False
        return True

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ``ids`` natively; False when the index cannot (HNSW), so the caller keeps tombstones."""
        if self.trained and self.spec.kind == "hnsw":
            return False
        faiss = faiss_module()
        try:
            self.active.remove_ids(faiss.IDSelectorArray(ids))
        except RuntimeError:  # index type without removal: fall back to tombstones
            return False
        return True

    def train_from_pending(self, show_progress: bool = False) -> None:
        """Train the main index on the pending buffer and move its vectors there.

        Raises :class:`DataError` below the minimum FAISS needs (``nlist``, 256 with PQ).
        """
        faiss = faiss_module()
        pending = self.pending
        n = pending.ntotal
        need = self.spec.min_training_vectors()
        if n < need:
            raise DataError(f"{self.spec.factory} needs at least {need} vectors to train, the index has {n}")
        ids = faiss.vector_to_array(pending.id_map).astype(np.int64)
        vecs = pending.index.reconstruct_n(0, n)
        main = self.spec.new_main()
        try:
            main.train(vecs)
        except RuntimeError as exc:
            raise DataError(f"could not train {self.spec.factory} on {n} vectors: {first_line(exc)}") from None
        self._set_nprobe(main)
        add_chunks(main, vecs, ids, show_progress, self.spec.factory)
        self.main, self.pending, self.trained = main, None, True

    def rebuild(self, live_ids: np.ndarray, show_progress: bool = False) -> None:
        """Replace the main index by a fresh one holding only ``live_ids`` (purges tombstones)."""
        ids = np.sort(live_ids)
        vecs = self.active.reconstruct_batch(ids) if len(ids) else np.zeros((0, self.spec.dimension), np.float32)
        fresh = self.spec.new_main()
        if not fresh.is_trained:  # tombstones on a type that needed training: retrain on live vectors
            fresh.train(vecs)
            self._set_nprobe(fresh)
        if len(ids):
            add_chunks(fresh, np.ascontiguousarray(vecs, dtype=np.float32), ids, show_progress, self.spec.factory)
        self.main = fresh

    # -- reading -----------------------------------------------------------------------------
    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of ``ids`` as float32 (approximate for PQ)."""
        return np.ascontiguousarray(self.active.reconstruct_batch(ids), dtype=np.float32)

    def serialize(self) -> bytes:
        """FAISS's own serialisation of the active CPU index (never pickle)."""
        return faiss_module().serialize_index(self.active).tobytes()


def add_chunks(index: Any, vectors: np.ndarray, ids: np.ndarray, show_progress: bool, factory: str) -> None:
    """``index.add_with_ids`` in chunks of :data:`ADD_CHUNK`, with an optional progress bar."""
    starts: Any = range(0, len(vectors), ADD_CHUNK)
    if show_progress and len(vectors) > ADD_CHUNK:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"index {factory}", unit="chunk")
    try:
        for s in starts:
            index.add_with_ids(vectors[s:s + ADD_CHUNK], ids[s:s + ADD_CHUNK])
    except RuntimeError as exc:  # pragma: no cover - FAISS internal failure
        raise ArtifactError(f"FAISS could not add vectors to {factory}: {first_line(exc)}") from None


__all__ = ["FaissStore", "add_chunks", "ADD_CHUNK"]
