"""Shape classification: overall accuracy, mean class accuracy, confusion, ModelNet40 vote aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np

from pc3d.metrics._common import as_labels, nan_to_none_list


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = ground truth, columns = prediction. Labels must lie in [0, C)."""
    pred, gt = as_labels(pred, "pred"), as_labels(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred has {pred.size} labels but gt has {gt.size}")
    for name, labels in (("pred", pred), ("gt", gt)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} label {int(labels.min() if labels.min() < 0 else labels.max())} "
                             f"is outside [0, {num_classes})")
    return np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def classification_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int | None = None) -> dict[str, Any]:
    """OA, mAcc (mean over classes present in gt) and per-class accuracy (None where a class has no sample)."""
    gt = as_labels(gt, "gt")
    pred = as_labels(pred, "pred")
    if num_classes is None:
        num_classes = int(max(gt.max(initial=-1), pred.max(initial=-1))) + 1
    confusion = confusion_matrix(pred, gt, num_classes)
    correct = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, correct / np.maximum(support, 1), np.nan)
    total = support.sum()
    return {
        "oa": float(correct.sum() / total) if total else float("nan"),
        "macc": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
        "per_class_acc": nan_to_none_list(per_class),
        "support": support.astype(np.int64).tolist(),
        "confusion": confusion.tolist(),
        "num_samples": int(total),
    }


def aggregate_votes(logits: np.ndarray, mode: str = "mean_logits") -> np.ndarray:
    """Combine V test-time votes (V, N, C) into one label per sample (N,).

    `mean_logits` averages the raw scores then takes the argmax (Point-MAE's ModelNet40 voting);
    `mean_softmax` averages probabilities; `majority` takes the most frequent per-vote argmax
    (ties -> smallest label)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3:
        raise ValueError(f"votes must be (V, N, C), got shape {logits.shape}")
    if mode == "mean_logits":
        return logits.mean(axis=0).argmax(axis=-1)
    if mode == "mean_softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (shifted / shifted.sum(axis=-1, keepdims=True)).mean(axis=0).argmax(axis=-1)
    if mode == "majority":
        votes = logits.argmax(axis=-1)  # (V, N)
        counts = np.apply_along_axis(np.bincount, 0, votes, minlength=logits.shape[-1])  # (C, N)
        return counts.argmax(axis=0)
    raise ValueError(f"unknown vote mode '{mode}' (mean_logits, mean_softmax, majority)")
