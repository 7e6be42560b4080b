"""ShapeNetPart mIoU_c / mIoU_I, PartNet-Ensembled mIoU and part mAP50 on hand cases and against loops."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.metrics import SHAPENETPART_PARTS, part_map, partnet_miou, restrict_to_category, shapenetpart_miou


def test_part_map_is_the_benchmark_table():
    assert sum(len(p) for p in SHAPENETPART_PARTS.values()) == 50
    flat = [i for parts in SHAPENETPART_PARTS.values() for i in parts]
    assert flat == list(range(50))


def test_shapenetpart_hand_case():
    # Bag (parts 4, 5): part 5 absent from both -> IoU 1
    bag_gt = np.array([4, 4, 4, 4])
    bag_pred = np.array([4, 4, 4, 4])
    # Cap (parts 6, 7): part 6 IoU 1/3 (1 shared of 3), part 7 IoU 1/3
    cap_gt = np.array([6, 6, 7, 7])
    cap_pred = np.array([6, 7, 6, 7])
    m = shapenetpart_miou([("Bag", bag_pred, bag_gt), (2, cap_pred, cap_gt), (None, cap_gt, cap_gt)])
    assert m["per_category_miou"] == {"Bag": 1.0, "Cap": pytest.approx((1 / 3 + 1) / 2)}
    assert m["miou_instance"] == pytest.approx((1.0 + 1 / 3 + 1.0) / 3)
    assert m["miou_category"] == pytest.approx((1.0 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="does not belong"):
        shapenetpart_miou([("Bag", cap_gt, cap_gt)])


def test_shapenetpart_random_against_loops():
    rng = np.random.default_rng(0)
    names = list(SHAPENETPART_PARTS)
    samples = []
    for _ in range(12):
        cat = names[rng.integers(0, 16)]
        parts = np.array(SHAPENETPART_PARTS[cat])
        gt = rng.choice(parts, 30)
        pred = np.where(rng.random(30) < 0.7, gt, rng.choice(parts, 30))
        samples.append((cat, pred, gt))
    m = shapenetpart_miou(samples)
    per_shape, per_cat = [], {}
    for cat, pred, gt in samples:
        ious = []
        for part in SHAPENETPART_PARTS[cat]:
            union = sum(1 for p, g in zip(pred, gt, strict=True) if p == part or g == part)
            inter = sum(1 for p, g in zip(pred, gt, strict=True) if p == part and g == part)
            ious.append(1.0 if union == 0 else inter / union)
        per_shape.append(sum(ious) / len(ious))
        per_cat.setdefault(cat, []).append(per_shape[-1])
    assert m["miou_instance"] == pytest.approx(sum(per_shape) / len(per_shape), abs=1e-12)
    assert m["miou_category"] == pytest.approx(np.mean([np.mean(v) for v in per_cat.values()]), abs=1e-12)


def test_restrict_to_category():
    logits = np.zeros((2, 50))
    logits[:, 0] = 10  # an Airplane part scores highest overall
    logits[0, 5], logits[1, 4] = 1, 2
    assert restrict_to_category(logits, "Bag").tolist() == [5, 4]


def test_partnet_miou_hand_case():
    # shape 1: part 0 IoU 2/3 (pred on an unlabelled point enlarges the union), part 1 absent -> skipped
    # shape 2: part 0 IoU 1, part 1 IoU 1/2
    s1 = (np.array([0, 0, 0, -1]), np.array([0, 0, -1, -1]))
    s2 = (np.array([0, 1, 1]), np.array([0, 1, -1]))
    m = partnet_miou([(s1[0], s1[1]), (s2[0], s2[1])], num_parts=3)
    assert m["per_part_iou"] == [pytest.approx((2 / 3 + 1) / 2), pytest.approx(0.5), None]
    assert m["shapes_with_part"] == [2, 1, 0]
    assert m["miou"] == pytest.approx(((2 / 3 + 1) / 2 + 0.5) / 2)


def test_part_map_hand_case():
    sem = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    inst = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    gt_masks = [sem * 0 + (inst == i) for i in range(3)]
    perfect = np.stack(gt_masks).astype(bool)
    m = part_map([(sem, inst, perfect, [0, 0, 1], [0.9, 0.8, 0.7])], num_parts=2)
    assert m["map50_part_aware"] == 1.0 and m["map50_part_agnostic"] == 1.0
    # right masks, wrong part labels: part-aware 0, part-agnostic still 1
    m = part_map([(sem, inst, perfect, [1, 1, 0], [0.9, 0.8, 0.7])], num_parts=2)
    assert m["map50_part_aware"] == 0.0 and m["map50_part_agnostic"] == 1.0
    # one of two part-0 instances found, plus a higher-scored false positive (IoU 1/3)
    fp_mask = np.array([1, 0, 1, 0, 0, 0, 0, 1], bool)
    m = part_map([(sem, inst, np.stack([perfect[0], fp_mask]), [0, 0], [0.5, 0.9])], num_parts=2)
    # ranked: FP (p 0), TP (p 1/2, recall 1/2) -> envelope 1/2 for recall <= 1/2 (51 of 101 points)
    assert m["per_part_ap50"][0] == pytest.approx(0.5 * 51 / 101)
    assert m["per_part_ap50"][1] == 0.0
    # empty prediction
    m = part_map([(sem, inst, np.zeros((0, 8), bool), [], [])], num_parts=3)
    assert m["per_part_ap50"] == [0.0, 0.0, None] and m["map50_part_agnostic"] == 0.0
