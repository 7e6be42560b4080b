"""Point-cloud augmentations and normalisation, driven by an explicit torch.Generator (reproducible)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops._common import check_points

AXES: dict[str, int] = {"x": 0, "y": 1, "z": 2}


def axis_rotation(angle: float, axis: int = 2, dtype: torch.dtype = torch.float32) -> Tensor:
    """The (3,3) right-handed rotation by `angle` radians about coordinate axis 0, 1 or 2."""
    if axis not in (0, 1, 2):
        raise InputError(f"axis_rotation: axis must be 0, 1 or 2, got {axis!r}")
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in (0, 1, 2) if a != axis]
    if axis == 1:  # keep the rotation right-handed about +y: z -> x is the positive direction
        i, j = j, i
    mat = torch.eye(3, dtype=torch.float64)
    mat[i, i], mat[i, j], mat[j, i], mat[j, j] = c, -s, s, c
    return mat.to(dtype)


def random_rotation(generator: torch.Generator, mode: Literal["so3", "z"] = "so3",
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """A random rotation matrix (3,3): uniform over SO(3), or about the z axis by a uniform angle."""
    if mode == "z":
        angle = float(torch.rand((), generator=generator, dtype=torch.float64)) * 2 * math.pi
        return axis_rotation(angle, 2, dtype)
    if mode != "so3":
        raise InputError(f"random_rotation: mode must be 'so3' or 'z', got {mode!r}")
    # A normalised 4-D Gaussian is a uniform unit quaternion, hence a uniform rotation.
    w, x, y, z = (torch.randn(4, generator=generator, dtype=torch.float64)).tolist()
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return torch.tensor([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ], dtype=dtype)


def normalize_unit_sphere(xyz: Tensor) -> Tensor:
    """Subtract the centroid and divide by the largest point norm (Point-MAE's pc_norm), per cloud."""
    check_points(xyz, "normalize_unit_sphere: xyz")
    centred = xyz - xyz.mean(dim=-2, keepdim=True)
    scale = centred.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return centred / scale.unsqueeze(-1)


def _per_cloud(xyz: Tensor, generator: torch.Generator, low: float, high: float) -> Tensor:
    """Per-cloud, per-axis uniform samples broadcastable against xyz (B,N,3) or (N,3)."""
    shape = (xyz.shape[0], 1, 3) if xyz.ndim == 3 else (1, 3)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (low + (high - low) * u).to(xyz.dtype).to(xyz.device)


def scale_and_translate(xyz: Tensor, generator: torch.Generator, scale: tuple[float, float] = (2 / 3, 3 / 2),
                        shift: float = 0.2, isotropic: bool = False) -> Tensor:
    """Point-MAE PointcloudScaleAndTranslate: x * U[scale] + U[-shift, shift], per cloud and per axis.

    `isotropic`: one scale factor per cloud for all three axes (the part-segmentation recipe's
    random_scale_point_cloud + shift_point_cloud), the shift stays per axis."""
    check_points(xyz, "scale_and_translate: xyz")
    factor = _per_cloud(xyz, generator, scale[0], scale[1])
    if isotropic:  # the x draw of each cloud, so the per-axis path keeps its exact random stream
        factor = factor[..., :1].expand_as(factor)
    offset = _per_cloud(xyz, generator, -shift, shift)
    return xyz * factor + offset


def rotate_about_up(xyz: Tensor, generator: torch.Generator, axis: int = 2,
                    angle_range: tuple[float, float] = (0.0, 2 * math.pi)) -> Tensor:
    """Rotate each cloud about the gravity axis by its own angle U[angle_range] (radians).

    The "simple rotation" of ACT / ReCon / Point-MoDE's ScanObjectNN recipe (PointcloudRotate: U[0, 2 pi)
    about the up axis). Points are rotated about the origin, so the coordinate along `axis` and every
    point's norm are unchanged. xyz (B,N,3) or (N,3)."""
    check_points(xyz, "rotate_about_up: xyz")
    batched = xyz.ndim == 3
    count = xyz.shape[0] if batched else 1
    low, high = angle_range
    angles = low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)
    mats = torch.stack([axis_rotation(float(a), axis, torch.float64) for a in angles])
    mats = mats.to(xyz.dtype).to(xyz.device)
    if not batched:
        return xyz @ mats[0].T
    return torch.bmm(xyz, mats.transpose(1, 2))


def jitter(xyz: Tensor, generator: torch.Generator, sigma: float = 0.01, clip: float = 0.05) -> Tensor:
    """Add Gaussian noise N(0, sigma^2) per coordinate, clipped to [-clip, clip]."""
    check_points(xyz, "jitter: xyz")
    noise = torch.randn(xyz.shape, generator=generator, dtype=torch.float64) * sigma
    return xyz + noise.clamp(-clip, clip).to(xyz.dtype).to(xyz.device)


def random_flip(xyz: Tensor, generator: torch.Generator, axes: tuple[int, ...] = (0, 1),
                p: float = 0.5) -> Tensor:
    """Negate each listed axis independently with probability p (one draw per cloud)."""
    check_points(xyz, "random_flip: xyz")
    sign = torch.ones(3, dtype=xyz.dtype)
    for axis in axes:
        if float(torch.rand((), generator=generator)) < p:
            sign[axis] = -1.0
    return xyz * sign.to(xyz.device)


def random_cuboid_crop(xyz: Tensor, generator: torch.Generator, size: tuple[float, float] = (0.4, 1.0),
                       min_points: int = 1, attempts: int = 10) -> Tensor:
    """Indices (sorted, int64) of the points inside a random axis-aligned cuboid.

    The cuboid's side per axis is U[size] times the cloud's extent, centred on a random point. Up to
    `attempts` cuboids are drawn until one holds at least min_points; otherwise the fullest one is used.
    """
    check_points(xyz, "random_cuboid_crop: xyz", batched=False)
    n = xyz.shape[0]
    if n == 0:
        raise InputError("random_cuboid_crop: empty point cloud")
    extent = xyz.amax(0) - xyz.amin(0)
    best = None
    for _ in range(attempts):
        centre = xyz[int(torch.randint(n, (1,), generator=generator))]
        frac = size[0] + (size[1] - size[0]) * torch.rand(3, generator=generator, dtype=torch.float64)
        half = extent * frac.to(xyz.dtype).to(xyz.device) / 2
        inside = ((xyz - centre).abs() <= half).all(1)
        idx = torch.nonzero(inside).squeeze(1)
        if best is None or idx.numel() > best.numel():
            best = idx
        if idx.numel() >= min_points:
            return idx
    return best
