"""Point-BERT's released ModelNet40 few-shot folds (`ModelNetFewshot/<way>way<shot>shot/<fold>.pkl`).

Each fold file is a pickle of `{"train": [(points, label, _), ...], "test": [...]}` (Point-BERT's and
Point-MAE's `ModelNetFewShot` read it so): `points` an (N, 3 or 6) float32 array (xyz[, normals]),
`label` the class inside the fold (0..way-1), the third entry unused. The released files are read with
the restricted unpickler (numpy arrays and plain containers only), never `pickle.load`.

Samples: the first `num_points` of an FPS ordering of xyz (Point-MAE's finetuning runner takes FPS of the
loaded cloud on the GPU), centred and scaled into the unit sphere (Point-MAE's `pc_normalize`), as the
ModelNet40 reader yields them; FPS runs once per cloud and is kept in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pc3d.data.readers._common import unit_sphere
from pc3d.errors import InputError


def fold_path(root: str | os.PathLike, way: int, shot: int, fold: int) -> Path:
    """`<root>/<way>way_<shot>shot/<fold>.pkl`, the folder name Point-BERT's loader joins (its DATASET.md
    draws it as `5way10shot`, also accepted); `<root>` may be that setting folder itself."""
    root = Path(root)
    for setting in (f"{way}way_{shot}shot", f"{way}way{shot}shot"):
        if root.name == setting:
            return root / f"{fold}.pkl"
        if (root / setting).is_dir():
            return root / setting / f"{fold}.pkl"
    return root / f"{way}way_{shot}shot" / f"{fold}.pkl"


def read_fold(path: Path, way: int, shot: int) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """{split: (clouds, labels)} of one fold file, checked against the preset's way and shot."""
    from pc3d.io.safe_pickle import safe_load

    content = safe_load(path)
    if not isinstance(content, dict) or not {"train", "test"} <= set(content):
        raise InputError(f"{path}: expected a dict with 'train' and 'test' lists (Point-BERT's fold layout)")
    splits: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    for split in ("train", "test"):
        clouds, labels = [], []
        for k, entry in enumerate(content[split]):
            if not isinstance(entry, (tuple, list)) or len(entry) < 2:
                raise InputError(f"{path}: {split}[{k}] is not a (points, label, ...) tuple")
            points = np.asarray(entry[0])
            if points.ndim != 2 or points.shape[1] < 3 or not np.isfinite(points[:, :3]).all():
                raise InputError(f"{path}: {split}[{k}] points have shape {points.shape}, expected finite (N, 3+)")
            clouds.append(np.ascontiguousarray(points[:, :3], dtype=np.float32))
            labels.append(int(np.asarray(entry[1]).reshape(-1)[0]))
        splits[split] = (clouds, np.array(labels, np.int64))
    train_labels = splits["train"][1]
    bad = np.concatenate([lab[(lab < 0) | (lab >= way)] for _, lab in splits.values()])
    if len(bad):
        raise InputError(f"{path}: label {int(bad[0])} outside 0..{way - 1}: this fold is not {way}-way")
    counts = np.bincount(train_labels, minlength=way)
    if (counts != shot).any():
        raise InputError(f"{path}: train holds {counts.tolist()} shapes per class, expected {shot} each "
                         f"({way}-way {shot}-shot)")
    return splits


class ModelNet40FewShotSplit(Dataset):
    """One split of one released fold: {"points": (num_points, 3) float32, "label": int64 0..way-1}."""

    def __init__(self, clouds: list[np.ndarray], labels: np.ndarray, num_points: int, source: Path) -> None:
        self.clouds, self.labels, self.num_points = clouds, labels, num_points
        small = [len(c) for c in clouds if len(c) < num_points]
        if small:
            raise InputError(f"{source}: a cloud has {small[0]} points, fewer than data.num_points {num_points}")
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.clouds)

    def points(self, index: int) -> np.ndarray:
        if index not in self._cache:
            from pc3d.ops.sampling import farthest_point_sample

            cloud = self.clouds[index]
            if len(cloud) > self.num_points:
                cloud = cloud[farthest_point_sample(torch.from_numpy(cloud), self.num_points).numpy()]
            self._cache[index] = unit_sphere(cloud).astype(np.float32)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"points": torch.from_numpy(self.points(index)), "label": torch.tensor(int(self.labels[index]))}


def released_fold_sets(data: Any, way: int, shot: int, fold: int) -> tuple[Dataset, Dataset, int]:
    """(train, test, way) of fold `fold` from `data.folds` (Point-BERT's ModelNetFewshot folder)."""
    path = fold_path(data.folds, way, shot, fold)
    if not path.is_file():
        raise InputError(f"few-shot fold {fold}: missing {path} (Point-BERT's ModelNetFewshot/"
                         f"{way}way_{shot}shot/<fold>.pkl; the release has folds 0..9)")
    splits = read_fold(path, way, shot)
    train = ModelNet40FewShotSplit(*splits["train"], data.num_points, path)
    test = ModelNet40FewShotSplit(*splits["test"], data.num_points, path)
    return train, test, way
