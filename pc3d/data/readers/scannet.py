"""ScanNet v2 in Pointcept's preprocessed layout, and the embedded synthetic rooms in the same sample form.

Layout: <root>/{train,val,test}/<scene>/{coord,color,normal,segment20,segment200,instance}.npy (coord/normal
float32, color uint8 0-255, segment20 / segment200 int: index into the 20 / 200 benchmark classes or -1,
instance int: -1 = none). ScanNet200 reads the same scenes with `labels="segment200"`.
`root` may also be the folder that holds `scannet/`. Samples are dicts of numpy arrays:
coord (N,3) float32, color (N,3) float32 in [0,255], normal (N,3) float32, segment (N,) int64,
instance (N,) int64, and `name`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.labels import SCANNET20_NAMES, SCANNET20_NYU40_IDS
from pc3d.data.readers._common import load_npy, require_dir
from pc3d.errors import InputError

SCANNET_SPLITS = ("train", "val", "test")
SCANNET_CLASSES: tuple[str, ...] = SCANNET20_NAMES
# PointGroup / Pointcept InstanceParser: wall and floor are not instances
SCANNET_STUFF: tuple[int, ...] = (0, 1)
SCANNET_INSTANCE_CLASSES: tuple[int, ...] = tuple(range(2, 20))
REQUIRED = ("coord", "color", "normal")
# ScanNet200 (index of the tsv id in pc3d.data.prepare.labels200.SCANNET200_TSV_IDS): 0 = wall, 2 = floor are not
# instances (Pointcept's ScanNet200 InstanceParser: segment_ignore_index (-1, 0, 2))
SCANNET200_NUM_CLASSES = 200
SCANNET200_STUFF: tuple[int, ...] = (0, 2)
SCANNET200_INSTANCE_CLASSES: tuple[int, ...] = tuple(c for c in range(200) if c not in SCANNET200_STUFF)
SCANNET_LABELS = ("segment20", "segment200")


def check_scene(sample: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Every per-point array must have the coordinates' length; coord/colour/normal must be (N,3)."""
    n = sample["coord"].shape[0]
    for key, value in sample.items():
        if key == "name":
            continue
        if value.shape[0] != n:
            raise InputError(f"{folder}: {key}.npy has {value.shape[0]} rows but coord.npy has {n}")
        if key in REQUIRED and value.shape != (n, 3):
            raise InputError(f"{folder}: {key}.npy must have shape (N,3), got {value.shape}")
    return sample


def read_pointcept_scene(folder: Path, segment_file: str, what: str) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "coord": load_npy(folder / "coord.npy", what).astype(np.float32),
        "color": load_npy(folder / "color.npy", what).astype(np.float32),
        "normal": load_npy(folder / "normal.npy", what).astype(np.float32),
    }
    n = sample["coord"].shape[0]
    seg = folder / f"{segment_file}.npy"
    inst = folder / "instance.npy"
    sample["segment"] = (load_npy(seg, what).reshape(-1).astype(np.int64) if seg.is_file()
                         else np.full(n, -1, np.int64))  # test scenes have no labels
    sample["instance"] = (load_npy(inst, what).reshape(-1).astype(np.int64) if inst.is_file()
                          else np.full(n, -1, np.int64))
    sample["name"] = folder.name
    return check_scene(sample, folder)


class ScanNetPointcept:
    """Scenes of one split; `sample[i]` reads scene i from disk."""

    classes = SCANNET_CLASSES

    def __init__(self, root: str | Path, split: str = "train", labels: str = "segment20") -> None:
        if split not in SCANNET_SPLITS:
            raise InputError(f"ScanNet: split must be one of {', '.join(SCANNET_SPLITS)}, got {split!r}")
        if labels not in SCANNET_LABELS:
            raise InputError(f"ScanNet: labels must be one of {', '.join(SCANNET_LABELS)}, got {labels!r}")
        self.labels = labels
        base = Path(root)
        if not (base / split).is_dir() and (base / "scannet" / split).is_dir():
            base = base / "scannet"
        folder = require_dir(base / split, "ScanNet (Pointcept layout)")
        self.scenes = sorted(p for p in folder.iterdir() if p.is_dir())
        if not self.scenes:
            raise InputError(f"ScanNet (Pointcept layout): no scene folders in {folder}")
        self.split = split

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        folder = self.scenes[index]
        if self.labels == "segment200" and self.split != "test" and not (folder / "segment200.npy").is_file():
            # a folder prepared without ScanNet200 labels would otherwise train and score on all -1
            raise InputError(f"ScanNet200: {folder} has no segment200.npy (pc3d data prepare scannet writes it)")
        return read_pointcept_scene(folder, self.labels, "ScanNet")


class SyntheticScanNet:
    """Embedded procedural rooms as ScanNet-20 samples, generated once in memory (scene i from (seed, i))."""

    classes = SCANNET_CLASSES

    def __init__(self, count: int, seed: int, num_points: int, index_offset: int = 0) -> None:
        from pc3d.data.synthetic.scenes import generate_scene, scene_rng

        lookup = np.full(max(SCANNET20_NYU40_IDS) + 1, -1, np.int64)
        lookup[list(SCANNET20_NYU40_IDS)] = np.arange(len(SCANNET20_NYU40_IDS))
        self.samples = []
        for i in range(count):
            name = f"scene{index_offset + i:04d}_00"
            scene = generate_scene(scene_rng(seed, index_offset + i), num_points, name=name)
            semantic = np.where(scene.semantic < lookup.size, lookup[np.minimum(scene.semantic, lookup.size - 1)], -1)
            self.samples.append({"coord": scene.points.astype(np.float32), "color": scene.colors.astype(np.float32),
                                 "normal": scene.normals.astype(np.float32), "segment": semantic.astype(np.int64),
                                 "instance": scene.instance.astype(np.int64), "name": scene.name})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]
