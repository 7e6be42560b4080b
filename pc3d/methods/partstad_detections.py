"""PartSTAD's 2-D stage: text-prompted part boxes in every rendered view, and optionally SAM masks of them.

Not the paper's contribution (PartSTAD takes PartSLIP's GLIP boxes; pc3d runs Grounding DINO or OWLv2 through
`pc3d.foundation`). The oracle detector stands in for a real one in offline studies of the 3-D side: the true
parts' boxes, made as noisy as a detector's on request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pc3d import console as con
from pc3d.config.partstad import DetectorConfig, PartstadSections
from pc3d.errors import InputError
from pc3d.methods.partstad_render import Views


@dataclass
class ViewDetections:
    """Boxes of all views of a shape, concatenated; masks only when SAM ran."""

    boxes: Tensor  # (B,4) xyxy pixels
    scores: Tensor  # (B,)
    labels: Tensor  # (B,) part index
    features: Tensor  # (B,D)
    view: Tensor  # (B,) view index
    masks: list[Tensor] | None  # per view (K_v,H,W) bool

    @classmethod
    def from_views(cls, per_view: Sequence[Any], feature_dim: int, masks: list[Tensor] | None = None
                   ) -> ViewDetections:
        view = torch.cat([torch.full((len(d),), v, dtype=torch.long) for v, d in enumerate(per_view)]) \
            if per_view else torch.zeros(0, dtype=torch.long)
        cat = lambda name, empty: torch.cat([getattr(d, name) for d in per_view]) if per_view else empty  # noqa: E731
        return cls(cat("boxes", torch.zeros(0, 4)), cat("scores", torch.zeros(0)),
                   cat("labels", torch.zeros(0, dtype=torch.long)), cat("features", torch.zeros(0, feature_dim)),
                   view, masks)

    def in_view(self, v: int) -> Tensor:
        return torch.nonzero(self.view == v).reshape(-1)


ORACLE_STATS = 10  # image statistics appended to the one-hot label and score in oracle box features


def oracle_feature_dim(num_parts: int) -> int:
    return num_parts + 1 + ORACLE_STATS


def oracle_detections(views: Views, semantic: np.ndarray, instance: np.ndarray, num_parts: int,
                      cfg: DetectorConfig, seed: int = 0) -> list[Any]:
    """Boxes of the true part instances in every view (tight boxes of their visible points), optionally noisy:
    wrong labels, jittered corners, spurious boxes. Like a real detector's, the confidence tells right from wrong
    boxes only on average: score = 0.5 + 0.5 u with u ~ Beta(1 + s, 1) for right boxes and Beta(1, 1 + s) for
    wrong-label and spurious ones (s = `oracle_score_signal`; 0: uniform scores that say nothing).
    Feature = [one-hot label, score, box image statistics]: a detector's box feature determines its score (Grounding
    DINO / OWLv2 / GLIP score = feature . text embedding), so the oracle's feature carries it."""
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
        feats = np.stack([_box_statistics(views.images[v], box, size) for box in boxes_np]) if len(boxes_np) \
            else np.zeros((0, ORACLE_STATS))
        onehot = np.eye(num_parts)[labels_np] if len(labels_np) else np.zeros((0, num_parts))
        out.append(Detections(torch.as_tensor(boxes_np).float(), torch.as_tensor(scores).float(),
                              torch.as_tensor(labels_np).long(),
                              torch.as_tensor(np.hstack([onehot, scores[:, None], feats])).float()))
    return out


def _box_statistics(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """What a box shows: share of object pixels, mean and std colour of them, width, height, log aspect."""
    x1, y1, x2, y2 = (int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3])))
    crop = image[max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)].reshape(-1, 3).astype(np.float64) / 255
    fg = crop[(crop < 0.999).any(1)] if len(crop) else crop
    fill = len(fg) / max(len(crop), 1)
    mean = fg.mean(0) if len(fg) else np.zeros(3)
    std = fg.std(0) if len(fg) else np.zeros(3)
    w, h = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
    return np.concatenate([[fill], mean, std, [w / size, h / size, math.log(w / h)]])



class TwoDModels:
    """The detector and SAM of a preset, built once (weights through pc3d.foundation.hub)."""

    def __init__(self, cfg: PartstadSections, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.detector = None
        self.sam = None
        if cfg.detector.kind != "oracle":
            from pc3d.foundation.detector import build_detector, write_tiny_random_detector

            spec = write_tiny_random_detector(cfg.detector.kind) if cfg.detector.tiny_random else cfg.detector.model
            if cfg.detector.tiny_random:
                con.info("[yellow]tiny-random detector: random weights, its part labels are meaningless[/yellow]")
            self.detector = build_detector(cfg.detector.kind, spec, device, cfg.detector.batch_views,
                                           cfg.detector.nms_iou, cfg.detector.max_boxes)
        if cfg.sam.enabled:
            from pc3d.foundation.sam import SamBoxSegmenter, write_tiny_random_sam

            spec = write_tiny_random_sam() if cfg.sam.tiny_random else cfg.sam.model
            self.sam = SamBoxSegmenter(spec, device, cfg.sam.batch_views)

    def feature_dim(self, num_parts: int) -> int:
        return self.detector.feature_dim if self.detector is not None else oracle_feature_dim(num_parts)

    def detect(self, views: Views, parts: Sequence[str], truth: tuple[np.ndarray, np.ndarray] | None,
               seed: int = 0) -> ViewDetections:
        if self.detector is None:
            if truth is None:
                raise InputError("the oracle detector needs per-point part labels in the input (a synthetic shape "
                                 "with a 'part' field, or a PartNetE pc.ply with its label.npy)")
            per_view = oracle_detections(views, truth[0], truth[1], len(parts), self.cfg.detector, seed)
        else:
            per_view = self.detector.detect(views.images, parts, self.cfg.detector.threshold)
        masks = None
        if self.sam is not None:
            masks = self.sam.masks(views.images, [d.boxes for d in per_view])
        return ViewDetections.from_views(per_view, self.feature_dim(len(parts)), masks)
