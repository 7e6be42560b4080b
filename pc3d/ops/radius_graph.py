"""Radius-bounded kNN graphs: each point's k nearest other points closer than a radius, without an N x N pass.

PointINS's SCR builds this graph on ~10^5 predicted centroids per batch with k 150 and tau_d 1.2 m (Table 9);
a brute-force kNN there is quadratic (10^10 distances per step). Two sub-quadratic searches give the same graph:

- CPU: scipy's cKDTree (compiled, pruned by the radius);
- any device (the CUDA path): a uniform cell list in torch. Points are sorted by (group, cell) with cells of
  edge h = radius / shells; the search visits the cells at Chebyshev distance 1, 2, ... from the query's cell,
  one shell at a time, and a query stops as soon as its k-th best distance is below s * h (every unvisited
  point is farther than that) or the shells cover the radius. Work grows with the local density, not with N.

Neighbour rule (both searches, and the brute-force reference in the tests): the candidates of point i are the
points j != i of the same group with |p_i - p_j| < radius; i keeps the first k of them in (squared distance,
index) order, so ties at the k-th place go to the lower index. Squared distances are dx*dx + dy*dy + dz*dz in
the points' dtype (float64 on CPU).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

from pc3d.errors import InputError

# flat (query, candidate) pairs materialised at once by the cell search (~64 MB per int64 array)
_PAIR_BUDGET = 1 << 23
# a query stops at shell s only if its k-th distance is below s * h by this relative margin, so that rounding
# of the cell indices (float64) and of the distances cannot hide a point exactly on the shell boundary
_MARGIN = 1e-6


def radius_knn(points: Tensor, k: int, radius: float, group: Tensor | None = None, method: str = "auto",
               shells: int = 4) -> tuple[Tensor, Tensor]:
    """(idx, dist2), each (N,k): the k nearest other points of the same group closer than `radius` (see the
    module's neighbour rule), in (squared distance, index) order; empty slots are -1 / inf.

    method: "auto" (CPU: "tree", else "cells"), "tree" (scipy cKDTree, CPU only), "cells" (torch cell list),
    "brute" (quadratic reference, small inputs only)."""
    if points.ndim != 2 or points.shape[1] != 3 or not points.is_floating_point():
        raise InputError(f"radius_knn: points must be a floating (N,3) tensor, got {points.dtype} "
                         f"{tuple(points.shape)}")
    if k < 1:
        raise InputError(f"radius_knn: k must be >= 1, got {k}")
    if not radius > 0:
        raise InputError(f"radius_knn: radius must be > 0, got {radius}")
    if shells < 1:
        raise InputError(f"radius_knn: shells must be >= 1, got {shells}")
    n = points.shape[0]
    group = torch.zeros(n, dtype=torch.long, device=points.device) if group is None else group
    if group.shape != (n,) or group.dtype != torch.long or (n and int(group.min()) < 0):
        raise InputError(f"radius_knn: group must be (N,) int64 ids >= 0 for N = {n}, got {group.dtype} "
                         f"{tuple(group.shape)}")
    if method == "auto":
        method = "tree" if points.device.type == "cpu" else "cells"
    if method not in ("tree", "cells", "brute"):
        raise InputError(f"radius_knn: method must be auto, tree, cells or brute, got {method!r}")
    if method == "tree" and points.device.type != "cpu":
        raise InputError("radius_knn: method tree runs on CPU tensors only")
    idx = torch.full((n, k), -1, dtype=torch.long, device=points.device)
    dist2 = torch.full((n, k), float("inf"), dtype=points.dtype, device=points.device)
    if n < 2:
        return idx, dist2
    with torch.no_grad():
        pts = points.detach()
        if method == "brute":
            if n > 20_000:  # n^2 pairs at once: a reference for tests, not a search
                raise InputError(f"radius_knn: method brute is for <= 20000 points, got {n}")
            return _brute(pts, k, radius, group, idx, dist2)
        if method == "tree":
            return _tree(pts, k, radius, group, idx, dist2)
        return _cells(pts, k, radius, group, shells, idx, dist2)


def squared_distances(query: Tensor, cand: Tensor) -> Tensor:
    """dx*dx + dy*dy + dz*dz, summed in this order (every search uses it, so equal inputs give equal bits)."""
    d = query - cand
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


def _select_rows(cand: Tensor, d2: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per row of the (Q,W) candidate table (empty slots: index -1, d2 inf), the first k entries in
    (d2, index) order: two row-wise stable sorts, by index then by distance."""
    if cand.shape[1] < k:  # pad so that every row has k slots
        pad = k - cand.shape[1]
        cand = torch.cat([cand, cand.new_full((cand.shape[0], pad), -1)], 1)
        d2 = torch.cat([d2, d2.new_full((d2.shape[0], pad), float("inf"))], 1)
    by_index = torch.sort(torch.where(cand >= 0, cand, torch.iinfo(torch.long).max), dim=1, stable=True).indices
    d2, cand = d2.gather(1, by_index), cand.gather(1, by_index)
    by_dist = torch.sort(d2, dim=1, stable=True).indices[:, :k]
    return cand.gather(1, by_dist), d2.gather(1, by_dist)


def _rows(query: Tensor, cand: Tensor, d2: Tensor, rows: int) -> tuple[Tensor, Tensor]:
    """Flat entries grouped by query (query non-decreasing) -> a padded (rows, W) candidate table."""
    counts = torch.bincount(query, minlength=rows)
    width = int(counts.max()) if counts.numel() else 0
    slot = torch.arange(query.numel(), device=query.device) - (torch.cumsum(counts, 0) - counts)[query]
    table = torch.full((rows, width), -1, dtype=torch.long, device=query.device)
    dist = torch.full((rows, width), float("inf"), dtype=d2.dtype, device=query.device)
    table[query, slot] = cand
    dist[query, slot] = d2
    return table, dist


def _brute(pts: Tensor, k: int, radius: float, group: Tensor, idx: Tensor, dist2: Tensor) -> tuple[Tensor, Tensor]:
    n = pts.shape[0]
    q = torch.arange(n, device=pts.device).repeat_interleave(n)
    c = torch.arange(n, device=pts.device).repeat(n)
    d2 = squared_distances(pts[q], pts[c])
    ok = (q != c) & (group[q] == group[c]) & (d2 < radius * radius)
    return _select_rows(*_rows(q[ok], c[ok], d2[ok], n), k)


def _tree(pts: Tensor, k: int, radius: float, group: Tensor, idx: Tensor, dist2: Tensor) -> tuple[Tensor, Tensor]:
    """cKDTree candidates, then the exact rule: the tree is asked for k + 2 points (self, k, and one more); a
    row whose (k+1)-th other point still lies inside the radius and ties the k-th may hide tied points the tree
    did not return, so that row is redone from every point within its k-th distance."""
    from scipy.spatial import cKDTree

    n = pts.shape[0]
    p = pts.double()
    # groups apart along x by more than their extent + radius: no pair across groups is within the radius
    extent = float((p.max(0).values - p.min(0).values).max())
    shifted = p.clone()
    shifted[:, 0] += group.double() * (extent + 4 * radius)
    tree = cKDTree(shifted.numpy())
    want = min(k + 2, n)
    workers = max(1, torch.get_num_threads())
    _, found = tree.query(shifted.numpy(), k=want, distance_upper_bound=radius, workers=workers)
    cand = torch.from_numpy(found.reshape(n, want).astype(np.int64))
    real = cand < n  # misses come back as index n
    cand = torch.where(real, cand, 0)
    d2 = squared_distances(pts.unsqueeze(1), pts[cand])  # exact distances in the points' own dtype
    rows = torch.arange(n).unsqueeze(1)
    ok = real & (cand != rows) & (group[cand] == group.unsqueeze(1)) & (d2 < radius * radius)
    cand = torch.where(ok, cand, -1)
    d2 = torch.where(ok, d2, torch.full_like(d2, float("inf")))
    # the tree answers in its own distance order: a row that starts with the point itself, then its in-radius
    # points strictly increasing in exact distance and the misses, is already in (d2, index) order; only the
    # others (duplicates, ties, rounding inversions) are sorted
    top, top_d2 = cand[:, 1:].clone(), d2[:, 1:].clone()
    if top.shape[1] < k + 1:
        top = torch.cat([top, top.new_full((n, k + 1 - top.shape[1]), -1)], 1)
        top_d2 = torch.cat([top_d2, top_d2.new_full((n, k + 1 - top_d2.shape[1]), float("inf"))], 1)
    valid = ok[:, 1:]
    clean = (cand[:, 0] == rows[:, 0]) & (valid[:, :-1] >= valid[:, 1:]).all(1)
    clean &= ((top_d2[:, 1:want - 1] > top_d2[:, :want - 2]) | ~valid[:, 1:]).all(1)
    messy = torch.nonzero(~clean).squeeze(1)
    if messy.numel():
        top[messy], top_d2[messy] = _select_rows(cand[messy], d2[messy], k + 1)
    # k + 1 columns: the one after the k-th tells whether it ties
    idx[:], dist2[:] = top[:, :k], top_d2[:, :k]
    redo = torch.nonzero(torch.isfinite(top_d2[:, k]) & (top_d2[:, k] <= top_d2[:, k - 1])).squeeze(1)
    if redo.numel():
        bound = float(top_d2[redo, k - 1].max().sqrt()) * (1 + _MARGIN) + 1e-12
        lists = tree.query_ball_point(shifted[redo].numpy(), r=min(bound, radius), workers=workers)
        rq = torch.cat([torch.full((len(row),), i, dtype=torch.long) for i, row in enumerate(lists)])
        rc = torch.cat([torch.as_tensor(row, dtype=torch.long) for row in lists])
        rd = squared_distances(pts[redo[rq]], pts[rc])
        ok = (redo[rq] != rc) & (group[redo[rq]] == group[rc]) & (rd < radius * radius)
        idx[redo], dist2[redo] = _select_rows(*_rows(rq[ok], rc[ok], rd[ok], redo.numel()), k)
    return idx, dist2


def _shell_offsets(s: int, device: torch.device) -> Tensor:
    """(M,3) integer cell offsets at Chebyshev distance exactly s."""
    r = range(-s, s + 1)
    cells = [o for o in itertools.product(r, r, r) if max(abs(o[0]), abs(o[1]), abs(o[2])) == s]
    return torch.tensor(cells, dtype=torch.long, device=device)


def _cells(pts: Tensor, k: int, radius: float, group: Tensor, shells: int, idx: Tensor,
           dist2: Tensor) -> tuple[Tensor, Tensor]:
    n, device = pts.shape[0], pts.device
    rel = pts.double() - pts.double().min(0).values
    # finer cells where points crowd (predicted centroids collapse onto instance centres): halve the cell edge
    # while the average point shares its cell with more than k others, up to 4x the requested shells
    h = radius / shells
    for _ in range(2):
        cell = torch.floor(rel / h).long()
        _, inverse, occupancy = torch.unique(torch.cat([group.unsqueeze(1), cell], 1), dim=0, return_inverse=True,
                                             return_counts=True)
        if float(occupancy[inverse].double().mean()) <= k:
            break
        h, shells = h / 2, shells * 2
    # cell indices in float64 (exact enough that the shell bounds hold to ~1e-16 relative), padded by `shells`
    # cells on each side so that every visited neighbour cell has a valid key
    cell = torch.floor(rel / h).long() + shells
    dims = cell.max(0).values + shells + 1
    stride = torch.stack([dims[1] * dims[2], dims[2], torch.ones_like(dims[2])])
    per_group = int(dims[0] * dims[1] * dims[2])
    if per_group * (int(group.max()) + 1) >= 2**62:
        raise InputError("radius_knn: too many cells for int64 keys; raise the radius or use method tree")
    key = group * per_group + (cell * stride).sum(1)
    order = torch.argsort(key)
    sorted_keys, counts = torch.unique_consecutive(key[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    r2 = radius * radius
    active = torch.arange(n, device=device)
    for s in range(1, shells + 1):
        offset_keys = (_shell_offsets(s, device) * stride).sum(1)
        if s == 1:  # the query's own cell joins the first shell
            offset_keys = torch.cat([offset_keys.new_zeros(1), offset_keys])
        step = max(1, _PAIR_BUDGET // offset_keys.numel())
        for a in range(0, active.numel(), step):
            queries = active[a:a + step]
            # (query, offset) -> the run of points of that cell in the sorted order
            target = key[queries].unsqueeze(1) + offset_keys.unsqueeze(0)
            pos = torch.searchsorted(sorted_keys, target).clamp(max=sorted_keys.numel() - 1)
            run = torch.where(sorted_keys[pos] == target, counts[pos], torch.zeros_like(pos))
            first = starts[pos]
            # chunks of queries of similar candidate counts whose padded tables fit the pair budget
            width = run.sum(1) + k
            by_width = torch.argsort(width, descending=True)
            widths = width[by_width].tolist()
            lo = 0
            while lo < len(widths):
                hi = min(len(widths), lo + max(1, _PAIR_BUDGET // widths[lo]))
                sel = by_width[lo:hi]
                _merge_chunk(pts, queries[sel], run[sel], first[sel], order, k, r2, idx, dist2)
                lo = hi
        if s == shells:
            break
        bound = (s * h) ** 2 * (1 - _MARGIN)
        active = active[~(dist2[active, k - 1] < bound)]
        if active.numel() == 0:
            break
    return idx, dist2


def _merge_chunk(pts: Tensor, queries: Tensor, run: Tensor, first: Tensor, order: Tensor, k: int, r2: float,
                 idx: Tensor, dist2: Tensor) -> None:
    """Add the candidates of one chunk (queries x cells: `run` points from sorted position `first`) to the
    queries' best-k lists."""
    flat_run = run.reshape(-1)
    total = int(flat_run.sum())
    rows = torch.arange(queries.numel(), device=pts.device)
    pair_row = rows.unsqueeze(1).expand_as(run).reshape(-1)
    rep = torch.repeat_interleave(torch.arange(flat_run.numel(), device=pts.device), flat_run)
    within = torch.arange(total, device=pts.device) - (torch.cumsum(flat_run, 0) - flat_run)[rep]
    cand = order[first.reshape(-1)[rep] + within]
    row = pair_row[rep]  # non-decreasing: pairs are laid out query-major
    d2 = squared_distances(pts[queries[row]], pts[cand])
    ok = (queries[row] != cand) & (d2 < r2)  # same cell key implies same group
    table, dist = _rows(row[ok], cand[ok], d2[ok], queries.numel())
    # the queries' current best entries compete with the new candidates
    table = torch.cat([idx[queries], table], 1)
    dist = torch.cat([dist2[queries], dist], 1)
    idx[queries], dist2[queries] = _select_rows(table, dist, k)
