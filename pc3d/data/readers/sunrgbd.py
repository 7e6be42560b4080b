"""SUN RGB-D in the VoteNet layout (a Point-MoDE pretraining source).

`<root>/sunrgbd_pc_bbox_votes_50k_v1_{train,val}/<id>_pc.npz` holds `pc` (N, 6): xyz in the upright
depth frame (z up) and rgb in 0..1; `<id>_bbox.npy` holds (K, 8) rows cx cy cz, l w h (half
sizes), heading angle, class (VoteNet's 10 classes). Rotated boxes become the axis-aligned boxes
that enclose them; labels stay VoteNet class indices (`SUNRGBD_CLASSES`).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pc3d.data.readers._common import SceneRecord, load_npy, require_dir
from pc3d.errors import InputError

SUNRGBD_CLASSES: tuple[str, ...] = ("bed", "table", "sofa", "chair", "toilet", "desk", "dresser", "night_stand",
                                    "bookshelf", "bathtub")


def enclosing_axis_aligned(rows: np.ndarray) -> np.ndarray:
    """VoteNet boxes (K, >=7: centre, half sizes, heading) -> (K, 6) axis-aligned centre/full size.

    A box rotated by `heading` about z spans |cos| l + |sin| w along x and |sin| l + |cos| w along y."""
    centre, half, heading = rows[:, :3], rows[:, 3:6], rows[:, 6]
    c, s = np.abs(np.cos(heading)), np.abs(np.sin(heading))
    dx = 2 * (c * half[:, 0] + s * half[:, 1])
    dy = 2 * (s * half[:, 0] + c * half[:, 1])
    return np.column_stack([centre, dx, dy, 2 * half[:, 2]])


class SunRGBD(Sequence):
    what = "SUN RGB-D"

    def __init__(self, root: str | os.PathLike, split: str = "train") -> None:
        self.folder = require_dir(Path(root) / f"sunrgbd_pc_bbox_votes_50k_v1_{split}", self.what)
        self.ids = sorted(p.name[: -len("_pc.npz")] for p in self.folder.glob("*_pc.npz"))
        if not self.ids:
            raise InputError(f"{self.what}: {self.folder} holds no <id>_pc.npz files")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> SceneRecord:  # type: ignore[override]
        scene_id = self.ids[index]
        path = self.folder / f"{scene_id}_pc.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                if "pc" not in data:
                    raise InputError(f"{self.what}: {path} has no 'pc' array (keys: {', '.join(data.files)})")
                pc = np.asarray(data["pc"])
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InputError(f"{self.what}: cannot read {path} ({exc})") from None
        if pc.ndim != 2 or pc.shape[1] < 3 or not np.isfinite(pc[:, :3]).all():
            raise InputError(f"{self.what}: {path} 'pc' has shape {pc.shape} or non-finite values, "
                             "expected (N, 6) xyz rgb")
        colors = None
        if pc.shape[1] >= 6:
            colors = np.clip(np.rint(pc[:, 3:6] * 255), 0, 255).astype(np.uint8)
        bbox_path = self.folder / f"{scene_id}_bbox.npy"
        rows = load_npy(bbox_path, self.what) if bbox_path.is_file() else np.zeros((0, 8))
        rows = rows.reshape(-1, 8) if rows.size else np.zeros((0, 8))
        if not np.isfinite(rows).all():
            raise InputError(f"{self.what}: {bbox_path} contains NaN or inf")
        return SceneRecord(scene_id, pc[:, :3].astype(np.float32), colors, enclosing_axis_aligned(rows),
                           rows[:, 7].astype(np.int64))
