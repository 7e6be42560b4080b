"""Panoptic PQ/SQ/RQ: the worked example of the PQ paper (numbers published with semantic-kitti-api)
and random scans against a plain-loop re-implementation."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.metrics import panoptic_metrics


def build_example():
    """Classes: 0 ignore, 1 grass, 2 sky (stuff), 3 person, 4 dog (things); 50 points per block."""
    blocks = [  # (pred sem, pred inst, gt sem, gt inst, count)
        (0, 0, 0, 0, 50),  # ignored region
        (1, 0, 1, 0, 40), (2, 0, 1, 0, 10),  # grass, 10 points predicted as sky
        (2, 0, 2, 0, 40), (1, 0, 2, 0, 10),  # sky, 10 points predicted as grass
        (3, 35, 4, 22, 50),  # a dog predicted as a person
        (3, 8, 3, 33, 150), (3, 8, 3, 42, 50), (3, 95, 3, 11, 100),  # 3 gt persons, 2 predicted
    ]
    columns = [np.concatenate([np.full(b[-1], b[i]) for b in blocks]) for i in range(4)]
    return tuple(columns)


def test_pq_paper_example():
    m = panoptic_metrics([build_example()], num_classes=5, ignore_classes=[0], thing_classes=[3, 4], min_points=1)
    assert m["pq"] == pytest.approx(0.47916666666666663, abs=1e-15)
    assert m["sq"] == pytest.approx(0.5520833333333333, abs=1e-15)
    assert m["rq"] == pytest.approx(0.6666666666666666, abs=1e-15)
    assert m["miou"] == pytest.approx(0.5476190476190476, abs=1e-15)
    assert m["per_class_pq"] == [None, pytest.approx(2 / 3), pytest.approx(2 / 3), pytest.approx(0.5833333333333333),
                                 0.0]
    assert m["per_class_sq"][3] == pytest.approx(0.875)
    assert m["pq_things"] == pytest.approx((0.5833333333333333 + 0) / 2)
    assert m["pq_stuff"] == pytest.approx(2 / 3)
    # PQ-dagger: things PQ, stuff IoU (grass 40/60, sky 40/60)
    assert m["pq_dagger"] == pytest.approx((0.5833333333333333 + 0 + 2 / 3 + 2 / 3) / 4)


def test_perfect_empty_and_min_points():
    sem = np.array([1, 1, 1, 2, 2])
    inst = np.array([0, 0, 0, 5, 5])
    perfect = panoptic_metrics([(sem, inst, sem, inst)], 3, ignore_classes=[0], thing_classes=[2], min_points=1)
    assert perfect["pq"] == 1.0 and perfect["rq"] == 1.0
    # prediction of an ignored-class everywhere: every gt segment is a FN
    none = panoptic_metrics([(np.zeros(5, int), np.zeros(5, int), sem, inst)], 3, ignore_classes=[0], min_points=1)
    assert none["pq"] == 0.0 and none["fn"] == [0, 1, 1]
    # a 2-point unmatched gt segment is not a FN with min_points=3
    small = panoptic_metrics([(np.zeros(5, int), np.zeros(5, int), sem, inst)], 3, ignore_classes=[0], min_points=3)
    assert small["fn"] == [0, 1, 0]
    # one-point instances match when identical
    one = panoptic_metrics([(np.array([2]), np.array([7]), np.array([2]), np.array([1]))], 3, ignore_classes=[0],
                           min_points=50)
    assert one["tp"] == [0, 0, 1] and one["per_class_pq"][2] == 1.0


def loop_panoptic(samples, num_classes, ignore, min_points):
    tp = np.zeros(num_classes)
    fp = np.zeros(num_classes)
    fn = np.zeros(num_classes)
    iou_sum = np.zeros(num_classes)
    for ps, pi, gs, gi in samples:
        keep = [k for k in range(len(gs)) if gs[k] not in ignore]
        for c in range(num_classes):
            if c in ignore:
                continue
            preds: dict[int, set] = {}
            gts: dict[int, set] = {}
            for k in keep:
                if ps[k] == c and pi[k] + 1 > 0:
                    preds.setdefault(pi[k], set()).add(k)
                if gs[k] == c and gi[k] + 1 > 0:
                    gts.setdefault(gi[k], set()).add(k)
            matched_p, matched_g = set(), set()
            for g, gpts in gts.items():
                for p, ppts in preds.items():
                    iou = len(gpts & ppts) / len(gpts | ppts)
                    if iou > 0.5:
                        tp[c] += 1
                        iou_sum[c] += iou
                        matched_p.add(p)
                        matched_g.add(g)
            fn[c] += sum(1 for g, pts in gts.items() if g not in matched_g and len(pts) >= min_points)
            fp[c] += sum(1 for p, pts in preds.items() if p not in matched_p and len(pts) >= min_points)
    include = [c for c in range(num_classes) if c not in ignore]
    sq = iou_sum / np.maximum(tp, 1e-15)
    rq = tp / np.maximum(tp + fp / 2 + fn / 2, 1e-15)
    return (sq * rq)[include].mean(), sq[include].mean(), rq[include].mean()


def test_random_against_loops():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(3):
        n = 300
        gs = rng.integers(0, 5, n)
        gi = rng.integers(-1, 4, n)
        ps = np.where(rng.random(n) < 0.8, gs, rng.integers(0, 5, n))
        pi = np.where(rng.random(n) < 0.8, gi, rng.integers(-1, 4, n))
        samples.append((ps, pi, gs, gi))
    m = panoptic_metrics(samples, 5, ignore_classes=[0], thing_classes=[1, 2], min_points=10)
    pq, sq, rq = loop_panoptic(samples, 5, [0], 10)
    assert m["pq"] == pytest.approx(pq, abs=1e-12)
    assert m["sq"] == pytest.approx(sq, abs=1e-12)
    assert m["rq"] == pytest.approx(rq, abs=1e-12)
