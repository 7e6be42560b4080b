"""Farthest point sampling: one program per cloud, running minimum distances kept in a scratch buffer."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _fps_kernel(xyz_ptr, min_ptr, out_ptr, num_points, num_samples, start, BLOCK: tl.constexpr):
    cloud = tl.program_id(0)
    base = xyz_ptr + cloud * num_points * 3
    mins = min_ptr + cloud * num_points
    out = out_ptr + cloud * num_samples
    current = start
    tl.store(out, current.to(tl.int64))
    for step in range(1, num_samples):
        px = tl.load(base + current * 3)
        py = tl.load(base + current * 3 + 1)
        pz = tl.load(base + current * 3 + 2)
        best_val = -1.0
        best_idx = 0
        for off in range(0, num_points, BLOCK):
            offs = off + tl.arange(0, BLOCK)
            valid = offs < num_points
            dx = tl.load(base + offs * 3, mask=valid, other=0.0) - px
            dy = tl.load(base + offs * 3 + 1, mask=valid, other=0.0) - py
            dz = tl.load(base + offs * 3 + 2, mask=valid, other=0.0) - pz
            d = tl.minimum(tl.load(mins + offs, mask=valid, other=-1.0), dx * dx + dy * dy + dz * dz)
            tl.store(mins + offs, d, mask=valid)
            d = tl.where(valid, d, -1.0)
            block_max = tl.max(d, 0)
            # lowest index holding the block maximum; a later block only wins if strictly larger
            block_idx = tl.min(tl.where(d == block_max, offs, num_points + BLOCK), 0)
            better = block_max > best_val
            best_idx = tl.where(better, block_idx, best_idx)
            best_val = tl.where(better, block_max, best_val)
        current = best_idx
        tl.store(out + step, current.to(tl.int64))


def fps_triton(xyz: Tensor, n: int, start: int = 0, block: int = 1024) -> Tensor:
    """(B,N,3) -> (B,n) int64 FPS indices; same contract as pc3d.ops.farthest_point_sample."""
    pts = xyz.float().contiguous()
    batch, num_points, _ = pts.shape
    mins = torch.full((batch, num_points), float("inf"), dtype=torch.float32, device=pts.device)
    out = torch.empty(batch, n, dtype=torch.int64, device=pts.device)
    block = min(block, triton.next_power_of_2(num_points))
    _fps_kernel[(batch,)](pts, mins, out, num_points, n, start, BLOCK=block)
    return out
