"""The VectorIndex parts and its component contract: light ``__init__``, ``warm_up()``,
``to_dict()``/``from_dict()``, ``save``/``load``; UTC timestamps; automatic GPU choice."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from verticore.errors import ArtifactError, DataError
from verticore.index import SearchHit, VectorIndex, gpu_available
from verticore.index import factory as index_factory
from verticore.index.factory import GpuMirror, IndexSpec
from verticore.index.idmap import IdMap, check_keys
from verticore.index.persistence import SIDECAR, read_index, write_index
from verticore.index.search import exact_top_k
from verticore.text import utc_iso

D = 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, D)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return [f"k{i}" for i in range(300)], X


# -- component contract -------------------------------------------------------------------------
def test_init_is_light_and_warm_up_builds_the_faiss_index():
    idx = VectorIndex(D, factory="HNSW16", model_fingerprint="sha256:m")
    assert idx._store is None  # no FAISS index held until needed
    assert len(idx) == 0 and idx.is_trained and idx.search(np.ones((1, D)), k=3) == [[]]
    assert idx._store is None  # an empty search needs no index either
    idx.warm_up()
    store = idx._store
    assert store is not None and store.active.ntotal == 0
    idx.warm_up()
    assert idx._store is store  # idempotent


def test_operations_warm_up_lazily(data):
    keys, X = data
    idx = VectorIndex(D)
    idx.add(keys[:10], X[:10])  # no explicit warm_up
    assert idx.search_one(X[3], k=1)[0].key == "k3"
    ivf = VectorIndex(D, factory="IVF4,Flat", train_min=1000)
    assert not ivf.is_trained and ivf._store is None  # known from the spec, without building the index


def test_to_dict_is_json_and_from_dict_round_trips(data):
    keys, X = data
    idx = VectorIndex(D, metric="cosine", factory="IVF4,Flat", model_fingerprint="sha256:m", use_gpu=False,
                      ef_search=80, rebuild_fraction=0.3)
    cfg = idx.to_dict()
    assert cfg["type"] == "vector_index"
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["settings"]["nprobe"] == 4 and cfg["settings"]["train_min"] == 156  # defaults resolved
    twin = VectorIndex.from_dict(cfg)
    assert twin.to_dict() == cfg and len(twin) == 0 and twin._store is None
    with pytest.raises(DataError, match="not a vector index config"):
        VectorIndex.from_dict({"type": "bm25", "settings": {}})
    with pytest.raises(DataError, match="bad vector index settings"):
        VectorIndex.from_dict({"type": "vector_index", "settings": {"dimension": D, "colour": "red"}})
    with pytest.raises(DataError, match="unknown metric"):
        VectorIndex.from_dict({"type": "vector_index", "settings": {"dimension": D, "metric": "hamming"}})


def test_save_load_keeps_config_and_vectors(data, tmp_path):
    keys, X = data
    idx = VectorIndex(D, factory="HNSW16", model_fingerprint="sha256:m", ef_search=50, rebuild_fraction=0.5)
    idx.add(keys, X)
    idx.delete(keys[:5])
    idx.save(tmp_path)
    back = VectorIndex.load(tmp_path, "sha256:m")
    assert back.to_dict() == idx.to_dict()
    assert back.search(X[:10], k=4) == idx.search(X[:10], k=4)
    # an empty, never warmed index saves and loads too
    empty = VectorIndex(D, factory="IVF4,Flat")
    empty.save(tmp_path / "empty")
    again = VectorIndex.load(tmp_path / "empty")
    assert len(again) == 0 and again.to_dict() == empty.to_dict()


# -- timestamps ------------------------------------------------------------------------------------
def test_timestamps_are_utc(data, tmp_path):
    keys, X = data
    stamp = utc_iso()
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0) and stamp.endswith("+00:00")
    idx = VectorIndex(D)
    idx.add(keys[:3], X[:3])
    assert idx.created.endswith("+00:00") and idx.updated.endswith("+00:00")
    idx.save(tmp_path)
    meta = json.loads((tmp_path / SIDECAR).read_text())
    assert meta["created"] == idx.created and meta["updated"] == idx.updated
    assert VectorIndex.load(tmp_path).created == idx.created  # kept across loads


# -- parts ---------------------------------------------------------------------------------------
def test_index_spec_reads_what_the_factory_string_implies():
    flat = IndexSpec.parse(D)
    assert (flat.kind, flat.nlist, flat.needs_training) == ("other", 0, False)
    assert flat.default_nprobe() == 0 and flat.default_train_min() == 1
    hnsw = IndexSpec.parse(D, factory="HNSW8")
    assert hnsw.kind == "hnsw" and not hnsw.needs_training
    ivf = IndexSpec.parse(D, metric="L2", factory=" IVF1024,PQ4 ")
    assert (ivf.kind, ivf.nlist, ivf.needs_training) == ("ivf", 1024, True)
    assert (ivf.metric, ivf.factory) == ("l2", "IVF1024,PQ4")
    assert ivf.default_nprobe() == 16 and ivf.default_train_min() == 39 * 1024 and ivf.min_training_vectors() == 1024
    for bad, msg in (("Nonsense", "invalid FAISS index factory"), ("", "empty index factory"),
                     ("IDMap,Flat", "leave out the IDMap prefix")):
        with pytest.raises(DataError, match=msg):
            IndexSpec.parse(D, factory=bad)
    with pytest.raises(DataError, match="positive integer"):
        IndexSpec.parse("many")


def test_idmap_round_trip_and_consistency():
    m = IdMap()
    ids = m.allocate(3)
    m.register(["a", "b", "c"], ids)
    assert m.pop(["b"]).tolist() == [1] and m.keys() == ["a", "c"] and m.next_id == 3
    m.tombstones.add(1)
    assert m.stored_ids() == {0, 1, 2} and m.allowed_ids(["c", "zz", "a"]).tolist() == [0, 2]
    back = IdMap.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.keys() == ["a", "c"] and back.tombstones == {1} and back.key_of(2) == "c"
    # next_id never falls behind an id FAISS may still hold
    assert IdMap.from_dict({"keys": ["x"], "ids": [7], "tombstones": [9], "next_id": 0}).next_id == 10
    with pytest.raises(ValueError):
        IdMap.from_dict({"keys": ["x", "y"], "ids": [1, 1], "next_id": 2})
    with pytest.raises(DataError, match="appears twice"):
        check_keys(["a", "a"])
    with pytest.raises(DataError, match="single string"):
        check_keys("abc")


def test_exact_top_k_orders_best_first():
    vecs = np.eye(4, dtype=np.float32)
    q = np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32)
    scores, ids = exact_top_k(vecs, q, 2, np.array([10, 11, 12, 13]), "ip")
    assert ids.tolist() == [[11, 12]] and scores[0].tolist() == pytest.approx([0.9, 0.5])
    d, ids = exact_top_k(vecs, q, 9, np.array([10, 11, 12, 13]), "l2")  # k above the set size: all of it
    assert ids[0].tolist()[:2] == [11, 12] and len(ids[0]) == 4 and (np.diff(d[0]) >= 0).all()


def test_persistence_refuses_a_sidecar_naming_other_ids(data, tmp_path):
    keys, X = data
    idx = VectorIndex(D)
    idx.add(keys[:20], X[:20])
    idx.save(tmp_path)
    found = read_index(tmp_path)
    assert found.idmap.keys() == keys[:20] and found.faiss_index.ntotal == 20
    meta = json.loads((tmp_path / SIDECAR).read_text())
    # same count, other ids: written through the public writer so only the ids are wrong
    data_bytes = (tmp_path / meta["index_file"]).read_bytes()
    fields = {k: v for k, v in meta.items() if k not in {"format", "format_version", "generation", "index_file",
                                                        "index_sha256", "index_bytes"}}
    fields["ids"] = [i + 500 for i in fields["ids"]]
    write_index(tmp_path, data_bytes, fields)
    with pytest.raises(ArtifactError, match="disagree on vector ids"):
        VectorIndex.load(tmp_path)


# -- GPU choice ------------------------------------------------------------------------------------
def test_gpu_selected_automatically_when_faiss_reports_one(data, monkeypatch):
    """``faiss.get_num_gpus() > 0`` on a GPU build makes ``use_gpu="auto"`` search on a GPU copy
    (simulated here by a CPU clone); ``use_gpu=False`` stays on CPU."""
    import faiss

    keys, X = data
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    assert gpu_available()
    copies = []
    monkeypatch.setattr(index_factory, "to_gpu", lambda ix: copies.append(1) or faiss.clone_index(ix))
    auto, cpu = VectorIndex(D), VectorIndex(D, use_gpu=False)
    for ix in (auto, cpu):
        ix.add(keys, X)
    assert auto.on_gpu and not cpu.on_gpu and auto.info()["on_gpu"]
    assert auto.search(X[:5], k=3) == cpu.search(X[:5], k=3)
    assert copies == [1]
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    assert not gpu_available() and not VectorIndex(D).on_gpu


def test_gpu_mirror_falls_back_to_cpu_when_the_copy_fails(monkeypatch):
    monkeypatch.setattr(index_factory, "gpu_available", lambda: True)

    def refuse(ix):
        raise RuntimeError("GPU index type not supported")

    monkeypatch.setattr(index_factory, "to_gpu", refuse)
    mirror = GpuMirror("auto")
    assert mirror.active
    assert mirror.get(object(), factory="HNSW32") is None and not mirror.active  # and stays on CPU
    assert GpuMirror(False).get(object(), factory="Flat") is None


def test_public_names_still_import():
    import verticore

    assert verticore.VectorIndex is VectorIndex and verticore.SearchHit is SearchHit
