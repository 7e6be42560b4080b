"""FPS and Point-MAE grouping against plain numpy loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.errors import InputError
from pc3d.ops import farthest_point_sample, fps, group_patches


def numpy_fps(points: np.ndarray, n: int, start: int) -> list[int]:
    chosen = [start]
    mind = np.full(len(points), np.inf)
    for _ in range(n - 1):
        mind = np.minimum(mind, ((points - points[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(np.argmax(mind)))  # np.argmax: first maximum = lowest index
    return chosen


@pytest.mark.parametrize("num_points,n,start", [(1, 1, 0), (257, 40, 0), (1500, 64, 17), (3000, 300, 2999)])
def test_fps_single_matches_numpy(num_points, n, start):
    pts = torch.rand(num_points, 3, generator=torch.Generator().manual_seed(num_points), dtype=torch.float64)
    idx = farthest_point_sample(pts, n, start=start)
    assert idx.dtype == torch.int64 and idx.shape == (n,)
    assert idx.tolist() == numpy_fps(pts.numpy(), n, start)


def test_fps_batched_matches_numpy_per_cloud():
    pts = torch.rand(3, 400, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    idx = fps(pts, 32, start=5)
    assert idx.shape == (3, 32)
    for b in range(3):
        assert idx[b].tolist() == numpy_fps(pts[b].numpy(), 32, 5)


def test_fps_float32_picks_a_farthest_point_each_step():
    pts = torch.rand(2000, 3, generator=torch.Generator().manual_seed(2)) * 10
    idx = farthest_point_sample(pts, 50).tolist()
    p = pts.double().numpy()
    mind = np.full(len(p), np.inf)
    for prev, cur in zip(idx[:-1], idx[1:], strict=True):
        mind = np.minimum(mind, ((p - p[prev]) ** 2).sum(1))
        assert mind[cur] >= mind.max() * (1 - 1e-5)


def test_fps_ties_lowest_index_and_duplicates():
    # square corners: from corner 0 the farthest is the diagonal (2); then 1 and 3 tie -> 1
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    assert farthest_point_sample(pts, 4).tolist() == [0, 2, 1, 3]
    assert farthest_point_sample(pts[None].expand(2, -1, -1), 4).tolist() == [[0, 2, 1, 3]] * 2


@pytest.mark.parametrize("n,start", [(0, 0), (5, 0), (2, 4), (2, -1)])
def test_fps_rejects_bad_arguments(n, start):
    with pytest.raises(InputError):
        farthest_point_sample(torch.rand(4, 3), n, start=start)


def test_group_patches_matches_point_mae_definition():
    xyz = torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    neighborhood, center, idx = group_patches(xyz, num_groups=16, group_size=8)
    assert neighborhood.shape == (2, 16, 8, 3) and center.shape == (2, 16, 3) and idx.shape == (2, 16, 8)
    for b in range(2):
        p = xyz[b].numpy()
        centres = numpy_fps(p, 16, 0)
        np.testing.assert_allclose(center[b].numpy(), p[centres])
        for g, c in enumerate(centres):
            expect = np.argsort(((p - p[c]) ** 2).sum(1), kind="stable")[:8]
            assert idx[b, g].tolist() == expect.tolist()
            np.testing.assert_allclose(neighborhood[b, g].numpy(), p[expect] - p[c])
    assert torch.all(idx[:, :, 0] == torch.stack([torch.tensor(numpy_fps(xyz[b].numpy(), 16, 0)) for b in range(2)]))


def test_group_patches_requires_batched_input():
    with pytest.raises(InputError):
        group_patches(torch.rand(100, 3), 4, 4)
