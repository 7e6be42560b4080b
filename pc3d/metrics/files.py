"""Reading prediction / ground-truth files for `pc3d eval`: pairing by stem and strict validation.

Every problem ends in one InputError naming the file (missing sample, unreadable, wrong dtype,
shape mismatch, label out of range).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.errors import InputError

# SemanticKITTI raw label id -> train id (semantic-kitti.yaml learning_map; unknown ids -> 0 = ignore)
KITTI_LEARNING_MAP: dict[int, int] = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10,
    48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}
KITTI_NAMES: tuple[str, ...] = (
    "unlabeled", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation",
    "trunk", "terrain", "pole", "traffic-sign",
)
KITTI_THINGS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
KITTI_UNSEEN: tuple[int, ...] = (3, 4, 7, 19)  # 3DGenZ's zero-shot split: motorcycle, truck, bicyclist, sign


def bad(path: str | os.PathLike, problem: str) -> InputError:
    return InputError(f"{path}: {' '.join(str(problem).split())}")


def pair_files(pred: Path, gt: Path, suffixes: Sequence[str]) -> list[tuple[str, Path, Path]]:
    """(stem, pred file, gt file) for a file pair or two folders matched by file stem."""
    for path in (pred, gt):
        if not path.exists():
            raise bad(path, "file or folder not found")
    if pred.is_file() and gt.is_file():
        return [(gt.stem, pred, gt)]
    if pred.is_dir() != gt.is_dir():
        raise InputError(f"--pred {pred} and --gt {gt} must both be files or both be folders")
    pred_files, gt_files = _by_stem(pred, suffixes), _by_stem(gt, suffixes)
    if not gt_files:
        raise bad(gt, f"no {'/'.join(suffixes)} files in this folder")
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise bad(pred, f"missing sample '{missing[0]}' (ground truth {gt_files[missing[0]]} has no prediction"
                        f"{f', {len(missing) - 1} more' if len(missing) > 1 else ''})")
    extra = sorted(set(pred_files) - set(gt_files))
    if extra:
        raise bad(pred_files[extra[0]], "prediction has no ground-truth file with the same stem")
    return [(stem, pred_files[stem], gt_files[stem]) for stem in sorted(gt_files)]


def _by_stem(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in found:
                raise bad(path, f"two files share the stem '{path.stem}' ({found[path.stem].name})")
            found[path.stem] = path
    return found


def _integer(path: Path, array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise bad(path, f"{what} must be an integer array, got dtype {array.dtype}")
    return array.astype(np.int64)


def load_npz(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = [k for k in required if k not in keys]
            if missing:
                raise bad(path, f"missing array '{missing[0]}' (has: {', '.join(sorted(keys)) or 'nothing'})")
            return {k: archive[k] for k in (*required, *optional) if k in keys}
    except InputError:
        raise
    except Exception as exc:  # zip / format errors from numpy come in many types
        raise bad(path, f"unreadable .npz ({type(exc).__name__}: {exc})") from exc


def npz_labels(path: Path, data: dict[str, np.ndarray], key: str, length: int | None = None) -> np.ndarray:
    values = _integer(path, np.asarray(data[key]), f"'{key}'")
    if values.ndim != 1:
        raise bad(path, f"'{key}' must be 1-D, got shape {values.shape}")
    if length is not None and len(values) != length:
        raise bad(path, f"'{key}' has {len(values)} entries but {length} were expected")
    return values


def kitti_remap(raw: np.ndarray) -> np.ndarray:
    lut = np.zeros(max(int(raw.max(initial=0)), max(KITTI_LEARNING_MAP)) + 1, dtype=np.int64)
    lut[list(KITTI_LEARNING_MAP)] = list(KITTI_LEARNING_MAP.values())
    return lut[raw]


def load_kitti(path: Path, remap: bool) -> tuple[np.ndarray, np.ndarray]:
    """(semantic, instance) of a SemanticKITTI .label; raw ids mapped to train ids when `remap`."""
    from pc3d.io.kitti import read_kitti_label  # raises InputError naming the file on a bad one

    semantic, instance = read_kitti_label(path)
    return (kitti_remap(semantic) if remap else semantic), instance


def load_npy(path: Path) -> np.ndarray:
    """A plain (non-object) .npy array; anything else is reported as unreadable."""
    try:
        with open(path, "rb") as handle:
            if handle.read(6) != b"\x93NUMPY":
                raise bad(path, "unreadable: not a .npy file (bad magic bytes)")
        return np.asarray(np.load(path, allow_pickle=False))
    except InputError:
        raise
    except Exception as exc:
        raise bad(path, f"unreadable .npy ({type(exc).__name__}: {exc})") from exc


def load_point_labels(path: Path, remap_kitti: bool) -> np.ndarray:
    """Per-point labels from .npy (integer) or SemanticKITTI .label (semantic part)."""
    if path.suffix.lower() == ".label":
        return load_kitti(path, remap_kitti)[0]
    array = _integer(path, load_npy(path), "labels")
    if array.ndim != 1:
        raise bad(path, f"labels must be 1-D (one per point), got shape {array.shape}")
    return array


def load_class_labels(path: Path) -> np.ndarray:
    """Sample labels (or (N, C) / (V, N, C) float scores) from .npy, .txt or .json."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = load_npy(path)
        elif suffix == ".json":
            array = np.asarray(json.loads(path.read_text()))
        else:
            text = path.read_text().split()
            array = np.array([int(token) for token in text], dtype=np.int64)
    except InputError:
        raise
    except ValueError as exc:
        raise bad(path, f"wrong dtype: labels must be integers ({exc})") from exc
    except Exception as exc:
        raise bad(path, f"unreadable ({type(exc).__name__}: {exc})") from exc
    if np.issubdtype(array.dtype, np.floating) and array.ndim in (2, 3):
        return array  # class scores, aggregated by the caller
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    return _integer(path, array, "labels").reshape(-1)


def check_range(path: Path, labels: np.ndarray, low: int, high: int, allowed: Sequence[int] = (),
                what: str = "label") -> None:
    """Every label in [low, high) or in `allowed`, else InputError naming the first offender."""
    ok = ((labels >= low) & (labels < high)) | np.isin(labels, list(allowed))
    if not ok.all():
        value = int(labels[~ok][0])
        raise bad(path, f"{what} {value} out of range [{low}, {high})"
                        + (f" (allowed too: {', '.join(map(str, allowed))})" if allowed else ""))


def as_float(path: Path, data: dict[str, Any], key: str, shape: tuple) -> np.ndarray:
    values = np.asarray(data[key])
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)) \
            or values.dtype == bool:
        raise bad(path, f"'{key}' must be numeric, got dtype {values.dtype}")
    if values.shape != shape and not (values.size == 0 and int(np.prod(shape)) == 0):
        raise bad(path, f"'{key}' must have shape {shape}, got {values.shape}")
    values = values.astype(np.float64).reshape(shape)
    if not np.isfinite(values).all():
        raise bad(path, f"'{key}' contains NaN or inf")
    return values
