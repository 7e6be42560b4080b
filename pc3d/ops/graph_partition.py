"""Graph partition for superpoints: Felzenszwalb-Huttenlocher region growing on a weighted graph, and the
small-component merge that follows either partition.

PartSLIP partitions its kNN graph with L0 cut pursuit; pc3d has its own (`pc3d.ops.cut_pursuit`,
`SuperpointConfig.method: cut-pursuit`), but region growing is the default because it segments better downstream
(PartSTAD oracle mIoU over 4 chairs: 0.73 vs 0.68 at 1024 points, 0.81 vs 0.79 at 2048). Region growing:
edges are visited from most to least similar (Kruskal order) and the two components an edge joins merge when the
edge's dissimilarity is at most

    min(Int(A) + scale / |A|, Int(B) + scale / |B|),   Int(C) = largest dissimilarity inside C's merge tree,

so a component stops growing where its boundary is clearly more dissimilar than its inside; `scale` sets the
granularity as cut pursuit's `reg` does (larger = bigger components). It is linear after the sort, needs only a
union-find, and does not fragment smoothly curved regions the way an L0 fit of their normals can (on sparse
clouds, e.g. 1024 points, that fragmentation leaves most points in components the merge then hands to a few
large superpoints).
"""

from __future__ import annotations

import numpy as np


def _relabel(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(-1).astype(np.int64)


def region_growing_partition(num_nodes: int, edges: np.ndarray, dissimilarity: np.ndarray, scale: float
                             ) -> np.ndarray:
    """Components (N,) int64 numbered 0..K-1. `edges` (E,2) undirected, `dissimilarity` (E,) >= 0."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    dissimilarity = np.asarray(dissimilarity, dtype=np.float64).reshape(-1)
    if len(edges) != len(dissimilarity):
        raise ValueError(f"{len(edges)} edges but {len(dissimilarity)} dissimilarities")
    parent = np.arange(num_nodes)
    size = np.ones(num_nodes, dtype=np.int64)
    inner = np.zeros(num_nodes)  # Int(C) at each root
    order = np.argsort(dissimilarity, kind="stable")
    src, dst, cost = edges[order, 0].tolist(), edges[order, 1].tolist(), dissimilarity[order].tolist()
    parent_l, size_l, inner_l = parent.tolist(), size.tolist(), inner.tolist()  # python lists: fast scalar access

    def root(i: int) -> int:
        while parent_l[i] != i:
            parent_l[i] = parent_l[parent_l[i]]  # path halving
            i = parent_l[i]
        return i

    for a, b, d in zip(src, dst, cost, strict=True):
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        if d <= min(inner_l[ra] + scale / size_l[ra], inner_l[rb] + scale / size_l[rb]):
            if size_l[ra] < size_l[rb]:
                ra, rb = rb, ra
            parent_l[rb] = ra
            size_l[ra] += size_l[rb]
            inner_l[ra] = d  # edges come in increasing order: d is the new largest inside
    return _relabel(np.array([root(i) for i in range(num_nodes)], dtype=np.int64))


def merge_small_components(points: np.ndarray, components: np.ndarray, min_size: int) -> np.ndarray:
    """Give every component of <= `min_size` points to the component of the point nearest to its first
    point among the points of larger components (PartSLIP's rule); renumber 0..K-1."""
    from scipy.spatial import cKDTree

    components = np.asarray(components, dtype=np.int64)
    sizes = np.bincount(components)
    small = sizes[components] <= min_size
    if not small.any() or small.all():
        return _relabel(components)
    large_idx = np.nonzero(~small)[0]
    tree = cKDTree(np.asarray(points)[large_idx])
    small_ids, first = np.unique(np.where(small, components, -1), return_index=True)
    first, small_ids = first[small_ids >= 0], small_ids[small_ids >= 0]
    _, nearest = tree.query(np.asarray(points)[first], k=1)
    target = np.arange(len(sizes))
    target[small_ids] = components[large_idx[nearest]]
    return _relabel(target[components])
