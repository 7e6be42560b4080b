"""ShapeNetPart part segmentation: instance-average mIoU (mIoU_I) and category-average mIoU (mIoU_c).

Per shape, IoU is computed for every part of the shape's category; a part absent from both the
ground truth and the prediction counts as IoU 1 (the PointNet++ / Point-MAE evaluation). A shape's
IoU is the mean over its category's parts; mIoU_I averages all shapes, mIoU_c averages the
per-category means over the categories present in the evaluated set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pc3d.metrics._common import as_labels

# the 16 categories in ShapeNetPart's synset order, and their global part ids (50 in all)
SHAPENETPART_PARTS: dict[str, tuple[int, ...]] = {
    "Airplane": (0, 1, 2, 3), "Bag": (4, 5), "Cap": (6, 7), "Car": (8, 9, 10, 11),
    "Chair": (12, 13, 14, 15), "Earphone": (16, 17, 18), "Guitar": (19, 20, 21), "Knife": (22, 23),
    "Lamp": (24, 25, 26, 27), "Laptop": (28, 29), "Motorbike": (30, 31, 32, 33, 34, 35), "Mug": (36, 37),
    "Pistol": (38, 39, 40), "Rocket": (41, 42, 43), "Skateboard": (44, 45, 46), "Table": (47, 48, 49),
}
SHAPENETPART_CATEGORIES: tuple[str, ...] = tuple(SHAPENETPART_PARTS)
NUM_PARTS = 50
PART_TO_CATEGORY = np.array([i for i, parts in enumerate(SHAPENETPART_PARTS.values()) for _ in parts])


def category_index(category: int | str) -> int:
    """Category id 0..15 from an id or a (case-insensitive) name."""
    if isinstance(category, str):
        lookup = {name.lower(): i for i, name in enumerate(SHAPENETPART_CATEGORIES)}
        if category.lower() not in lookup:
            raise ValueError(f"unknown ShapeNetPart category '{category}'")
        return lookup[category.lower()]
    index = int(category)
    if not 0 <= index < len(SHAPENETPART_CATEGORIES):
        raise ValueError(f"ShapeNetPart category {index} is outside [0, 16)")
    return index


def shape_part_ious(pred: np.ndarray, gt: np.ndarray, parts: Sequence[int]) -> np.ndarray:
    """IoU of each part of one shape (absent from both -> 1)."""
    ious = np.empty(len(parts))
    for i, part in enumerate(parts):
        in_gt, in_pred = gt == part, pred == part
        union = np.count_nonzero(in_gt | in_pred)
        ious[i] = 1.0 if union == 0 else np.count_nonzero(in_gt & in_pred) / union
    return ious


def shapenetpart_miou(samples: Sequence[tuple[int | str | None, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """samples: (category or None, pred (N,), gt (N,)) with global part ids 0..49; a None
    category is taken from the first ground-truth point's part, as the reference scripts do."""
    shape_ious: list[float] = []
    by_category: dict[int, list[float]] = {}
    for category, pred, gt in samples:
        pred, gt = as_labels(pred, "pred"), as_labels(gt, "gt")
        if pred.shape != gt.shape or gt.size == 0:
            raise ValueError(f"pred has {pred.size} points but gt has {gt.size}")
        for name, labels in (("pred", pred), ("gt", gt)):
            bad = (labels < 0) | (labels >= NUM_PARTS)
            if bad.any():
                raise ValueError(f"{name} part {int(labels[bad][0])} is outside [0, {NUM_PARTS})")
        cat = int(PART_TO_CATEGORY[gt[0]]) if category is None else category_index(category)
        foreign = PART_TO_CATEGORY[gt] != cat
        if foreign.any():
            raise ValueError(f"gt part {int(gt[foreign][0])} does not belong to category "
                             f"{SHAPENETPART_CATEGORIES[cat]}")
        iou = float(shape_part_ious(pred, gt, SHAPENETPART_PARTS[SHAPENETPART_CATEGORIES[cat]]).mean())
        shape_ious.append(iou)
        by_category.setdefault(cat, []).append(iou)
    per_category = {SHAPENETPART_CATEGORIES[c]: float(np.mean(v)) for c, v in sorted(by_category.items())}
    return {
        "miou_instance": float(np.mean(shape_ious)) if shape_ious else float("nan"),
        "miou_category": float(np.mean(list(per_category.values()))) if per_category else float("nan"),
        "per_category_miou": per_category,
        "per_category_shapes": {SHAPENETPART_CATEGORIES[c]: len(v) for c, v in sorted(by_category.items())},
        "num_shapes": len(shape_ious),
    }


def restrict_to_category(logits: np.ndarray, category: int | str) -> np.ndarray:
    """Per-point part label (N,) from (N, 50) logits, choosing only among the category's parts
    (how the reference evaluation turns network scores into predictions)."""
    parts = np.array(SHAPENETPART_PARTS[SHAPENETPART_CATEGORIES[category_index(category)]])
    return parts[np.asarray(logits)[:, parts].argmax(axis=1)]
