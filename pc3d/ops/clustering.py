"""k-means (k-means++ init, Lloyd iterations) and radius-graph connected components."""

from __future__ import annotations

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops.neighbors import knn

# Rows of the (N,k) distance matrix computed per block in k-means assignment.
_ASSIGN_BLOCK = 1 << 16


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
    if iters < 0:
        raise InputError(f"kmeans: iters must be >= 0, got {iters}")
    with torch.no_grad():
        data = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        centroids = _kmeans_pp(data, k, gen)
        labels = _assign(data, centroids)
        for _ in range(iters):
            sums = torch.zeros_like(centroids).index_add_(0, labels, data)
            counts = torch.bincount(labels, minlength=k).unsqueeze(1)
            centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
            new_labels = _assign(data, centroids)
            if torch.equal(new_labels, labels):
                break
            labels = new_labels
    return labels, centroids.to(x.dtype)


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    d = torch.addmm((b * b).sum(1).unsqueeze(0), a, b.t(), alpha=-2.0)
    return (d + (a * a).sum(1, keepdim=True)).clamp_min(0)


def _assign(data: Tensor, centroids: Tensor) -> Tensor:
    return torch.cat([_sq_dist(data[s:s + _ASSIGN_BLOCK], centroids).argmin(1)
                      for s in range(0, data.shape[0], _ASSIGN_BLOCK)])


def _kmeans_pp(data: Tensor, k: int, gen: Tensor) -> Tensor:
    """k-means++: each next centre drawn with probability proportional to squared distance to the chosen."""
    n = data.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = [first]
    closest = _sq_dist(data, data[first:first + 1]).squeeze(1)
    for _ in range(1, k):
        total = float(closest.sum())
        if total > 0:
            weights = (closest / total).cpu()
            nxt = int(torch.multinomial(weights, 1, generator=gen))
        else:  # every point coincides with a centre: any unused row will do
            unused = torch.ones(n, dtype=torch.bool)
            unused[chosen] = False
            nxt = int(torch.nonzero(unused)[0])
        chosen.append(nxt)
        closest = torch.minimum(closest, _sq_dist(data, data[nxt:nxt + 1]).squeeze(1))
    return data[chosen].clone()


def connected_components(points: Tensor, radius: float, k: int = 16, min_size: int = 1) -> Tensor:
    """Components of the graph joining each point to those of its k nearest neighbours closer than radius.

    points (N,D) with D = 3 (the kNN graph is built in 3-D). Returns labels (N,) int64: components with fewer
    than min_size points get -1, the others are numbered 0.. in order of their lowest point index.
    """
    if points.ndim != 2 or points.shape[1] != 3 or not points.is_floating_point():
        raise InputError(f"connected_components: points must be a floating (N,3) tensor, got "
                         f"{points.dtype} {tuple(points.shape)}")
    if not radius > 0:
        raise InputError(f"connected_components: radius must be > 0, got {radius}")
    if k < 1:
        raise InputError(f"connected_components: k must be >= 1, got {k}")
    n = points.shape[0]
    device = points.device
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    with torch.no_grad():
        neighbours = min(k + 1, n)  # +1: each point is its own nearest neighbour
        dist, idx = knn(points.detach(), points.detach(), neighbours)
        src = torch.arange(n, device=device).unsqueeze(1).expand_as(idx)
        keep = dist < radius
        src, dst = src[keep], idx[keep]
        root = _union_roots(n, src, dst)
    _, comp, sizes = torch.unique(root, return_inverse=True, return_counts=True)  # sorted by root = min index
    big = sizes >= min_size
    new_id = torch.cumsum(big.long(), 0) - 1
    return torch.where(big[comp], new_id[comp], torch.full_like(comp, -1))


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
