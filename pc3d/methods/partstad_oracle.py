"""The oracle detector of PartSTAD's offline studies: boxes of the true part instances in every rendered view, made
as noisy as a detector's on request (wrong labels, jittered corners, spurious boxes).

What the weight network may learn from must not be the answer. PartSTAD's box feature is GLIP's visual feature at
the anchor that produced the box: what the box region looks like, not whether its label is right. The oracle's box
feature is therefore built only from what a detector's feature also sees -- image statistics of the box region on
the rendered view and the box's geometry among the other boxes -- never from the box's label or from whether it is
right; and its confidence is drawn from one distribution for every box (`oracle_score_signal` > 0 ranks right
boxes higher, only for studies of score weighting: the weight network never sees the score).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pc3d.config.partstad import DetectorConfig
from pc3d.methods.partstad_render import Views

# the columns of an oracle box feature, in order (tests and the README's study read them by name)
ORACLE_FEATURES: tuple[str, ...] = (
    "fill",  # share of the box's pixels that show the object
    "mean_r", "mean_g", "mean_b",  # mean colour of those pixels
    "std_r", "std_g", "std_b",  # their colour spread (shading on colourless renders, texture on coloured ones)
    "edge_density",  # share of the box's object pixels at a colour edge (a neighbour differs by > EDGE_STEP)
    "area",  # box area / image area
    "log_aspect",  # log(width / height)
    "centre_x", "centre_y",  # box centre relative to the object's 2-D extent in this view (0..1 inside)
    "object_share",  # share of the object's pixels in this view that lie inside the box
    "inside_object",  # share of the box's area inside the object's 2-D extent
    "max_iou",  # largest IoU with another box of the same view
    "overlapping",  # other boxes of the view meeting it with IoU > 0.1, / 10
)
ORACLE_STATS = len(ORACLE_FEATURES)
EDGE_STEP = 0.1  # colour step (0..1 per channel, max over channels) that counts as an edge


def oracle_feature_dim(num_parts: int) -> int:
    """Size of an oracle box feature: the same for any part list (the feature never names a part)."""
    del num_parts
    return ORACLE_STATS


def oracle_detections(views: Views, semantic: np.ndarray, instance: np.ndarray, num_parts: int,
                      cfg: DetectorConfig, seed: int = 0) -> list[Any]:
    """Per view, `Detections` of the true part instances (tight boxes of their visible points, >= 3 points),
    optionally noisy: `oracle_label_noise` names a wrong part, `oracle_jitter` moves corners by that fraction of
    the box size, `oracle_extra` adds Poisson-many spurious boxes with random labels inside the object's extent.
    Confidence = 0.5 + 0.5 u with u ~ Beta(1 + s, 1) for right boxes and Beta(1, 1 + s) for wrong ones,
    s = `oracle_score_signal` (default 0: u uniform, the same for every box). Feature: `ORACLE_FEATURES`."""
    from pc3d.foundation.detector import Detections

    rng = np.random.default_rng([cfg.oracle_seed, seed])
    size = views.images.shape[1]
    out = []
    for v in range(len(views.images)):
        vis = views.visible[v].numpy()
        uv = views.uv[v].numpy()
        boxes, labels, wrong = [], [], []
        keys = np.unique(np.stack([semantic[vis], instance[vis]], 1), axis=0) if vis.any() else np.zeros((0, 2))
        for part, inst in keys:
            if part < 0:
                continue
            member = vis & (semantic == part) & (instance == inst)
            if member.sum() < 3:
                continue
            lo, hi = uv[member].min(0), uv[member].max(0) + 1
            boxes.append(np.concatenate([lo, hi]))
            labels.append(int(part))
            wrong.append(False)
        if vis.any() and cfg.oracle_extra > 0:  # spurious boxes inside the object's extent
            lo, hi = uv[vis].min(0), uv[vis].max(0) + 1
            for _ in range(rng.poisson(cfg.oracle_extra)):
                a, b = rng.uniform(lo, hi), rng.uniform(lo, hi)
                boxes.append(np.concatenate([np.minimum(a, b), np.maximum(a, b)]))
                labels.append(int(rng.integers(num_parts)))
                wrong.append(True)
        boxes_np = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        labels_np = np.array(labels, dtype=np.int64)
        wrong_np = np.array(wrong, dtype=bool)
        if len(boxes_np) and cfg.oracle_jitter > 0:
            extent = np.concatenate([boxes_np[:, 2:] - boxes_np[:, :2]] * 2, 1)
            boxes_np = boxes_np + rng.normal(0, cfg.oracle_jitter, boxes_np.shape) * extent
            boxes_np = np.concatenate([np.minimum(boxes_np[:, :2], boxes_np[:, 2:]),
                                       np.maximum(boxes_np[:, :2], boxes_np[:, 2:])], 1)
        if len(labels_np) and cfg.oracle_label_noise > 0 and num_parts > 1:
            flip = rng.random(len(labels_np)) < cfg.oracle_label_noise
            shift = rng.integers(1, num_parts, len(labels_np))
            labels_np = np.where(flip, (labels_np + shift) % num_parts, labels_np)
            wrong_np |= flip
        boxes_np = np.clip(boxes_np, 0, size)
        ok = (boxes_np[:, 2] - boxes_np[:, 0] >= 1) & (boxes_np[:, 3] - boxes_np[:, 1] >= 1)
        boxes_np, labels_np, wrong_np = boxes_np[ok], labels_np[ok], wrong_np[ok]
        # inverse CDFs of Beta(1+s, 1) and Beta(1, 1+s) on one uniform draw: s changes the scores, never the boxes
        uniform, power = rng.random(len(labels_np)), 1.0 / (1.0 + cfg.oracle_score_signal)
        u = np.where(wrong_np, 1.0 - (1.0 - uniform) ** power, uniform ** power)
        scores = 0.5 + 0.5 * u  # above GLIP's 0.5 threshold, as every kept detection
        feats = box_image_features(views.images[v], views.index[v].numpy(), boxes_np)
        out.append(Detections(torch.as_tensor(boxes_np).float(), torch.as_tensor(scores).float(),
                              torch.as_tensor(labels_np).long(), torch.as_tensor(feats).float()))
    return out


def box_image_features(image: np.ndarray, index: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(K, ORACLE_STATS) features of xyxy `boxes` on one rendered view: its image (H,W,3) uint8 and point-index map
    (H,W), -1 = background. Depends on the pixels and the boxes only, never on labels."""
    if len(boxes) == 0:
        return np.zeros((0, ORACLE_STATS))
    height, width = index.shape
    rgb = image.astype(np.float64) / 255
    obj = index >= 0
    # a pixel is at an edge when its right or lower neighbour (object or background) differs by > EDGE_STEP
    step = np.zeros((height, width), bool)
    step[:, :-1] |= np.abs(rgb[:, 1:] - rgb[:, :-1]).max(-1) > EDGE_STEP
    step[:-1] |= np.abs(rgb[1:] - rgb[:-1]).max(-1) > EDGE_STEP
    if obj.any():
        rows, cols = np.nonzero(obj)
        ext = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float64)
    else:
        ext = np.array([0.0, 0.0, width, height])
    ext_w, ext_h = max(ext[2] - ext[0], 1.0), max(ext[3] - ext[1], 1.0)
    total_obj = max(int(obj.sum()), 1)
    iou = _iou_matrix(boxes)
    np.fill_diagonal(iou, 0.0)
    out = np.zeros((len(boxes), ORACLE_STATS))
    for k, box in enumerate(boxes):
        x1, y1 = int(np.clip(math.floor(box[0]), 0, width - 1)), int(np.clip(math.floor(box[1]), 0, height - 1))
        x2, y2 = int(np.clip(math.ceil(box[2]), x1 + 1, width)), int(np.clip(math.ceil(box[3]), y1 + 1, height))
        crop_obj = obj[y1:y2, x1:x2]
        pixels = rgb[y1:y2, x1:x2][crop_obj]
        fill = crop_obj.mean()
        mean = pixels.mean(0) if len(pixels) else np.zeros(3)
        std = pixels.std(0) if len(pixels) else np.zeros(3)
        edges = step[y1:y2, x1:x2][crop_obj].mean() if len(pixels) else 0.0
        w, h = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
        inter_w = max(min(box[2], ext[2]) - max(box[0], ext[0]), 0.0)
        inter_h = max(min(box[3], ext[3]) - max(box[1], ext[1]), 0.0)
        out[k] = [fill, *mean, *std, edges, w * h / (width * height), math.log(w / h),
                  ((box[0] + box[2]) / 2 - ext[0]) / ext_w, ((box[1] + box[3]) / 2 - ext[1]) / ext_h,
                  len(pixels) / total_obj, inter_w * inter_h / (w * h), iou[k].max(initial=0.0),
                  (iou[k] > 0.1).sum() / 10]
    return out


def _iou_matrix(boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(-1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
