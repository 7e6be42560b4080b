"""Pinhole projection of points into an image."""

from __future__ import annotations

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops._common import check_points


def project_points(points: Tensor, K: Tensor, E: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points (N,3) with intrinsics K (3,3) and world->camera extrinsics E (4,4).

    Returns uv (N,2) in pixels (u = column, v = row; pixel (r,c) covers [c,c+1) x [r,r+1)) and depth (N,)
    = z in camera coordinates. Points with depth <= 0 are behind the camera; their uv is meaningless.
    """
    check_points(points, "project_points: points", batched=False)
    if K.shape != (3, 3):
        raise InputError(f"project_points: K must have shape (3,3), got {tuple(K.shape)}")
    if E.shape != (4, 4):
        raise InputError(f"project_points: E must have shape (4,4), got {tuple(E.shape)}")
    E = E.to(points.dtype)
    K = K.to(points.dtype)
    cam = points @ E[:3, :3].t() + E[:3, 3]
    depth = cam[:, 2]
    pix = cam @ K.t()
    # dividing by a zero depth would give inf/nan; those points are invalid anyway
    safe = torch.where(depth.abs() > 0, depth, torch.ones_like(depth))
    uv = pix[:, :2] / safe.unsqueeze(1)
    return uv, depth


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """World->camera extrinsics (4,4) for a camera at `eye` looking at `target` (x right, y down, z forward)."""
    eye, target = eye.double(), target.double()
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) if up is None else up.double()
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-9:  # looking along `up`: any perpendicular will do
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])
    E = torch.eye(4, dtype=torch.float64)
    E[:3, :3] = rot
    E[:3, 3] = -rot @ eye
    return E
