"""Per-point label files on their own: SemanticKITTI `.label`, Semantic3D-style text, `.npy`.

`.label` yields the semantic part (low 16 bits; use kitti.read_kitti_label for the instance too);
`.labels` / `.txt` hold one integer per line; `.npy` a 1-D integer array.
"""

from __future__ import annotations

import os

import numpy as np

from pc3d.io._common import existing_file, input_error, read_text, suffix_of
from pc3d.io.atomic import atomic_write, write_text_atomic

LABEL_SUFFIXES = (".label", ".labels", ".txt", ".npy")


def read_labels(path: str | os.PathLike, *, num_points: int | None = None) -> np.ndarray:
    """Per-point integer labels as int64; `num_points` checks the count against the cloud's."""
    suffix = suffix_of(path)
    if suffix not in LABEL_SUFFIXES:
        raise input_error(path, f"unknown label suffix {suffix or '(none)'!r}; supported: {' '.join(LABEL_SUFFIXES)}")
    existing_file(path)
    if suffix == ".label":
        from pc3d.io.kitti import read_kitti_label

        return read_kitti_label(path, num_points=num_points)[0]
    if suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise input_error(path, f"not a readable .npy array ({exc})") from exc
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise input_error(path, f"expected a 1-D integer array, got {labels.dtype} {labels.shape}")
    else:
        words = read_text(path).split()
        try:
            labels = np.array([int(word) for word in words], dtype=np.int64)
        except ValueError as exc:
            raise input_error(path, "label text must hold one integer per line") from exc
    if num_points is not None and len(labels) != num_points:
        raise input_error(path, f"label count {len(labels)} does not match the point count {num_points}")
    return labels.astype(np.int64)


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write labels atomically in the format named by the suffix (`.label` stores instance 0)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    suffix = suffix_of(path)
    if suffix == ".label":
        from pc3d.io.kitti import write_kitti_label

        write_kitti_label(path, labels)
    elif suffix == ".npy":
        with atomic_write(path, "wb") as handle:
            np.save(handle, labels.astype(np.int64))
    elif suffix in (".labels", ".txt"):
        write_text_atomic(path, "".join(f"{int(value)}\n" for value in labels))
    else:
        raise input_error(path, f"cannot write labels with suffix {suffix or '(none)'!r}; "
                                f"supported: {' '.join(LABEL_SUFFIXES)}")
