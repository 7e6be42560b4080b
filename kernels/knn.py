"""k-nearest neighbours: each program keeps a running top-k for a block of queries over all reference blocks."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _knn_kernel(q_ptr, r_ptr, dist_ptr, idx_ptr, num_q, num_r, k, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                K_PAD: tl.constexpr):
    cloud = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < num_q
    q = q_ptr + cloud * num_q * 3
    r = r_ptr + cloud * num_r * 3
    qx = tl.load(q + rows * 3, mask=row_ok, other=0.0)
    qy = tl.load(q + rows * 3 + 1, mask=row_ok, other=0.0)
    qz = tl.load(q + rows * 3 + 2, mask=row_ok, other=0.0)
    slots = tl.arange(0, K_PAD)
    # slots >= k hold -inf: they are never the current worst, so they are never replaced
    best_d = tl.where(slots[None, :] < k, float("inf"), float("-inf")) + tl.zeros((BLOCK_M, K_PAD), tl.float32)
    best_i = tl.zeros((BLOCK_M, K_PAD), tl.int32)
    for off in range(0, num_r, BLOCK_N):
        cols = off + tl.arange(0, BLOCK_N)
        col_ok = cols < num_r
        dx = qx[:, None] - tl.load(r + cols * 3, mask=col_ok, other=0.0)[None, :]
        dy = qy[:, None] - tl.load(r + cols * 3 + 1, mask=col_ok, other=0.0)[None, :]
        dz = qz[:, None] - tl.load(r + cols * 3 + 2, mask=col_ok, other=0.0)[None, :]
        d = tl.where(col_ok[None, :], dx * dx + dy * dy + dz * dz, float("inf"))
        for _ in range(k):  # move the block's smallest candidates into the running list, one at a time
            cand = tl.min(d, 1)
            cand_i = tl.min(tl.where(d == cand[:, None], cols[None, :], num_r + BLOCK_N), 1)
            worst = tl.max(best_d, 1)
            worst_slot = tl.min(tl.where(best_d == worst[:, None], slots[None, :], K_PAD), 1)
            take = (slots[None, :] == worst_slot[:, None]) & (cand < worst)[:, None]
            best_d = tl.where(take, cand[:, None], best_d)
            best_i = tl.where(take, cand_i[:, None], best_i)
            d = tl.where(cols[None, :] == cand_i[:, None], float("inf"), d)
    out = cloud * num_q * k + rows[:, None] * k + slots[None, :]
    ok = row_ok[:, None] & (slots[None, :] < k)
    tl.store(dist_ptr + out, best_d, mask=ok)
    tl.store(idx_ptr + out, best_i.to(tl.int64), mask=ok)


def knn_triton(q: Tensor, r: Tensor, k: int, block_m: int = 32, block_n: int = 128) -> Tensor:
    """(B,M,3), (B,N,3) -> (B,M,k) int64 indices of the k nearest reference points, nearest first."""
    qf = q.float().contiguous()
    rf = r.float().contiguous()
    batch, num_q, num_r = qf.shape[0], qf.shape[1], rf.shape[1]
    dist = torch.empty(batch, num_q, k, dtype=torch.float32, device=q.device)
    idx = torch.empty(batch, num_q, k, dtype=torch.int64, device=q.device)
    block_n = min(block_n, triton.next_power_of_2(num_r))
    grid = (triton.cdiv(num_q, block_m), batch)
    _knn_kernel[grid](qf, rf, dist, idx, num_q, num_r, k, BLOCK_M=block_m, BLOCK_N=block_n,
                      K_PAD=triton.next_power_of_2(k))
    order = dist.argsort(dim=-1, stable=True)  # the running list is unordered
    return idx.gather(-1, order)
