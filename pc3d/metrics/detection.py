"""3D detection AP for axis-aligned boxes with the VoteNet / 3DETR `eval_det_cls` computation.

Per class, detections from all scenes are sorted by score (descending, stable for ties); each takes
the ground-truth box of its scene with the highest IoU (first one on ties); IoU > threshold and that
box still free -> true positive, otherwise false positive (a taken best box is not replaced by the
second best, as in VOC). AP is the VOC area under the precision envelope (all points, not 11).
Classes are those in the ground truth or the predictions (3DETR's `eval_det_multiprocessing`): a
class with predictions but no ground truth has AP 0 and recall 0, a class with ground truth but no
predictions has AP 0. mAP / AR are plain means over those classes. IoU is exact (float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from pc3d.metrics._common import as_labels
from pc3d.ops.boxes import box_iou_3d

IOU_THRESHOLDS = (0.25, 0.5)


class DetectionSample(NamedTuple):
    """One scene: predicted boxes (K, 6), labels (K,), scores (K,); ground-truth boxes (G, 6), labels (G,)."""

    pred_boxes: np.ndarray
    pred_labels: np.ndarray
    pred_scores: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope, summed where recall changes."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _check_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 6)
    if boxes.ndim != 2 or boxes.shape[1] != 6:
        raise ValueError(f"{name} must be (K, 6) cx, cy, cz, dx, dy, dz, got shape {boxes.shape}")
    if not np.isfinite(boxes).all() or (boxes[:, 3:] < 0).any():
        raise ValueError(f"{name} must be finite with sizes >= 0")
    return boxes


def eval_det_class(detections: list[tuple[int, float, int, np.ndarray]], num_gt: dict[int, int],
                   threshold: float) -> tuple[float, float]:
    """AP and final recall of one class. detections: (scene, score, det index, IoU row vs that
    scene's boxes of this class); num_gt: boxes of this class per scene."""
    npos = sum(num_gt.values())
    order = np.argsort(-np.array([d[1] for d in detections], dtype=np.float64), kind="stable")
    taken = {scene: np.zeros(n, dtype=bool) for scene, n in num_gt.items()}
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, index in enumerate(order):
        scene, _, _, ious = detections[index]
        if ious.size and ious.max() > threshold:
            best = int(np.argmax(ious))  # first maximum, as the strict '>' scan of the reference
            if not taken[scene][best]:
                tp[rank] = 1.0
                taken[scene][best] = True
                continue
        fp[rank] = 1.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / float(npos) if npos else np.zeros_like(tp)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision), float(recall[-1]) if recall.size else 0.0


def detection_ap(samples: Sequence[DetectionSample | tuple],
                 iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict[str, Any]:
    """Per-class AP and recall at each IoU threshold, plus mAP and AR (keys `ap25`, `ap50`, ...)."""
    per_class_dets: dict[int, list[tuple[int, float, int, np.ndarray]]] = {}
    per_class_gt: dict[int, dict[int, int]] = {}
    for scene, sample in enumerate(samples):
        sample = DetectionSample(*sample)
        pred_boxes = _check_boxes(sample.pred_boxes, "pred boxes")
        gt_boxes = _check_boxes(sample.gt_boxes, "gt boxes")
        pred_labels = as_labels(sample.pred_labels, "pred labels")
        gt_labels = as_labels(sample.gt_labels, "gt labels")
        scores = np.asarray(sample.pred_scores, dtype=np.float64).reshape(-1)
        if len(pred_labels) != len(pred_boxes) or len(scores) != len(pred_boxes):
            raise ValueError(f"{len(pred_boxes)} predicted boxes but {len(pred_labels)} labels "
                             f"and {len(scores)} scores")
        if len(gt_labels) != len(gt_boxes):
            raise ValueError(f"{len(gt_boxes)} ground-truth boxes but {len(gt_labels)} labels")
        ious = box_iou_3d(torch.from_numpy(pred_boxes), torch.from_numpy(gt_boxes)).numpy()
        for cls in np.unique(np.concatenate([pred_labels, gt_labels])):
            cls = int(cls)
            gt_of_class = gt_labels == cls
            per_class_gt.setdefault(cls, {})[scene] = int(gt_of_class.sum())
            dets = per_class_dets.setdefault(cls, [])
            for k in np.nonzero(pred_labels == cls)[0]:
                dets.append((scene, float(scores[k]), int(k), ious[k, gt_of_class]))
    classes = sorted(per_class_gt)
    result: dict[str, Any] = {"classes": classes, "iou_thresholds": [float(t) for t in iou_thresholds]}
    for threshold in iou_thresholds:
        key = f"{int(round(threshold * 100))}"
        aps, recalls = [], []
        for cls in classes:
            ap, rec = eval_det_class(per_class_dets.get(cls, []), per_class_gt[cls], threshold)
            aps.append(ap)
            recalls.append(rec)
        result[f"ap{key}"] = float(np.mean(aps)) if aps else float("nan")
        result[f"ar{key}"] = float(np.mean(recalls)) if recalls else float("nan")
        result[f"per_class_ap{key}"] = aps
        result[f"per_class_recall{key}"] = recalls
    result["num_gt"] = [int(sum(per_class_gt[c].values())) for c in classes]
    return result
