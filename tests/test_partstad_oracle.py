"""The oracle detector of PartSTAD's studies: its box features never encode the box's label or correctness, its
confidence is one distribution for every box unless a score signal is asked for, and each feature column equals
what a hand count of the rendered pixels gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pc3d.config.partstad import DetectorConfig
from pc3d.methods.partstad_oracle import ORACLE_FEATURES, box_image_features, oracle_detections
from pc3d.methods.partstad_render import Views


def _two_part_views(num_views: int) -> tuple[Views, np.ndarray]:
    """Every view shows part 0 (points 0-7) in the left half and part 1 (points 8-15) in the right half; the image
    paints each point's pixel red (part 0) or blue (part 1)."""
    rng = np.random.default_rng(0)
    size = 32
    uv = np.concatenate([rng.uniform([2, 4], [12, 28], (8, 2)), rng.uniform([18, 4], [30, 28], (8, 2))])
    images = np.full((num_views, size, size, 3), 255, np.uint8)
    index = torch.full((num_views, size, size), -1)
    for p, (x, y) in enumerate(uv.astype(int)):
        images[:, y, x] = (200, 0, 0) if p < 8 else (0, 0, 200)
        index[:, y, x] = p
    views = Views(images, index, torch.ones(num_views, 16, dtype=torch.bool),
                  torch.as_tensor(np.repeat(uv[None], num_views, 0)), torch.zeros(num_views, 3))
    return views, np.repeat([0, 1], 8)


def _detect(views: Views, semantic: np.ndarray, **cfg: float) -> tuple[np.ndarray, ...]:
    per_view = oracle_detections(views, semantic, semantic.copy(), 2, DetectorConfig(kind="oracle", **cfg), seed=1)
    return tuple(torch.cat([getattr(d, k) for d in per_view]).numpy() for k in ("boxes", "labels", "scores",
                                                                                "features"))


def test_default_oracle_confidence_is_uninformative():
    assert DetectorConfig(kind="oracle").oracle_score_signal == 0.0


@pytest.mark.parametrize("signal", [0.0, 1.0])
def test_oracle_confidence_ranks_right_boxes_above_wrong_ones_only_as_configured(signal):
    from scipy.stats import mannwhitneyu

    views, semantic = _two_part_views(1000)
    boxes, labels, scores, _ = _detect(views, semantic, oracle_label_noise=0.5, oracle_score_signal=signal)
    right = labels == (boxes[:, 0] >= 16).astype(int)  # no jitter: each box is its part's tight box
    assert len(labels) == 2000 and 0.4 < right.mean() < 0.6
    assert scores.min() >= 0.5 and scores.max() <= 1.0
    # AUC of right vs wrong scores: Beta(1+s,1) vs Beta(1,1+s) -> 1/2 for s = 0, 5/6 for s = 1
    auc = mannwhitneyu(scores[right], scores[~right]).statistic / (right.sum() * (~right).sum())
    assert auc == pytest.approx(0.5 if signal == 0 else 5 / 6, abs=0.06)


def test_oracle_features_are_the_same_whatever_the_label_or_score():
    """Wrong labels and confidence signal change labels and scores, never a feature: the weight network cannot read
    a box's correctness from it (the old oracle feature was [one-hot label, score, ...])."""
    views, semantic = _two_part_views(50)
    clean = _detect(views, semantic)
    noisy = _detect(views, semantic, oracle_label_noise=0.6, oracle_score_signal=3.0)
    assert np.array_equal(clean[0], noisy[0])  # the same boxes
    assert (clean[1] != noisy[1]).mean() > 0.4  # many labels differ
    assert np.array_equal(clean[3], noisy[3])
    assert clean[3].shape == (100, len(ORACLE_FEATURES))


def test_box_features_by_hand():
    # 20 x 20 view; the object covers rows 5-14, columns 4-13: red in columns 4-8, blue in 9-13; white background
    image = np.full((20, 20, 3), 255, np.uint8)
    index = np.full((20, 20), -1)
    index[5:15, 4:14] = np.arange(100).reshape(10, 10)
    image[5:15, 4:9] = (255, 0, 0)
    image[5:15, 9:14] = (0, 0, 255)
    left, whole = [4, 5, 9, 15], [0, 0, 20, 20]
    got = dict(zip(ORACLE_FEATURES, box_image_features(image, index, np.array([left, whole], float)).T, strict=True))
    # left box: 50 red pixels; edges (a right / lower neighbour differs): column 8 (blue to its right, 10 pixels)
    # and row 14 (white below, 5), (14, 8) counted once -> 14
    # whole image: 100 object pixels of 400; edges: column 8 (10), column 13 (white to its right, 10), row 14 (10),
    # two corners counted twice -> 28
    expected = {
        "fill": [1.0, 0.25], "mean_r": [1.0, 0.5], "mean_g": [0.0, 0.0], "mean_b": [0.0, 0.5],
        "std_r": [0.0, 0.5], "std_g": [0.0, 0.0], "std_b": [0.0, 0.5], "edge_density": [14 / 50, 28 / 100],
        "area": [50 / 400, 1.0], "log_aspect": [math.log(5 / 10), 0.0],
        "centre_x": [(6.5 - 4) / 10, (10 - 4) / 10], "centre_y": [(10 - 5) / 10, (10 - 5) / 10],
        "object_share": [0.5, 1.0], "inside_object": [1.0, 100 / 400],
        "max_iou": [50 / 400, 50 / 400], "overlapping": [0.1, 0.1],
    }
    for name, values in expected.items():
        assert got[name].tolist() == pytest.approx(values), name
    assert box_image_features(image, index, np.zeros((0, 4))).shape == (0, len(ORACLE_FEATURES))
