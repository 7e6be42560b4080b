"""Farthest point sampling (FPS), deterministic given the start index."""

from __future__ import annotations

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops._common import as_batched, check_points, compute_dtype, use_kernels

# Block width of the two-level argmax of the single-cloud CPU path: a full argmax over 50k floats is an
# unvectorised scan (~25 us), while a vectorised amax per block plus two short argmaxes costs ~6 us.
_ARGMAX_BLOCK = 1024


def farthest_point_sample(xyz: Tensor, n: int, start: int = 0) -> Tensor:
    """Indices of `n` points chosen by farthest point sampling.

    xyz: (B,N,3) or (N,3). Returns int64 (B,n) or (n,). The first index is `start`; each next one is the
    point farthest (Euclidean) from all chosen so far, ties broken by the lowest index.
    """
    check_points(xyz, "farthest_point_sample: xyz")
    pts, squeeze = as_batched(xyz)
    num_points = pts.shape[1]
    if not 0 < n <= num_points:
        raise InputError(f"farthest_point_sample: n must be in [1, {num_points}], got {n}")
    if not 0 <= start < num_points:
        raise InputError(f"farthest_point_sample: start must be in [0, {num_points}), got {start}")
    with torch.no_grad():
        if use_kernels(pts):
            from pc3d_kernels.fps import fps_triton

            idx = fps_triton(pts, n, start)
        elif pts.shape[0] == 1 and pts.device.type == "cpu":
            idx = _fps_single_cpu(pts[0], n, start).unsqueeze(0)
        else:
            idx = _fps_batched(pts, n, start)
    return idx.squeeze(0) if squeeze else idx


def _expanded_rows(pts: Tensor) -> tuple[Tensor, Tensor]:
    """Rows so that one dot product gives a squared distance: |x-p|^2 = [x, |x|^2, 1] . [-2p, 1, |p|^2].

    Points are centred first, which keeps the cancellation error of the expansion small.
    """
    p = pts.to(compute_dtype(pts))
    p = p - p.mean(dim=-2, keepdim=True)
    sq = (p * p).sum(-1, keepdim=True)
    ones = torch.ones_like(sq)
    lhs = torch.cat([p, sq, ones], dim=-1)  # (..., N, 5)
    rhs = torch.cat([-2.0 * p, ones, sq], dim=-1)  # (..., N, 5): the row of a chosen point
    return lhs, rhs


def _fps_single_cpu(pts: Tensor, n: int, start: int) -> Tensor:
    """One cloud on the CPU: a matrix-vector product per step and a blocked argmax, no Python per point."""
    lhs, rhs = _expanded_rows(pts)
    num_points = pts.shape[0]
    num_blocks = -(-num_points // _ARGMAX_BLOCK)
    padded = num_blocks * _ARGMAX_BLOCK
    # Padding rows get -inf as running distance, so they are never the maximum.
    lhs_t = torch.zeros(5, padded, dtype=lhs.dtype)
    lhs_t[:, :num_points] = lhs.t()
    min_dist = torch.full((padded,), float("inf"), dtype=lhs.dtype)
    min_dist[num_points:] = float("-inf")
    blocks = min_dist.view(num_blocks, _ARGMAX_BLOCK)
    block_max = torch.empty(num_blocks, dtype=lhs.dtype)
    dist = torch.empty(padded, dtype=lhs.dtype)
    mat = lhs_t.t()  # (padded, 5) transposed view: gemv over contiguous coordinate rows
    chosen = [start]
    current = start
    for _ in range(n - 1):
        torch.mv(mat, rhs[current], out=dist)
        torch.minimum(min_dist, dist, out=min_dist)
        torch.amax(blocks, dim=1, out=block_max)
        block = int(block_max.argmax())  # first block holding the maximum -> lowest index on ties
        current = block * _ARGMAX_BLOCK + int(blocks[block].argmax())
        chosen.append(current)
    return torch.tensor(chosen, dtype=torch.long)


def _fps_batched(pts: Tensor, n: int, start: int) -> Tensor:
    """Batched FPS without host synchronisation (used for B > 1 and for CUDA without Triton)."""
    lhs, rhs = _expanded_rows(pts)
    batch, num_points, _ = pts.shape
    rows = torch.arange(batch, device=pts.device)
    min_dist = torch.full((batch, num_points), float("inf"), dtype=lhs.dtype, device=pts.device)
    out = torch.empty(batch, n, dtype=torch.long, device=pts.device)
    current = torch.full((batch,), start, dtype=torch.long, device=pts.device)
    out[:, 0] = current
    for step in range(1, n):
        dist = torch.bmm(lhs, rhs[rows, current].unsqueeze(-1)).squeeze(-1)
        torch.minimum(min_dist, dist, out=min_dist)
        current = min_dist.argmax(dim=1)  # argmax returns the first maximal index
        out[:, step] = current
    return out
