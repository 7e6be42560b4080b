"""Point normals from local covariance, as open3d's estimate_normals(KDTreeSearchParamHybrid) computes them.

numpy/scipy only, for machines without open3d. Open3D's recipe (cpp/open3d/geometry/EstimateNormals.cpp,
PointCloud.cpp): the neighbourhood of a point is its `max_nn` nearest points closer than `radius` (itself
included); with fewer than 3 of them, or when they all coincide, the normal is +z; otherwise it is the
eigenvector of the neighbourhood's covariance with the smallest eigenvalue. The sign is arbitrary in both
(callers orient normals themselves), and where the two smallest eigenvalues (nearly) tie, e.g. on a line of
points, any vector of that plane is as good as another.
"""

from __future__ import annotations

import numpy as np


def estimate_normals_hybrid(points: np.ndarray, radius: float, max_nn: int, chunk: int = 16384) -> np.ndarray:
    """(N, 3) unit normals of (N, 3) points; see the module docstring. Memory is bounded by `chunk` points
    at a time (chunk x max_nn x 3 neighbour coordinates)."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    n = len(xyz)
    normals = np.tile([0.0, 0.0, 1.0], (n, 1))
    if n == 0:
        return normals
    k = int(min(max_nn, n))
    tree = cKDTree(xyz)
    for begin in range(0, n, chunk):
        query = xyz[begin:begin + chunk]
        distance, index = tree.query(query, k=k, distance_upper_bound=radius)
        distance, index = distance.reshape(len(query), k), index.reshape(len(query), k)
        found = np.isfinite(distance)  # missing neighbours come back as (inf, n)
        count = found.sum(axis=1)
        neighbours = xyz[np.where(found, index, 0)] * found[..., None]
        mean = neighbours.sum(axis=1) / np.maximum(count, 1)[:, None]
        centred = (neighbours - mean[:, None, :]) * found[..., None]
        covariance = np.einsum("nki,nkj->nij", centred, centred) / np.maximum(count, 1)[:, None, None]
        _, vectors = np.linalg.eigh(covariance)  # eigenvalues ascending: column 0 is the normal
        normal = vectors[:, :, 0]
        # open3d's fallbacks: fewer than 3 neighbours (identity covariance) or all coincident (zero one)
        usable = (count >= 3) & (np.abs(covariance).max(axis=(1, 2)) > 0)
        normals[begin:begin + chunk][usable] = normal[usable]
    return normals
