"""ModelNet40 in the `modelnet40_normal_resampled` layout (text files, no pickles).

`<root>/modelnet40_shape_names.txt`, `<root>/modelnet40_{train,test}.txt` (ids like `airplane_0001`),
`<root>/<class>/<id>.txt` with comma-separated x,y,z,nx,ny,nz rows. Point-MAE takes the first
`num_points` of an FPS ordering (here computed once per cloud and cached in memory).

FPS caches beside the lists are used instead of computing FPS at load, whichever is found first:
`modelnet40_<split>_<P>pts_fps.npz` (written by `pc3d data prepare modelnet40`: points (M,P,6), labels,
ids) and Point-MAE's released `modelnet40_<split>_8192pts_fps.dat` (a pickle of [points list, labels
list], read with the restricted unpickler). The first k points of an FPS ordering are the FPS of k
points from the same start, so a cache of P >= num_points points serves any smaller num_points. A cache
whose ids, count or labels disagree with `modelnet40_<split>.txt` is stale: it is skipped with a warning
and FPS runs at load as without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pc3d.data.readers._common import read_lines, require_file, unit_sphere
from pc3d.errors import InputError

DAT_POINTS = 8192  # Point-MAE / Point-BERT's released caches


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
        # FPS-ordered clouds in `ids` order ((M, P, >=3) array or list of (P, >=3)), or None: FPS at load
        self.fps_cache: np.ndarray | list[np.ndarray] | None = None
        self.fps_cache_path: Path | None = None
        if use_fps:
            self.fps_cache_path, self.fps_cache = find_fps_cache(self.root, split, self.ids,
                                                                 np.array(self.labels, np.int64), num_points)

    def _path(self, index: int) -> Path:
        shape_id = self.ids[index]
        return self.root / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt"

    def __len__(self) -> int:
        return len(self.ids)

    def points(self, index: int) -> np.ndarray:
        if index not in self._cache and self.fps_cache is not None:
            cloud = np.asarray(self.fps_cache[index][: self.num_points, :3], dtype=np.float32)
            self._cache[index] = unit_sphere(cloud).astype(np.float32)
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


def _stale(path: Path, why: str) -> None:
    import warnings

    warnings.warn(f"{path}: stale FPS cache ignored ({why}); FPS is computed at load instead "
                  "(rerun `pc3d data prepare modelnet40` to rewrite it)", stacklevel=3)


def _npz_cache(path: Path, ids: list[str], labels: np.ndarray) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as cache:
            cached_ids, cached_labels, points = cache["ids"].tolist(), cache["labels"], cache["points"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        _stale(path, f"unreadable: {' '.join(str(exc).split())}")
        return None
    if cached_ids != ids:
        _stale(path, f"its {len(cached_ids)} shape ids differ from the {len(ids)} in the split list")
    elif not np.array_equal(cached_labels.reshape(-1), labels) or points.ndim != 3 or points.shape[2] < 3:
        _stale(path, "labels or array shapes disagree with the split list")
    else:
        return points
    return None


def _dat_cache(path: Path, ids: list[str], labels: np.ndarray) -> list[np.ndarray] | None:
    from pc3d.io.safe_pickle import safe_load

    content = safe_load(path)  # anything but numpy arrays in plain containers is refused (InputError)
    if not (isinstance(content, (list, tuple)) and len(content) == 2):
        raise InputError(f"{path}: expected a pickle of [list of points, list of labels] (Point-MAE's layout)")
    points, cached = content
    if len(points) != len(ids):
        _stale(path, f"{len(points)} clouds for the {len(ids)} shapes of the split list")
        return None
    if not np.array_equal(np.array([int(np.asarray(x).reshape(-1)[0]) for x in cached]), labels):
        _stale(path, "its labels differ from the classes of the split list")
        return None
    # kept as the unpickled list: stacking would copy the ~2 GB of the released training cache
    clouds = [np.asarray(p) for p in points]
    bad = next((c.shape for c in clouds if c.ndim != 2 or c.shape[1] < 3), None)
    if bad is not None:
        raise InputError(f"{path}: a cloud has shape {bad}, expected ({DAT_POINTS}, 3 or 6)")
    return clouds


def fps_cache_files(root: Path, split: str) -> list[tuple[int, Path]]:
    """(points per cloud, path) of the FPS caches of a split: pc3d's .npz by size, then Point-MAE's .dat."""
    found = []
    for path in root.glob(f"modelnet40_{split}_*pts_fps.npz"):
        count = path.name[len(f"modelnet40_{split}_"):-len("pts_fps.npz")]
        if count.isdigit():
            found.append((int(count), path))
    dat = root / f"modelnet40_{split}_{DAT_POINTS}pts_fps.dat"
    return sorted(found) + ([(DAT_POINTS, dat)] if dat.is_file() else [])


def find_fps_cache(root: Path, split: str, ids: list[str], labels: np.ndarray,
                   num_points: int) -> tuple[Path | None, np.ndarray | list[np.ndarray] | None]:
    """The first current cache holding at least `num_points` FPS points per cloud, or (None, None)."""
    for count, path in fps_cache_files(root, split):
        if count < num_points:
            continue
        points = _dat_cache(path, ids, labels) if path.suffix == ".dat" else _npz_cache(path, ids, labels)
        if points is not None and min((len(p) for p in points), default=0) >= num_points:
            return path, points
    return None, None
