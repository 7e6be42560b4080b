"""ScanObjectNN h5 files (datasets `data` (N,2048,3) and `label` (N,)).

Variants as laid out by the authors' release: OBJ-BG `main_split/*_objectdataset.h5`, OBJ-ONLY
`main_split_nobg/*_objectdataset.h5`, PB-T50-RS `main_split/*_objectdataset_augmentedrot_scale75.h5`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pc3d.data.readers._common import require_file
from pc3d.errors import InputError

SCAN_VARIANTS: dict[str, tuple[str, str]] = {
    "obj_bg": ("main_split", "objectdataset"),
    "obj_only": ("main_split_nobg", "objectdataset"),
    "pb_t50_rs": ("main_split", "objectdataset_augmentedrot_scale75"),
}


def scanobjectnn_file(root: str | os.PathLike, variant: str, split: str) -> Path:
    if variant not in SCAN_VARIANTS:
        raise InputError(f"ScanObjectNN: unknown variant '{variant}' (allowed: {', '.join(SCAN_VARIANTS)})")
    folder, stem = SCAN_VARIANTS[variant]
    prefix = "training" if split == "train" else "test"
    return Path(root) / folder / f"{prefix}_{stem}.h5"


class ScanObjectNN(Dataset):
    """Yields {"points": (num_points, 3) float32, "label": int64}; training shuffles the point order."""

    def __init__(self, root: str | os.PathLike, variant: str = "pb_t50_rs", split: str = "train",
                 num_points: int = 2048, shuffle_points: bool | None = None) -> None:
        import h5py

        path = require_file(scanobjectnn_file(root, variant, split), "ScanObjectNN")
        try:
            with h5py.File(path, "r") as handle:
                for key in ("data", "label"):
                    if key not in handle:
                        raise InputError(f"ScanObjectNN: {path} has no dataset '{key}'")
                self.data = np.asarray(handle["data"][:], dtype=np.float32)
                self.labels = np.asarray(handle["label"][:]).reshape(-1).astype(np.int64)
        except OSError as exc:
            raise InputError(f"ScanObjectNN: cannot read {path} ({exc})") from None
        if self.data.ndim != 3 or self.data.shape[2] < 3 or len(self.data) != len(self.labels):
            raise InputError(f"ScanObjectNN: {path} has data {self.data.shape} and label {self.labels.shape}")
        self.num_points = num_points
        self.shuffle_points = split == "train" if shuffle_points is None else shuffle_points

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cloud = self.data[index, :, :3]
        order = torch.randperm(len(cloud)).numpy() if self.shuffle_points else np.arange(len(cloud))
        order = order[np.arange(self.num_points) % len(order)]
        return {"points": torch.from_numpy(cloud[order].copy()), "label": torch.tensor(self.labels[index])}
