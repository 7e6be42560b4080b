"""SemanticKITTI in its public layout, with the learning map, the 3DGenZ zero-shot split and the front view.

Layout (root = the folder holding `sequences/`; `root/dataset/` and `root/semantic_kitti/` are found too):
`sequences/XX/velodyne/NNNNNN.bin` (float32 x, y, z, remission), `labels/NNNNNN.label` (uint32: class in the
low 16 bits, instance in the high 16), `image_2/NNNNNN.png`, `calib.txt` (P2 and Tr; velodyne -> image is
P2 @ Tr). Settings: `full` (all train ids), `gzs` (generalised zero-shot: unseen classes -> 0 = ignore) and
`annotation-free` (no labels at all). Samples are dicts of numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pc3d.errors import InputError
from pc3d.metrics.files import KITTI_LEARNING_MAP, KITTI_NAMES, KITTI_UNSEEN

Setting = Literal["full", "gzs", "annotation-free"]

LEARNING_MAP: dict[int, int] = dict(KITTI_LEARNING_MAP)  # raw id -> train id (0 = ignore)
CLASS_NAMES: tuple[str, ...] = KITTI_NAMES  # train id -> name; 0 is "unlabeled"
NUM_CLASSES = len(CLASS_NAMES)  # 20 including the ignore class 0
IGNORE = 0
UNSEEN_CLASSES: tuple[int, ...] = KITTI_UNSEEN  # motorcycle, truck, bicyclist, traffic-sign (3DGenZ)
SEEN_CLASSES: tuple[int, ...] = tuple(c for c in range(1, NUM_CLASSES) if c not in KITTI_UNSEEN)
# train id -> one raw id (semantic-kitti.yaml learning_map_inv), used when writing .label files
LEARNING_MAP_INV: dict[int, int] = {0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44,
                                    11: 48, 12: 49, 13: 50, 14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81}
TRAIN_SEQUENCES: tuple[str, ...] = ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
VAL_SEQUENCES: tuple[str, ...] = ("08",)
# 2DPASS crops scans to this box before anything else
CROP_MIN = np.array([-50.0, -50.0, -4.0])
CROP_MAX = np.array([50.0, 50.0, 2.0])


def learning_map_lut(max_raw: int = 0xFFFF) -> np.ndarray:
    """Look-up table raw id -> train id (unknown ids -> 0)."""
    lut = np.zeros(max(max_raw, max(LEARNING_MAP)) + 1, dtype=np.int64)
    lut[list(LEARNING_MAP)] = list(LEARNING_MAP.values())
    return lut


_LUT = learning_map_lut()
_INV_LUT = np.array([LEARNING_MAP_INV[c] for c in range(NUM_CLASSES)], dtype=np.int64)


def map_labels(raw: np.ndarray) -> np.ndarray:
    """Raw SemanticKITTI semantic ids (low 16 bits) -> train ids 0..19."""
    return _LUT[np.asarray(raw, dtype=np.int64) & 0xFFFF]


def unmap_labels(train_ids: np.ndarray) -> np.ndarray:
    """Train ids 0..19 -> raw ids (for writing .label files that `pc3d eval` remaps back)."""
    return _INV_LUT[np.asarray(train_ids, dtype=np.int64)]


def zero_shot_labels(train_ids: np.ndarray, unseen: tuple[int, ...] = UNSEEN_CLASSES) -> np.ndarray:
    """GZS training labels: unseen classes become 0 (unlabelled), seen ones stay."""
    out = np.asarray(train_ids, dtype=np.int64).copy()
    out[np.isin(out, unseen)] = IGNORE
    return out


def class_weights(counts: np.ndarray) -> np.ndarray:
    """2DPASS class weights from per-class point counts: f_c = n_c / sum n, w_c = (max f / f_c)^(1/3).

    Class 0 (ignore) and classes without points get weight 0."""
    counts = np.asarray(counts, dtype=np.float64).copy()
    counts[IGNORE] = 0
    freq = counts / max(counts.sum(), 1.0)
    weights = np.zeros_like(freq)
    present = freq > 0
    weights[present] = (freq[present].max() / freq[present]) ** (1.0 / 3.0)
    return weights


def find_sequences_root(root: str | Path) -> Path:
    """The folder holding `sequences/` under `root` (root itself, root/dataset or root/semantic_kitti)."""
    root = Path(root).expanduser()
    for candidate in (root, root / "dataset", root / "semantic_kitti"):
        if (candidate / "sequences").is_dir():
            return candidate
    raise InputError(f"{root}: no SemanticKITTI 'sequences' folder here (nor in dataset/ or semantic_kitti/)")


def kitti_projection(calib: dict[str, np.ndarray], camera: int = 2) -> np.ndarray:
    """The 3x4 velodyne -> pixel matrix P{camera} @ Tr."""
    from pc3d.io.kitti import velo_to_image

    return velo_to_image(calib, camera)


def camera_from_projection(proj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a 3x4 projection P = K [R | t] into K (3x3) and the 4x4 extrinsics [R | t] for `project_points`.

    KITTI's rectified P2 @ Tr has an upper-triangular left block times a rotation; an RQ split recovers them."""
    from scipy.linalg import rq

    k, r = rq(proj[:, :3])
    signs = np.diag(np.sign(np.diag(k)))  # make the focal lengths positive
    k, r = k @ signs, signs @ r
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = r
    extrinsics[:3, 3] = np.linalg.solve(k, proj[:, 3])
    return k / k[2, 2], extrinsics


@dataclass
class FrontView:
    """Points of a scan that project into the image (2DPASS's filter)."""

    index: np.ndarray  # (M,) indices into the scan of the points inside the image
    uv: np.ndarray  # (M, 2) float pixel coordinates (u = column, v = row)
    depth: np.ndarray  # (M,) camera-z depth in metres

    def pixels(self, height: int, width: int) -> np.ndarray:
        """(M, 2) integer (row, col) of each point, 2DPASS style (truncated coordinates)."""
        col = np.clip(self.uv[:, 0].astype(np.int64), 0, width - 1)
        row = np.clip(self.uv[:, 1].astype(np.int64), 0, height - 1)
        return np.stack([row, col], axis=1)


def front_view(points: np.ndarray, proj: np.ndarray, image_size: tuple[int, int]) -> FrontView:
    """Keep points with x > 0 that project to 0 < u < W, 0 < v < H (through `pc3d.ops.project_points`)."""
    import torch

    from pc3d.ops import project_points

    height, width = image_size
    k, extrinsics = camera_from_projection(np.asarray(proj, dtype=np.float64))
    ahead = np.flatnonzero(points[:, 0] > 0)
    uv, depth = project_points(torch.from_numpy(np.asarray(points[ahead], dtype=np.float64)),
                               torch.from_numpy(k), torch.from_numpy(extrinsics))
    uv, depth = uv.numpy(), depth.numpy()
    inside = (depth > 0) & (uv[:, 0] > 0) & (uv[:, 0] < width) & (uv[:, 1] > 0) & (uv[:, 1] < height)
    return FrontView(ahead[inside], uv[inside], depth[inside])


def crop_mask(points: np.ndarray) -> np.ndarray:
    """2DPASS's box: -50 < x, y < 50, -4 < z < 2 m."""
    return np.all((points > CROP_MIN) & (points < CROP_MAX), axis=1)


@dataclass(frozen=True)
class FrameRef:
    sequence: str
    frame: str  # "000123"


class SemanticKITTI:
    """Frames of `sequences` under `root`; `sample(i)` / `[i]` returns a dict of numpy arrays.

    Keys: points (N,3) float32, intensity (N,) float32, labels (N,) int64 train ids for the setting
    (absent in `annotation-free`), gt (N,) int64 all train ids when label files exist, instance (N,) int64,
    and with `with_image`: image (H,W,3) uint8, proj (3,4), fov_index (M,), fov_uv (M,2), fov_depth (M,).
    `front_view_only` drops the points outside the image (and renumbers fov_index accordingly).
    """

    def __init__(self, root: str | Path, sequences: tuple[str, ...] | list[str] = TRAIN_SEQUENCES,
                 setting: Setting = "full", *, with_image: bool = False, front_view_only: bool = False,
                 crop: bool = False, unseen: tuple[int, ...] = UNSEEN_CLASSES, max_frames: int | None = None) -> None:
        if setting not in ("full", "gzs", "annotation-free"):
            raise InputError(f"SemanticKITTI: unknown setting '{setting}' (full, gzs, annotation-free)")
        self.root = find_sequences_root(root)
        self.setting, self.unseen = setting, tuple(unseen)
        self.with_image = with_image or front_view_only
        self.front_view_only, self.crop = front_view_only, crop
        self.frames: list[FrameRef] = []
        self._proj: dict[str, np.ndarray] = {}
        for seq in sequences:
            seq = f"{int(seq):02d}" if str(seq).isdigit() else str(seq)
            folder = self.root / "sequences" / seq
            scans = sorted((folder / "velodyne").glob("*.bin"))
            if not scans:
                raise InputError(f"{folder / 'velodyne'}: no .bin scans (sequence {seq} missing or empty)")
            self.frames += [FrameRef(seq, p.stem) for p in scans]
        if max_frames is not None:
            self.frames = self.frames[:max_frames]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(index)

    def folder(self, sequence: str) -> Path:
        return self.root / "sequences" / sequence

    def label_path(self, ref: FrameRef) -> Path:
        return self.folder(ref.sequence) / "labels" / f"{ref.frame}.label"

    def has_labels(self, index: int) -> bool:
        return self.label_path(self.frames[index]).is_file()

    def projection(self, sequence: str) -> np.ndarray:
        if sequence not in self._proj:
            from pc3d.io.kitti import read_kitti_calib

            path = self.folder(sequence) / "calib.txt"
            if not path.is_file():
                raise InputError(f"{path}: missing calibration (needed for the camera projection)")
            calib = read_kitti_calib(path)
            if "P2" not in calib or "Tr" not in calib:
                raise InputError(f"{path}: needs P2 and Tr entries")
            self._proj[sequence] = kitti_projection(calib)
        return self._proj[sequence]

    def sample(self, index: int) -> dict[str, Any]:
        from pc3d.io.kitti import read_kitti_bin, read_kitti_label

        ref = self.frames[index]
        folder = self.folder(ref.sequence)
        cloud = read_kitti_bin(folder / "velodyne" / f"{ref.frame}.bin", allow_empty=True)
        points = cloud.points.astype(np.float32)
        out: dict[str, Any] = {"points": points, "intensity": cloud.fields["intensity"].astype(np.float32),
                               "sequence": ref.sequence, "frame": ref.frame}
        label_file = self.label_path(ref)
        if label_file.is_file():
            raw, instance = read_kitti_label(label_file, num_points=len(points))
            out["gt"], out["instance"] = map_labels(raw), instance
        if self.setting != "annotation-free":
            if "gt" not in out:
                raise InputError(f"{label_file}: missing label file (setting '{self.setting}' needs labels)")
            out["labels"] = out["gt"] if self.setting == "full" else zero_shot_labels(out["gt"], self.unseen)
        keep = crop_mask(points) if self.crop else None
        if self.with_image:
            from pc3d.io.images import read_image

            image = read_image(folder / "image_2" / f"{ref.frame}.png")
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            out["image"], out["proj"] = image[:, :, :3], self.projection(ref.sequence)
        if self.front_view_only or keep is not None:
            mask = np.ones(len(points), bool) if keep is None else keep
            if self.front_view_only:
                fov = np.zeros(len(points), bool)
                fov[front_view(points, out["proj"], out["image"].shape[:2]).index] = True
                mask &= fov
            out = _select(out, np.flatnonzero(mask))
        if self.with_image:
            view = front_view(out["points"], out["proj"], out["image"].shape[:2])
            out["fov_index"], out["fov_uv"], out["fov_depth"] = view.index, view.uv, view.depth
        return out


def _select(sample: dict[str, Any], index: np.ndarray) -> dict[str, Any]:
    per_point = ("points", "intensity", "gt", "labels", "instance")
    return {k: (v[index] if k in per_point else v) for k, v in sample.items()}


def label_counts(dataset: SemanticKITTI, key: str = "labels") -> np.ndarray:
    """Points per train id over the dataset (for class weights)."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for i in range(len(dataset)):
        counts += np.bincount(dataset[i][key], minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts
