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

Persistence (:meth:`VectorIndex.save` / :meth:`VectorIndex.load`) never pickles: the FAISS index goes through FAISS's
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

Modules (each small, one job):

* :mod:`.factory` -- settings validation (:class:`~.factory.IndexSpec`), FAISS index-factory
  construction, GPU detection and the lazily refreshed GPU copy (:class:`~.factory.GpuMirror`).
* :mod:`.idmap` -- string keys <-> int64 FAISS ids, tombstones, the next free id.
* :mod:`.store` -- the FAISS indexes themselves: pending buffer, lazy training, removal, rebuilds.
* :mod:`.search` -- selectors, over-fetching, exact scoring, :class:`SearchHit`.
* :mod:`.persistence` -- generation files, sidecar, directory lock, load-time consistency checks.
* :mod:`.vector_index` -- :class:`VectorIndex`, the facade composing them (component contract:
  light ``__init__``, ``warm_up()``, ``to_dict()``/``from_dict()``, ``save(dir)``/``load(dir)``).
"""
from __future__ import annotations

from .factory import gpu_available
from .search import SearchHit
from .vector_index import VectorIndex

__all__ = ["VectorIndex", "SearchHit", "gpu_available"]
