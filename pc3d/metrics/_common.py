"""Small helpers shared by the metric modules."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def as_labels(values: Any, name: str) -> np.ndarray:
    """A flat int64 array of labels; floats are accepted only when they hold whole numbers."""
    array = np.asarray(values)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{name} must hold integer labels, got non-integer floats")
    return array.astype(np.int64).reshape(-1)


def nan_to_none_list(values: Iterable[float]) -> list[float | None]:
    """Per-class lists for plain dicts/JSON: undefined entries (NaN) become None."""
    return [None if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v)
            for v in (float(x) for x in values)]


def nanmean_or_nan(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
