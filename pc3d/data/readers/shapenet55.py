"""ShapeNet-55 as used by Point-MAE pretraining.

Layout: `<root>/ShapeNet-55/{train,test}.txt` list file names such as `02691156-<model>.npy`;
the clouds (8192 x 3 float) live in `<root>/shapenet_pc/`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pc3d.data.readers._common import choose_points, read_lines, require_dir, require_file, unit_sphere
from pc3d.errors import InputError


class ShapeNet55(Dataset):
    """Yields {"points": (num_points, 3) float32, "label": synset index}: a random subset, unit-sphere scaled."""

    def __init__(self, root: str | os.PathLike, split: str = "train", num_points: int = 1024,
                 random_subset: bool = True, seed: int = 0) -> None:
        root = Path(root)
        split_file = root / "ShapeNet-55" / f"{split}.txt"
        self.cloud_dir = require_dir(root / "shapenet_pc", "ShapeNet-55")
        self.files = read_lines(split_file, "ShapeNet-55")
        if not self.files:
            raise InputError(f"ShapeNet-55: split file {split_file} lists no clouds")
        require_file(self.cloud_dir / self.files[0], "ShapeNet-55")
        # One index for every split: the synsets of all split lists present, so a label means the same class in
        # train and test (Point-MAE keys samples by the synset string; an index per split would shift with a
        # synset that one list lacks).
        listed = set(self.files)
        for other in sorted((root / "ShapeNet-55").glob("*.txt")):
            if other != split_file:
                listed.update(read_lines(other, "ShapeNet-55"))
        synsets = sorted({name.split("-")[0] for name in listed})
        self.synset_index = {s: i for i, s in enumerate(synsets)}
        self.num_points = num_points
        self.random_subset = random_subset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        name = self.files[index]
        path = require_file(self.cloud_dir / name, "ShapeNet-55")
        try:
            cloud = np.load(path).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise InputError(f"ShapeNet-55: cannot read {path} ({exc})") from None
        if cloud.ndim != 2 or cloud.shape[1] < 3:
            raise InputError(f"ShapeNet-55: {path} has shape {cloud.shape}, expected (N, 3)")
        rng = np.random.default_rng((self.seed, index, torch.randint(1 << 30, ()).item())) \
            if self.random_subset else None
        points = unit_sphere(cloud[choose_points(len(cloud), self.num_points, rng), :3])
        return {"points": torch.from_numpy(points.astype(np.float32)),
                "label": torch.tensor(self.synset_index[name.split("-")[0]])}
