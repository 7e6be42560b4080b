"""knn / ball_query against scipy.spatial.cKDTree, on the brute-force and the grid paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from pc3d.errors import InputError
from pc3d.ops import ball_query, knn


def clustered_cloud(n: int, seed: int) -> torch.Tensor:
    """Dense blob + uniform background + a few far outliers: exercises every grid fallback."""
    g = torch.Generator().manual_seed(seed)
    blob = torch.randn(n // 2, 3, generator=g, dtype=torch.float64) * 0.02
    background = torch.rand(n - n // 2 - 5, 3, generator=g, dtype=torch.float64) * 2 - 1
    far = torch.rand(5, 3, generator=g, dtype=torch.float64) + 20
    return torch.cat([blob, background, far])


def check_against_kdtree(query: torch.Tensor, ref: torch.Tensor, k: int) -> None:
    dist, idx = knn(query, ref, k)
    ref_d, ref_i = cKDTree(ref.numpy()).query(query.numpy(), k=k)
    ref_d, ref_i = ref_d.reshape(len(query), k), ref_i.reshape(len(query), k)
    assert idx.dtype == torch.int64 and dist.shape == idx.shape == (len(query), k)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-9, atol=1e-12)
    assert (idx.numpy() == ref_i).mean() > 0.999  # equal up to ties
    assert torch.all(dist[:, 1:] >= dist[:, :-1])


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (37, 100, 5), (200, 333, 16)])
def test_knn_brute_force_path(m, n, k):
    g = torch.Generator().manual_seed(m + n)
    check_against_kdtree(torch.rand(m, 3, generator=g, dtype=torch.float64),
                         torch.rand(n, 3, generator=g, dtype=torch.float64), k)


@pytest.mark.parametrize("k", [1, 8, 33])
def test_knn_tree_path_matches_brute_force(k):
    """Large inputs take the k-d tree path; its distances must equal an exhaustive search's."""
    ref = clustered_cloud(3000, seed=k)
    query = torch.cat([ref[::6], torch.tensor([[50.0, 50, 50], [0.5, -0.5, 3.0]], dtype=torch.float64)])
    assert len(query) * len(ref) >= 1 << 18  # large enough for the tree path
    dist, idx = knn(query, ref, k)
    full = torch.cdist(query, ref, compute_mode="donot_use_mm_for_euclid_dist")
    expect = full.topk(k, dim=1, largest=False, sorted=True).values
    torch.testing.assert_close(dist, expect, rtol=0, atol=1e-12)
    torch.testing.assert_close(full.gather(1, idx), dist, rtol=0, atol=1e-12)


def test_knn_batched_and_float32_gradients():
    g = torch.Generator().manual_seed(7)
    q = torch.rand(2, 600, 3, generator=g, requires_grad=True)
    r = torch.rand(2, 1800, 3, generator=g, requires_grad=True)
    dist, idx = knn(q, r, 4)
    for b in range(2):
        ref_d, ref_i = cKDTree(r[b].detach().numpy()).query(q[b].detach().numpy(), k=4)
        np.testing.assert_allclose(dist[b].detach().numpy(), ref_d, rtol=1e-5, atol=1e-6)
    dist.sum().backward()
    # d|q - r|/dq is the unit direction: each query row gets a sum of 4 unit vectors
    direction = (q.unsqueeze(2) - torch.gather(r, 1, idx.view(2, -1, 1).expand(-1, -1, 3)).view(2, 600, 4, 3))
    expect = (direction / direction.norm(dim=-1, keepdim=True)).sum(2)
    torch.testing.assert_close(q.grad, expect.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_query", [50, 700])
def test_ball_query_matches_kdtree(n_query):
    ref = clustered_cloud(2000, seed=n_query)
    query = ref[:n_query] + 0.001
    radius, k = 0.15, 12
    dist, idx, mask = ball_query(query, ref, radius, k)
    tree = cKDTree(ref.numpy())
    for i in range(n_query):
        inside = tree.query_ball_point(query[i].numpy(), radius)
        d_in = np.sort(np.linalg.norm(ref.numpy()[inside] - query[i].numpy(), axis=1))[:k]
        count = len(d_in)
        assert int(mask[i].sum()) == count and bool(mask[i, :count].all())
        np.testing.assert_allclose(dist[i, :count].numpy(), d_in, rtol=1e-9)
        assert torch.all(idx[i, count:] == idx[i, 0]) and torch.all(dist[i, count:] == dist[i, 0])


def test_ball_query_pads_when_k_exceeds_points():
    ref = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [5.0, 0, 0]])
    dist, idx, mask = ball_query(torch.zeros(1, 3), ref, radius=1.0, k=5)
    assert idx.tolist() == [[0, 1, 0, 0, 0]]
    assert mask.tolist() == [[True, True, False, False, False]]
    _, idx, mask = ball_query(torch.full((1, 3), 100.0), ref, radius=1.0, k=2)
    assert not mask.any() and idx.tolist() == [[2, 2]]


def test_knn_rejects_bad_input():
    with pytest.raises(InputError):
        knn(torch.rand(5, 3), torch.rand(4, 3), 5)
    with pytest.raises(InputError):
        knn(torch.rand(5, 2), torch.rand(4, 3), 1)
    with pytest.raises(InputError):
        knn(torch.rand(2, 5, 3), torch.rand(4, 3), 1)
