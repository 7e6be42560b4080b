"""Classification, semantic segmentation and zero-shot metrics against hand counts and plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.metrics import (
    aggregate_votes,
    classification_metrics,
    harmonic_iou,
    semantic_confusion,
    semseg_metrics,
    zeroshot_metrics,
)


def test_classification_hand_case():
    gt = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2])
    m = classification_metrics(pred, gt, num_classes=4)
    assert m["oa"] == pytest.approx(4 / 6)
    assert m["per_class_acc"] == [0.5, pytest.approx(2 / 3), 1.0, None]  # class 3 has no sample
    assert m["macc"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m["confusion"][1] == [1, 2, 0, 0]


def test_vote_aggregation():
    votes = np.array([[[2.0, 0.0, 0.0]], [[0.0, 1.5, 0.0]], [[0.0, 1.5, 0.0]]])
    assert aggregate_votes(votes, "mean_logits").tolist() == [1]  # means 0.67 vs 1.0
    assert aggregate_votes(votes, "majority").tolist() == [1]
    softmax_votes = np.array([[[10.0, 0.0]], [[0.0, 0.1]], [[0.0, 0.1]]])
    assert aggregate_votes(softmax_votes, "mean_logits").tolist() == [0]
    assert aggregate_votes(softmax_votes, "mean_softmax").tolist() == [0]


def loop_confusion(pred, gt, c, ignore_index):
    conf = np.zeros((c, c), dtype=np.int64)
    for p, g in zip(pred, gt, strict=True):
        if g == ignore_index and not 0 <= ignore_index < c:
            continue
        conf[g, p] += 1
    return conf


def test_semseg_hand_case_both_conventions():
    # classes 0..3, ignore -1; class 3 absent from gt and prediction
    gt = np.array([0, 0, 0, 1, 1, 2, -1, -1])
    pred = np.array([0, 0, 1, 1, 1, 0, 2, 3])
    conf = semantic_confusion(pred, gt, 4, ignore_index=-1)
    assert conf.sum() == 6
    scannet = semseg_metrics(conf, convention="scannet")
    # class 0: tp 2, fp 1 (gt 2), fn 1 -> 2/4; class 1: tp 2, fp 1 -> 2/3; class 2: tp 0, fn 1 -> 0
    assert scannet["per_class_iou"] == [0.5, pytest.approx(2 / 3), 0.0, None]
    assert scannet["miou"] == pytest.approx((0.5 + 2 / 3) / 3)
    assert scannet["oa"] == pytest.approx(4 / 6)
    assert scannet["macc"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    kitti = semseg_metrics(conf, convention="semantickitti")
    assert kitti["per_class_iou"][3] == 0.0
    assert kitti["miou"] == pytest.approx((0.5 + 2 / 3) / 4)  # absent class counted as 0
    assert kitti["absent_classes"].startswith("counted")


def test_kitti_in_range_ignore_class():
    # SemanticKITTI style: class 0 is the ignore class; predicting 0 on a labelled point is a miss
    gt = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([1, 2, 1, 0, 2, 2])
    conf = semantic_confusion(pred, gt, 3, ignore_index=0)
    m = semseg_metrics(conf, ignore_classes=[0], convention="semantickitti")
    # class 1: tp 1, fn 1 (predicted 0), fp 0 (the gt-0 point is ignored) -> 1/2; class 2: tp 2 -> 1
    assert m["per_class_iou"] == [None, pytest.approx(0.5), pytest.approx(1.0)]
    assert m["miou"] == pytest.approx(0.75)
    # semantic-kitti-api accuracy: tp / (tp + fp) over included classes = 3 / 3
    assert m["oa"] == pytest.approx(1.0)
    assert semseg_metrics(conf, ignore_classes=[0], convention="scannet")["oa"] == pytest.approx(3 / 4)


def test_random_against_loops():
    rng = np.random.default_rng(0)
    c = 6
    gt = rng.integers(-1, c - 1, 500)  # class c-1 never in gt
    pred = rng.integers(0, c - 1, 500)  # ...nor predicted
    conf = semantic_confusion(pred, gt, c, -1)
    assert np.array_equal(conf, loop_confusion(pred, gt, c, -1))
    for convention in ("scannet", "semantickitti"):
        m = semseg_metrics(conf, convention=convention)
        ious = []
        for k in range(c):
            tp = sum(1 for p, g in zip(pred, gt, strict=True) if g == k and p == k)
            fp = sum(1 for p, g in zip(pred, gt, strict=True) if g != -1 and g != k and p == k)
            fn = sum(1 for p, g in zip(pred, gt, strict=True) if g == k and p != k)
            if convention == "semantickitti":
                ious.append(tp / (tp + fp + fn + 1e-15))
            elif tp + fp + fn:
                ious.append(tp / (tp + fp + fn))
        assert m["miou"] == pytest.approx(np.mean(ious), abs=1e-14)


def test_empty_prediction_and_perfect():
    gt = np.array([1, 1, 2])
    perfect = semseg_metrics(semantic_confusion(gt, gt, 3, -1))
    assert perfect["miou"] == 1.0 and perfect["oa"] == 1.0
    empty = semseg_metrics(semantic_confusion(np.zeros(0, int), np.zeros(0, int), 3, -1))
    assert empty["per_class_iou"] == [None, None, None] and np.isnan(empty["miou"])


def test_out_of_range_raises():
    with pytest.raises(ValueError, match="outside"):
        semantic_confusion(np.array([5]), np.array([0]), 3, -1)


def test_zeroshot_hiou():
    gt = np.array([1, 1, 2, 2, 3, 3])
    pred = np.array([1, 1, 2, 3, 3, 3])
    conf = semantic_confusion(pred, gt, 4, ignore_index=0)
    m = zeroshot_metrics(conf, unseen_classes=[3], ignore_classes=[0])
    # class 1: 1; class 2: 1/2; class 3: 2/3
    assert m["seen_miou"] == pytest.approx(0.75)
    assert m["unseen_miou"] == pytest.approx(2 / 3)
    assert m["hiou"] == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))
    assert harmonic_iou(0.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        zeroshot_metrics(conf, unseen_classes=[0], ignore_classes=[0])
