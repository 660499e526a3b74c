"""Crash-safe persistence of a vector index directory.

Layout: generation files ``index.<n>.faiss`` (FAISS's own serialisation, never pickle) and the
JSON sidecar ``index.json`` naming the current one. A save writes the new generation atomically,
then atomically replaces the sidecar, and only then removes older generations, so a crash at any
point leaves a sidecar naming a complete file. Saves hold an exclusive lock on the directory
(loads a shared one while a save runs), so temp files and orphan generations a killed save left
are known to be dead and are removed by the next save or load. Loading checks the checksum, the
vector count and that FAISS stores exactly the ids the sidecar names.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, IndexMismatchError
from ..io import (
    DirLock,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    lock_for_reading,
    next_generation,
    remove_stale_temps,
)
from .factory import faiss_module, first_line
from .idmap import IdMap

SIDECAR = "index.json"
FORMAT = "verticore.vector_index"
FORMAT_VERSION = 1
GENERATION_RE = re.compile(r"^index\.(\d+)\.faiss$")


@dataclass
class LoadedIndex:
    """What :func:`read_index` found: settings, ids, the FAISS index and timestamps."""

    dimension: int
    metric: str
    factory: str
    model_fingerprint: str | None
    trained: bool
    params: dict[str, Any]
    idmap: IdMap
    faiss_index: Any
    created: str | None
    updated: str | None


def write_index(directory: str | os.PathLike, data: bytes, sidecar: dict[str, Any]) -> Path:
    """Save serialised FAISS ``data`` as a new generation and ``sidecar`` fields naming it.

    ``sidecar`` holds the index's own fields (settings, key map, counts); this function adds the
    format, generation, file name, checksum and size. Returns the directory.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create index directory {d}: {exc.strerror}") from None
    if d.exists() and not d.is_dir():
        raise ArtifactError(f"{d} is a file, not a directory")
    with DirLock(d) as dlock:  # one writer per directory, across processes too
        remove_stale_temps(d, all_dead=dlock.held)  # holding the writer lock, any temp is a dead save's
        gen = next_generation(d, GENERATION_RE, d / SIDECAR)
        name = f"index.{gen}.faiss"
        atomic_write_bytes(d / name, data)
        fsync_dir(d)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "generation": gen, "index_file": name,
                "index_sha256": hashlib.sha256(data).hexdigest(), "index_bytes": len(data), **sidecar}
        atomic_write_json(d / SIDECAR, meta)
        fsync_dir(d)
        remove_other_generations(d, name)
    return d


def remove_other_generations(d: Path, keep: str) -> None:
    """Delete generation files other than ``keep`` (older ones and orphans of crashed saves).

    Only call with the directory's writer lock held and ``keep`` read from the sidecar."""
    for f in d.iterdir():
        if GENERATION_RE.match(f.name) and f.name != keep:
            try:
                f.unlink()
            except OSError:  # pragma: no cover
                pass


def clean_dead_saves(d: Path) -> None:
    """Remove what killed saves left in ``d`` (temp files, orphan generations); call with the
    writer lock held so no live save owns any of it."""
    remove_stale_temps(d, all_dead=True)
    try:
        keep = json.loads((d / SIDECAR).read_text(encoding="utf-8"))["index_file"]
    except Exception:  # no readable sidecar: nothing is known to be garbage, keep everything
        return
    if isinstance(keep, str) and GENERATION_RE.match(keep) and (d / keep).exists():
        remove_other_generations(d, keep)


def read_index(directory: str | os.PathLike, expected_fingerprint: str | None = None) -> LoadedIndex:
    """Read an index directory written by :func:`write_index`, checking it thoroughly.

    Raises :class:`~verticore.errors.ArtifactError` (one line) for a missing or corrupt sidecar
    or FAISS file, and :class:`~verticore.errors.IndexMismatchError` when ``expected_fingerprint``
    is given and the index was built with another model.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ArtifactError(f"no index directory at {d}; build the index first")
    lock = lock_for_reading(d, clean_dead_saves)
    try:
        return _read_locked(d, expected_fingerprint)
    finally:
        lock.release()


def _read_locked(d: Path, expected_fingerprint: str | None) -> LoadedIndex:
    faiss = faiss_module()
    side = d / SIDECAR
    if not side.exists():
        raise ArtifactError(f"{d} holds no index ({SIDECAR} is missing); build the index first")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"index sidecar {side} is corrupt ({first_line(exc)}); rebuild the index") from None
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{side} is not a Verticore vector index sidecar; rebuild the index")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ArtifactError(f"{side} has format version {meta.get('format_version')}, newer than this "
                            f"Verticore understands ({FORMAT_VERSION}); upgrade verticore")
    try:
        name = str(meta["index_file"])
        dimension, metric, factory = int(meta["dimension"]), str(meta["metric"]), str(meta["factory"])
        id_fields = {"keys": list(meta["keys"]), "ids": [int(i) for i in meta["ids"]],
                     "tombstones": [int(i) for i in meta.get("tombstones", [])], "next_id": int(meta["next_id"])}
        trained, params = bool(meta["trained"]), dict(meta.get("params", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"index sidecar {side} is missing or has a bad field ({first_line(exc)}); "
                            "rebuild the index") from None
    saved_fp = meta.get("model_fingerprint")
    if expected_fingerprint is not None and saved_fp != expected_fingerprint:
        if saved_fp is None:
            raise IndexMismatchError(f"index {d} records no model fingerprint, you are using {expected_fingerprint}; "
                                     "rebuild it with your model")
        raise IndexMismatchError(f"index {d} was built with model {saved_fp}, you are using "
                                 f"{expected_fingerprint}; rebuild it")
    try:
        idmap = IdMap.from_dict(id_fields)
    except ValueError:
        raise ArtifactError(f"index sidecar {side} has an inconsistent key map; rebuild the index") from None
    if not GENERATION_RE.match(name):
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
        raise ArtifactError(f"index file {path} is corrupt ({first_line(exc)}); rebuild the index") from None
    if index.d != dimension:
        raise ArtifactError(f"index file {path} has dimension {index.d} but {SIDECAR} says {dimension}; "
                            "rebuild the index")
    expected = len(idmap) + len(idmap.tombstones)
    if index.ntotal != expected:
        raise ArtifactError(f"index file {path} holds {index.ntotal} vectors but {SIDECAR} lists "
                            f"{expected}; rebuild the index")
    listed = idmap.stored_ids()
    stored = stored_ids(index)
    if stored is not None:
        # ids that FAISS holds but the sidecar does not name would make every hit vanish in search
        wanted = np.fromiter(listed, np.int64, len(listed))
        if len(stored) != len(listed) or not np.isin(stored, wanted).all():
            unknown = np.setdiff1d(stored, wanted)
            raise ArtifactError(f"index file {path} and {SIDECAR} disagree on vector ids ({len(unknown)} of "
                                f"{len(stored)} stored ids are not in the sidecar); rebuild the index")
    return LoadedIndex(dimension, metric, factory, saved_fp, trained, params, idmap, index,
                       _opt_str(meta.get("created")), _opt_str(meta.get("updated")))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def stored_ids(index: Any) -> np.ndarray | None:
    """The int64 ids a deserialised FAISS index holds (``None`` for types that do not expose them)."""
    faiss = faiss_module()
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


__all__ = ["SIDECAR", "FORMAT", "FORMAT_VERSION", "GENERATION_RE", "LoadedIndex", "write_index", "read_index",
           "clean_dead_saves", "remove_other_generations", "stored_ids"]
