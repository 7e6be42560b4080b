"""Detection AP25/AP50 (VoteNet / 3DETR semantics) on hand cases and against a plain-loop VOC evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.metrics import detection_ap, voc_ap

CUBE = [0, 0, 0, 2, 2, 2]


def test_perfect_and_empty():
    gt = np.array([CUBE, [5, 5, 5, 1, 1, 1]], float)
    m = detection_ap([(gt, [0, 1], [0.9, 0.8], gt, [0, 1])])
    assert m["ap25"] == 1.0 and m["ap50"] == 1.0 and m["ar50"] == 1.0
    empty = detection_ap([(np.zeros((0, 6)), [], [], gt, [0, 1])])
    assert empty["per_class_ap50"] == [0.0, 0.0] and empty["ap50"] == 0.0


def test_thresholds_disjoint_identical_and_extra_class():
    gt = np.array([CUBE], float)
    half = np.array([[0.5, 0, 0, 2, 2, 2]])  # overlap 6, union 10: IoU 0.6
    quarter = np.array([[1.0, 0, 0, 2, 2, 2]])  # IoU 4/12 = 1/3: hit at 0.25, miss at 0.5
    assert detection_ap([(half, [0], [1.0], gt, [0])])["ap50"] == 1.0
    m = detection_ap([(quarter, [0], [1.0], gt, [0])])
    assert m["ap25"] == 1.0 and m["ap50"] == 0.0
    disjoint = np.array([[10, 0, 0, 2, 2, 2]])
    assert detection_ap([(disjoint, [0], [1.0], gt, [0])])["ap25"] == 0.0
    # a predicted class absent from the ground truth counts as AP 0 in the mean (3DETR)
    m = detection_ap([(np.array([CUBE, CUBE], float), [0, 3], [0.9, 0.9], gt, [0])])
    assert m["classes"] == [0, 3] and m["per_class_ap50"] == [1.0, 0.0] and m["ap50"] == 0.5


def test_duplicate_detection_hand_computed():
    gt = np.array([CUBE], float)
    pred = np.array([CUBE, CUBE], float)
    m = detection_ap([(pred, [0, 0], [0.9, 0.8], gt, [0])])
    # tp,fp = (1,0),(1,1): recall 1,1 precision 1,0.5 -> envelope 1 -> AP 1
    assert m["ap50"] == 1.0
    m = detection_ap([(np.array([[10, 0, 0, 2, 2, 2], CUBE]), [0, 0], [0.9, 0.8], gt, [0])])
    # first a false positive, then the hit: precision 0, 0.5 at recall 0, 1 -> AP 0.5
    assert m["ap50"] == 0.5


def loop_iou(a, b):
    inter = 1.0
    for i in range(3):
        inter *= max(0.0, min(a[i] + a[i + 3] / 2, b[i] + b[i + 3] / 2) - max(a[i] - a[i + 3] / 2, b[i] - b[i + 3] / 2))
    return inter / (np.prod(a[3:]) + np.prod(b[3:]) - inter)


def loop_ap(samples, cls, threshold):
    dets = [(s, score, box) for s, (pb, pl, ps, _, _) in enumerate(samples)
            for box, label, score in zip(pb, pl, ps, strict=True) if label == cls]
    dets.sort(key=lambda d: -d[1])
    gts = {s: [b for b, lab in zip(gb, gl, strict=True) if lab == cls] for s, (_, _, _, gb, gl) in enumerate(samples)}
    used = {s: [False] * len(v) for s, v in gts.items()}
    npos = sum(len(v) for v in gts.values())
    tp = fp = 0
    points = []
    for s, _, box in dets:
        ious = [loop_iou(box, g) for g in gts[s]]
        if ious and max(ious) > threshold and not used[s][int(np.argmax(ious))]:
            used[s][int(np.argmax(ious))] = True
            tp += 1
        else:
            fp += 1
        points.append((tp / npos, tp / (tp + fp)))
    # area under the precision envelope, by plain loops over recall steps
    area, previous = 0.0, 0.0
    for i, (rec, _) in enumerate(points):
        if rec > previous:
            area += (rec - previous) * max(p for _, p in points[i:])
            previous = rec
    return area


def test_random_against_loops():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(4):
        g = np.concatenate([rng.uniform(0, 4, (5, 3)), rng.uniform(0.5, 1.5, (5, 3))], 1)
        gl = rng.integers(0, 2, 5)
        p = np.concatenate([g + rng.normal(0, 0.2, g.shape), rng.uniform(0, 4, (3, 6)).clip(0.3)])
        pl = np.concatenate([gl, rng.integers(0, 2, 3)])
        samples.append((p, pl, rng.random(len(p)), g, gl))
    m = detection_ap(samples)
    for key, threshold in (("ap25", 0.25), ("ap50", 0.5)):
        for i, cls in enumerate(m["classes"]):
            assert m[f"per_class_{key}"][i] == pytest.approx(loop_ap(samples, cls, threshold), abs=1e-12)


def test_voc_ap_sentinels():
    assert voc_ap(np.array([]), np.array([])) == 0.0
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.5 + 0.5 * 0.5)
