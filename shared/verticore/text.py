"""Small text and number helpers shared by the core and the apps."""
from __future__ import annotations

from typing import Iterable

import numpy as np


def minmax_normalise(values: Iterable[float] | np.ndarray) -> np.ndarray:
    """Scale ``values`` to [0, 1] as float64.

    All-equal input (no spread, so no information about order) maps to zeros; empty input
    gives an empty array. Adding a constant never changes a ranking, so fusion and MMR may use
    this one rule.
    """
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo
    return (x - lo) / span if span > 1e-12 else np.zeros_like(x)


__all__ = ["minmax_normalise"]
