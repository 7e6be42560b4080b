"""PartNet-Ensembled (PartSLIP / PartSTAD) part metrics for one object category.

Semantic mIoU as PartSTAD's `compute_iou`: for each shape, a part's IoU is computed only when the
part occurs in that shape's ground truth (points labelled -1 belong to no part, but a prediction
of a part there still enlarges its union); a part's IoU is the sum over shapes containing it
divided by their number, and the category mIoU is the mean over parts that occur at least once.

mAP50 over point-mask instances (PartSTAD leaves it out of its code; this is the COCO rule at one
threshold): predictions sorted by score take the unmatched ground-truth instance of the same shape
with the highest IoU when that IoU >= 0.5; AP is the 101-point interpolated area under the
precision envelope. Part-aware: per part class (label must match), averaged over parts with
ground-truth instances. Part-agnostic: one pool, labels disregarded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from pc3d.metrics._common import as_labels, nan_to_none_list, nanmean_or_nan

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def partnet_miou(samples: Sequence[tuple[np.ndarray, np.ndarray]], num_parts: int) -> dict[str, Any]:
    """samples: (pred (N,), gt (N,)) part ids in [0, num_parts) or -1 (none)."""
    iou_sum = np.zeros(num_parts)
    shapes_with_part = np.zeros(num_parts, dtype=np.int64)
    for pred, gt in samples:
        pred, gt = as_labels(pred, "pred"), as_labels(gt, "gt")
        if pred.shape != gt.shape:
            raise ValueError(f"pred has {pred.size} points but gt has {gt.size}")
        for name, labels in (("pred", pred), ("gt", gt)):
            bad = (labels < -1) | (labels >= num_parts)
            if bad.any():
                raise ValueError(f"{name} part {int(labels[bad][0])} is outside [-1, {num_parts})")
        for part in range(num_parts):
            in_gt = gt == part
            gt_count = np.count_nonzero(in_gt)
            if gt_count == 0:
                continue
            in_pred = pred == part
            inter = np.count_nonzero(in_gt & in_pred)
            iou_sum[part] += inter / (gt_count + np.count_nonzero(in_pred) - inter)
            shapes_with_part[part] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        per_part = np.where(shapes_with_part > 0, iou_sum / np.maximum(shapes_with_part, 1), np.nan)
    return {
        "miou": nanmean_or_nan(per_part),
        "per_part_iou": nan_to_none_list(per_part),
        "shapes_with_part": shapes_with_part.tolist(),
        "num_shapes": len(samples),
    }


class PartInstanceSample(NamedTuple):
    """One shape: gt_semantic (N,), gt_instance (N,) (-1 = none), pred_masks (K, N), pred_labels (K,),
    pred_scores (K,)."""

    gt_semantic: np.ndarray
    gt_instance: np.ndarray
    pred_masks: np.ndarray
    pred_labels: np.ndarray
    pred_scores: np.ndarray


def coco_ap(matched: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """101-point interpolated AP of detections (1 = true positive) ranked by score."""
    if num_gt == 0:
        return float("nan")
    if matched.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(matched[order])
    fp = np.cumsum(1 - matched[order])
    recall = tp / num_gt
    precision = tp / (tp + fp)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    where = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(where < len(envelope), envelope[np.minimum(where, len(envelope) - 1)], 0.0)
    return float(sampled.mean())


def _instances(sample: PartInstanceSample) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    semantic = as_labels(sample.gt_semantic, "gt semantic")
    instance = as_labels(sample.gt_instance, "gt instance")
    masks = np.asarray(sample.pred_masks).astype(bool).reshape(-1, semantic.size)
    labels = as_labels(sample.pred_labels, "pred labels")
    scores = np.asarray(sample.pred_scores, dtype=np.float64).reshape(-1)
    if instance.size != semantic.size or len(labels) != len(masks) or len(scores) != len(masks):
        raise ValueError("part instance arrays have inconsistent sizes")
    valid = (instance != -1) & (semantic >= 0)
    pairs, index = np.unique(np.stack([semantic[valid], instance[valid]], 1), axis=0, return_inverse=True)
    gt_masks = np.zeros((len(pairs), semantic.size), dtype=bool)
    gt_masks[index.reshape(-1), np.nonzero(valid)[0]] = True
    return gt_masks, pairs[:, 0] if len(pairs) else np.zeros(0, np.int64), masks, labels, scores


def _match(gt_masks: np.ndarray, pred_masks: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy COCO matching inside one shape: 1 for each prediction that finds a free instance."""
    matched = np.zeros(len(pred_masks))
    if len(pred_masks) == 0 or len(gt_masks) == 0:
        return matched
    inter = pred_masks.astype(np.float64) @ gt_masks.T.astype(np.float64)
    union = pred_masks.sum(1)[:, None] + gt_masks.sum(1)[None, :] - inter
    ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    free = np.ones(len(gt_masks), dtype=bool)
    for k in np.argsort(-scores, kind="stable"):
        candidates = np.where(free, ious[k], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= threshold:
            matched[k] = 1.0
            free[best] = False
    return matched


def part_map(samples: Sequence[PartInstanceSample | tuple], num_parts: int,
             threshold: float = 0.5) -> dict[str, Any]:
    """Part-aware mAP (per part, then mean) and part-agnostic AP at IoU `threshold`."""
    aware_hits: list[list[np.ndarray]] = [[] for _ in range(num_parts)]
    aware_scores: list[list[np.ndarray]] = [[] for _ in range(num_parts)]
    aware_gt = np.zeros(num_parts, dtype=np.int64)
    agnostic_hits, agnostic_scores, agnostic_gt = [], [], 0
    for sample in samples:
        gt_masks, gt_labels, masks, labels, scores = _instances(PartInstanceSample(*sample))
        for name, values in (("pred", labels), ("gt", gt_labels)):
            bad = (values < 0) | (values >= num_parts)
            if bad.any():
                raise ValueError(f"{name} instance part {int(values[bad][0])} is outside [0, {num_parts})")
        for part in range(num_parts):
            mine = labels == part
            aware_gt[part] += int((gt_labels == part).sum())
            aware_hits[part].append(_match(gt_masks[gt_labels == part], masks[mine], scores[mine], threshold))
            aware_scores[part].append(scores[mine])
        agnostic_gt += len(gt_masks)
        agnostic_hits.append(_match(gt_masks, masks, scores, threshold))
        agnostic_scores.append(scores)
    per_part = np.array([coco_ap(np.concatenate(aware_hits[p]) if aware_hits[p] else np.zeros(0),
                                 np.concatenate(aware_scores[p]) if aware_scores[p] else np.zeros(0),
                                 int(aware_gt[p])) for p in range(num_parts)])
    agnostic = coco_ap(np.concatenate(agnostic_hits) if agnostic_hits else np.zeros(0),
                       np.concatenate(agnostic_scores) if agnostic_scores else np.zeros(0), agnostic_gt)
    key = f"{int(round(threshold * 100))}"
    return {
        f"map{key}_part_aware": nanmean_or_nan(per_part),
        f"map{key}_part_agnostic": agnostic,
        f"per_part_ap{key}": nan_to_none_list(per_part),
        "gt_instances_per_part": aware_gt.tolist(),
    }
