"""Instance segmentation AP with the ScanNet benchmark protocol (`evaluate_semantic_instance.py`,
as re-used by Pointcept's `InsSegEvaluator`).

Per scene: ground-truth instances are the (semantic, instance) pairs of instance classes with
instance id != -1; predictions are point masks with a class and a confidence. Protocol:
- predictions of a non-instance class, and predicted masks with fewer than `min_region_size`
  points are dropped; ground-truth instances smaller than that are not counted as misses;
- per class and IoU threshold, ground-truth instances are visited in order and greedily take the
  first unclaimed prediction with overlap > threshold; a further prediction above threshold on an
  already matched instance becomes a false positive with the lower of the two scores;
- an unmatched prediction is a false positive unless more than `threshold` of its points lie on
  void (ground truth of a non-instance class or unlabelled) or on too-small instances;
- AP integrates the precision/recall curve over the unique score thresholds (the benchmark's
  step-width rule); AP is the mean over IoU 0.50:0.05:0.90 (`np.arange(0.5, 0.95, 0.05)`, nine
  values, as the benchmark), AP50 and AP25 single thresholds;
- a class with ground truth but no prediction has AP 0; a class without ground truth is
  undefined (None) and left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from pc3d.metrics._common import as_labels, nan_to_none_list

AP_OVERLAPS = np.arange(0.5, 0.95, 0.05)  # the benchmark's thresholds: 0.50 ... 0.90
OVERLAPS = np.append(AP_OVERLAPS, 0.25)


class InstanceScene(NamedTuple):
    """One scene: gt_semantic (N,), gt_instance (N,) (-1 = none), pred_masks (K, N) bool,
    pred_labels (K,), pred_scores (K,)."""

    gt_semantic: np.ndarray
    gt_instance: np.ndarray
    pred_masks: np.ndarray
    pred_labels: np.ndarray
    pred_scores: np.ndarray


@dataclass
class _Gt:
    size: int
    candidates: list[tuple[int, int, int, float]] = field(default_factory=list)  # (pred uid, inter, size, score)


@dataclass
class _Pred:
    uid: int
    size: int
    score: float
    void: int
    overlaps: list[tuple[_Gt, int]] = field(default_factory=list)  # (gt, intersection)


def _associate(scene: InstanceScene, classes: list[int], min_region_size: int,
               first_uid: int) -> tuple[dict[int, list[_Gt]], dict[int, list[_Pred]], int]:
    semantic = as_labels(scene.gt_semantic, "gt semantic")
    instance = as_labels(scene.gt_instance, "gt instance")
    masks = np.asarray(scene.pred_masks).astype(bool).reshape(-1, semantic.size)
    labels = as_labels(scene.pred_labels, "pred labels")
    scores = np.asarray(scene.pred_scores, dtype=np.float64).reshape(-1)
    if instance.size != semantic.size or labels.size != masks.shape[0] or scores.size != labels.size:
        raise ValueError("instance scene arrays have inconsistent sizes")
    is_instance_class = np.isin(semantic, classes)
    void = ~is_instance_class
    has_instance = is_instance_class & (instance != -1)
    pairs, gt_index = np.unique(np.stack([semantic[has_instance], instance[has_instance]], 1),
                                axis=0, return_inverse=True)
    point_gt = np.full(semantic.size, -1, dtype=np.int64)
    point_gt[has_instance] = gt_index.reshape(-1)
    gt_sizes = np.bincount(gt_index.reshape(-1), minlength=len(pairs))
    gts_by_class: dict[int, list[_Gt]] = {c: [] for c in classes}
    gt_objects = []
    for (cls, _), size in zip(pairs, gt_sizes, strict=True):
        gt = _Gt(size=int(size))
        gts_by_class[int(cls)].append(gt)
        gt_objects.append(gt)
    preds_by_class: dict[int, list[_Pred]] = {c: [] for c in classes}
    uid = first_uid
    for k in range(len(labels)):
        cls = int(labels[k])
        if cls not in gts_by_class:
            continue
        mask = masks[k]
        size = int(mask.sum())
        if size < min_region_size:
            continue
        pred = _Pred(uid=uid, size=size, score=float(scores[k]), void=int((mask & void).sum()))
        uid += 1
        hits = point_gt[mask]
        inter = np.bincount(hits[hits >= 0], minlength=len(gt_objects))
        for g in np.nonzero(inter)[0]:
            if int(pairs[g][0]) != cls:
                continue
            gt = gt_objects[g]
            pred.overlaps.append((gt, int(inter[g])))
            gt.candidates.append((pred.uid, int(inter[g]), size, pred.score))
        preds_by_class[cls].append(pred)
    return gts_by_class, preds_by_class, uid


def _curve_ap(y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int) -> float:
    """Area under the precision/recall curve, integrated with the benchmark's step widths."""
    if y_true.size == 0:
        return 0.0
    order = np.argsort(y_score, kind="stable")
    scores, trues = y_score[order], y_true[order]
    cumsum = np.append(np.cumsum(trues), 0.0)  # index -1 reads the 0 "before the first"
    _, first = np.unique(scores, return_index=True)
    total_true = cumsum[-2]
    precision = np.zeros(len(first) + 1)
    recall = np.zeros(len(first) + 1)
    for i, start in enumerate(first):
        below = cumsum[start - 1]
        tp = total_true - below
        fp = len(scores) - start - tp
        fn = below + hard_false_negatives
        precision[i] = tp / (tp + fp)
        recall[i] = tp / (tp + fn)
    precision[-1], recall[-1] = 1.0, 0.0
    padded = np.concatenate([[recall[0]], recall, [0.0]])
    widths = 0.5 * (padded[:-2] - padded[2:])
    return float(np.dot(precision, widths))


def instance_ap(scenes: Sequence[InstanceScene | tuple], instance_classes: Sequence[int],
                min_region_size: int = 100) -> dict[str, Any]:
    """AP (0.50:0.05:0.90), AP50, AP25 per instance class and their means over classes with ground truth."""
    classes = sorted(set(int(c) for c in instance_classes))
    associated = []
    uid = 0
    for scene in scenes:
        gts, preds, uid = _associate(InstanceScene(*scene), classes, min_region_size, uid)
        associated.append((gts, preds))
    table = np.zeros((len(classes), len(OVERLAPS)))
    for oi, threshold in enumerate(OVERLAPS):
        claimed: set[int] = set()
        for ci, cls in enumerate(classes):
            trues: list[float] = []
            scores: list[float] = []
            hard_fn = 0
            has_gt = has_pred = False
            for gts_by_class, preds_by_class in associated:
                gts = [g for g in gts_by_class[cls] if g.size >= min_region_size]
                preds = preds_by_class[cls]
                has_gt |= bool(gts)
                has_pred |= bool(preds)
                cur_true = [1.0] * len(gts)
                cur_score = [-np.inf] * len(gts)
                cur_match = [False] * len(gts)
                for gi, gt in enumerate(gts):
                    found = False
                    for pred_uid, inter, pred_size, score in gt.candidates:
                        if pred_uid in claimed:
                            continue
                        if inter / (gt.size + pred_size - inter) > threshold:
                            if cur_match[gi]:
                                # a second prediction on a matched instance: the lower score is a false positive
                                low = min(cur_score[gi], score)
                                cur_score[gi] = max(cur_score[gi], score)
                                cur_true.append(0.0)
                                cur_score.append(low)
                                cur_match.append(True)
                            else:
                                found = True
                                cur_match[gi] = True
                                cur_score[gi] = score
                                claimed.add(pred_uid)
                    if not found:
                        hard_fn += 1
                trues += [t for t, m in zip(cur_true, cur_match, strict=True) if m]
                scores += [s for s, m in zip(cur_score, cur_match, strict=True) if m]
                for pred in preds:
                    if any(inter / (gt.size + pred.size - inter) > threshold for gt, inter in pred.overlaps):
                        continue
                    ignored = pred.void + sum(inter for gt, inter in pred.overlaps if gt.size < min_region_size)
                    if ignored / pred.size <= threshold:
                        trues.append(0.0)
                        scores.append(pred.score)
            if has_gt and has_pred:
                table[ci, oi] = _curve_ap(np.array(trues), np.array(scores), hard_fn)
            elif has_gt:
                table[ci, oi] = 0.0
            else:
                table[ci, oi] = np.nan
    main = ~np.isclose(OVERLAPS, 0.25)
    o50 = np.isclose(OVERLAPS, 0.5)
    o25 = np.isclose(OVERLAPS, 0.25)

    def overall(columns: np.ndarray) -> float:
        values = table[:, columns]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    return {
        "ap": overall(main),
        "ap50": overall(o50),
        "ap25": overall(o25),
        "classes": classes,
        "per_class_ap": nan_to_none_list(table[:, main].mean(axis=1)),
        "per_class_ap50": nan_to_none_list(table[:, o50][:, 0]),
        "per_class_ap25": nan_to_none_list(table[:, o25][:, 0]),
        "min_region_size": int(min_region_size),
        "overlaps": [round(float(o), 2) for o in OVERLAPS[main]],
    }
