"""pc3d.ops.boxes: exact IoU / GIoU on hand-built cases, random cases against plain loops, gradcheck."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pc3d.ops.boxes import (
    box_corners,
    box_from_minmax,
    box_iou_3d,
    box_to_minmax,
    box_volume,
    boxes_from_points,
    generalized_box_iou_3d,
    hungarian_match,
    nms_3d,
    paired_giou,
)


def B(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def loop_iou_giou(a, b):
    """Straightforward per-pair computation from min/max corners."""
    a_lo, a_hi = [a[i] - a[i + 3] / 2 for i in range(3)], [a[i] + a[i + 3] / 2 for i in range(3)]
    b_lo, b_hi = [b[i] - b[i + 3] / 2 for i in range(3)], [b[i] + b[i + 3] / 2 for i in range(3)]
    inter = 1.0
    hull = 1.0
    for i in range(3):
        inter *= max(0.0, min(a_hi[i], b_hi[i]) - max(a_lo[i], b_lo[i]))
        hull *= max(a_hi[i], b_hi[i]) - min(a_lo[i], b_lo[i])
    union = a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - inter
    iou = inter / union if union > 0 else 0.0
    return iou, iou - ((hull - union) / hull if hull > 0 else 0.0)


def test_identical_nested_disjoint_touching():
    a = B([0, 0, 0, 2, 2, 2])
    cases = {
        "identical": (B([0, 0, 0, 2, 2, 2]), 1.0, 1.0),
        "nested": (B([0.5, 0.5, 0.5, 1, 1, 1]), 1 / 8, 1 / 8),  # hull = a, so GIoU = IoU
        "disjoint": (B([4, 0, 0, 2, 2, 2]), 0.0, 0 - (6 * 2 * 2 - 16) / 24),
        "touching_face": (B([2, 0, 0, 2, 2, 2]), 0.0, 0.0),  # hull == union = 16
        "touching_corner": (B([2, 2, 2, 2, 2, 2]), 0.0, -(64 - 16) / 64),
    }
    for name, (b, iou, giou) in cases.items():
        assert box_iou_3d(a, b).item() == pytest.approx(iou, abs=1e-15), name
        assert generalized_box_iou_3d(a, b).item() == pytest.approx(giou, abs=1e-15), name
    # identical and nested boxes are exact, not approximately right
    assert box_iou_3d(B([0.1, 0.2, 0.3, 0.7, 1.3, 0.9]), B([0.1, 0.2, 0.3, 0.7, 1.3, 0.9])).item() == 1.0


def test_zero_volume_boxes_have_defined_values():
    flat = B([0, 0, 0, 2, 2, 0])
    solid = B([0, 0, 0, 2, 2, 2])
    assert box_iou_3d(flat, solid).item() == 0.0
    assert generalized_box_iou_3d(flat, solid).item() == pytest.approx(0 - (8 - 8) / 8)
    # identical zero-volume boxes: defined as a perfect match
    assert box_iou_3d(flat, flat).item() == 1.0
    assert generalized_box_iou_3d(flat, flat).item() == 1.0
    point = B([1, 1, 1, 0, 0, 0])
    assert box_iou_3d(point, point).item() == 1.0
    # two different flat boxes in one plane: enclosing volume 0 -> GIoU = IoU = 0, no NaN
    other = B([0.5, 0, 0, 2, 2, 0])
    assert box_iou_3d(flat, other).item() == 0.0
    assert generalized_box_iou_3d(flat, other).item() == 0.0
    # two disjoint points: IoU 0, GIoU -1
    assert generalized_box_iou_3d(point, B([3, 3, 3, 0, 0, 0])).item() == -1.0
    boxes = torch.cat([flat, solid, point, other])
    giou = generalized_box_iou_3d(boxes, boxes)
    assert torch.isfinite(giou).all()


def test_random_against_loops():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(-2, 2, (7, 3)), rng.uniform(0, 2, (7, 3))], 1)
    b = np.concatenate([rng.uniform(-2, 2, (5, 3)), rng.uniform(0, 2, (5, 3))], 1)
    b[0] = a[0]
    iou = box_iou_3d(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    giou = generalized_box_iou_3d(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    for i, j in itertools.product(range(7), range(5)):
        ref_iou, ref_giou = loop_iou_giou(a[i], b[j])
        assert iou[i, j] == pytest.approx(ref_iou, abs=1e-12)
        assert giou[i, j] == pytest.approx(ref_giou, abs=1e-12)
    paired = paired_giou(torch.from_numpy(a[:5]), torch.from_numpy(b)).numpy()
    assert np.allclose(paired, np.diag(giou[:5]))
    assert (giou <= iou + 1e-12).all() and (giou >= -1 - 1e-12).all()


def test_gradcheck_float64():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.uniform(-1, 1, (3, 3)), rng.uniform(0.5, 2, (3, 3))], 1)
    b = np.concatenate([rng.uniform(-1, 1, (4, 3)), rng.uniform(0.5, 2, (4, 3))], 1)
    a_t = torch.tensor(a, requires_grad=True)
    b_t = torch.tensor(b, requires_grad=True)
    assert torch.autograd.gradcheck(generalized_box_iou_3d, (a_t, b_t))
    assert torch.autograd.gradcheck(paired_giou, (a_t, b_t[:3]))
    # gradients stay finite on degenerate pairs
    flat = torch.tensor([[0, 0, 0, 2, 2, 0.0], [0, 0, 0, 2, 2, 0.0]], dtype=torch.float64, requires_grad=True)
    generalized_box_iou_3d(flat, flat).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_conversions_and_corners():
    boxes = B([1, 2, 3, 2, 4, 6], [0, 0, 0, 0, 0, 0])
    mm = box_to_minmax(boxes)
    assert mm[0].tolist() == [0, 0, 0, 2, 4, 6]
    assert torch.allclose(box_from_minmax(mm), boxes)
    assert box_volume(boxes).tolist() == [48.0, 0.0]
    corners = box_corners(boxes)
    assert corners.shape == (2, 8, 3)
    assert corners[0, 0].tolist() == [0, 0, 0] and corners[0, 7].tolist() == [2, 4, 6]
    assert corners[0, 4].tolist() == [2, 0, 0]  # bit 2 = x max side
    assert torch.allclose(corners[0].amin(0), mm[0, :3]) and torch.allclose(corners[0].amax(0), mm[0, 3:])


def test_boxes_from_points():
    points = torch.tensor([[0, 0, 0], [1, 2, 3], [5, 5, 5], [9, 9, 9], [-1, 0, 1.0]])
    instance = torch.tensor([3, 3, 7, -1, 3])
    boxes, ids = boxes_from_points(points, instance)
    assert ids.tolist() == [3, 7]
    assert boxes[0].tolist() == [0.0, 1.0, 1.5, 2.0, 2.0, 3.0]
    assert boxes[1].tolist() == [5.0, 5.0, 5.0, 0.0, 0.0, 0.0]  # one-point instance: zero-size box


def loop_nms(boxes, scores, threshold, labels=None):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(not (loop_iou_giou(boxes[i], boxes[k])[0] > threshold and (labels is None or labels[i] == labels[k]))
               for k in kept):
            kept.append(i)
    return kept


def test_nms_against_loop():
    rng = np.random.default_rng(2)
    boxes = np.concatenate([rng.uniform(0, 3, (40, 3)), rng.uniform(0.5, 2, (40, 3))], 1)
    scores = rng.random(40)
    labels = rng.integers(0, 3, 40)
    got = nms_3d(torch.from_numpy(boxes), torch.from_numpy(scores), 0.25).tolist()
    assert got == loop_nms(boxes, scores, 0.25)
    got = nms_3d(torch.from_numpy(boxes), torch.from_numpy(scores), 0.25, torch.from_numpy(labels)).tolist()
    assert got == loop_nms(boxes, scores, 0.25, labels)
    assert nms_3d(torch.zeros(0, 6), torch.zeros(0), 0.5).numel() == 0


def test_hungarian_against_brute_force():
    rng = np.random.default_rng(3)
    cost = rng.random((4, 6))
    rows, cols = hungarian_match(torch.from_numpy(cost))
    best = min(itertools.permutations(range(6), 4), key=lambda p: sum(cost[i, p[i]] for i in range(4)))
    assert rows.tolist() == [0, 1, 2, 3]
    assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(sum(cost[i, best[i]] for i in range(4)))
    with pytest.raises(ValueError):
        hungarian_match(torch.tensor([[float("nan")]]))
