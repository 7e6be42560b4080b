"""Panoptic quality PQ / SQ / RQ with semantic-kitti-api's `PanopticEval` conventions.

- Instance ids are shifted by +1 internally, so id 0 (stuff, SemanticKITTI style) is one segment per
  class and id -1 means "no segment" (those points take part in no match, like a crowd region).
- Points whose ground-truth class is ignored are removed before matching (prediction included).
  An ignore id may be negative (-1, the ScanNet/Pointcept convention): such labels are then valid in
  ground truth and prediction; a prediction of -1 on a counted point predicts nothing there.
- Per class, a predicted and a ground-truth segment match when IoU > 0.5 (unique by construction);
  segment areas are counted inside that class only. Unmatched segments count as FN / FP only when
  they have at least `min_points` points (matched ones count whatever their size).
- SQ = sum IoU / max(TP, eps), RQ = TP / max(TP + FP/2 + FN/2, eps), PQ = SQ * RQ, eps = 1e-15;
  means run over every non-ignored class, classes absent from both sides included (as 0).
- PQ_things / PQ_stuff average over the thing and stuff classes; PQ-dagger uses IoU for stuff.
Segments are matched through (gt id, pred id) pairs rather than the script's integer offset, which
gives the same counts without its overflow limit on instance ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from pc3d.metrics._common import as_labels

EPS = 1e-15


class PanopticSample(NamedTuple):
    """One scan: predicted and ground-truth semantic (N,) and instance (N,) labels."""

    pred_semantic: np.ndarray
    pred_instance: np.ndarray
    gt_semantic: np.ndarray
    gt_instance: np.ndarray


def _segment_areas(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(ids[ids > 0], return_counts=True)


def panoptic_metrics(samples: Sequence[PanopticSample | tuple], num_classes: int,
                     ignore_classes: Sequence[int] = (0,), thing_classes: Sequence[int] = (),
                     min_points: int = 50) -> dict[str, Any]:
    """PQ, SQ, RQ per class and means (all, things, stuff), PQ-dagger, and semantic IoU."""
    ignore = sorted(set(int(c) for c in ignore_classes))
    include = [c for c in range(num_classes) if c not in ignore]
    things = [c for c in include if c in set(int(c) for c in thing_classes)]
    stuff = [c for c in include if c not in things]
    # negative ignore ids share one extra internal class `num_classes`, ignored like any other
    negative = [c for c in ignore if c < 0]
    size = num_classes + (1 if negative else 0)
    ignored = [c for c in ignore if 0 <= c < size] + ([num_classes] if negative else [])
    tp = np.zeros(size, dtype=np.int64)
    fp = np.zeros(size, dtype=np.int64)
    fn = np.zeros(size, dtype=np.int64)
    iou_sum = np.zeros(size, dtype=np.float64)
    confusion = np.zeros((size, size), dtype=np.int64)  # rows gt, columns pred
    for sample in samples:
        pred_sem, pred_inst, gt_sem, gt_inst = (as_labels(a, n) for a, n in zip(
            PanopticSample(*sample), ("pred semantic", "pred instance", "gt semantic", "gt instance"), strict=True))
        if not (pred_sem.size == pred_inst.size == gt_sem.size == gt_inst.size):
            raise ValueError("panoptic sample arrays have different lengths")
        for name, labels in (("pred semantic", pred_sem), ("gt semantic", gt_sem)):
            bad = ((labels < 0) | (labels >= num_classes)) & ~np.isin(labels, negative)
            if bad.any():
                raise ValueError(f"{name} label {int(labels[bad][0])} is outside [0, {num_classes})")
        if negative:
            pred_sem = np.where(np.isin(pred_sem, negative), num_classes, pred_sem)
            gt_sem = np.where(np.isin(gt_sem, negative), num_classes, gt_sem)
        confusion += np.bincount(gt_sem * size + pred_sem, minlength=size * size).reshape(size, size)
        keep = ~np.isin(gt_sem, ignored)
        pred_sem, gt_sem = pred_sem[keep], gt_sem[keep]
        pred_ids, gt_ids = pred_inst[keep] + 1, gt_inst[keep] + 1
        for cl in include:
            pred_in = np.where(pred_sem == cl, pred_ids, 0)
            gt_in = np.where(gt_sem == cl, gt_ids, 0)
            pred_unique, pred_area = _segment_areas(pred_in)
            gt_unique, gt_area = _segment_areas(gt_in)
            both = (pred_in > 0) & (gt_in > 0)
            pairs, inter = np.unique(np.stack([gt_in[both], pred_in[both]], 1), axis=0, return_counts=True)
            gt_matched = np.zeros(len(gt_unique), dtype=bool)
            pred_matched = np.zeros(len(pred_unique), dtype=bool)
            if len(pairs):
                gi = np.searchsorted(gt_unique, pairs[:, 0])
                pi = np.searchsorted(pred_unique, pairs[:, 1])
                ious = inter / (gt_area[gi] + pred_area[pi] - inter)
                hit = ious > 0.5
                tp[cl] += int(hit.sum())
                iou_sum[cl] += float(ious[hit].sum())
                gt_matched[gi[hit]] = True
                pred_matched[pi[hit]] = True
            fn[cl] += int(((gt_area >= min_points) & ~gt_matched).sum())
            fp[cl] += int(((pred_area >= min_points) & ~pred_matched).sum())
    sq = iou_sum / np.maximum(tp.astype(np.float64), EPS)
    rq = tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, EPS)
    pq = sq * rq
    # semantic IoU as PanopticEval.getSemIoU: gt of ignored classes dropped, union clamped at eps
    conf = confusion.astype(np.float64)
    conf[ignored, :] = 0
    sem_tp = np.diag(conf)
    union = np.maximum(conf.sum(0) + conf.sum(1) - sem_tp, EPS)
    iou = sem_tp / union

    def mean(values: np.ndarray, classes: list[int]) -> float:
        return float(values[classes].mean()) if classes else float("nan")

    def per_class(values: np.ndarray) -> list[float | None]:
        return [None if c in ignore else float(values[c]) for c in range(num_classes)]

    return {
        "pq": mean(pq, include), "sq": mean(sq, include), "rq": mean(rq, include),
        "pq_things": mean(pq, things), "sq_things": mean(sq, things), "rq_things": mean(rq, things),
        "pq_stuff": mean(pq, stuff), "sq_stuff": mean(sq, stuff), "rq_stuff": mean(rq, stuff),
        "pq_dagger": (float(np.mean(np.concatenate([pq[things], iou[stuff]])))
                      if include else float("nan")),
        "miou": mean(iou, include),
        "per_class_pq": per_class(pq), "per_class_sq": per_class(sq), "per_class_rq": per_class(rq),
        "per_class_iou": per_class(iou),
        "tp": tp[:num_classes].tolist(), "fp": fp[:num_classes].tolist(), "fn": fn[:num_classes].tolist(),
        "thing_classes": things, "stuff_classes": stuff, "ignore_classes": ignore,
        "min_points": int(min_points),
    }
