"""Small sample data written by the Verticore project for the core demo (see README.md here)."""
from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent


def sample_path(name: str) -> Path:
    """Path of a bundled sample file, e.g. ``sample_path("core_sentiment.csv")``."""
    from ..errors import DataError

    path = SAMPLES_DIR / name
    if not path.is_file():
        available = sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix in {".csv", ".jsonl", ".tsv"})
        raise DataError(f"no bundled sample named {name!r}; available: {available}")
    return path
