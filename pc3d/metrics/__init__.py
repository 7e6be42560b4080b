"""Evaluation metrics of the five papers, matching the field's official scripts.

One function per metric; numpy arrays in, plain dicts (floats, lists; None where undefined) out.
"""

from __future__ import annotations

from pc3d.metrics.classification import aggregate_votes, classification_metrics, confusion_matrix
from pc3d.metrics.detection import DetectionSample, detection_ap, voc_ap
from pc3d.metrics.instance import InstanceScene, instance_ap
from pc3d.metrics.panoptic import PanopticSample, panoptic_metrics
from pc3d.metrics.partnet import PartInstanceSample, part_map, partnet_miou
from pc3d.metrics.partseg import SHAPENETPART_CATEGORIES, SHAPENETPART_PARTS, restrict_to_category, shapenetpart_miou
from pc3d.metrics.semseg import harmonic_iou, semantic_confusion, semseg_metrics, zeroshot_metrics

__all__ = [
    "SHAPENETPART_CATEGORIES",
    "SHAPENETPART_PARTS",
    "DetectionSample",
    "InstanceScene",
    "PanopticSample",
    "PartInstanceSample",
    "aggregate_votes",
    "classification_metrics",
    "confusion_matrix",
    "detection_ap",
    "harmonic_iou",
    "instance_ap",
    "panoptic_metrics",
    "part_map",
    "partnet_miou",
    "restrict_to_category",
    "semantic_confusion",
    "semseg_metrics",
    "shapenetpart_miou",
    "voc_ap",
    "zeroshot_metrics",
]
