"""k-means (k-means++ init, Lloyd iterations) and radius-bounded kNN-graph connected components.

Both take optional group ids so that many independent problems (the views of a batch, the k-means clusters
of a scene) run in one call instead of a Python loop: k-means works on a padded (G, max_n, D) layout with
batched matmuls, and the graph search moves every group far away from the others so one kNN pass finds
only same-group edges.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops.radius_graph import radius_knn

# Upper bound on (group, row, centroid) scores materialised at once by the k-means assignment.
_ASSIGN_SCORES = 1 << 24


def kmeans(x: Tensor, k: int, iters: int = 20, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Cluster rows of x (N,D) into k groups with squared-L2 Lloyd iterations.

    Returns labels (N,) int64 and centroids (k,D). Seeding is k-means++ driven by a torch.Generator with
    `seed`, so results are reproducible. A cluster that loses all its points keeps its previous centroid.
    """
    if x.ndim != 2 or not x.is_floating_point():
        raise InputError(f"kmeans: x must be a floating (N,D) tensor, got {x.dtype} {tuple(x.shape)}")
    n = x.shape[0]
    if not 0 < k <= n:
        raise InputError(f"kmeans: k must be in [1, {n}] (number of rows), got {k}")
    labels, centroids = grouped_kmeans(x, torch.zeros(n, dtype=torch.long, device=x.device), k, iters, seed)
    return labels, centroids[0]


def grouped_kmeans(x: Tensor, group: Tensor, k: int, iters: int = 20, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Independent k-means of the rows of x (N,D) in each group (group (N,) int64 ids >= 0), in one pass.

    Group g gets min(k, n_g) clusters, seeded with `seed + g`: the result equals `kmeans` run on each group
    alone with that seed. Returns labels (N,) int64 in [0, min(k, n_g)) and centroids (G,k,D), G = max id + 1,
    whose unused rows (groups with fewer than k points) are zero.
    """
    if x.ndim != 2 or not x.is_floating_point():
        raise InputError(f"kmeans: x must be a floating (N,D) tensor, got {x.dtype} {tuple(x.shape)}")
    if group.shape != (x.shape[0],) or group.dtype != torch.long or (group.numel() and int(group.min()) < 0):
        raise InputError(f"kmeans: group must be (N,) int64 ids >= 0 for N = {x.shape[0]} rows, got "
                         f"{group.dtype} {tuple(group.shape)}")
    if k < 1:
        raise InputError(f"kmeans: k must be >= 1, got {k}")
    if iters < 0:
        raise InputError(f"kmeans: iters must be >= 0, got {iters}")
    if x.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=x.device), x.new_zeros(0, k, x.shape[1])
    with torch.no_grad():
        data = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        padded, valid, pos, counts = _pad_groups(data, group)
        sizes = counts.tolist()
        n_clusters = counts.clamp(max=k)
        live = torch.arange(k, device=data.device) < n_clusters.unsqueeze(1)  # (G,k) centroids in use
        centroids = _kmeans_pp(padded, valid, sizes, k, seed)
        labels = _assign(padded, centroids, live)
        flat = (group * k)  # id of a point's group's first centroid in the flattened (G*k) list
        for _ in range(iters):
            # converged groups stay at their fixed point, so iterating them with the others changes nothing
            ids = flat + labels[group, pos]
            sums = torch.zeros(centroids.shape[0] * k, data.shape[1], dtype=data.dtype,
                               device=data.device).index_add_(0, ids, data)
            count = torch.bincount(ids, minlength=centroids.shape[0] * k).unsqueeze(1)
            updated = (sums / count.clamp_min(1)).view_as(centroids)
            centroids = torch.where((count > 0).view(*live.shape, 1), updated, centroids)
            new_labels = _assign(padded, centroids, live)
            if torch.equal(new_labels, labels):
                break
            labels = new_labels
        centroids = torch.where(live.unsqueeze(2), centroids, torch.zeros_like(centroids))
    return labels[group, pos], centroids.to(x.dtype)


def _pad_groups(data: Tensor, group: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(G,max_n,D) rows of each group in their original order, (G,max_n) validity, each row's slot, sizes."""
    n_groups = int(group.max()) + 1 if group.numel() else 0
    counts = torch.bincount(group, minlength=n_groups)
    order = torch.argsort(group, stable=True)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.empty_like(group)
    pos[order] = torch.arange(group.numel(), device=group.device) - start[group[order]]
    width = int(counts.max()) if n_groups else 0
    padded = data.new_zeros(n_groups, width, data.shape[1])
    padded[group, pos] = data
    valid = torch.zeros(n_groups, width, dtype=torch.bool, device=data.device)
    valid[group, pos] = True
    return padded, valid, pos, counts


def _assign(padded: Tensor, centroids: Tensor, live: Tensor) -> Tensor:
    """(G,max_n) index of the nearest live centroid: argmin |c|^2 - 2 a.c (|a|^2 is the same for every c)."""
    block = max(1, _ASSIGN_SCORES // max(1, centroids.shape[0] * centroids.shape[1]))
    c_sq = (centroids * centroids).sum(2).masked_fill(~live, float("inf")).unsqueeze(1)
    out = [torch.baddbmm(c_sq, padded[:, s:s + block], centroids.transpose(1, 2), alpha=-2.0).argmin(2)
           for s in range(0, padded.shape[1], block)]
    return torch.cat(out, 1) if out else padded.new_zeros(padded.shape[:2], dtype=torch.long)


def _kmeans_pp(padded: Tensor, valid: Tensor, sizes: list[int], k: int, seed: int) -> Tensor:
    """k-means++ seeding of every group at once: (G,k,D) initial centroids.

    Each next centre is drawn with probability proportional to the squared distance to the nearest chosen
    one, by inverse-CDF sampling with uniforms drawn up front from each group's own generator (seed + g),
    so no step waits on the host. Rows beyond a group's size stay unused (zero)."""
    n_groups, width = valid.shape
    device = padded.device
    first = torch.zeros(n_groups, dtype=torch.long)
    uniform = torch.zeros(n_groups, max(k - 1, 0), dtype=torch.float64)
    for g, n in enumerate(sizes):
        if n:
            gen = torch.Generator(device="cpu").manual_seed(seed + g)
            first[g] = int(torch.randint(n, (1,), generator=gen))
            uniform[g] = torch.rand(k - 1, generator=gen, dtype=torch.float64)
    first, uniform = first.to(device), uniform.to(device)
    rows = torch.arange(n_groups, device=device)
    slot = torch.arange(width, device=device)
    sq_norm = (padded * padded).sum(2)
    columns = padded.transpose(1, 2).contiguous()  # (G,D,max_n): a row vector times it is a fast bmm
    chosen = torch.zeros(n_groups, k, dtype=torch.long, device=device)
    chosen[:, 0] = first
    taken = ~valid
    taken[rows, first] = True

    def sq_dist_to(index: Tensor) -> Tensor:
        centre = padded[rows, index]  # (G,D)
        dot = torch.bmm(centre.unsqueeze(1), columns).squeeze(1)
        d = (sq_norm + sq_norm[rows, index].unsqueeze(1) - 2 * dot).clamp_min(0)
        return d.masked_fill(~valid, 0)

    closest = sq_dist_to(first)
    for j in range(1, k):
        cdf = closest.double().cumsum(1)
        total = cdf[:, -1]
        drawn = torch.searchsorted(cdf, (uniform[:, j - 1] * total).unsqueeze(1), right=True).squeeze(1)
        # round-off can push the draw past the end: clamp to the last row that has weight
        last = torch.where(closest > 0, slot, -1).max(1).values.clamp_min(0)
        drawn = torch.minimum(drawn, last)
        unused = (~taken).long().argmax(1)  # every point coincides with a centre: any unused row will do
        nxt = torch.where(total > 0, drawn, unused)
        chosen[:, j] = nxt
        taken[rows, nxt] = True
        closest = torch.minimum(closest, sq_dist_to(nxt))
    return torch.gather(padded, 1, chosen.unsqueeze(2).expand(-1, -1, padded.shape[2])).clone()


def connected_components(points: Tensor, radius: float, k: int = 16, min_size: int = 1,
                         group: Tensor | None = None) -> Tensor:
    """Components of the graph joining each point to those of its k nearest neighbours closer than radius.

    points (N,D) with D = 3 (the kNN graph is built in 3-D). With `group` (N,) int64, edges only join points
    of the same group (each group's graph is built as if alone). Returns labels (N,) int64: components with
    fewer than min_size points get -1, the others are numbered 0.. in order of their lowest point index.
    The graph is `pc3d.ops.radius_graph.radius_knn` (k nearest others, ties to the lower index): CPU a k-d tree
    and scipy.sparse.csgraph, other devices a torch cell list and label propagation (both sub-quadratic).
    """
    if points.ndim != 2 or points.shape[1] != 3 or not points.is_floating_point():
        raise InputError(f"connected_components: points must be a floating (N,3) tensor, got "
                         f"{points.dtype} {tuple(points.shape)}")
    if not radius > 0:
        raise InputError(f"connected_components: radius must be > 0, got {radius}")
    if k < 1:
        raise InputError(f"connected_components: k must be >= 1, got {k}")
    if group is not None and (group.shape != points.shape[:1] or group.dtype != torch.long):
        raise InputError(f"connected_components: group must be (N,) int64 for N = {points.shape[0]}, got "
                         f"{group.dtype} {tuple(group.shape)}")
    n = points.shape[0]
    device = points.device
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    with torch.no_grad():
        pts = points.detach()
        if device.type == "cpu":
            # the k-d tree keeps groups apart by moving them apart along x by more than their extent + radius
            # (float64: the shift must not cost precision); the cell list keys each group's cells on their own
            pts = pts.double()
            if group is not None:
                extent = float((pts.max(0).values - pts.min(0).values).max())
                pts = pts.clone()
                pts[:, 0] += group.to(pts.dtype) * (extent + 4 * radius)
            root = _roots_scipy(pts, radius, k)
        else:
            root = _roots_torch(pts, radius, k, group)
    _, comp, sizes = torch.unique(root, return_inverse=True, return_counts=True)  # sorted by root = min index
    big = sizes >= min_size
    new_id = torch.cumsum(big.long(), 0) - 1
    return torch.where(big[comp], new_id[comp], torch.full_like(comp, -1))


def _roots_scipy(points: Tensor, radius: float, k: int) -> Tensor:
    """Lowest point index of each point's component: k-d tree graph, scipy.sparse.csgraph components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as graph_components

    n = points.shape[0]
    src, dst = _edges(radius_knn(points, k, radius, method="tree")[0])
    graph = coo_matrix((np.ones(src.numel()), (src.numpy(), dst.numpy())), shape=(n, n)).tocsr()
    _, comp = graph_components(graph, directed=False)
    _, lowest = np.unique(comp, return_index=True)  # labels are 0..C-1; first occurrence = lowest index
    return torch.from_numpy(lowest.astype(np.int64)[comp])


def _roots_torch(points: Tensor, radius: float, k: int, group: Tensor | None = None) -> Tensor:
    """The same roots on any device: cell-list graph (`radius_knn` method cells), label propagation."""
    src, dst = _edges(radius_knn(points, k, radius, group, method="cells")[0])
    return _union_roots(points.shape[0], src, dst)


def _edges(idx: Tensor) -> tuple[Tensor, Tensor]:
    """(src, dst) of the filled slots of a (N,k) neighbour table (-1 = empty)."""
    src = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1).expand_as(idx)
    keep = idx >= 0
    return src[keep], idx[keep]


def _union_roots(n: int, src: Tensor, dst: Tensor) -> Tensor:
    """Min-label propagation with pointer jumping: every point ends with the lowest index of its component."""
    label = torch.arange(n, device=src.device)
    while True:
        # hook: each edge pulls both ends' roots down to the smaller of the two labels
        low = torch.minimum(label[src], label[dst])
        new = label.clone()
        new.scatter_reduce_(0, label[src], low, "amin")
        new.scatter_reduce_(0, label[dst], low, "amin")
        while True:  # pointer jumping: follow labels to their roots
            jumped = new[new]
            if torch.equal(jumped, new):
                break
            new = jumped
        if torch.equal(new, label):
            return label
        label = new
