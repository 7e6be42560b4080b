"""Semantic segmentation from a confusion matrix: per-class IoU / accuracy, mIoU, mAcc, OA, zero-shot hIoU.

Conventions for classes that appear in neither ground truth nor prediction ("absent" classes):
- `semantickitti` (semantic-kitti-api `np_ioueval.iouEval`): IoU = tp / (tp + fp + fn + 1e-15), so an
  absent class scores 0 and *is* counted in the mean over all non-ignored classes; OA is
  tp / (tp + fp) summed over the non-ignored classes (points predicted as an ignored class on
  labelled points count as misses but are not in the denominator), as that script computes it.
- `scannet` (ScanNet `evaluate_semantic_label.py`): IoU is undefined (None) when tp + fp + fn = 0
  and left out of the mean; OA is tp / all labelled points.
In both, points whose ground truth is an ignored class do not count (their column is zeroed, so a
prediction there is neither a hit nor a false positive), and a prediction of an ignored class on a
labelled point is a false negative of the true class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pc3d.metrics._common import as_labels, nan_to_none_list, nanmean_or_nan

CONVENTIONS = ("semantickitti", "scannet")
KITTI_EPS = 1e-15  # semantic-kitti-api's np_ioueval adds this to every union


def semantic_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                       ignore_index: int | None = None) -> np.ndarray:
    """(C, C) int64 point counts, rows = ground truth, columns = prediction.

    Points whose ground truth equals `ignore_index` are dropped when it lies outside [0, C)
    (e.g. -1 or 255); an in-range ignore class (SemanticKITTI's 0) stays in the matrix and is
    excluded later through `ignore_classes`. Any other label outside [0, C) raises ValueError.
    """
    pred, gt = as_labels(pred, "pred"), as_labels(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred has {pred.size} points but gt has {gt.size}")
    if ignore_index is not None and not 0 <= ignore_index < num_classes:
        keep = gt != ignore_index
        pred, gt = pred[keep], gt[keep]
    for name, labels in (("gt", gt), ("pred", pred)):
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(f"{name} label {int(labels[bad][0])} is outside [0, {num_classes})")
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _included(num_classes: int, ignore_classes: Sequence[int]) -> np.ndarray:
    ignored = set(int(c) for c in ignore_classes)
    return np.array([c for c in range(num_classes) if c not in ignored], dtype=np.int64)


def confusion_stats(confusion: np.ndarray, ignore_classes: Sequence[int] = ()) -> tuple[np.ndarray, ...]:
    """tp, fp, fn per class (float64) after dropping ground truth of the ignored classes."""
    conf = np.asarray(confusion, dtype=np.float64).copy()
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion must be square, got shape {conf.shape}")
    conf[list(int(c) for c in ignore_classes), :] = 0  # rows are ground truth here
    tp = np.diag(conf).copy()
    return tp, conf.sum(axis=0) - tp, conf.sum(axis=1) - tp


def semseg_metrics(confusion: np.ndarray, ignore_classes: Sequence[int] = (),
                   convention: str = "scannet") -> dict[str, Any]:
    """Per-class IoU and accuracy, mIoU, mAcc, OA from a (gt, pred) confusion matrix.

    `convention` decides how classes absent from both gt and prediction enter the mean (module doc).
    Ignored classes get None in the per-class lists."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention '{convention}' (one of {', '.join(CONVENTIONS)})")
    num_classes = np.asarray(confusion).shape[0]
    include = _included(num_classes, ignore_classes)
    tp, fp, fn = confusion_stats(confusion, ignore_classes)
    union = tp + fp + fn
    support = tp + fn
    if convention == "semantickitti":
        iou = tp / (union + KITTI_EPS)
        acc = tp / (support + KITTI_EPS)
        miou = float(iou[include].mean()) if include.size else float("nan")
        macc = float(acc[include].mean()) if include.size else float("nan")
        oa = float(tp[include].sum() / (tp[include].sum() + fp[include].sum() + KITTI_EPS))
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
            acc = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        miou = nanmean_or_nan(iou[include])
        macc = nanmean_or_nan(acc[include])
        labelled = support[include].sum()
        oa = float(tp[include].sum() / labelled) if labelled else float("nan")
    excluded = np.ones(num_classes, dtype=bool)
    excluded[include] = False
    iou, acc = iou.copy(), acc.copy()
    iou[excluded] = np.nan
    acc[excluded] = np.nan
    return {
        "miou": miou,
        "macc": macc,
        "oa": oa,
        "per_class_iou": nan_to_none_list(iou),
        "per_class_acc": nan_to_none_list(acc),
        "tp": tp.astype(np.int64).tolist(),
        "fp": fp.astype(np.int64).tolist(),
        "fn": fn.astype(np.int64).tolist(),
        "ignore_classes": sorted(int(c) for c in ignore_classes),
        "convention": convention,
        "absent_classes": ("counted as IoU 0 in the mean" if convention == "semantickitti"
                           else "left out of the mean"),
    }


def harmonic_iou(seen: float, unseen: float) -> float:
    """hIoU = 2 s u / (s + u); 0 when both are 0, NaN when either is undefined."""
    if np.isnan(seen) or np.isnan(unseen):
        return float("nan")
    return 0.0 if seen + unseen == 0 else float(2 * seen * unseen / (seen + unseen))


def zeroshot_metrics(confusion: np.ndarray, unseen_classes: Sequence[int], ignore_classes: Sequence[int] = (),
                     convention: str = "semantickitti") -> dict[str, Any]:
    """Seen / unseen / all mIoU and hIoU (generalised zero-shot protocol of 3DGenZ)."""
    result = semseg_metrics(confusion, ignore_classes, convention)
    num_classes = np.asarray(confusion).shape[0]
    unseen = sorted(set(int(c) for c in unseen_classes))
    for c in unseen:
        if not 0 <= c < num_classes:
            raise ValueError(f"unseen class {c} is outside [0, {num_classes})")
        if c in set(int(i) for i in ignore_classes):
            raise ValueError(f"unseen class {c} is also an ignored class")
    include = _included(num_classes, ignore_classes)
    seen = [int(c) for c in include if c not in unseen]
    iou = np.array([np.nan if v is None else v for v in result["per_class_iou"]], dtype=np.float64)

    def mean_of(classes: list[int]) -> float:
        if not classes:
            return float("nan")
        if convention == "semantickitti":
            return float(iou[classes].mean())
        return nanmean_or_nan(iou[classes])

    seen_miou, unseen_miou = mean_of(seen), mean_of(unseen)
    result.update({
        "seen_classes": seen,
        "unseen_classes": unseen,
        "seen_miou": seen_miou,
        "unseen_miou": unseen_miou,
        "hiou": harmonic_iou(seen_miou, unseen_miou),
    })
    return result
