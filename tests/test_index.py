"""VectorIndex: add/upsert/delete/search for Flat, HNSW and IVF; filters; persistence and its failure modes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from verticore.errors import ArtifactError, DataError, IndexMismatchError, VerticoreError
from verticore.index import SearchHit, VectorIndex
from verticore.index import factory as index_factory
from verticore.index import persistence as index_persistence

D = 32
N = 400


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = _unit(rng.normal(size=(N, D)))
    keys = [f"doc-{i}" for i in range(N)]
    Q = _unit(X[:40] + 0.05 * rng.normal(size=(40, D)))
    return keys, X, Q


def brute(X: np.ndarray, keys: list[str], q: np.ndarray, k: int, metric: str = "ip") -> list[str]:
    s = X @ q if metric == "ip" else -((X - q) ** 2).sum(1)
    return [keys[i] for i in np.argsort(-s, kind="stable")[:k]]


FACTORIES = [("Flat", {}), ("HNSW32", {}), ("IVF8,Flat", {"train_min": 200, "nprobe": 8})]


@pytest.mark.parametrize("factory,kw", FACTORIES)
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_add_search_upsert_delete(data, factory, kw, metric):
    keys, X, Q = data
    idx = VectorIndex(D, metric=metric, factory=factory, **kw)
    idx.add(keys[:150], X[:150])
    idx.add(keys[150:], X[150:])
    assert len(idx) == N and "doc-3" in idx and "nope" not in idx
    assert idx.keys()[:3] == ["doc-0", "doc-1", "doc-2"]
    assert idx.is_trained
    hits = idx.search(Q, k=5)
    assert len(hits) == len(Q) and all(len(h) == 5 for h in hits)
    assert all(isinstance(h, SearchHit) for h in hits[0])
    # near-duplicate queries find their source first; scores sorted higher-is-better
    assert [h[0].key for h in hits] == keys[:40]
    for row in hits:
        scores = [h.score for h in row]
        assert scores == sorted(scores, reverse=True)
    # exact scores for Flat
    if factory == "Flat":
        for qi in range(5):
            assert [h.key for h in hits[qi]] == brute(X, keys, Q[qi], 5, metric)
            expect = float(X[qi] @ Q[qi]) if metric == "ip" else -float(((X[qi] - Q[qi]) ** 2).sum())
            assert hits[qi][0].score == pytest.approx(expect, abs=1e-4)
    # reconstruct returns what was stored
    np.testing.assert_allclose(idx.reconstruct(["doc-5", "doc-9"]), X[[5, 9]], atol=1e-6)

    # upsert replaces: doc-1 now holds doc-0's vector
    idx.upsert(["doc-1", "new-a"], np.stack([X[0], X[2]]))
    assert len(idx) == N + 1
    np.testing.assert_allclose(idx.reconstruct(["doc-1"])[0], X[0], atol=1e-6)
    top2 = {h.key for h in idx.search_one(X[0], k=2)}
    assert top2 == {"doc-0", "doc-1"}

    # delete: unknown keys ignored, count returned; deleted keys never come back
    assert idx.delete(["doc-0", "doc-2", "missing"]) == 2
    assert len(idx) == N - 1 and "doc-0" not in idx
    for row in idx.search(Q[:10], k=10):
        assert not {"doc-0", "doc-2"} & {h.key for h in row}
        assert len(row) == 10
    with pytest.raises(DataError, match="'missing'"):
        idx.delete(["missing"], missing_ok=False)


def test_hnsw_tombstones_and_rebuild(data):
    keys, X, Q = data
    idx = VectorIndex(D, factory="HNSW32", rebuild_fraction=0.2)
    idx.add(keys, X)
    idx.delete(keys[:40])  # 10% -> tombstones only
    assert idx.tombstones == 40 and len(idx) == N - 40
    for row in idx.search(X[:40], k=10):  # queries equal to deleted vectors
        assert len(row) == 10
        assert not set(keys[:40]) & {h.key for h in row}
    # filtered search also skips tombstones
    allowed = keys[:60]
    row = idx.search_one(X[0], k=30, allow=allowed)
    assert {h.key for h in row} == set(keys[40:60])
    # k larger than the index returns every live key exactly once
    everything = idx.search_one(X[100], k=10_000)
    assert len(everything) == N - 40 and len({h.key for h in everything}) == N - 40
    # crossing 20% rebuilds automatically from live vectors
    idx.delete(keys[40:90])
    assert idx.tombstones == 0 and len(idx) == N - 90
    assert idx._active.ntotal == N - 90
    assert [h[0].key for h in idx.search(X[90:100], k=1)] == keys[90:100]
    # upsert leaves a tombstone; compact() purges it
    idx.upsert(["doc-95"], X[96:97])
    assert idx.tombstones == 1
    assert idx.compact() == 1 and idx.tombstones == 0
    assert {h.key for h in idx.search_one(X[96], k=2)} == {"doc-95", "doc-96"}


def test_ivf_lazy_training_pending_buffer(data):
    keys, X, Q = data
    idx = VectorIndex(D, factory="IVF8,Flat", train_min=300)
    idx.add(keys[:100], X[:100])
    assert not idx.is_trained
    # exact search while pending
    assert [h.key for h in idx.search_one(Q[3], k=5)] == brute(X[:100], keys[:100], Q[3], 5)
    assert idx.delete(["doc-3"]) == 1
    assert "doc-3" not in {h.key for h in idx.search_one(Q[3], k=5)}
    idx.add(keys[100:], X[100:])  # crosses train_min: trains on everything so far
    assert idx.is_trained and len(idx) == N - 1
    assert idx._active.ntotal == N - 1
    assert idx.search_one(X[200], k=1)[0].key == "doc-200"
    # explicit training below train_min, and a clear error when FAISS cannot train at all
    small = VectorIndex(D, factory="IVF8,Flat")
    assert small.train_min == 39 * 8
    small.add(keys[:20], X[:20])
    assert small.train() and small.is_trained
    tiny = VectorIndex(D, factory="IVF8,Flat")
    tiny.add(keys[:3], X[:3])
    with pytest.raises(DataError, match="at least 8 vectors"):
        tiny.train()
    # train_min below what FAISS needs: the add succeeds, vectors stay exact and searchable
    low = VectorIndex(D, factory="IVF8,Flat", train_min=2)
    low.add(keys[:4], X[:4])
    assert not low.is_trained and low.search_one(X[2], k=1)[0].key == "doc-2"


@pytest.mark.parametrize("factory,kw", FACTORIES)
def test_allow_list_filter(data, factory, kw):
    keys, X, Q = data
    idx = VectorIndex(D, factory=factory, **kw)
    idx.add(keys, X)
    allow = keys[200:260] + ["unknown-key"]
    for qi, row in enumerate(idx.search(Q[:5], k=7, allow=allow)):
        assert [h.key for h in row] == brute(X[200:260], keys[200:260], Q[qi], 7)
    assert idx.search_one(Q[0], k=3, allow=["nope"]) == []
    assert [h.key for h in idx.search_one(Q[0], k=10, allow=["doc-5"])] == ["doc-5"]
    # a large allow-list goes through the FAISS selector path
    idx.exact_filter_max = 0
    big = keys[::2]
    idx2_hits = idx.search(X[:6:2], k=3, allow=big)
    assert [r[0].key for r in idx2_hits] == ["doc-0", "doc-2", "doc-4"]
    for row in idx.search(Q[:10], k=10, allow=big):
        assert len(row) == 10 and all(int(h.key.split("-")[1]) % 2 == 0 for h in row)


def _no_exact(*a, **k):
    raise AssertionError("the exact-scoring path was used")


@pytest.mark.parametrize("factory,kw", FACTORIES)
def test_selector_path_matches_exact_path(data, factory, kw, monkeypatch):
    keys, X, Q = data
    idx = VectorIndex(D, factory=factory, **kw)
    idx.add(keys, X)
    idx.delete(keys[3:30:3])
    allow = keys[::3]
    expect = idx.search(Q[:6], k=5, allow=allow)  # small allow-list: exact scoring
    sub = [i for i in range(0, N, 3) if not 3 <= i < 30]
    assert [h.key for h in expect[0]] == brute(X[sub], [keys[i] for i in sub], Q[0], 5)
    idx.exact_filter_max = 0  # force the FAISS IDSelector path
    monkeypatch.setattr(VectorIndex, "_exact", _no_exact)
    got = idx.search(Q[:6], k=5, allow=allow)
    assert [[h.key for h in r] for r in got] == [[h.key for h in r] for r in expect]
    for g, e in zip(got, expect):
        assert [h.score for h in g] == pytest.approx([h.score for h in e], abs=1e-4)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_gpu_code_path_with_simulated_gpu(data, factory, monkeypatch):
    """No GPU here: simulate one (the "GPU copy" is a CPU clone) to exercise the GPU search path:
    lazy copy, refresh after mutation, over-fetch filtering of tombstones and allow-lists."""
    import faiss

    keys, X, Q = data
    calls = []

    def fake_to_gpu(ix):
        calls.append(1)
        return faiss.clone_index(ix)

    cpu = VectorIndex(D, factory=factory, use_gpu=False)
    cpu.add(keys, X)
    monkeypatch.setattr(index_factory, "gpu_available", lambda: True)
    monkeypatch.setattr(index_factory, "to_gpu", fake_to_gpu)
    gpu = VectorIndex(D, factory=factory)
    gpu.add(keys, X)
    assert gpu.on_gpu and not cpu.on_gpu
    assert gpu.search(Q[:8], k=6) == cpu.search(Q[:8], k=6)
    gpu.search(Q[:2], k=3)
    assert len(calls) == 1  # the GPU copy is cached
    for ix in (gpu, cpu):
        ix.delete(keys[:20])  # tombstones for HNSW (below the rebuild fraction)
    assert gpu.tombstones == (20 if factory == "HNSW32" else 0)
    got, ref = gpu.search(X[:25], k=6), cpu.search(X[:25], k=6)
    assert all(len(r) == 6 and not set(keys[:20]) & {h.key for h in r} for r in got)
    if factory == "Flat":
        assert got == ref
    else:  # graph search: over-fetching and the selector may differ slightly, but agree on the best hit
        assert [r[0].key for r in got] == [r[0].key for r in ref]
    assert len(calls) == 2  # refreshed after the mutation
    allow = [k for i, k in enumerate(keys) if i % 7]
    for ix in (gpu, cpu):
        ix.exact_filter_max = 0
    monkeypatch.setattr(VectorIndex, "_exact", _no_exact)
    got, ref = gpu.search(Q[:10], k=5, allow=allow), cpu.search(Q[:10], k=5, allow=allow)
    assert all(len(r) == 5 and {h.key for h in r} <= set(allow) - set(keys[:20]) for r in got)
    if factory == "Flat":
        assert got == ref
    else:
        assert [r[0].key for r in got] == [r[0].key for r in ref]


def test_use_gpu_true_without_gpu_falls_back_to_cpu(data):
    keys, X, Q = data
    idx = VectorIndex(D, use_gpu=True)
    idx.add(keys[:20], X[:20])
    assert idx.search_one(X[4], k=1)[0].key == "doc-4"
    assert not idx.on_gpu


def test_save_load_round_trip(data, tmp_path):
    keys, X, Q = data
    for factory, kw in FACTORIES + [("IVF8,Flat", {"train_min": 10_000})]:
        idx = VectorIndex(D, factory=factory, model_fingerprint="sha256:model-a", **kw)
        idx.add(keys, X)
        idx.delete(keys[:10])
        d = tmp_path / factory.replace(",", "_") / str(kw.get("train_min", 0))
        idx.save(d)
        back = VectorIndex.load(d, expected_fingerprint="sha256:model-a")
        assert back.factory == factory and back.metric == "ip" and back.dimension == D
        assert back.is_trained == idx.is_trained and back.tombstones == idx.tombstones
        assert back.keys() == idx.keys()
        assert back.search(Q, k=8) == idx.search(Q, k=8)
        assert back.search(Q[:3], k=5, allow=keys[50:300]) == idx.search(Q[:3], k=5, allow=keys[50:300])
        # continues numbering ids after load: new keys never collide with old ids
        back.add(["fresh"], X[:1])
        assert back.search_one(X[0], k=1)[0].key == "fresh"
        meta = json.loads((d / "index.json").read_text())
        assert meta["count"] == N - 10 and meta["model_fingerprint"] == "sha256:model-a"
        assert (d / meta["index_file"]).exists()


def test_save_generations_and_crash_safety(data, tmp_path, monkeypatch):
    keys, X, Q = data
    idx = VectorIndex(D, factory="Flat")
    idx.add(keys[:100], X[:100])
    idx.save(tmp_path)
    first = json.loads((tmp_path / "index.json").read_text())["index_file"]
    before = idx.search(Q[:5], k=3)
    idx.add(keys[100:], X[100:])
    idx.save(tmp_path)
    second = json.loads((tmp_path / "index.json").read_text())["index_file"]
    assert first != second and not (tmp_path / first).exists()  # old generation removed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["index.json", second])
    full = idx.search(Q[:5], k=3)

    # crash after the new faiss generation is written but before the sidecar is replaced
    idx.add(["late"], X[:1])

    def crash(*a, **k):
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(index_persistence, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        idx.save(tmp_path)
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.endswith(".faiss")]) == 2  # the orphan is there
    old = VectorIndex.load(tmp_path)
    assert len(old) == N and "late" not in old
    assert old.search(Q[:5], k=3) == full != before
    # the next successful save cleans up the orphan
    idx.save(tmp_path)
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".faiss"]) == 1
    assert "late" in VectorIndex.load(tmp_path)


def test_load_errors(data, tmp_path):
    keys, X, _ = data
    with pytest.raises(ArtifactError, match="no index directory"):
        VectorIndex.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="index.json is missing"):
        VectorIndex.load(tmp_path / "empty")

    idx = VectorIndex(D, factory="HNSW32", model_fingerprint="sha256:aaa")
    idx.add(keys[:50], X[:50])

    def fresh(name):
        d = tmp_path / name
        idx.save(d)
        return d, json.loads((d / "index.json").read_text())

    d, meta = fresh("corrupt-sidecar")
    (d / "index.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt") as e:
        VectorIndex.load(d)
    assert "\n" not in str(e.value)

    d, meta = fresh("bad-field")
    del meta["keys"]
    (d / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="bad field"):
        VectorIndex.load(d)

    d, meta = fresh("corrupt-faiss")
    f = d / meta["index_file"]
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="corrupt"):
        VectorIndex.load(d)

    d, meta = fresh("garbage-faiss-no-checksum")
    (d / meta["index_file"]).write_bytes(b"this is not a faiss index")
    meta.pop("index_sha256")
    (d / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="corrupt") as e:
        VectorIndex.load(d)
    assert "\n" not in str(e.value)

    d, meta = fresh("missing-faiss")
    (d / meta["index_file"]).unlink()
    with pytest.raises(ArtifactError, match="missing"):
        VectorIndex.load(d)

    d, meta = fresh("fingerprint")
    with pytest.raises(IndexMismatchError, match="built with model sha256:aaa, you are using sha256:bbb; rebuild it"):
        VectorIndex.load(d, expected_fingerprint="sha256:bbb")
    assert len(VectorIndex.load(d, expected_fingerprint="sha256:aaa")) == 50


def test_bad_input_errors(data):
    keys, X, _ = data
    idx = VectorIndex(D)
    idx.add(keys[:10], X[:10])
    with pytest.raises(DataError, match="'doc-3' is already in the index"):
        idx.add(["doc-3"], X[:1])
    with pytest.raises(DataError, match="appears twice"):
        idx.add(["x", "x"], X[:2])
    with pytest.raises(DataError, match="dimension 16 but the index has dimension 32"):
        idx.add(["y"], np.ones((1, 16), np.float32))
    with pytest.raises(IndexMismatchError, match="dimension 16"):
        idx.search(np.ones((2, 16), np.float32))
    with pytest.raises(IndexMismatchError):
        idx.search_one(np.ones(48, np.float32))
    bad = X[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(DataError, match="row 1 contains NaN"):
        idx.add(["n1", "n2"], bad)
    assert "n1" not in idx and len(idx) == 10  # nothing half-added
    with pytest.raises(DataError, match="2 keys but 3 vectors"):
        idx.add(["a", "b"], X[:3])
    with pytest.raises(DataError, match="positive"):
        idx.search(X[:1], k=0)
    with pytest.raises(DataError, match="invalid FAISS index factory"):
        VectorIndex(D, factory="NotAnIndex99")
    with pytest.raises(DataError, match="unknown metric"):
        VectorIndex(D, metric="manhattan")
    with pytest.raises(DataError, match="not in the index"):
        idx.reconstruct(["ghost"])
    # every error is a one-line VerticoreError
    try:
        VectorIndex(D, factory="IVF")
    except VerticoreError as exc:
        assert "\n" not in str(exc)
    # k larger than the index; empty index
    assert len(idx.search_one(X[0], k=50)) == 10
    assert VectorIndex(D).search(X[:2], k=3) == [[], []]


def test_cosine_metric_normalises():
    idx = VectorIndex(3, metric="cosine")
    idx.add(["a", "b"], np.array([[10.0, 0, 0], [0, 3.0, 0]], np.float32))
    hit = idx.search_one(np.array([2.0, 0.1, 0]), k=1)[0]
    assert hit.key == "a" and hit.score == pytest.approx(2.0 / np.linalg.norm([2.0, 0.1, 0]), abs=1e-5)


def test_build_from_texts_records_fingerprint(tmp_path):
    class FakeEmbedder:
        dimension = 4
        fingerprint = "sha256:fake"

        def encode(self, texts, show_progress=False):
            return np.array([[len(t), t.count("a"), 1.0, 0.0] for t in texts], np.float32)

    idx = VectorIndex.build(["k1", "k2"], ["aaa", "b"], FakeEmbedder(), metric="cosine")
    assert idx.model_fingerprint == "sha256:fake" and len(idx) == 2
    idx.save(tmp_path)
    with pytest.raises(IndexMismatchError, match="rebuild it"):
        VectorIndex.load(tmp_path, expected_fingerprint="sha256:other")
