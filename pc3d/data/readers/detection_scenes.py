"""The scenes a detection or Point-MoDE preset reads: one reader per `data.dataset` (ScanNet in the 3DETR or
Pointcept layout, SUN RGB-D), the extra pretraining sources of `data.extra`, or the embedded synthetic rooms.

Every scene is a `SceneRecord` with boxes labelled 0..17 in `DET_CLASS_NAMES` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pc3d.data.readers._common import SceneRecord
from pc3d.data.readers.scannet_detection import ScanNetDetection, ScanNetPointceptDetection, nyu40_to_det
from pc3d.data.readers.sunrgbd import SunRGBD
from pc3d.errors import InputError


class SyntheticDetectionScenes(Sequence):
    """The embedded synthetic rooms, generated once in memory; scene i depends only on (seed, offset + i)."""

    def __init__(self, count: int, seed: int, points: int, offset: int = 0) -> None:
        from pc3d.data.synthetic.scenes import generate_scene, scene_rng

        self.records = []
        for i in range(count):
            scene = generate_scene(scene_rng(seed, offset + i), points, name=f"scene{offset + i:04d}_00")
            labels = nyu40_to_det(scene.boxes[:, 6])
            keep = labels >= 0
            self.records.append(SceneRecord(scene.name, scene.points, scene.colors, scene.boxes[keep, :6],
                                            labels[keep]))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> SceneRecord:  # type: ignore[override]
        return self.records[index]


class Concatenated(Sequence):
    def __init__(self, parts: list[Sequence]) -> None:
        self.parts = [p for p in parts if len(p)]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        for part in self.parts:
            if index < len(part):
                return part[index]
            index -= len(part)
        raise IndexError(index)


# synthetic validation scenes come from their own index range
SYNTHETIC_VAL_OFFSET = 100_000


def open_scene_folder(dataset: str, root: str, split: str) -> Sequence:
    if dataset == "scannet_detection":
        return ScanNetDetection(root, split)
    if dataset == "scannet_pointcept":
        return ScanNetPointceptDetection(root, split)
    if dataset == "sunrgbd":
        return SunRGBD(root, split)
    raise InputError(f"unknown scene dataset '{dataset}'")


def scene_records(data: Any, split: str, seed: int) -> Sequence:
    """The scenes of a preset's `data` section (SceneDataConfig) for split 'train' or 'val'."""
    if data.source == "synthetic":
        if split == "train":
            return SyntheticDetectionScenes(data.synthetic_count, seed, data.synthetic_points)
        return SyntheticDetectionScenes(data.synthetic_val_count, seed, data.synthetic_points, SYNTHETIC_VAL_OFFSET)
    main = open_scene_folder(data.dataset, data.root, split)
    if split != "train" or not data.extra:
        return main
    return Concatenated([main, *(open_scene_folder(s.dataset, s.root, split) for s in data.extra)])
