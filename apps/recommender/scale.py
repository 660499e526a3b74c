"""Scale-out: batch-embed a large catalog with Ray Data (optional extra ``ray``)."""
from __future__ import annotations

from typing import Any

from verticore.errors import DataError, VerticoreError


def embed_ray_dataset(ds: Any, text_column: str = "text", model: str = "default", batch_size: int = 256,
                      concurrency: int = 2, num_gpus: float = 0.0, output_column: str = "embedding") -> Any:
    """Add an ``embedding`` column to a Ray dataset of item texts, one Embedder per actor.

    ``ds`` is a ``ray.data.Dataset`` with a ``text_column``; returns the mapped dataset (lazy),
    e.g. ``embed_ray_dataset(ray.data.read_parquet(...)).write_parquet(...)``. With
    ``num_gpus > 0`` each actor takes a GPU and the core Embedder runs in half precision there.
    """
    try:
        import ray  # noqa: F401
    except ImportError:
        raise VerticoreError("Ray is not installed: pip install 'verticore[ray]'") from None

    try:
        columns = list(ds.columns() or [])
    except Exception:  # some sources only know their schema after reading: checked per batch then
        columns = []
    if columns and text_column not in columns:
        raise DataError(f"the Ray dataset has no column {text_column!r}; columns are {columns}")

    class _Embed:
        def __init__(self) -> None:
            from verticore import Embedder

            self.embedder = Embedder(model, batch_size=batch_size)
            self.embedder.warm_up()

        def __call__(self, batch: dict) -> dict:
            if text_column not in batch:
                raise DataError(f"batch has no column {text_column!r}; columns are {sorted(batch)}")
            texts = [str(t) for t in batch[text_column]]
            batch[output_column] = list(self.embedder.encode(texts))
            return batch

    return ds.map_batches(_Embed, batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus,
                          batch_format="numpy")
