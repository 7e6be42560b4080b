"""k-nearest neighbours and ball query between point sets.

CPU: scipy's k-d tree for large inputs, one chunked matmul brute-force pass for small ones. CUDA: a
Triton kernel when available, else chunked brute force. Distances are recomputed from the found indices in the autograd
graph, so they are exact and differentiable with respect to both point sets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops._common import MAX_PAIRS, as_batched, check_points, compute_dtype, safe_sqrt, use_kernels

# Below this many query-reference pairs one brute-force matmul pass beats building a k-d tree.
_TREE_MIN_PAIRS = 1 << 18


def knn(query: Tensor, ref: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k nearest points of `ref` for each point of `query`.

    query (B,M,3)|(M,3), ref (B,N,3)|(N,3). Returns (dist, idx), each (B,M,k)|(M,k): Euclidean distances
    (not squared) in ascending order and int64 indices into ref's point dimension.
    """
    q, r, squeeze = _check_pair(query, ref, "knn")
    if not 0 < k <= r.shape[1]:
        raise InputError(f"knn: k must be in [1, {r.shape[1]}] (points in ref), got {k}")
    dist, idx = _knn(q, r, k)
    return (dist.squeeze(0), idx.squeeze(0)) if squeeze else (dist, idx)


def ball_query(query: Tensor, ref: Tensor, radius: float, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Up to k neighbours within `radius` (distance <= radius), nearest first.

    Returns (dist, idx, mask), each (B,M,k)|(M,k). Slots beyond the in-radius neighbours repeat the first
    (nearest) neighbour's index and distance and have mask False; a query with no neighbour in range has
    an all-False mask.
    """
    q, r, squeeze = _check_pair(query, ref, "ball_query")
    if k < 1:
        raise InputError(f"ball_query: k must be >= 1, got {k}")
    if not radius > 0:
        raise InputError(f"ball_query: radius must be > 0, got {radius}")
    found = min(k, r.shape[1])
    dist, idx = _knn(q, r, found)
    if found < k:  # fewer reference points than slots: pad, the padding is masked below anyway
        pad = k - found
        dist = torch.cat([dist, dist[..., :1].expand(*dist.shape[:-1], pad)], dim=-1)
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], pad)], dim=-1)
    slot = torch.arange(k, device=idx.device)
    mask = (dist <= radius) & (slot < found)
    dist = torch.where(mask, dist, dist[..., :1])
    idx = torch.where(mask, idx, idx[..., :1])
    if squeeze:
        return dist.squeeze(0), idx.squeeze(0), mask.squeeze(0)
    return dist, idx, mask


def _check_pair(query: Tensor, ref: Tensor, op: str) -> tuple[Tensor, Tensor, bool]:
    check_points(query, f"{op}: query")
    check_points(ref, f"{op}: ref")
    if query.ndim != ref.ndim:
        raise InputError(f"{op}: query and ref must both be batched or both unbatched, "
                         f"got {tuple(query.shape)} and {tuple(ref.shape)}")
    q, squeeze = as_batched(query)
    r, _ = as_batched(ref)
    if q.shape[0] != r.shape[0]:
        raise InputError(f"{op}: batch sizes differ: query {q.shape[0]}, ref {r.shape[0]}")
    if r.shape[1] == 0:
        raise InputError(f"{op}: ref has no points")
    if q.device != r.device:
        raise InputError(f"{op}: query on {q.device} but ref on {r.device}")
    return q, r, squeeze


def _knn(q: Tensor, r: Tensor, k: int) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        idx = knn_indices(q, r, k)
    gathered = torch.gather(r, 1, idx.reshape(r.shape[0], -1, 1).expand(-1, -1, 3))
    diff = q.unsqueeze(2) - gathered.view(*idx.shape, 3)
    dist = safe_sqrt((diff * diff).sum(-1))  # a query equal to a reference point has distance 0, gradient 0
    dist, order = dist.sort(dim=-1, stable=True)  # exact distances may reorder near-ties; k is small
    return dist, idx.gather(-1, order)


def knn_indices(q: Tensor, r: Tensor, k: int) -> Tensor:
    """(B,M,k) int64 indices of the k nearest reference points (no gradients, no input checks)."""
    if q.shape[1] == 0:
        return torch.empty(q.shape[0], 0, k, dtype=torch.long, device=q.device)
    if use_kernels(q):
        from pc3d_kernels.knn import knn_triton

        return knn_triton(q, r, k)
    batch, m, n = q.shape[0], q.shape[1], r.shape[1]
    if q.device.type == "cpu" and m * n >= _TREE_MIN_PAIRS:
        return _knn_tree(q, r, k)
    out = torch.empty(batch, m, k, dtype=torch.long, device=q.device)
    for b in range(batch):
        out[b] = knn_brute(q[b], r[b], k)
    return out


def knn_brute(q: Tensor, r: Tensor, k: int) -> Tensor:
    """(M,k) indices by chunked brute force: |q|^2 - 2 q.r + |r|^2 via one matmul per chunk."""
    dtype = compute_dtype(q)
    q, r = q.to(dtype), r.to(dtype)
    centre = r.mean(0)  # centring reduces the cancellation error of the expansion
    q, r = q - centre, r - centre
    r_sq = (r * r).sum(1)
    chunk = max(1, MAX_PAIRS // max(1, r.shape[0]))
    out = []
    for s in range(0, q.shape[0], chunk):
        qc = q[s:s + chunk]
        d = torch.addmm(r_sq.unsqueeze(0), qc, r.t(), alpha=-2.0)
        d += (qc * qc).sum(1, keepdim=True)
        out.append(d.topk(k, dim=1, largest=False, sorted=True).indices)
    return torch.cat(out)


def _knn_tree(q: Tensor, r: Tensor, k: int) -> Tensor:
    """(B,M,k) indices from scipy's cKDTree (compiled, O(log n) per query, multi-threaded).

    A tree adapts to the very uneven density of real scans (LiDAR: dense near the sensor, sparse far
    away), where any single grid cell size is wrong somewhere; brute force is O(M*N)."""
    from scipy.spatial import cKDTree

    workers = max(1, torch.get_num_threads())
    out = torch.empty(q.shape[0], q.shape[1], k, dtype=torch.long)
    for b in range(q.shape[0]):
        tree = cKDTree(r[b].double().numpy())
        _, idx = tree.query(q[b].double().numpy(), k=k, workers=workers)
        out[b] = torch.from_numpy(idx.reshape(q.shape[1], k).astype("int64"))
    return out
