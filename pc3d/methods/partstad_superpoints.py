"""PartSLIP's superpoints (`gen_superpoint.py`): an oversegmentation of the cloud that the votes are pooled over.

Not PartSTAD's contribution, a stage before it: Open3D normals (radius 0.1, 30 neighbours), a 10-NN graph, node
features [normal, 0.3 rgb], edge weights (1 / (1 + d / mean d + f / mean f))^2, a partition of that graph, then
components of <= 10 points handed to their nearest larger neighbour. The partition (`SuperpointConfig.method`):
region growing (pc3d's default), pc3d's own L0 cut pursuit, or the compiled `cut-pursuit-py` package.
"""

from __future__ import annotations

import numpy as np
import torch

from pc3d.config.partstad import SuperpointConfig
from pc3d.errors import InputError


def estimate_normals(points: np.ndarray, radius: float, max_nn: int) -> np.ndarray:
    """Open3D hybrid-radius normals, as PartSLIP's gen_superpoint.py, then turned away from the centroid:
    Open3D leaves the sign arbitrary, and a flipped sign would look like a crease to the partition.

    Without open3d (or with PC3D_NO_OPEN3D=1) pc3d.ops.normals computes the same covariance normals with
    scipy; the sign is arbitrary there too, and the centroid rule below orients both alike."""
    from pc3d.optional import open3d_or_none

    xyz = np.asarray(points, dtype=np.float64)
    o3d = open3d_or_none()
    if o3d is None:
        from pc3d.ops.normals import estimate_normals_hybrid

        normals = estimate_normals_hybrid(xyz, radius, max_nn)
    else:
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn))
        normals = np.asarray(cloud.normals, dtype=np.float64)
    inward = ((xyz - xyz.mean(0)) * normals).sum(1) < 0
    normals[inward] *= -1
    return normals


def superpoint_graph(points: np.ndarray, colors: np.ndarray | None, cfg: SuperpointConfig
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node features [normal, color_weight * rgb] (N,6), kNN edges (E,2), weights (1/(1 + d/mean d + f/mean f))^2."""
    from pc3d.ops import knn

    n = len(points)
    normals = estimate_normals(points, cfg.normal_radius, cfg.normal_max_nn)
    # without colours every point has the same one: only the normals tell points apart (any constant gives the
    # same edge weights and partition, so no renderer's grey is needed here)
    rgb = np.zeros((n, 3)) if colors is None else np.asarray(colors, dtype=np.float64) / 255.0
    features = np.hstack([normals, cfg.color_weight * rgb]).astype(np.float32).astype(np.float64)
    k = min(cfg.knn + 1, n)
    xyz = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    _, idx = knn(xyz, xyz, k)
    idx = idx.numpy()
    src = np.repeat(np.arange(n), k - 1)
    dst = idx[:, 1:].reshape(-1)  # column 0 is the point itself
    keep = src != dst  # duplicate points can put another index first
    src, dst = src[keep], dst[keep]
    length = np.linalg.norm(np.asarray(points)[src] - np.asarray(points)[dst], axis=1)
    feature_gap = np.linalg.norm(features[src] - features[dst], axis=1)
    weights = (1.0 / (1.0 + length / max(length.mean(), 1e-12) + feature_gap / max(feature_gap.mean(), 1e-12))) ** 2
    return features, np.stack([src, dst], 1), weights


def superpoints(points: np.ndarray, colors: np.ndarray | None, cfg: SuperpointConfig) -> np.ndarray:
    """(N,) superpoint id 0..S-1 of every point: the graph's partition (`cfg.method`), small parts merged away."""
    from pc3d.ops.cut_pursuit import l0_cut_pursuit
    from pc3d.ops.graph_partition import merge_small_components, region_growing_partition

    if len(points) <= 2:
        return np.zeros(len(points), np.int64)
    features, edges, weights = superpoint_graph(points, colors, cfg)
    if cfg.method == "cut-pursuit-py":
        components = cut_pursuit_py_partition(features, edges, weights, cfg.reg)
    elif cfg.method == "cut-pursuit":
        # libcp minimises 1/2 sum ||x - f||^2 + reg sum w [x_i != x_j]; l0_cut_pursuit has no 1/2, hence 2 * reg.
        # 15 iterations and a 5% progress stop: libcp's settings for superpoint graphs (speed 4), which PartSLIP uses.
        components, _ = l0_cut_pursuit(features, edges, weights, 2.0 * cfg.reg, max_iterations=15,
                                       stopping_ratio=0.05)
    else:
        # w = (1 / (1 + d/mean d + f/mean f))^2  ->  dissimilarity d/mean d + f/mean f
        components = region_growing_partition(len(points), edges, 1.0 / np.sqrt(weights) - 1.0, cfg.scale)
    return merge_small_components(points, components, cfg.min_size)


def cut_pursuit_py_partition(features: np.ndarray, edges: np.ndarray, weights: np.ndarray, reg: float) -> np.ndarray:
    """L0 cut pursuit by the `cut-pursuit-py` package, with PartSLIP's libcp regularisation `reg`.

    cut-pursuit-py 1.0.12 minimises sum ||x - f||^2 + sum w [x_i != x_j]: its `reg_strength` argument leaves the
    result unchanged (measured: the penalty is the edge weight alone, and a two-node graph merges exactly when
    w > ||f_0 - f_1||^2 / 2). libcp, which PartSLIP calls, minimises 1/2 sum ||x - f||^2 + reg sum w [...]; the
    same minimiser is reached with edge weights 2 reg w here."""
    try:
        from cut_pursuit_py import perform_cut_pursuit
    except ImportError:
        raise InputError("superpoints.method=cut-pursuit-py needs the cut-pursuit-py package "
                         "(pip install cut-pursuit-py==1.0.12)") from None
    features32 = np.ascontiguousarray(features, dtype=np.float32)
    edge_weights = np.ascontiguousarray(2.0 * reg * np.asarray(weights), dtype=np.float32)
    source = np.ascontiguousarray(edges[:, 0], dtype=np.uint32)
    target = np.ascontiguousarray(edges[:, 1], dtype=np.uint32)
    labels = perform_cut_pursuit(1.0, features32.shape[1], features32, edge_weights, source, target, False)
    return np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)[1].reshape(-1)
