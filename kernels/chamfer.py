"""Nearest-neighbour index for Chamfer: per query block, a running (min distance, argmin) over reference blocks."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _nearest_kernel(a_ptr, b_ptr, idx_ptr, num_a, num_b, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    cloud = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < num_a
    a = a_ptr + cloud * num_a * 3
    b = b_ptr + cloud * num_b * 3
    ax = tl.load(a + rows * 3, mask=row_ok, other=0.0)
    ay = tl.load(a + rows * 3 + 1, mask=row_ok, other=0.0)
    az = tl.load(a + rows * 3 + 2, mask=row_ok, other=0.0)
    best = tl.full((BLOCK_M,), float("inf"), tl.float32)
    best_i = tl.zeros((BLOCK_M,), tl.int32)
    for off in range(0, num_b, BLOCK_N):
        cols = off + tl.arange(0, BLOCK_N)
        col_ok = cols < num_b
        dx = ax[:, None] - tl.load(b + cols * 3, mask=col_ok, other=0.0)[None, :]
        dy = ay[:, None] - tl.load(b + cols * 3 + 1, mask=col_ok, other=0.0)[None, :]
        dz = az[:, None] - tl.load(b + cols * 3 + 2, mask=col_ok, other=0.0)[None, :]
        d = tl.where(col_ok[None, :], dx * dx + dy * dy + dz * dz, float("inf"))
        block_min = tl.min(d, 1)
        block_i = tl.min(tl.where(d == block_min[:, None], cols[None, :], num_b + BLOCK_N), 1)
        better = block_min < best  # strict: earlier blocks (lower indices) win ties
        best_i = tl.where(better, block_i, best_i)
        best = tl.where(better, block_min, best)
    tl.store(idx_ptr + cloud * num_a + rows, best_i.to(tl.int64), mask=row_ok)


def nearest_triton(a: Tensor, b: Tensor, block_m: int = 64, block_n: int = 128) -> Tensor:
    """(B,N,3), (B,M,3) -> (B,N) int64 index of the nearest point of b for each point of a."""
    af = a.float().contiguous()
    bf = b.float().contiguous()
    batch, num_a, num_b = af.shape[0], af.shape[1], bf.shape[1]
    idx = torch.empty(batch, num_a, dtype=torch.int64, device=a.device)
    block_n = min(block_n, triton.next_power_of_2(num_b))
    _nearest_kernel[(triton.cdiv(num_a, block_m), batch)](af, bf, idx, num_a, num_b, BLOCK_M=block_m,
                                                          BLOCK_N=block_n)
    return idx
