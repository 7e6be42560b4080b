"""ModelNet40 in the `modelnet40_normal_resampled` layout (text files, no pickles).

`<root>/modelnet40_shape_names.txt`, `<root>/modelnet40_{train,test}.txt` (ids like `airplane_0001`),
`<root>/<class>/<id>.txt` with comma-separated x,y,z,nx,ny,nz rows. Point-MAE takes the first
`num_points` of an FPS ordering (here computed once per cloud and cached in memory).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pc3d.data.readers._common import read_lines, require_file, unit_sphere
from pc3d.errors import InputError


def read_modelnet_txt(path: Path) -> np.ndarray:
    require_file(path, "ModelNet40")
    try:
        data = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise InputError(f"ModelNet40: cannot parse {path} ({exc})") from None
    if data.shape[1] < 3:
        raise InputError(f"ModelNet40: {path} has {data.shape[1]} columns, expected x,y,z[,nx,ny,nz]")
    return data


class ModelNet40(Dataset):
    """Yields {"points": (num_points, 3) float32 unit-sphere scaled, "label": int64}."""

    def __init__(self, root: str | os.PathLike, split: str = "train", num_points: int = 1024,
                 use_fps: bool = True) -> None:
        self.root = Path(root)
        self.classes = read_lines(self.root / "modelnet40_shape_names.txt", "ModelNet40")
        self.class_index = {name: i for i, name in enumerate(self.classes)}
        self.ids = read_lines(self.root / f"modelnet40_{split}.txt", "ModelNet40")
        self.labels = []
        for shape_id in self.ids:
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in self.class_index:
                raise InputError(f"ModelNet40: '{shape_id}' in modelnet40_{split}.txt has an unknown class")
            self.labels.append(self.class_index[cls])
        if self.ids:
            require_file(self._path(0), "ModelNet40")
        self.num_points = num_points
        self.use_fps = use_fps
        self._cache: dict[int, np.ndarray] = {}

    def _path(self, index: int) -> Path:
        shape_id = self.ids[index]
        return self.root / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt"

    def __len__(self) -> int:
        return len(self.ids)

    def points(self, index: int) -> np.ndarray:
        if index not in self._cache:
            cloud = read_modelnet_txt(self._path(index))[:, :3]
            if self.use_fps and len(cloud) > self.num_points:
                from pc3d.ops.sampling import farthest_point_sample

                keep = farthest_point_sample(torch.from_numpy(cloud), self.num_points).numpy()
                cloud = cloud[keep]
            else:
                cloud = cloud[np.arange(self.num_points) % len(cloud)]
            self._cache[index] = unit_sphere(cloud).astype(np.float32)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"points": torch.from_numpy(self.points(index)), "label": torch.tensor(self.labels[index])}
