"""Z-buffer depth test: every splat pixel takes an atomic minimum of (depth bits << 32 | point index)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

EMPTY_KEY = torch.iinfo(torch.int64).max


@triton.jit
def _zbuffer_kernel(col_ptr, row_ptr, depth_ptr, zbuf_ptr, num_points, height, width, RADIUS: tl.constexpr,
                    BLOCK: tl.constexpr):
    pts = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = pts < num_points
    col = tl.load(col_ptr + pts, mask=ok, other=0)
    row = tl.load(row_ptr + pts, mask=ok, other=0)
    depth = tl.load(depth_ptr + pts, mask=ok, other=-1.0)
    ok = ok & (depth > 0) & (depth < float("inf"))
    # positive float32 bit patterns order like the values; the low word breaks ties by point index
    key = (depth.to(tl.int32, bitcast=True).to(tl.int64) << 32) | pts.to(tl.int64)
    for dy in tl.static_range(-RADIUS, RADIUS + 1):
        for dx in tl.static_range(-RADIUS, RADIUS + 1):
            r = row + dy
            c = col + dx
            inside = ok & (r >= 0) & (r < height) & (c >= 0) & (c < width)
            tl.atomic_min(zbuf_ptr + r.to(tl.int64) * width + c, key, mask=inside)


def zbuffer_triton(pixel: Tensor, depth: Tensor, height: int, width: int, radius: int, block: int = 256) -> Tensor:
    """pixel (N,2) int (col,row), depth (N,) -> (H,W) int64 min keys, EMPTY_KEY where empty."""
    n = depth.numel()
    zbuf = torch.full((height * width,), EMPTY_KEY, dtype=torch.int64, device=depth.device)
    if n:
        # pixels far outside the image are clamped: they stay outside, and fit in int32
        limit = max(height, width) + radius + 1
        col = pixel[:, 0].clamp(-limit, limit).to(torch.int32).contiguous()
        row = pixel[:, 1].clamp(-limit, limit).to(torch.int32).contiguous()
        _zbuffer_kernel[(triton.cdiv(n, block),)](col, row, depth.float().contiguous(), zbuf, n, height, width,
                                                  RADIUS=radius, BLOCK=block)
    return zbuf.view(height, width)
