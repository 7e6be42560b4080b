"""Indoor scenes with axis-aligned boxes for detection and Point-MoDE pretraining.

- ScanNetV2 in the VoteNet/3DETR detection layout: `<root>/meta_data/scannetv2_{train,val}.txt` and
  `<root>/scannet_train_detection_data/<scene>_{vert,bbox,ins_label,sem_label}.npy`; `_vert` is (N, 6)
  xyz rgb, `_bbox` (K, 7) cx cy cz dx dy dz nyu40. Only the 18 detection classes are kept.
- ScanNetV2 in Pointcept's layout `<root>/{train,val}/<scene>/{coord,color,segment20,instance}.npy`:
  boxes are the tight boxes of the instances whose class is one of the 18 (read here directly from
  the npy files; the class of an instance is the majority of its points' `segment20`).

The embedded synthetic rooms and the choice of reader per preset live in `detection_scenes`.
Every scene comes out as a `SceneRecord` with boxes labelled 0..17 in `DET_CLASS_NAMES` order.
Files are read when a scene is asked for, so a dataset of 1 200 scenes costs no memory up front.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pc3d.data.labels import SCANNET20_NAMES, SCANNET_DET_NYU40_IDS
from pc3d.data.readers._common import SceneRecord, load_npy, read_lines, require_dir
from pc3d.errors import InputError

DET_CLASS_NAMES: tuple[str, ...] = SCANNET20_NAMES[2:]  # cabinet ... otherfurniture (garbagebin in 3DETR)
_NYU40_TO_DET = {nyu: i for i, nyu in enumerate(SCANNET_DET_NYU40_IDS)}


def nyu40_to_det(ids: np.ndarray) -> np.ndarray:
    """NYU40 ids -> detection class index 0..17, -1 for classes that are not detected."""
    return np.array([_NYU40_TO_DET.get(int(i), -1) for i in np.asarray(ids).reshape(-1)], dtype=np.int64)


def _check_table(path: Path, array: np.ndarray, columns: int, what: str) -> np.ndarray:
    if array.ndim != 2 or array.shape[1] < columns:
        raise InputError(f"{what}: {path} has shape {array.shape}, expected (N, >={columns})")
    if not np.isfinite(array[:, :columns]).all():
        raise InputError(f"{what}: {path} contains NaN or inf")
    return array


class ScanNetDetection(Sequence):
    """ScanNetV2, VoteNet/3DETR layout; item i is a `SceneRecord` read from disk."""

    what = "ScanNet detection"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = Path(root)
        require_dir(self.root, self.what)
        self.data_dir = require_dir(self.root / "scannet_train_detection_data", self.what)
        self.names = read_lines(self.root / "meta_data" / f"scannetv2_{split}.txt", self.what)
        if not self.names:
            raise InputError(f"{self.what}: split file scannetv2_{split}.txt under {self.root / 'meta_data'} is empty")
        missing = [n for n in self.names if not (self.data_dir / f"{n}_vert.npy").is_file()]
        if missing:
            raise InputError(f"{self.what}: {len(missing)} scenes of the {split} split have no _vert.npy "
                             f"(first: {self.data_dir / (missing[0] + '_vert.npy')})")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> SceneRecord:  # type: ignore[override]
        name = self.names[index]
        vert_path = self.data_dir / f"{name}_vert.npy"
        vert = _check_table(vert_path, load_npy(vert_path, self.what), 3, self.what)
        bbox_path = self.data_dir / f"{name}_bbox.npy"
        bbox = load_npy(bbox_path, self.what)
        bbox = np.zeros((0, 7)) if bbox.size == 0 else _check_table(bbox_path, bbox.reshape(len(bbox), -1), 7,
                                                                     self.what)
        for suffix in ("ins_label", "sem_label"):  # per-point labels must describe the same points
            path = self.data_dir / f"{name}_{suffix}.npy"
            if path.is_file() and len(load_npy(path, self.what)) != len(vert):
                raise InputError(f"{self.what}: {path} has {len(load_npy(path, self.what))} entries but "
                                 f"{vert_path.name} has {len(vert)} points")
        labels = nyu40_to_det(bbox[:, 6])
        keep = labels >= 0
        colors = None
        if vert.shape[1] >= 6:
            colors = np.clip(np.rint(vert[:, 3:6]), 0, 255).astype(np.uint8)
        return SceneRecord(name, vert[:, :3].astype(np.float32), colors, bbox[keep, :6].astype(np.float64),
                           labels[keep])


def boxes_from_instances(points: np.ndarray, segment20: np.ndarray,
                         instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tight boxes of the instances of the 18 detection classes (segment20 values 2..19).

    An instance's class is the most common segment20 among its points; instance -1 is unannotated."""
    import torch

    from pc3d.ops.boxes import boxes_from_points

    valid = instance >= 0
    if not valid.any():
        return np.zeros((0, 6)), np.zeros(0, np.int64)
    boxes, ids = boxes_from_points(torch.from_numpy(points[valid].astype(np.float64)),
                                   torch.from_numpy(instance[valid].astype(np.int64)))
    labels = []
    for inst in ids.tolist():
        values, counts = np.unique(segment20[instance == inst], return_counts=True)
        labels.append(int(values[np.argmax(counts)]) - 2)  # segment20 2..19 -> det 0..17
    labels = np.array(labels, dtype=np.int64)
    keep = labels >= 0
    return boxes.numpy()[keep], labels[keep]


class ScanNetPointceptDetection(Sequence):
    """ScanNetV2, Pointcept layout, boxes derived from instances."""

    what = "ScanNet (Pointcept)"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.root = Path(root)
        folder = require_dir(self.root / split, self.what)
        self.scenes = sorted(p for p in folder.iterdir() if p.is_dir())
        if not self.scenes:
            raise InputError(f"{self.what}: {folder} holds no scene folders")

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> SceneRecord:  # type: ignore[override]
        folder = self.scenes[index]
        coord = _check_table(folder / "coord.npy", load_npy(folder / "coord.npy", self.what), 3, self.what)
        n = len(coord)
        arrays = {}
        for key in ("segment20", "instance"):
            path = folder / f"{key}.npy"
            arrays[key] = load_npy(path, self.what).reshape(-1).astype(np.int64)
            if len(arrays[key]) != n:
                raise InputError(f"{self.what}: {path} has {len(arrays[key])} entries for {n} points")
        colors = None
        if (folder / "color.npy").is_file():
            colors = np.clip(np.rint(load_npy(folder / "color.npy", self.what)), 0, 255).astype(np.uint8)
        boxes, labels = boxes_from_instances(coord[:, :3], arrays["segment20"], arrays["instance"])
        return SceneRecord(folder.name, coord[:, :3].astype(np.float32), colors, boxes, labels)
