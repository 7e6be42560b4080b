"""Sonata's view augmentations against independent computations: the elastic warp (trilinear interpolation
written out by hand, smoothing variance by hand), auto-contrast, chromatic translation and jitter statistics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pc3d.config.pointins import SonataPreset, ViewAugmentConfig
from pc3d.methods.sonata import (
    SceneViews,
    ViewAugment,
    auto_contrast,
    elastic_displacement,
    elastic_distortion,
    make_view,
    smoothed_noise,
)

OFF = {"elastic": False, "auto_contrast": False, "color_translation": False, "color_jitter": False}


def trilinear_by_hand(field: np.ndarray, low: np.ndarray, step: float, points: np.ndarray) -> np.ndarray:
    """Interpolate a node field (X,Y,Z,3) whose node (0,0,0) sits at `low` with a loop over the 8 corners."""
    out = np.zeros((len(points), 3))
    for p, x in enumerate(points):
        t = (x - low) / step
        base = np.floor(t).astype(int)
        frac = t - base
        for corner in itertools.product((0, 1), repeat=3):
            weight = np.prod([frac[k] if corner[k] else 1 - frac[k] for k in range(3)])
            out[p] += weight * field[base[0] + corner[0], base[1] + corner[1], base[2] + corner[2]]
    return out


def test_elastic_displacement_is_the_interpolated_smoothed_noise() -> None:
    rng = np.random.default_rng(0)
    coord = rng.random((300, 3)) * np.array([2.0, 1.5, 1.0])
    granularity, magnitude = 0.2, 0.4
    shift = elastic_displacement(coord, granularity, magnitude, np.random.default_rng(7))
    nodes = tuple(int(n) for n in ((coord - coord.min(0)).max(0) // granularity).astype(int) + 3)
    field = smoothed_noise(nodes, np.random.default_rng(7))  # the same draw the warp made
    expected = magnitude * trilinear_by_hand(field, coord.min(0) - granularity, granularity, coord)
    np.testing.assert_allclose(shift, expected, rtol=1e-5, atol=1e-6)
    # a convex combination of node values: bounded by magnitude x the largest node value
    assert np.abs(shift).max() <= magnitude * np.abs(field).max() + 1e-9
    # deterministic for a seeded generator, different for another seed
    np.testing.assert_array_equal(shift, elastic_displacement(coord, granularity, magnitude,
                                                              np.random.default_rng(7)))
    assert not np.allclose(shift, elastic_displacement(coord, granularity, magnitude, np.random.default_rng(8)))


def test_smoothed_noise_variance_matches_the_box_blur() -> None:
    """Two width-3 box blurs per axis = kernel [1,2,3,2,1]/9 per axis: interior variance (19/81)^3."""
    field = smoothed_noise((40, 40, 40), np.random.default_rng(1))
    interior = field[3:-3, 3:-3, 3:-3]
    assert interior.var() == pytest.approx((19 / 81) ** 3, rel=0.05)
    one_axis = np.array([1, 2, 3, 2, 1]) / 9.0  # neighbours one node apart share 16 of 19 parts per axis
    lag1 = float(np.sum(one_axis[:-1] * one_axis[1:]) / np.sum(one_axis**2))
    corr = np.mean(interior[1:] * interior[:-1]) / interior.var()
    assert corr == pytest.approx(lag1, abs=0.03)


def test_elastic_warp_is_smooth_nearby_points_move_alike() -> None:
    rng = np.random.default_rng(2)
    coord = rng.random((2000, 3)) * 3.0
    near = coord + rng.normal(0, 0.005, coord.shape)  # 5 mm neighbours
    both = np.concatenate([coord, near])
    moved = elastic_distortion(both, ((0.2, 0.4), (0.8, 1.6)), np.random.default_rng(3)) - both
    a, b = moved[:2000], moved[2000:]
    far = moved[rng.permutation(2000)]
    assert np.abs(a).mean() > 0.03  # it does move points
    assert np.linalg.norm(a - b, axis=1).mean() < 0.05 * np.linalg.norm(a - far, axis=1).mean()


def test_auto_contrast_stretches_each_channel_to_full_range() -> None:
    rng = np.random.default_rng(4)
    color = rng.uniform(40, 180, (500, 3))
    full = auto_contrast(color, 1.0)
    np.testing.assert_allclose(full.min(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(full.max(0), 255.0)
    lo, hi = color.min(0), color.max(0)
    np.testing.assert_allclose(full, (color - lo) / (hi - lo) * 255)
    np.testing.assert_allclose(auto_contrast(color, 0.25), 0.75 * color + 0.25 * full)
    flat = np.full((10, 3), 77.0)
    np.testing.assert_array_equal(auto_contrast(flat, 1.0), flat)  # nothing to stretch


def test_chromatic_translation_statistics() -> None:
    augment = ViewAugment(**{**OFF, "color_translation": True, "color_translation_p": 1.0})
    rng = np.random.default_rng(5)
    color = np.full((20, 3), 128.0)
    shifts = np.array([augment.colors(color, rng)[0] - 128.0 for _ in range(4000)])
    bound = 0.05 * 255
    assert np.abs(shifts).max() <= bound
    # one shift per view and channel: U(-bound, bound), mean 0, variance (2 bound)^2 / 12
    assert abs(shifts.mean()) < 0.3
    np.testing.assert_allclose(shifts.var(0), (2 * bound) ** 2 / 12, rtol=0.08)
    augment.color_translation_p = 0.95
    applied = [not np.array_equal(augment.colors(color, rng), color) for _ in range(4000)]
    assert np.mean(applied) == pytest.approx(0.95, abs=0.015)


def test_chromatic_jitter_statistics_and_clipping() -> None:
    augment = ViewAugment(**{**OFF, "color_jitter": True, "color_jitter_p": 1.0, "color_jitter_std": 0.05})
    rng = np.random.default_rng(6)
    color = np.full((20_000, 3), 128.0)
    noise = augment.colors(color, rng) - 128.0
    assert abs(noise.mean()) < 0.2
    assert noise.std() == pytest.approx(0.05 * 255, rel=0.02)
    dark = augment.colors(np.zeros((1000, 3)), rng)
    assert dark.min() == 0.0 and (dark == 0).mean() == pytest.approx(0.5, abs=0.05)  # clipped at 0


def test_config_section_reaches_the_views() -> None:
    section = ViewAugmentConfig(elastic_params=[[0.5, 0.1]], color_jitter=True, auto_contrast_blend=0.5)
    augment = ViewAugment.from_config(section)
    assert augment.elastic_params == ((0.5, 0.1),) and augment.color_jitter and augment.auto_contrast_blend == 0.5
    assert ViewAugment.from_config(ViewAugmentConfig()) == ViewAugment()  # one set of defaults
    with pytest.raises(ValueError, match="elastic_params"):
        ViewAugmentConfig(elastic_params=[[0.0, 0.4]])
    config = SonataPreset.model_validate({"data": {"num_points": 300, "synthetic_count": 2,
                                                   "augment": {"elastic": False}}})
    assert SceneViews([], config.data, 0.1).augment.elastic is False


def test_elastic_view_keeps_original_coordinates_for_matching() -> None:
    rng = np.random.default_rng(9)
    coord = (rng.random((800, 3)) * 3).astype(np.float32)
    sample = {"coord": coord, "color": rng.random((800, 3)) * 255, "normal": np.tile([0, 0, 1.0], (800, 1))}
    augment = ViewAugment(elastic_p=1.0)
    view = make_view(sample, (0.6, 0.9), rng, 0.05, 10_000, augment)
    origin = view["origin"].numpy()
    rows = {tuple(r) for r in coord.tolist()}
    assert all(tuple(r) in rows for r in origin.tolist())  # pre-augmentation coordinates, untouched
    a = view["transform"].double()
    linear = (view["origin"].double() - view["origin"].double().mean(0)) @ a.t()
    moved = view["coord"].double() - view["coord"].double().mean(0)
    residual = (moved - linear).norm(dim=1)
    assert float(residual.mean()) > 0.02  # the warp is there on top of x_aug = A x ...
    assert float(residual.max()) < 1.0  # ... as a bounded perturbation
    same = make_view(sample, (0.6, 0.9), np.random.default_rng(3), 0.05, 10_000, augment)
    again = make_view(sample, (0.6, 0.9), np.random.default_rng(3), 0.05, 10_000, augment)
    assert torch.equal(same["coord"], again["coord"])  # seeded generator: the same view


def test_global_views_share_one_colour_draw_local_views_draw_their_own() -> None:
    rng = np.random.default_rng(10)
    coord = (rng.random((600, 3)) * 2).astype(np.float32)
    scene = {"coord": coord, "color": rng.uniform(60, 200, (600, 3)), "normal": np.tile([0, 0, 1.0], (600, 1))}
    config = SonataPreset.model_validate({"data": {"num_points": 600, "synthetic_count": 2, "local_views": 2,
                                                   "global_scale": [0.8, 1.0], "augment": {
                                                       **OFF, "color_translation": True,
                                                       "color_translation_p": 1.0}}})
    torch.manual_seed(0)
    item = SceneViews([scene], config.data, 0.02)[0]

    def colour_by_origin(view: dict) -> dict[tuple, np.ndarray]:
        rgb = view["feat"][:, 3:6].double().numpy() * 255.0  # pretraining's default rule: colour / 255
        return {tuple(o): c for o, c in zip(view["origin"].tolist(), rgb, strict=True)}

    def shift(view: dict) -> np.ndarray:
        pairs = colour_by_origin(view)
        index = {tuple(c): i for i, c in enumerate(coord.tolist())}
        return np.array([c - scene["color"][index[o]] for o, c in pairs.items()])

    g0, g1 = (shift(v) for v in item["global"])
    l0, l1 = (shift(v) for v in item["local"])
    for s in (g0, g1, l0, l1):
        np.testing.assert_allclose(s, s[:1].repeat(len(s), 0), atol=1e-3)  # one translation per view
    np.testing.assert_allclose(g0[0], g1[0], atol=1e-3)  # the global views share it
    assert not np.allclose(l0[0], l1[0], atol=1e-3) and not np.allclose(l0[0], g0[0], atol=1e-3)


def test_linear_part_rotates_with_p_and_flips_x_and_y_independently():
    """Pointcept: RandomRotate z (±pi) / x / y (±pi/64) each with p 0.8; RandomFlip negates x and y, each p 0.5."""
    rng, draws = np.random.default_rng(0), 4000
    flips_only = ViewAugment(rotate=0.0, tilt=0.0, scale=(1.0, 1.0))
    signs = np.array([np.diag(flips_only.matrix(rng)[1]) for _ in range(draws)])
    assert (signs[:, 2] == 1).all()
    flip_x, flip_y = signs[:, 0] < 0, signs[:, 1] < 0
    assert abs(flip_x.mean() - 0.5) < 0.03 and abs(flip_y.mean() - 0.5) < 0.03
    assert abs((flip_x & flip_y).mean() - 0.25) < 0.03  # independent
    z_only = ViewAugment(tilt=0.0, flip=0.0, scale=(1.0, 1.0))
    unrotated = np.mean([np.allclose(z_only.matrix(rng)[1], np.eye(3)) for _ in range(draws)])
    assert abs(unrotated - 0.2) < 0.03
    tilts_only = ViewAugment(rotate=0.0, flip=0.0, scale=(1.0, 1.0))
    untilted = np.mean([np.allclose(tilts_only.matrix(rng)[1], np.eye(3)) for _ in range(draws)])
    assert abs(untilted - 0.04) < 0.015  # both tilts skipped: 0.2 x 0.2
    for _ in range(50):
        matrix, orient = ViewAugment().matrix(rng)
        assert np.allclose(orient @ orient.T, np.eye(3), atol=1e-12)
        assert 0.9 - 1e-12 <= np.abs(np.linalg.det(matrix)) ** (1 / 3) <= 1.1 + 1e-12
