"""Index construction: validated settings (:class:`IndexSpec`), FAISS index-factory parsing and
the GPU choice (:class:`GpuMirror`).

Nothing here knows about keys or files: it turns settings into empty FAISS indexes and decides
whether searches run on a GPU copy.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..errors import ArtifactError, DataError

log = logging.getLogger(__name__)

#: metrics a :class:`~verticore.index.VectorIndex` accepts
METRICS = ("ip", "cosine", "l2")
#: the index "kinds" whose behaviour differs: graph (no native removal), inverted lists (training), rest
KINDS = ("hnsw", "ivf", "other")


def faiss_module() -> Any:
    """The ``faiss`` module, or :class:`~verticore.errors.ArtifactError` naming the package to install."""
    try:
        import faiss  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency of the project
        raise ArtifactError('faiss is not installed: install Verticore with one of its extras, "verticore[cpu]" '
                            '(faiss-cpu) or, on a CUDA 12 host, "verticore[gpu]" (faiss-gpu-cu12)') from None
    return faiss


def first_line(exc: BaseException) -> str:
    """The last line of an exception's text (FAISS puts the useful part there), at most 200 chars."""
    text = str(exc).strip()
    return (text.splitlines()[-1] if text else type(exc).__name__)[:200]


# -- GPU -------------------------------------------------------------------------------------------
_GPU_RES: Any = None


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and at least one GPU is visible."""
    faiss = faiss_module()
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return int(faiss.get_num_gpus()) > 0
    except Exception:  # pragma: no cover - broken driver
        return False


def to_gpu(index: Any) -> Any:
    """Copy a CPU index to GPU 0 (one shared ``StandardGpuResources`` per process)."""
    global _GPU_RES
    faiss = faiss_module()
    if _GPU_RES is None:
        _GPU_RES = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(_GPU_RES, 0, index)


class GpuMirror:
    """The lazily refreshed GPU copy of a CPU index.

    The CPU index stays the source of truth; :meth:`mark_dirty` after each change makes the next
    :meth:`get` copy it again. An index type the GPU cannot hold (HNSW) or a missing GPU makes
    :meth:`get` return ``None`` from then on, so the caller searches on CPU.
    """

    def __init__(self, use_gpu: bool | str = "auto") -> None:
        self.use_gpu = use_gpu
        self._index: Any = None
        self._dirty = True
        self._failed = False

    def wanted(self) -> bool:
        """True when settings ask for a GPU and one is available (module-level lookup: tests patch it)."""
        return self.use_gpu in (True, "auto") and gpu_available()

    @property
    def active(self) -> bool:
        """True when searches run on the GPU copy."""
        return self.wanted() and not self._failed

    def mark_dirty(self) -> None:
        """The CPU index changed: copy it again before the next GPU search."""
        self._dirty = True

    def get(self, cpu_index: Any, *, factory: str, nprobe: int | None = None) -> Any:
        """The GPU copy of ``cpu_index`` (refreshed when dirty), or ``None`` to search on CPU.

        ``nprobe`` is set on the copy for a trained IVF index (GPU indexes do not take search parameters).
        """
        if self._failed or not self.wanted():
            if self.use_gpu is True and not self._failed and not gpu_available():
                log.warning("use_gpu=True but FAISS has no GPU support or no GPU is visible; searching on CPU")
                self._failed = True
            return None
        if self._dirty or self._index is None:
            try:
                self._index = to_gpu(cpu_index)
                if nprobe:
                    try:
                        faiss_module().GpuParameterSpace().set_index_parameter(self._index, "nprobe", nprobe)
                    except Exception:  # a type without nprobe: nothing to set
                        pass
            except Exception as exc:
                log.info("FAISS cannot move %s to GPU (%s); searching on CPU", factory, first_line(exc))
                self._failed = True
                self._index = None
                return None
            self._dirty = False
        return self._index


# -- index construction ------------------------------------------------------------------------------
def ivf_of(index: Any) -> Any:
    """The IVF part of ``index`` (possibly behind a pre-transform), or ``None``."""
    faiss = faiss_module()
    try:
        return faiss.extract_index_ivf(index)
    except Exception:
        return None


def kind_of(index: Any) -> str:
    """``"hnsw"``, ``"ivf"`` or ``"other"`` for a FAISS index (looking through an ``IndexIDMap2``)."""
    faiss = faiss_module()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if ivf_of(inner) is not None:
        return "ivf"
    return "other"


@dataclass(frozen=True)
class IndexSpec:
    """Validated construction settings of one FAISS index plus what its factory string implies.

    Build it with :meth:`parse`; ``kind``, ``nlist`` and ``needs_training`` come from FAISS
    itself (an empty index is built once to read them, which is cheap: no vectors are held).
    """

    dimension: int
    metric: str
    factory: str
    ef_construction: int = 40
    kind: str = "other"
    nlist: int = 0
    needs_training: bool = False

    @classmethod
    def parse(cls, dimension: Any, metric: Any = "ip", factory: Any = "Flat", ef_construction: int = 40) -> "IndexSpec":
        """Validate settings (one-line :class:`~verticore.errors.DataError` for each mistake)."""
        try:
            dimension = int(dimension)
        except (TypeError, ValueError):
            raise DataError(f"index dimension must be a positive integer, got {dimension!r}") from None
        if dimension <= 0:
            raise DataError(f"index dimension must be a positive integer, got {dimension}")
        metric = str(metric).lower()
        if metric not in METRICS:
            raise DataError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        factory = str(factory).strip()
        if not factory:
            raise DataError("empty index factory string; use e.g. 'Flat', 'HNSW32' or 'IVF1024,Flat'")
        if factory.upper().startswith("IDMAP"):
            raise DataError(f"factory {factory!r}: leave out the IDMap prefix, VectorIndex manages ids itself")
        spec = cls(dimension, metric, factory, int(ef_construction))
        probe = spec.new_main()  # validates the factory string
        kind = kind_of(probe)
        nlist = int(ivf_of(probe).nlist) if kind == "ivf" else 0
        return cls(dimension, metric, factory, int(ef_construction), kind, nlist, not bool(probe.is_trained))

    @property
    def uses_pq(self) -> bool:
        """True for product-quantised codes (their codebooks need at least 256 training vectors)."""
        return "PQ" in self.factory.upper()

    @property
    def faiss_metric(self) -> int:
        faiss = faiss_module()
        return faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT

    def default_nprobe(self) -> int:
        """IVF lists visited per query unless set: ``min(nlist, max(8, nlist // 64))`` (0 without IVF)."""
        return min(self.nlist, max(8, self.nlist // 64)) if self.nlist else 0

    def default_train_min(self) -> int:
        """Vectors gathered before training: ``39 * nlist`` (FAISS's k-means minimum), 256+ with PQ."""
        train_min = 39 * self.nlist if self.nlist else 0
        if self.uses_pq:
            train_min = max(train_min, 256)
        return max(train_min, self.nlist, 1)

    def min_training_vectors(self) -> int:
        """The fewest vectors FAISS can train this index on at all."""
        return max(self.nlist, 256 if self.uses_pq else 1)

    def new_main(self) -> Any:
        """An empty index for this factory string that takes our int64 ids.

        IVF gets a hash-table direct map (reconstruct and remove by id); everything else is
        wrapped in ``IndexIDMap2``.
        """
        faiss = faiss_module()
        try:
            index = faiss.index_factory(self.dimension, self.factory, self.faiss_metric)
        except Exception as exc:
            raise DataError(f"invalid FAISS index factory {self.factory!r}: {first_line(exc)}") from None
        kind = kind_of(index)
        if kind == "ivf":
            ivf_of(index).set_direct_map_type(faiss.DirectMap.Hashtable)
            return index
        if kind == "hnsw":
            faiss.downcast_index(index).hnsw.efConstruction = self.ef_construction
        return faiss.IndexIDMap2(index)

    def new_flat(self) -> Any:
        """An empty exact index with ids: the pending buffer of an index that still needs training."""
        faiss = faiss_module()
        return faiss.IndexIDMap2(faiss.IndexFlat(self.dimension, self.faiss_metric))


__all__ = ["METRICS", "IndexSpec", "GpuMirror", "gpu_available", "to_gpu", "faiss_module", "first_line",
           "ivf_of", "kind_of"]
