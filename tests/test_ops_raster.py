"""Projection and the z-buffer rasteriser against per-pixel Python loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.errors import InputError
from pc3d.ops import look_at, project_points, rasterize_points

K = torch.tensor([[30.0, 0, 16], [0, 30, 12], [0, 0, 1]])


def test_project_points_hand_computed():
    E = torch.eye(4)
    E[:3, 3] = torch.tensor([0.0, 0.0, 2.0])  # camera 2 units behind the world origin
    uv, depth = project_points(torch.tensor([[0.0, 0, 0], [1.0, -1.0, 2.0]]), K, E)
    torch.testing.assert_close(depth, torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(uv, torch.tensor([[16.0, 12.0], [16 + 7.5, 12 - 7.5]]))


def test_look_at_puts_target_on_the_optical_axis():
    E = look_at(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.5, 0.0, 0.0]))
    uv, depth = project_points(torch.tensor([[0.5, 0.0, 0.0]], dtype=torch.float64), K.double(), E)
    torch.testing.assert_close(uv, torch.tensor([[16.0, 12.0]], dtype=torch.float64))
    assert float(depth) == pytest.approx(float(torch.tensor([2.5, 1.0, 2.0]).norm()))
    torch.testing.assert_close(E[:3, :3] @ E[:3, :3].T, torch.eye(3, dtype=torch.float64))


def loop_raster(uv: np.ndarray, depth: np.ndarray, h: int, w: int, radius: int):
    best = np.full((h, w), np.inf)
    index = np.full((h, w), -1)
    for i, ((u, v), z) in enumerate(zip(uv, depth, strict=True)):
        if z <= 0:
            continue
        c, r = int(np.floor(u)), int(np.floor(v))
        for rr in range(r - radius, r + radius + 1):
            for cc in range(c - radius, c + radius + 1):
                if 0 <= rr < h and 0 <= cc < w and np.float32(z) < best[rr, cc]:  # strict: lower index wins ties
                    best[rr, cc], index[rr, cc] = np.float32(z), i
    return index


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_rasterize_matches_loop(radius):
    g = torch.Generator().manual_seed(radius)
    pts = torch.rand(300, 3, generator=g) * 2 - 1
    pts[::7] = pts[3]  # duplicates: equal depth, the lowest index must win
    E = look_at(torch.tensor([0.0, -3.0, 0.5]), torch.zeros(3)).float()
    colors = torch.rand(300, 3, generator=g)
    res = rasterize_points(pts, K, E, 24, 32, radius=radius, colors=colors, background=1.0)
    uv, depth = project_points(pts, K, E)
    expect = loop_raster(uv.numpy(), depth.numpy(), 24, 32, radius)
    assert np.array_equal(res.index.numpy(), expect)
    filled = res.index >= 0
    torch.testing.assert_close(res.depth[filled], depth[res.index[filled]])
    assert torch.all(torch.isinf(res.depth[~filled])) and torch.all(res.color[~filled] == 1.0)
    torch.testing.assert_close(res.color[filled], colors[res.index[filled]])
    assert torch.equal(res.visible, torch.isin(torch.arange(300), res.index[filled]))


def test_points_behind_camera_and_off_screen_are_dropped():
    E = torch.eye(4)
    pts = torch.tensor([[0.0, 0, -1.0], [100.0, 0, 1.0], [0.0, 0, 1.0]])
    res = rasterize_points(pts, K, E, 24, 32, radius=0)
    assert res.visible.tolist() == [False, False, True] and int((res.index >= 0).sum()) == 1
    assert res.color is None


def test_rasterize_rejects_bad_input():
    with pytest.raises(InputError):
        rasterize_points(torch.rand(5, 3), K, torch.eye(4), 0, 10)
    with pytest.raises(InputError):
        rasterize_points(torch.rand(5, 3), K, torch.eye(4), 10, 10, colors=torch.rand(4, 3))
