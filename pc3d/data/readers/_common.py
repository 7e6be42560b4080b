"""Helpers shared by the object readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pc3d.errors import InputError


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(f"{what}: missing file {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what}: missing folder {path}")
    return path


def read_lines(path: Path, what: str) -> list[str]:
    require_file(path, what)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def unit_sphere(points: np.ndarray) -> np.ndarray:
    """Point-MAE `pc_norm`: subtract the centroid, divide by the largest norm."""
    points = points - points.mean(axis=0, keepdims=True)
    scale = np.sqrt((points**2).sum(axis=1)).max()
    return points / scale if scale > 0 else points


def choose_points(count: int, wanted: int, rng: np.random.Generator | None) -> np.ndarray:
    """`wanted` indices of `count` points: a random subset (with replacement only when too few points);
    without a generator the first `wanted` (deterministic evaluation)."""
    if rng is None:
        return np.arange(wanted) % count
    if count >= wanted:
        return rng.permutation(count)[:wanted]
    return rng.choice(count, wanted, replace=True)
