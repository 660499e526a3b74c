"""Crash safety of persisted state (issue #11): a kill at any point of a save leaves the last
complete state loadable, never a mix, and the next open/save clears what the dead save left."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from verticore.errors import ArtifactError

ROOT = Path(__file__).resolve().parents[1]


class HashEmbedder:
    """A deterministic stand-in for the Embedder (text -> unit vector from its SHA-256): fast, and
    a vector can be recomputed from its text to check the two still belong together."""

    model = "test-hash-embedder"
    fingerprint = "sha256:test-hash-embedder"
    dimension = 16

    def encode(self, texts, show_progress: bool = False, **_: object) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out) if out else np.zeros((0, self.dimension), np.float32)


class Crash(BaseException):
    """Stands for a kill: nothing catches it (it is not an Exception)."""


def _run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT / "apps"), str(ROOT / "tests")]),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


# -- atomic writes ----------------------------------------------------------------------------
def test_atomic_write_fsyncs_file_then_renames_then_fsyncs_directory(tmp_path, monkeypatch):
    from verticore import io as vio

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace", str(b)))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "state.json"
    vio.atomic_write_json(target, {"a": 1})
    kinds = [(k, "<dir>" if k == "fsync" and p == str(tmp_path) else Path(p).name) for k, p in events]
    assert kinds[0][0] == "fsync" and kinds[0][1].startswith(".state.json.") and kinds[0][1].endswith(".tmp")
    assert kinds[1] == ("replace", "state.json")
    assert kinds[2] == ("fsync", "<dir>")  # the rename itself made durable
    assert json.loads(target.read_text()) == {"a": 1}


# -- vector index -----------------------------------------------------------------------------
def _small_index(n: int = 40, factory: str = "Flat"):
    from verticore.index import VectorIndex

    X = HashEmbedder().encode([f"text {i}" for i in range(n)])
    idx = VectorIndex(HashEmbedder.dimension, factory=factory, train_min=n if factory.startswith("IVF") else None)
    idx.add([f"k{i}" for i in range(n)], X)
    return idx, X


def test_killed_index_save_leaves_temp_that_next_open_removes(tmp_path):
    """A real kill (os._exit) after the FAISS temp file is written, before its rename: the next
    load ignores and removes it (old code left it forever); a live writer's temp is never touched."""
    idx, X = _small_index()
    idx.save(tmp_path)
    child = _run_child(f"""
        import os, numpy as np
        from verticore import io as vio
        from verticore.index import VectorIndex
        idx = VectorIndex.load({str(tmp_path)!r})
        idx.upsert(["new"], np.ones((1, {HashEmbedder.dimension}), np.float32))
        os.replace = lambda a, b: os._exit(9)   # killed right before the first rename
        idx.save({str(tmp_path)!r})
    """)
    assert child.returncode == 9, child.stderr
    temps = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".index.2.faiss.")
    from verticore.index import VectorIndex

    back = VectorIndex.load(tmp_path)
    assert len(back) == 40 and "new" not in back  # the previous complete generation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.1.faiss", "index.json"]


def test_index_orphan_generation_removed_on_open(tmp_path, monkeypatch):
    from verticore.index import VectorIndex
    from verticore.index import persistence as index_persistence

    idx, _ = _small_index()
    idx.save(tmp_path)
    idx.add(["late"], HashEmbedder().encode(["late"]))

    def crash(*a, **k):
        raise Crash("killed before the sidecar")

    monkeypatch.setattr(index_persistence, "atomic_write_json", crash)
    with pytest.raises(Crash):
        idx.save(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "index.2.faiss").exists()
    back = VectorIndex.load(tmp_path)
    assert "late" not in back and not (tmp_path / "index.2.faiss").exists()


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF4,Flat"])
def test_sidecar_ids_disagreeing_with_faiss_are_refused(tmp_path, factory):
    """A sidecar naming other ids than FAISS stores (same count) used to load and then return no
    hits at all; now load says the two disagree."""
    from verticore.index import VectorIndex

    idx, X = _small_index(factory=factory)
    idx.save(tmp_path)
    assert VectorIndex.load(tmp_path).search_one(X[3], k=1)[0].key == "k3"
    side = tmp_path / "index.json"
    meta = json.loads(side.read_text())
    meta["ids"] = [i + 1000 for i in meta["ids"]]
    meta["next_id"] = max(meta["ids"]) + 1
    side.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="disagree on vector ids"):
        VectorIndex.load(tmp_path)


# -- recommender catalog ----------------------------------------------------------------------
def _records(version: int, n: int = 12) -> list[dict]:
    # version 2 rewrites every description (so every vector changes) and adds items
    count = n if version == 1 else n + 3
    return [{"item_id": f"i{i}", "title": f"Item {i}", "description": f"v{version} description {i}"}
            for i in range(count)]


def _state(cat) -> dict[str, str]:
    return {k: cat.texts[k] for k in cat.ids}


def _assert_vectors_match_texts(cat) -> None:
    ids = cat.ids
    want = HashEmbedder().encode([cat.texts[k] for k in ids])
    assert np.allclose(cat.vectors(ids), want, atol=1e-6), "vectors disagree with their texts"


class _CrashAt:
    """Raise :class:`Crash` at the ``k``-th file-system step (write/fsync/rename/unlink/mkdir)."""

    def __init__(self, monkeypatch, k: int | None) -> None:
        self.k, self.n = k, 0
        for mod, name in ((os, "replace"), (os, "rename"), (os, "fsync"), (os, "unlink"), (os, "mkdir"),
                          (shutil, "rmtree")):
            real = getattr(mod, name)
            monkeypatch.setattr(mod, name, self._wrap(real))

    def _wrap(self, real):
        def step(*a, **kw):
            self.n += 1
            if self.k is not None and self.n == self.k:
                self.k = None  # crash once; the unwinding that follows runs normally
                raise Crash(f"killed at step {self.n}")
            return real(*a, **kw)
        return step


def test_catalog_save_killed_at_every_step_loads_a_complete_generation(tmp_path, monkeypatch):
    from recommender.catalog import Catalog

    emb = HashEmbedder()
    base = tmp_path / "base"
    cat = Catalog(emb)
    cat.upsert(_records(1))
    cat.save(base)
    v1 = _state(cat)
    cat.upsert(_records(2))
    v2 = _state(cat)

    # count the file-system steps of one save
    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    with monkeypatch.context() as m:
        counter = _CrashAt(m, None)
        cat.save(probe)
    steps = counter.n
    assert steps >= 8

    seen = set()
    for k in range(1, steps + 1):
        d = tmp_path / f"crash{k}"
        shutil.copytree(base, d)
        with monkeypatch.context() as m:
            _CrashAt(m, k)
            try:
                cat.save(d)
            except Crash:
                pass
        back = Catalog.load(d, embedder=emb)
        state = _state(back)
        assert state in (v1, v2), f"crash at step {k}: a mix of generations"
        _assert_vectors_match_texts(back)
        seen.add("v1" if state == v1 else "v2")
    assert seen == {"v1", "v2"}
    for k in range(1, steps + 1):  # the next save starts clean: one generation, nothing half-written
        d = tmp_path / f"crash{k}"
        back = Catalog.load(d, embedder=emb)
        back.upsert(_records(2))
        back.save(d)
        again = Catalog.load(d, embedder=emb)
        assert _state(again) == v2
        assert [p.name for p in d.iterdir() if p.name.startswith("gen-")] == [f"gen-{again.generation}"]
        assert not [p for p in d.rglob("*.tmp")]


def test_catalog_kill_in_a_subprocess_keeps_the_previous_generation(tmp_path):
    """A real kill (os._exit) once the new generation is fully written but before catalog.json
    names it: the old catalog loads (old code: "N items but N+1 vectors"), and the half-made
    generation is cleared by the next open."""
    d = tmp_path / "cat"
    child = _run_child(f"""
        import os
        from test_persistence_crash import HashEmbedder, _records
        from recommender.catalog import Catalog
        cat = Catalog(HashEmbedder())
        cat.upsert(_records(1))
        cat.save({str(d)!r})
        cat.upsert(_records(2))
        real = os.replace
        def replace(a, b):
            if str(b).endswith("catalog.json") or str(b).endswith("items.jsonl"):
                os._exit(9)
            return real(a, b)
        os.replace = replace
        cat.save({str(d)!r})
    """)
    assert child.returncode == 9, child.stderr
    from recommender.catalog import Catalog

    back = Catalog.load(d, embedder=HashEmbedder())
    assert _state(back) == {r["item_id"]: back.item_text(r) for r in _records(1)}
    _assert_vectors_match_texts(back)
    assert back.generation == 1 and sorted(p.name for p in d.iterdir()) == ["catalog.json", "gen-1"]


def test_catalog_in_the_old_layout_loads_and_is_migrated_on_save(tmp_path):
    from recommender.catalog import LEGACY_CATALOG_FORMAT, Catalog

    emb = HashEmbedder()
    cat = Catalog(emb)
    cat.upsert(_records(1))
    d = tmp_path / "old"
    # what the previous version wrote: index/ + items.jsonl + catalog.json (format /1)
    cat.index.save(d / "index")
    (d / "items.jsonl").write_text("".join(json.dumps({"id": k, "text": cat.texts[k], "record": cat.items[k]}) + "\n"
                                           for k in cat.items))
    (d / "catalog.json").write_text(json.dumps({
        "format": LEGACY_CATALOG_FORMAT, "template": cat.template, "id_field": cat.id_field, "factory": "Flat",
        "model": emb.model, "model_fingerprint": emb.fingerprint, "dimension": emb.dimension, "n_items": len(cat)}))
    old = Catalog.load(d, embedder=emb)
    assert _state(old) == _state(cat) and old.generation == 0
    old.upsert(_records(2))
    old.save(d)
    assert sorted(p.name for p in d.iterdir()) == ["catalog.json", "gen-1"]
    new = Catalog.load(d, embedder=emb)
    assert _state(new) == _state(old) and new.generation == 1
    _assert_vectors_match_texts(new)


def test_catalog_items_and_index_disagreeing_on_ids_are_refused(tmp_path):
    from recommender.catalog import Catalog

    cat = Catalog(HashEmbedder())
    cat.upsert(_records(1))
    cat.save(tmp_path)
    [items] = list(tmp_path.rglob("items.jsonl"))
    items.write_text(items.read_text().replace('"id": "i0"', '"id": "zz"', 1))
    meta = json.loads((tmp_path / "catalog.json").read_text())
    meta.pop("items_sha256", None)  # as if the file was written with a stale checksum-less layout
    (tmp_path / "catalog.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="only one of"):
        Catalog.load(tmp_path, embedder=HashEmbedder())


# -- knowledge base ---------------------------------------------------------------------------
def test_kb_first_index_save_killed_still_opens(tmp_path, monkeypatch, default_embedder):
    """A kill during the very first dense-index save leaves only a FAISS generation file; the KB
    used to refuse to open ("index.json is missing"). Now it opens and re-embeds from SQLite."""
    from customer_service.kb import KnowledgeBase
    from verticore.index import persistence as index_persistence

    (tmp_path / "faq.md").write_text("# Delivery\n\nParcels arrive within three working days.\n")
    kb = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)

    def crash(*a, **k):
        raise Crash("killed before the sidecar")

    monkeypatch.setattr(index_persistence, "atomic_write_json", crash)
    with pytest.raises(Crash):
        kb.ingest(tmp_path / "faq.md")
    monkeypatch.undo()
    kb.close()
    assert not (tmp_path / "kb" / "dense" / "index.json").exists()
    again = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    hits = again.search("how long does delivery take", k=1, mode="dense")
    assert hits and "three working days" in hits[0].text
    again.close()


def test_kb_killed_between_sqlite_and_index_is_repaired(tmp_path, monkeypatch, default_embedder):
    from customer_service.kb import KnowledgeBase
    from verticore.index import VectorIndex

    (tmp_path / "a.md").write_text("# Returns\n\nReturns are free for thirty days.\n")
    (tmp_path / "b.md").write_text("# Delivery\n\nParcels arrive within three working days.\n")
    kb = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    kb.ingest(tmp_path / "a.md")

    def crash(*a, **k):
        raise Crash("killed before the index save")

    monkeypatch.setattr(VectorIndex, "save", crash)
    with pytest.raises(Crash):
        kb.ingest(tmp_path / "b.md")
    monkeypatch.undo()
    kb.close()
    again = KnowledgeBase(tmp_path / "kb", embedder=default_embedder)
    assert set(again.index.keys()) == {r[0] for r in again.conn.execute("SELECT chunk_id FROM chunks")}
    assert "three working days" in again.search("delivery time", k=1, mode="dense")[0].text
    again.close()


# -- fine-tuned artifacts (StagedDir) ---------------------------------------------------------
def _fake_artifact(d: Path, tag: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"tag": tag}))
    (d / "model.safetensors").write_bytes(tag.encode() * 10)


def test_staged_swap_fsyncs_and_replaces_in_one_step(tmp_path, monkeypatch):
    from verticore.finetune.common import StagedDir

    out = tmp_path / "model"
    _fake_artifact(out, "old")
    staged = StagedDir(out)
    _fake_artifact(staged.tmp, "new")
    synced: list[str] = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    renames: list[tuple] = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renames.append((a, b)), real_rename(a, b))[1])
    staged.commit()
    assert json.loads((out / "config.json").read_text())["tag"] == "new"
    assert any(p.endswith("model.safetensors") for p in synced)  # weights durable before the swap
    assert renames == []  # one atomic exchange (Linux), not rename-away + rename-in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_swap_killed_between_two_renames_is_recovered_on_open(tmp_path, monkeypatch):
    """Where no atomic exchange exists the swap is two renames; a kill between them leaves no
    artifact at the path. Opening it (check_artifact_dir / resolve_model / a new StagedDir) puts
    the previous complete artifact back."""
    from verticore import artifact
    from verticore.artifact import check_artifact_dir
    from verticore.finetune.common import StagedDir
    from verticore.models import resolve_model

    for opener in ("check", "resolve", "staged"):
        out = tmp_path / opener / "model"
        _fake_artifact(out, "old")
        staged = StagedDir(out)
        _fake_artifact(staged.tmp, "new")
        with monkeypatch.context() as m:
            m.setattr(artifact, "_exchange", lambda a, b: False, raising=False)
            calls = {"n": 0}
            real_rename = os.rename

            def rename(a, b):
                calls["n"] += 1
                if calls["n"] == 2:
                    raise Crash("killed between the renames")
                return real_rename(a, b)

            m.setattr(os, "rename", rename)
            with pytest.raises(Crash):
                staged.commit()
        assert not out.exists()
        if opener == "check":
            check_artifact_dir(out)
        elif opener == "resolve":
            resolve_model(str(out))
        else:
            StagedDir(out).abort()
        assert json.loads((out / "config.json").read_text())["tag"] == "old"


def test_staging_folders_of_killed_runs_are_removed_live_ones_kept(tmp_path):
    from verticore.finetune.common import StagedDir

    out = tmp_path / "model"
    child = _run_child(f"""
        import os
        from verticore.finetune.common import StagedDir
        s = StagedDir({str(out)!r})
        (s.tmp / "model.safetensors").write_bytes(b"half")
        os._exit(9)   # killed while writing the artifact
    """)
    assert child.returncode == 9, child.stderr
    dead = [p for p in tmp_path.iterdir() if p.name.endswith(".staging")]
    assert len(dead) == 1
    legacy = tmp_path / ".model.abcd1234.staging"  # an older version's name, two hours old
    legacy.mkdir()
    os.utime(legacy, (legacy.stat().st_mtime - 7200,) * 2)
    live = StagedDir(out)  # this process: alive
    nxt = StagedDir(out)
    names = {p.name for p in tmp_path.iterdir()}
    assert dead[0].name not in names and legacy.name not in names
    assert live.tmp.name in names and nxt.tmp.name in names
    live.abort()
    nxt.abort()


# -- recommender CF model ---------------------------------------------------------------------
def test_ease_save_killed_between_weights_and_item_list_keeps_the_old_pair(tmp_path, monkeypatch):
    """EASE wrote ease.safetensors then ease.json: a kill between them paired new weights with
    the old item list (same size, other items: silently wrong scores). Now the old pair loads."""
    import pandas as pd

    from recommender import cf as cf_mod
    from recommender.cf import EASE
    from recommender.interactions import Interactions

    def model(users, items):
        return EASE(l2=1.0).fit(Interactions.from_dataframe(pd.DataFrame({"user_id": users, "item_id": items})))

    old = model(["u1", "u1", "u2", "u2", "u3"], ["a", "b", "b", "c", "a"])
    new = model(["u1", "u1", "u1", "u2", "u3", "u3"], ["x", "y", "z", "x", "y", "z"])  # same size, other items
    assert old.B.shape == new.B.shape and not np.allclose(old.B, new.B)
    old.save(tmp_path)

    def crash(*a, **k):
        raise Crash("killed before ease.json")

    monkeypatch.setattr(cf_mod, "atomic_write_json", crash)
    with pytest.raises(Crash):
        new.save(tmp_path)
    monkeypatch.undo()
    back = EASE.load(tmp_path)
    assert back.items == old.items
    np.testing.assert_array_equal(back.B, old.B)
    new.save(tmp_path)  # the next save leaves one weights file
    assert EASE.load(tmp_path).items == new.items
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors"] == ["ease.3.safetensors"]


def test_ease_saved_by_older_versions_still_loads(tmp_path):
    import pandas as pd
    from safetensors.numpy import save

    from recommender.cf import EASE
    from recommender.interactions import Interactions

    df = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "b"]})
    m = EASE(l2=1.0).fit(Interactions.from_dataframe(df))
    (tmp_path / "ease.safetensors").write_bytes(save({"B": m.B}))
    (tmp_path / "ease.json").write_text(json.dumps({"format": "verticore-ease/1", "l2": 1.0, "implicit": True,
                                                    "items": m.items}))
    np.testing.assert_array_equal(EASE.load(tmp_path).B, m.B)
    m.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ease.1.safetensors", "ease.json"]
    np.testing.assert_array_equal(EASE.load(tmp_path).B, m.B)


def test_load_during_a_running_save_waits_and_leaves_the_writers_files_alone(tmp_path):
    """Cleanup only happens when no save holds the directory: a load that finds one running
    waits for it (so the generation it reads cannot vanish) and removes nothing of it."""
    import threading

    from verticore.index import VectorIndex
    from verticore.io import DirLock

    idx, _ = _small_index()
    idx.save(tmp_path)
    writer = DirLock(tmp_path)
    assert writer.acquire() and writer.held  # stands for a save in progress in another process
    live_temp = tmp_path / f".index.json.{os.getpid()}.inflight.tmp"
    live_temp.write_text("{}")
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("index", VectorIndex.load(tmp_path)))
    t.start()
    t.join(0.5)
    assert t.is_alive() and live_temp.exists()  # waiting for the writer, nothing removed
    writer.release()
    t.join(10)
    assert len(result["index"]) == 40 and live_temp.exists()
    VectorIndex.load(tmp_path)  # no save running now: the leftover is cleared
    assert not live_temp.exists()
