"""Augmentations: distributions, ranges, reproducibility."""

from __future__ import annotations

import torch

from pc3d.ops.transforms import (
    jitter,
    normalize_unit_sphere,
    random_cuboid_crop,
    random_flip,
    random_rotation,
    scale_and_translate,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_rotation_is_proper_and_reproducible():
    g = gen()
    mats = torch.stack([random_rotation(g, "so3", dtype=torch.float64) for _ in range(2000)])
    torch.testing.assert_close(mats @ mats.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(2000, 3, 3))
    torch.testing.assert_close(torch.linalg.det(mats), torch.ones(2000, dtype=torch.float64))
    # uniform on SO(3): E[R] = 0, and the rotated z axis is uniform on the sphere (E[z_z^2] = 1/3)
    assert mats.mean(0).abs().max() < 0.05
    assert abs(float((mats[:, 2, 2] ** 2).mean()) - 1 / 3) < 0.03
    assert torch.equal(random_rotation(gen(5), "z"), random_rotation(gen(5), "z"))
    rz = random_rotation(gen(1), "z")
    assert rz[2].tolist() == [0.0, 0.0, 1.0] and rz[:, 2].tolist() == [0.0, 0.0, 1.0]


def test_normalize_unit_sphere():
    xyz = torch.rand(2, 100, 3, generator=gen()) * 5 + 3
    out = normalize_unit_sphere(xyz)
    torch.testing.assert_close(out.mean(1), torch.zeros(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.norm(dim=-1).amax(1), torch.ones(2))


def test_scale_and_translate_per_cloud_per_axis():
    xyz = torch.rand(64, 50, 3, generator=gen(), dtype=torch.float64) + 1
    out = scale_and_translate(xyz, gen(1))
    # x' = s x + t per cloud and axis: recover s from two points and check the ranges
    s = (out[:, 1] - out[:, 0]) / (xyz[:, 1] - xyz[:, 0])
    t = out[:, 0] - s * xyz[:, 0]
    torch.testing.assert_close(out, xyz * s[:, None] + t[:, None], atol=1e-5, rtol=1e-5)
    assert s.min() >= 2 / 3 - 1e-4 and s.max() <= 1.5 + 1e-4 and t.abs().max() <= 0.2 + 1e-4
    assert s.std(0).min() > 0.1  # different per cloud
    assert torch.equal(out, scale_and_translate(xyz, gen(1)))


def test_jitter_flip_and_crop():
    xyz = torch.rand(1000, 3, generator=gen())
    noise = jitter(xyz, gen(2), sigma=0.01, clip=0.02) - xyz
    assert noise.abs().max() <= 0.02 + 1e-6 and abs(float(noise.std()) - 0.01) < 0.002
    signs = {tuple(torch.sign(random_flip(xyz, gen(s))[0] * torch.sign(xyz[0])).tolist()) for s in range(40)}
    assert signs == {(a, b, 1.0) for a in (-1.0, 1.0) for b in (-1.0, 1.0)}
    idx = random_cuboid_crop(xyz, gen(3), size=(0.3, 0.5), min_points=10)
    assert idx.numel() >= 10 and torch.all(idx[1:] > idx[:-1])
    kept = xyz[idx]
    assert torch.all(kept.amax(0) - kept.amin(0) <= 0.5 + 1e-6)
