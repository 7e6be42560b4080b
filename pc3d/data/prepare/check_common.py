"""What every `pc3d data check` shares: per-split statistics, sampling, the one-line failure and the array
checks (coordinates, label ranges, colours). check.py and check_released.py build on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.readers._common import load_npy
from pc3d.errors import InputError


class Stats:
    """Running counts and ranges of one split."""

    def __init__(self) -> None:
        self.items = 0
        self.points = 0
        self.labelled = 0
        self.instances = 0
        self.low = np.full(3, np.inf)
        self.high = np.full(3, -np.inf)
        self.color = [np.inf, -np.inf]
        self.labels = [np.inf, -np.inf]

    def cloud(self, coord: np.ndarray, color: np.ndarray | None = None) -> None:
        self.items += 1
        self.points += len(coord)
        if len(coord):
            self.low = np.minimum(self.low, coord[:, :3].min(axis=0))
            self.high = np.maximum(self.high, coord[:, :3].max(axis=0))
        if color is not None and len(color):
            self.color = [min(self.color[0], float(color.min())), max(self.color[1], float(color.max()))]

    def label(self, values: np.ndarray, ignore: int | None = None) -> None:
        valid = values[values != ignore] if ignore is not None else values
        self.labelled += len(valid)
        if len(valid):
            self.labels = [min(self.labels[0], int(valid.min())), max(self.labels[1], int(valid.max()))]

    def report(self) -> dict[str, Any]:
        finite = np.isfinite(self.low).all()
        return {
            "items": self.items, "points": self.points, "labelled_points": self.labelled,
            "instances": self.instances,
            "label_range": self.labels if np.isfinite(self.labels[0]) else None,
            "extent": {"min": self.low.tolist(), "max": self.high.tolist()} if finite else None,
            "color_range": self.color if np.isfinite(self.color[0]) else None,
        }


def pick(items: list, sample: int | None) -> list:
    """All items, or `sample` of them spread evenly over the list (always the first and the last)."""
    if sample is None or len(items) <= sample:
        return items
    if sample <= 1:
        return items[:1]
    step = (len(items) - 1) / (sample - 1)
    return [items[round(k * step)] for k in range(sample)]


def _fail(problem: str) -> InputError:
    return InputError(" ".join(problem.split()))


def split_list(listing: Path, dataset: str, split: str, item: str) -> list[str]:
    """The non-empty lines of a split's list file; one line naming the file when it is missing or empty."""
    if not listing.is_file():
        raise _fail(f"{dataset}: split '{split}' missing: no {listing}")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise _fail(f"{dataset}: split '{split}' is empty: {listing} lists no {item}")
    return names


def load(path: Path) -> np.ndarray:
    return load_npy(path, "data check")


def load_shape(path: Path) -> np.ndarray:
    """A memory map of an .npy: its header gives the shape, and mapping fails on a file shorter than the
    header says (truncated) just as a full read does, without reading the values."""
    if not path.is_file():
        raise _fail(f"data check: missing file {path}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _fail(f"data check: cannot read {path}: unreadable or truncated ({exc})") from None


def check_coord(path: Path, coord: np.ndarray) -> None:
    if coord.ndim != 2 or coord.shape[1] < 3:
        raise _fail(f"{path}: shape {coord.shape}, expected (N, 3)")
    if not len(coord):
        raise _fail(f"{path}: no points")
    if not np.isfinite(coord[:, :3]).all():
        raise _fail(f"{path}: NaN or inf coordinates")


def check_rows(path: Path, array: np.ndarray, n: int, shape: str = "(N,)") -> None:
    if len(array) != n or (shape == "(N,)" and array.ndim != 1) or (shape == "(N,3)" and array.shape[1:] != (3,)):
        raise _fail(f"{path}: shape {array.shape}, expected {shape} with N = {n} (the coordinates' count)")


def check_range(path: Path, values: np.ndarray, low: int, high: int, what: str) -> None:
    bad = (values < low) | (values >= high)
    if bad.any():
        raise _fail(f"{path}: {what} {int(values[bad][0])} outside {low}..{high - 1}")


def check_colors(path: Path, color: np.ndarray) -> None:
    if len(color) and (color.min() < 0 or color.max() > 255):
        raise _fail(f"{path}: colours span {color.min():g}..{color.max():g}, expected 0..255")


def _splits_report(stats: dict[str, Stats], extra: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    report = {split: s.report() for split, s in stats.items()}
    for split, values in (extra or {}).items():
        report.setdefault(split, {}).update(values)
    return report
