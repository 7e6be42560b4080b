"""k-means and connected components against hand-built cases and scipy.sparse.csgraph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components
from scipy.spatial import cKDTree

from pc3d.errors import InputError
from pc3d.ops import connected_components, kmeans


def blobs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0, 0, 0], [10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 10]])
    truth = torch.arange(4).repeat_interleave(50)
    return centres[truth] + torch.randn(200, 4, generator=g) * 0.3, truth


def test_kmeans_recovers_separated_blobs_and_is_lloyd_fixed_point():
    x, truth = blobs(0)
    labels, centroids = kmeans(x, 4, iters=20, seed=3)
    # same partition as the truth (up to relabelling)
    pairs = {(int(a), int(b)) for a, b in zip(labels, truth, strict=True)}
    assert len(pairs) == 4 and len({a for a, _ in pairs}) == 4
    for c in range(4):  # converged: centroids are their members' means, labels are nearest centroids
        torch.testing.assert_close(centroids[c], x[labels == c].mean(0), rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cdist(x, centroids).argmin(1), labels)


def test_kmeans_is_reproducible_and_seed_dependent_init():
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(1))
    a = kmeans(x, 7, iters=0, seed=5)
    assert torch.equal(a[0], kmeans(x, 7, iters=0, seed=5)[0])
    assert not torch.equal(a[1], kmeans(x, 7, iters=0, seed=6)[1])
    labels, centroids = kmeans(x, 7, iters=30, seed=5)
    assert set(labels.tolist()) <= set(range(7)) and centroids.shape == (7, 3)


def test_kmeans_with_duplicate_points_and_bad_k():
    x = torch.zeros(5, 2)
    labels, centroids = kmeans(x, 3)
    assert labels.shape == (5,) and torch.all(centroids == 0)
    with pytest.raises(InputError):
        kmeans(x, 6)


def scipy_labels(points: np.ndarray, radius: float, k: int) -> np.ndarray:
    dist, idx = cKDTree(points).query(points, k=min(k + 1, len(points)))
    src = np.repeat(np.arange(len(points)), idx.shape[1])
    keep = dist.reshape(-1) < radius
    graph = coo_matrix((np.ones(keep.sum()), (src[keep], idx.reshape(-1)[keep])), shape=(len(points),) * 2)
    return scipy_components(graph, directed=True, connection="weak")[1]


@pytest.mark.parametrize("radius,k", [(0.05, 4), (0.1, 8), (0.3, 16)])
def test_connected_components_match_scipy_partition(radius, k):
    pts = torch.rand(400, 3, generator=torch.Generator().manual_seed(int(radius * 100)), dtype=torch.float64)
    ours = connected_components(pts, radius, k=k).numpy()
    ref = scipy_labels(pts.numpy(), radius, k)
    assert len(set(zip(ours, ref, strict=True))) == len(set(ours)) == len(set(ref))
    first = [int(np.nonzero(ours == c)[0][0]) for c in range(ours.max() + 1)]
    assert first == sorted(first)  # labels are contiguous, numbered by lowest member index


def test_connected_components_chain_and_min_size():
    # a chain 0-1-2-...-9 with spacing 1, an isolated pair, a singleton
    chain = torch.stack([torch.arange(10.0), torch.zeros(10), torch.zeros(10)], 1)
    pair = torch.tensor([[100.0, 0, 0], [100.5, 0, 0]])
    single = torch.tensor([[-50.0, 0, 0]])
    pts = torch.cat([single, chain, pair])
    assert connected_components(pts, radius=1.01, k=2).tolist() == [0] + [1] * 10 + [2, 2]
    assert connected_components(pts, radius=1.01, k=2, min_size=2).tolist() == [-1] + [0] * 10 + [1, 1]
    assert connected_components(pts, radius=1.01, k=2, min_size=3).tolist() == [-1] + [0] * 10 + [-1, -1]
