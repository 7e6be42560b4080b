"""k-means and connected components against hand-built cases and scipy.sparse.csgraph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from brute_force import knn_radius_components
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components
from scipy.spatial import cKDTree

from pc3d.errors import InputError
from pc3d.ops import connected_components, kmeans
from pc3d.ops.clustering import grouped_kmeans


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


def test_grouped_kmeans_equals_kmeans_per_group_with_offset_seeds():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(230, 6, generator=g)
    # ids need not be contiguous (1 and 3 are empty) and group 2 has fewer points than k
    group = torch.where(torch.rand(230, generator=g) < 0.5, 0, 4)
    group[:3] = 2
    labels, centroids = grouped_kmeans(x, group, 5, iters=15, seed=11)
    assert centroids.shape == (5, 5, 6)
    assert sorted(labels[:3].tolist()) == [0, 1, 2]
    assert torch.all(centroids[2, 3:] == 0) and torch.all(centroids[1] == 0)  # unused rows
    for gid in (0, 2, 4):
        rows = group == gid
        alone_labels, alone_centroids = kmeans(x[rows], min(5, int(rows.sum())), iters=15, seed=11 + gid)
        assert torch.equal(labels[rows], alone_labels)
        torch.testing.assert_close(centroids[gid, :alone_centroids.shape[0]], alone_centroids)


def test_kmeans_pp_draws_second_centre_with_squared_distance_weights():
    # k = 2, iters = 0: the centroids are the k-means++ draws; given the first centre, the second must be
    # each other point with probability d^2 / sum d^2 (checked against the empirical frequency)
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    counts = np.zeros((4, 4))
    for seed in range(3000):
        _, centroids = kmeans(x, 2, iters=0, seed=seed)
        first, second = (int((x[:, 0] == c).nonzero()) for c in centroids[:, 0])
        counts[first, second] += 1
    for first in range(4):
        weights = (x[:, 0] - x[first, 0]).numpy() ** 2
        expected = weights / weights.sum() * counts[first].sum()
        assert counts[first, first] == 0
        assert counts[first].sum() > 500  # the first centre is uniform
        np.testing.assert_allclose(counts[first], expected, atol=4 * np.sqrt(counts[first].sum() * 0.25))


@pytest.mark.parametrize("device_path", ["scipy", "torch"])
def test_grouped_components_equal_bfs_inside_each_group(device_path, monkeypatch):
    rng = np.random.default_rng(3)
    pts = rng.random((150, 3)) * 2
    group = rng.integers(0, 3, 150)
    if device_path == "torch":  # the CUDA code path (knn + label propagation), run on CPU tensors
        import pc3d.ops.clustering as clustering

        monkeypatch.setattr(clustering, "_roots_scipy", lambda p, r, k: clustering._roots_torch(p, r, k))
    labels = connected_components(torch.from_numpy(pts), 0.3, k=5, min_size=4,
                                  group=torch.from_numpy(group).long()).numpy()
    expected = np.full(150, -1)
    components = [sorted(group_idx[list(c)]) for g in range(3) for group_idx in [np.nonzero(group == g)[0]]
                  for c in knn_radius_components(pts[group_idx], 5, 0.3)]
    big = sorted((c for c in components if len(c) >= 4), key=lambda c: c[0])
    assert any(len(c) < 4 for c in components) and len(big) > 3
    for new_id, comp in enumerate(big):
        expected[comp] = new_id
    np.testing.assert_array_equal(labels, expected)
