"""Point rasteriser: square splats into a z-buffer, nearest point wins each pixel.

The z-buffer stores one int64 key per pixel, (float32 bits of depth) << 32 | point index: for positive
floats the bit pattern orders like the value, so one atomic/scatter minimum picks the nearest point and,
among equal depths, the lowest index. The same key drives the Triton kernel on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops._common import check_points, use_kernels
from pc3d.ops.camera import project_points

EMPTY_KEY = torch.iinfo(torch.int64).max


@dataclass
class RasterResult:
    color: Tensor | None  # (H,W,C) colour of the winning point, `background` where empty; None without colors
    depth: Tensor  # (H,W) camera depth of the winning point, inf where empty
    index: Tensor  # (H,W) int64 index of the winning point, -1 where empty
    visible: Tensor  # (N,) bool: the point wins at least one pixel


def rasterize_points(points: Tensor, K: Tensor, E: Tensor, height: int, width: int, radius: int = 1,
                     colors: Tensor | None = None, background: float = 0.0) -> RasterResult:
    """Render points (N,3) seen by camera (K, E world->camera) into a height x width image.

    Each point with depth > 0 covers the square of (2*radius+1)^2 pixels centred on the pixel it projects
    to (radius 0 = one pixel).
    """
    check_points(points, "rasterize_points: points", batched=False)
    if height <= 0 or width <= 0:
        raise InputError(f"rasterize_points: image size must be positive, got {height}x{width}")
    if radius < 0:
        raise InputError(f"rasterize_points: radius must be >= 0, got {radius}")
    n = points.shape[0]
    if n >= 1 << 31:
        raise InputError("rasterize_points: at most 2**31 - 1 points")
    if colors is not None and (colors.ndim != 2 or colors.shape[0] != n):
        raise InputError(f"rasterize_points: colors must have shape ({n},C), got {tuple(colors.shape)}")
    uv, depth = project_points(points, K, E)
    pixel = torch.floor(uv).long()
    with torch.no_grad():
        if use_kernels(points):
            from pc3d_kernels.raster import zbuffer_triton

            zbuf = zbuffer_triton(pixel, depth.float(), height, width, radius)
        else:
            zbuf = zbuffer_torch(pixel, depth.float(), height, width, radius)
    filled = zbuf != EMPTY_KEY
    index = torch.where(filled, zbuf & 0xFFFFFFFF, torch.full_like(zbuf, -1))
    # One extra row past the last point holds the background values, so empty pixels need no branch.
    lookup = torch.where(filled, index, torch.full_like(index, n))
    depth_img = torch.cat([depth, depth.new_full((1,), float("inf"))])[lookup]
    visible = torch.zeros(n, dtype=torch.bool, device=points.device)
    visible[index[filled]] = True
    color = None
    if colors is not None:
        color = torch.cat([colors, colors.new_full((1, colors.shape[1]), background)])[lookup]
    return RasterResult(color=color, depth=depth_img, index=index, visible=visible)


def depth_keys(depth: Tensor) -> Tensor:
    """int64 keys (depth bits << 32 | index); only meaningful for depth > 0 (float32)."""
    idx = torch.arange(depth.numel(), device=depth.device, dtype=torch.int64)
    return (depth.float().view(torch.int32).to(torch.int64) << 32) | idx


def zbuffer_torch(pixel: Tensor, depth: Tensor, height: int, width: int, radius: int) -> Tensor:
    """(H,W) int64 z-buffer of min keys; EMPTY_KEY where nothing lands. pixel (N,2) = (col,row)."""
    keys = depth_keys(depth)
    ok = (depth > 0) & torch.isfinite(depth)
    # Drop points whose whole splat is off-screen before expanding them (most of a wide scene).
    col, row = pixel[:, 0], pixel[:, 1]
    ok &= (col >= -radius) & (col < width + radius) & (row >= -radius) & (row < height + radius)
    col, row, keys = col[ok], row[ok], keys[ok]
    span = torch.arange(-radius, radius + 1, device=pixel.device)
    cols = (col.unsqueeze(1) + span).unsqueeze(1)  # (P,1,S)
    rows = (row.unsqueeze(1) + span).unsqueeze(2)  # (P,S,1)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    flat = (rows * width + cols).expand_as(inside)[inside]
    key = keys.view(-1, 1, 1).expand_as(inside)[inside]
    zbuf = torch.full((height * width,), EMPTY_KEY, dtype=torch.int64, device=pixel.device)
    zbuf.scatter_reduce_(0, flat, key, "amin")
    return zbuf.view(height, width)
