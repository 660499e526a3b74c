"""Scale-out path: batch-embedding a catalog with Ray Data on a local Ray (extra ``ray``)."""
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the optional 'ray' extra is not installed")


@pytest.fixture(scope="module")
def local_ray():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 object_store_memory=200 * 1024 * 1024)
    except Exception as exc:  # e.g. a sandbox without /dev/shm: the path itself is not at fault
        pytest.skip(f"local Ray could not start here: {exc}")
    yield ray
    ray.shutdown()


def test_embed_ray_dataset_matches_the_core_embedder(local_ray, default_embedder):
    from recommender.scale import embed_ray_dataset

    texts = [f"Item {i}: a {'funny' if i % 2 else 'dark'} film about {w}" for i, w in
             enumerate(["trains", "wolves", "chess", "the sea", "robots", "cooking", "space", "a heist"] * 3)]
    ds = ray.data.from_items([{"item": str(i), "text": t} for i, t in enumerate(texts)])
    rows = embed_ray_dataset(ds, batch_size=8, concurrency=1).take_all()
    assert len(rows) == len(texts)
    got = {r["item"]: np.asarray(r["embedding"], dtype=np.float32) for r in rows}
    want = default_embedder.encode(texts)
    cos = np.array([got[str(i)] @ want[i] for i in range(len(texts))])
    assert cos.min() > 0.9999


def test_embed_ray_dataset_rejects_a_missing_column(local_ray):
    from recommender.scale import embed_ray_dataset

    ds = ray.data.from_items([{"title": "x"}])
    from verticore.errors import DataError

    with pytest.raises(DataError, match="no column 'text'"):
        embed_ray_dataset(ds, batch_size=4, concurrency=1)
