"""Helpers shared by the readers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pc3d.errors import InputError


@dataclass
class SceneRecord:
    """One detection scene, whatever the dataset (ScanNet's 3DETR layout, SUN RGB-D)."""

    name: str
    points: np.ndarray  # (N, 3) float32
    colors: np.ndarray | None  # (N, 3) uint8 or None
    boxes: np.ndarray  # (K, 6) float64 cx cy cz dx dy dz (axis-aligned)
    labels: np.ndarray  # (K,) int64 index into the dataset's class names


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(f"{what}: missing file {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what}: missing folder {path}")
    return path


def load_npy(path: Path, what: str) -> np.ndarray:
    """A plain .npy array (never a pickle); a missing, unreadable or truncated file is one line of error."""
    require_file(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())  # numpy's messages can span lines; the error stays one line
        raise InputError(f"{what}: cannot read {path}: unreadable or truncated ({reason})") from None


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
