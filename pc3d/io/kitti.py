"""KITTI / SemanticKITTI files: velodyne scans, per-point labels, calibration and poses.

- scan  `.bin`:   N x 4 float32 (x, y, z, reflectance)
- label `.label`: N uint32, semantic class in the low 16 bits, instance id in the high 16 bits
- calib:  "KEY: v1 v2 ..." lines; P0..P3 are 3x4 projections, Tr / Tr_velo_to_cam / Tr_imu_to_velo are
          3x4 rigid transforms returned as 4x4 homogeneous matrices, R0_rect (3x3) as 4x4 as well
- poses:  one line of 12 numbers (a 3x4 matrix, row-major) per scan
"""

from __future__ import annotations

import os

import numpy as np

from pc3d.io._common import input_error, read_bytes, read_text
from pc3d.io.atomic import atomic_write, write_text_atomic
from pc3d.io.cloud import PointCloud, make_cloud

RIGID_KEYS = ("Tr", "Tr_velo_to_cam", "Tr_imu_to_velo", "Tr_cam_to_road")
NON_NUMERIC_KEYS = ("calib_time",)  # raw KITTI calib files carry a timestamp line


def read_kitti_bin(path: str | os.PathLike, *, allow_empty: bool = False) -> PointCloud:
    """A velodyne scan; reflectance goes to fields["intensity"] (float32)."""
    data = read_bytes(path)
    if len(data) % 16:
        raise input_error(path, f"truncated KITTI scan: {len(data)} bytes is not a multiple of the 16-byte "
                                "record (x, y, z, intensity as float32)")
    scan = np.frombuffer(data, dtype="<f4").reshape(-1, 4)
    return make_cloud(path, scan[:, :3], fields={"intensity": scan[:, 3].copy()}, allow_empty=allow_empty)


def write_kitti_bin(path: str | os.PathLike, cloud: PointCloud | np.ndarray) -> None:
    """Write a scan from a cloud (intensity from fields["intensity"], else 0) or an (N,3)/(N,4) array."""
    if isinstance(cloud, PointCloud):
        intensity = cloud.fields.get("intensity")
        intensity = np.zeros(len(cloud), np.float32) if intensity is None else intensity
        scan = np.column_stack([cloud.points, intensity]).astype("<f4")
    else:
        array = np.asarray(cloud)
        if array.ndim != 2 or array.shape[1] not in (3, 4):
            raise ValueError(f"expected an (N, 3) or (N, 4) array, got shape {array.shape}")
        if array.shape[1] == 3:
            array = np.column_stack([array, np.zeros(len(array))])
        scan = array.astype("<f4")
    with atomic_write(path, "wb") as handle:
        handle.write(np.ascontiguousarray(scan).tobytes())


def read_kitti_label(path: str | os.PathLike, *, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(semantic, instance) as int64 arrays; `num_points` checks the count against the scan's."""
    data = read_bytes(path)
    if len(data) % 4:
        raise input_error(path, f"truncated KITTI label file: {len(data)} bytes is not a multiple of 4 (uint32)")
    raw = np.frombuffer(data, dtype="<u4")
    if num_points is not None and len(raw) != num_points:
        raise input_error(path, f"label count {len(raw)} does not match the point count {num_points}")
    semantic = (raw & 0xFFFF).astype(np.int64)
    instance = (raw >> 16).astype(np.int64)
    return semantic, instance


def encode_kitti_label(semantic: np.ndarray, instance: np.ndarray | None = None) -> np.ndarray:
    """Pack semantic (low 16 bits) and instance (high 16 bits) into the uint32 SemanticKITTI code."""
    semantic = np.asarray(semantic)
    instance = np.zeros_like(semantic) if instance is None else np.asarray(instance)
    if semantic.shape != instance.shape or semantic.ndim != 1:
        raise ValueError(f"semantic {semantic.shape} and instance {instance.shape} must be equal 1-D shapes")
    for name, values in (("semantic", semantic), ("instance", instance)):
        if len(values) and (values.min() < 0 or values.max() > 0xFFFF):
            raise ValueError(f"{name} ids must lie in 0..65535, got {values.min()}..{values.max()}")
    return (instance.astype(np.uint32) << 16) | semantic.astype(np.uint32)


def write_kitti_label(path: str | os.PathLike, semantic: np.ndarray, instance: np.ndarray | None = None) -> None:
    raw = encode_kitti_label(semantic, instance)
    with atomic_write(path, "wb") as handle:
        handle.write(raw.astype("<u4").tobytes())


def _numbers(path, key: str, text: str, number: int) -> np.ndarray:
    try:
        return np.array([float(word) for word in text.split()], dtype=np.float64)
    except ValueError as exc:
        raise input_error(path, f"line {number} ({key}) holds a non-number") from exc


def _homogeneous(matrix34: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :] = matrix34
    return out


def read_kitti_calib(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse SemanticKITTI `calib.txt` (P0..P3, Tr) or KITTI object calib (P0..P3, R0_rect,
    Tr_velo_to_cam, Tr_imu_to_velo). P* are 3x4; Tr* and R0_rect are 4x4 homogeneous. When only
    Tr_velo_to_cam is present it is also returned as "Tr", so callers can always use calib["Tr"]."""
    calib: dict[str, np.ndarray] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise input_error(path, f"malformed calibration line {number}: expected 'KEY: values'")
        key, text = (part.strip() for part in line.split(":", 1))
        if key in NON_NUMERIC_KEYS:
            continue
        values = _numbers(path, key, text, number)
        if key.startswith("P") and key[1:].isdigit() or key.startswith("P_rect"):
            if values.size != 12:
                raise input_error(path, f"calibration {key} has {values.size} numbers, expected 12 (3x4)")
            calib[key] = values.reshape(3, 4)
        elif key in RIGID_KEYS or key.startswith("Tr"):
            if values.size not in (12, 16):
                raise input_error(path, f"calibration {key} has {values.size} numbers, expected 12 (3x4)")
            calib[key] = _homogeneous(values[:12].reshape(3, 4))
        elif key.startswith("R0_rect") or key.startswith("R_rect"):
            if values.size != 9:
                raise input_error(path, f"calibration {key} has {values.size} numbers, expected 9 (3x3)")
            rect = np.eye(4)
            rect[:3, :3] = values.reshape(3, 3)
            calib[key] = rect
        else:
            calib[key] = values  # other keys (S_*, K_*, D_*) are kept as flat vectors
    if not calib:
        raise input_error(path, "calibration file holds no entries")
    if "Tr" not in calib and "Tr_velo_to_cam" in calib:
        calib["Tr"] = calib["Tr_velo_to_cam"]
    return calib


def write_kitti_calib(path: str | os.PathLike, calib: dict[str, np.ndarray]) -> None:
    """Write "KEY: values" lines (P* as 12 numbers, Tr* as their top 3x4, R0_rect as its 3x3)."""
    lines = []
    for key, matrix in calib.items():
        matrix = np.asarray(matrix, dtype=np.float64)
        if key.startswith("Tr") and matrix.shape == (4, 4):
            matrix = matrix[:3, :]
        elif key.startswith(("R0_rect", "R_rect")) and matrix.shape == (4, 4):
            matrix = matrix[:3, :3]
        lines.append(f"{key}: " + " ".join(f"{value:.12e}" for value in matrix.reshape(-1)))
    write_text_atomic(path, "\n".join(lines) + "\n")


def velo_to_image(calib: dict[str, np.ndarray], camera: int = 2) -> np.ndarray:
    """The 3x4 matrix taking homogeneous velodyne points to homogeneous pixels of camera `camera`:
    P{camera} @ R0_rect @ Tr (R0_rect is the identity when absent, as in SemanticKITTI)."""
    rect = calib.get("R0_rect", np.eye(4))
    return calib[f"P{camera}"] @ rect @ calib["Tr"]


def read_kitti_poses(path: str | os.PathLike) -> np.ndarray:
    """(S, 4, 4) float64 poses, one per non-empty line of 12 numbers."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        values = _numbers(path, "pose", line, number)
        if values.size != 12:
            raise input_error(path, f"wrong column count on pose line {number}: {values.size} numbers, expected 12")
        rows.append(_homogeneous(values.reshape(3, 4)))
    if not rows:
        raise input_error(path, "pose file holds no poses")
    return np.stack(rows)


def write_kitti_poses(path: str | os.PathLike, poses: np.ndarray) -> None:
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"poses must have shape (S, 4, 4) or (S, 3, 4), got {poses.shape}")
    lines = [" ".join(f"{v:.12e}" for v in pose[:3, :].reshape(-1)) for pose in poses]
    write_text_atomic(path, "\n".join(lines) + "\n")
