"""ScanNet-protocol instance AP on hand-built scenes with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.metrics import instance_ap


def scene():
    """20 points: 0-9 class 1 instance 0; 10-14 class 1 without instance; 15-19 class 0 (void, wall)."""
    semantic = np.array([1] * 15 + [0] * 5)
    instance = np.array([0] * 10 + [-1] * 5 + [-1] * 5)
    return semantic, instance


def masks(*index_lists, n=20):
    out = np.zeros((len(index_lists), n), dtype=bool)
    for k, idx in enumerate(index_lists):
        out[k, list(idx)] = True
    return out


def test_perfect_and_empty():
    sem, inst = scene()
    m = instance_ap([(sem, inst, masks(range(10)), [1], [0.9])], [1], min_region_size=1)
    assert (m["ap"], m["ap50"], m["ap25"]) == (1.0, 1.0, 1.0)
    empty = instance_ap([(sem, inst, np.zeros((0, 20), bool), [], [])], [1, 2], min_region_size=1)
    assert empty["per_class_ap"] == [0.0, None]  # class 2 has no ground truth: undefined, left out
    assert empty["ap"] == 0.0


def test_false_positive_ranked_above_true_positive():
    sem, inst = scene()
    pred = masks(range(10), range(10, 15))
    # the true match has the lower score: benchmark integration gives 0.25 (see module doc)
    m = instance_ap([(sem, inst, pred, [1, 1], [0.5, 0.9])], [1], min_region_size=1)
    assert m["ap50"] == pytest.approx(0.25)
    # ranked below the true positive it costs nothing
    m = instance_ap([(sem, inst, pred, [1, 1], [0.9, 0.5])], [1], min_region_size=1)
    assert m["ap50"] == pytest.approx(1.0)


def test_prediction_on_void_is_ignored():
    sem, inst = scene()
    pred = masks(range(10), range(15, 20))  # second mask lies entirely on wall (void)
    m = instance_ap([(sem, inst, pred, [1, 1], [0.5, 0.9])], [1], min_region_size=1)
    assert m["ap50"] == pytest.approx(1.0)


def test_duplicate_is_a_false_positive_with_the_lower_score():
    sem, inst = scene()
    pred = masks(range(10), range(10))
    m = instance_ap([(sem, inst, pred, [1, 1], [0.9, 0.6])], [1], min_region_size=1)
    assert m["ap50"] == pytest.approx(1.0)  # the duplicate ranks last
    two_gt = np.array([0] * 5 + [1] * 5 + [-1] * 10)
    pred = masks(range(5), range(5), range(5, 10))
    m = instance_ap([(sem, two_gt, pred, [1, 1, 1], [0.5, 0.9, 0.1])], [1], min_region_size=1)
    # ascending scores 0.1(T) 0.5(F dup) 0.9(T): curve p=[2/3, 1/2, 1, 1], r=[1, 1/2, 1/2, 0]
    precision, recall = [2 / 3, 0.5, 1.0, 1.0], [1.0, 0.5, 0.5, 0.0]
    padded = [recall[0], *recall, 0.0]
    expected = sum(p * 0.5 * (padded[i] - padded[i + 2]) for i, p in enumerate(precision))
    assert m["ap50"] == pytest.approx(expected)


def test_iou_thresholds():
    sem, inst = scene()
    # 6 of the instance's 10 points: IoU 0.6 -> matched at 0.50 and 0.55 only (overlap must exceed)
    m = instance_ap([(sem, inst, masks(range(6)), [1], [0.9])], [1], min_region_size=1)
    assert m["ap50"] == 1.0 and m["ap25"] == 1.0
    assert m["ap"] == pytest.approx(2 / 9)


def test_one_point_instances_and_min_region_size():
    sem = np.array([1, 1, 1])
    inst = np.array([0, 1, 2])
    pred = masks([0], [1], n=3)
    m = instance_ap([(sem, inst, pred, [1, 1], [0.8, 0.7])], [1], min_region_size=1)
    # two of three one-point instances found, no false positive: recall 2/3
    precision, recall = [1.0, 1.0, 1.0], [2 / 3, 1 / 3, 0.0]
    padded = [recall[0], *recall, 0.0]
    assert m["ap50"] == pytest.approx(sum(p * 0.5 * (padded[i] - padded[i + 2]) for i, p in enumerate(precision)))
    # default min region size (100 points) drops all of them: undefined
    assert instance_ap([(sem, inst, pred, [1, 1], [0.8, 0.7])], [1])["per_class_ap"] == [None]


def test_random_perfect_predictions_score_one():
    rng = np.random.default_rng(0)
    scenes = []
    for _ in range(3):
        sem = rng.integers(0, 4, 400)
        inst = rng.integers(0, 5, 400)
        pairs = sorted({(s, i) for s, i in zip(sem, inst, strict=True) if s > 0})
        pred = np.stack([(sem == s) & (inst == i) for s, i in pairs])
        scenes.append((sem, inst, pred, [s for s, _ in pairs], rng.random(len(pairs))))
    m = instance_ap(scenes, [1, 2, 3], min_region_size=5)
    assert m["ap"] == pytest.approx(1.0) and m["per_class_ap25"] == [1.0, 1.0, 1.0]
