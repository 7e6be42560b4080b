"""PartSTAD's 2-D stage: text-prompted part boxes in every rendered view, and optionally SAM masks of them.

Not the paper's contribution (PartSTAD takes PartSLIP's GLIP boxes; pc3d runs Grounding DINO or OWLv2 through
`pc3d.foundation`). The oracle detector (`partstad_oracle`) stands in for a real one in offline studies of the
3-D side: the true parts' boxes, made as noisy as a detector's on request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pc3d import console as con
from pc3d.config.partstad import DetectorConfig, PartstadSections
from pc3d.errors import InputError
from pc3d.methods.partstad_oracle import oracle_detections, oracle_feature_dim
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


def detector_spec(cfg: DetectorConfig) -> str:
    """Where the detector's weights come from: an adapted detector (`detector.weights`, from `pc3d finetune
    partstad-detector`), else the tiny random one, else `detector.model`."""
    from pc3d.foundation.detector import adapted_detector_folder, write_tiny_random_detector

    if cfg.weights:
        spec = adapted_detector_folder(cfg.weights, cfg.kind)
        con.info(f"adapted detector: {spec}")
        return spec
    if cfg.tiny_random:
        con.info("[yellow]tiny-random detector: random weights, its part labels are meaningless[/yellow]")
        return write_tiny_random_detector(cfg.kind)
    return cfg.model


class TwoDModels:
    """The detector and SAM of a preset, built once (weights through pc3d.foundation.hub)."""

    def __init__(self, cfg: PartstadSections, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.detector = None
        self.sam = None
        self.adapted: dict[str, Any] = {}
        self._warned_parts = False
        if cfg.detector.kind != "oracle":
            from pc3d.foundation.detector import adapted_detector_info, build_detector

            spec = detector_spec(cfg.detector)
            self.adapted = adapted_detector_info(spec) if cfg.detector.weights else {}
            size = self.adapted.get("render_size")
            if size is not None and size != cfg.render.image_size:
                # boxes were learnt on views of that size: parts appear at another scale in other renders
                con.warn(f"the adapted detector was trained on {size}-px renders; this run renders "
                         f"{cfg.render.image_size} px (--set render.image_size={size} matches it)")
            self.detector = build_detector(cfg.detector.kind, spec, device, cfg.detector.batch_views,
                                           cfg.detector.nms_iou, cfg.detector.max_boxes)
        if cfg.sam.enabled:
            from pc3d.foundation.sam import SamBoxSegmenter, write_tiny_random_sam

            spec = write_tiny_random_sam() if cfg.sam.tiny_random else cfg.sam.model
            self.sam = SamBoxSegmenter(spec, device, cfg.sam.batch_views)

    def _check_adapted_parts(self, parts: Sequence[str]) -> None:
        """Warn once when the parts asked for are not the ones the detector was adapted on: the adapted prompt
        and heads learnt those phrases in that order, other phrases get its zero-shot behaviour."""
        adapted = self.adapted.get("parts")
        if self._warned_parts or not adapted or list(adapted) == list(parts):
            return
        self._warned_parts = True
        con.warn(f"the adapted detector was trained on the parts {', '.join(adapted)} "
                 f"({self.adapted.get('category', '?')}); this run asks for {', '.join(parts)}")

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
            self._check_adapted_parts(parts)
            per_view = self.detector.detect(views.images, parts, self.cfg.detector.threshold)
        masks = None
        if self.sam is not None:
            masks = self.sam.masks(views.images, [d.boxes for d in per_view])
        return ViewDetections.from_views(per_view, self.feature_dim(len(parts)), masks)
