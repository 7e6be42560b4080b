"""Axis-aligned 3D boxes in plain torch: conversions, exact IoU / GIoU, NMS, Hungarian matching.

A box is a (..., 6) tensor `cx, cy, cz, dx, dy, dz` (centre and full edge lengths, sizes >= 0).

Degenerate cases are defined, never NaN:
- touching boxes (shared face, edge or corner) have IoU 0; their GIoU is -(C - U) / C as usual;
- a zero-volume box (some size 0) has IoU 0 with every box, except that two *identical* boxes
  have IoU 1 and GIoU 1 whatever their volume (a perfect match stays a perfect match, which is
  also the limit of shrinking two identical boxes to zero volume);
- when the enclosing box has zero volume (two flat boxes in one plane) the enclosing penalty is 0,
  so GIoU = IoU.
Gradients are finite everywhere (denominators are clamped before dividing, unused branches of
`torch.where` never see 0/0).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "box_corners",
    "box_from_minmax",
    "box_iou_3d",
    "box_to_minmax",
    "box_volume",
    "boxes_from_points",
    "generalized_box_iou_3d",
    "hungarian_match",
    "nms_3d",
    "paired_giou",
]

# corner k has sign bit 2 (x), bit 1 (y), bit 0 (z): 0 = min side, 1 = max side
_CORNER_SIGNS = torch.tensor([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], dtype=torch.float64) * 2 - 1


def box_to_minmax(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 6) centre/size -> (..., 6) `x0, y0, z0, x1, y1, z1`."""
    centre, size = boxes[..., :3], boxes[..., 3:6]
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def box_from_minmax(minmax: torch.Tensor) -> torch.Tensor:
    """(..., 6) `x0, y0, z0, x1, y1, z1` -> (..., 6) centre/size."""
    low, high = minmax[..., :3], minmax[..., 3:6]
    return torch.cat([(low + high) / 2, high - low], dim=-1)


def box_volume(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (...,) volume dx * dy * dz."""
    return boxes[..., 3:6].prod(dim=-1)


def box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 8, 3). Corner k takes the max side on x if bit 2 of k is set, y bit 1, z bit 0."""
    signs = _CORNER_SIGNS.to(device=boxes.device, dtype=boxes.dtype)
    return boxes[..., None, :3] + signs * (boxes[..., None, 3:6] / 2)


def boxes_from_points(points: torch.Tensor, instance: torch.Tensor,
                      ignore: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight axis-aligned box of every instance: points (N, 3), instance (N,) int.

    Returns boxes (K, 6) in the points' dtype and the instance ids (K,) they belong to, sorted;
    points labelled `ignore` belong to no box. A one-point instance gives a zero-size box.
    """
    if points.ndim != 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    if instance.shape != points.shape[:1]:
        raise ValueError(f"instance must be ({points.shape[0]},), got {tuple(instance.shape)}")
    keep = instance != ignore
    ids, inverse = torch.unique(instance[keep], sorted=True, return_inverse=True)
    pts = points[keep]
    index = inverse[:, None].expand(-1, 3)
    low = torch.full((len(ids), 3), float("inf"), dtype=points.dtype, device=points.device)
    high = torch.full((len(ids), 3), float("-inf"), dtype=points.dtype, device=points.device)
    low = low.scatter_reduce(0, index, pts, reduce="amin", include_self=True)
    high = high.scatter_reduce(0, index, pts, reduce="amax", include_self=True)
    return box_from_minmax(torch.cat([low, high], dim=-1)), ids


def _iou_and_giou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise IoU and GIoU of broadcastable (..., 6) box tensors."""
    a_mm, b_mm = box_to_minmax(a), box_to_minmax(b)
    a_low, a_high, b_low, b_high = a_mm[..., :3], a_mm[..., 3:], b_mm[..., :3], b_mm[..., 3:]
    inter = (torch.minimum(a_high, b_high) - torch.maximum(a_low, b_low)).clamp(min=0).prod(dim=-1)
    # volumes from the same min/max edges as the intersection, so nested and identical boxes give
    # exact ratios (inter == volume bit for bit); vb - inter is 0 exactly for b inside a
    volume_a = (a_high - a_low).prod(dim=-1)
    volume_b = (b_high - b_low).prod(dim=-1)
    union = volume_a + (volume_b - inter)
    hull = (torch.maximum(a_high, b_high) - torch.minimum(a_low, b_low)).prod(dim=-1)
    tiny = torch.finfo(union.dtype).tiny
    positive_union = union > 0
    iou = torch.where(positive_union, inter / union.clamp(min=tiny), torch.zeros_like(union))
    penalty = torch.where(hull > 0, (hull - union) / hull.clamp(min=tiny), torch.zeros_like(hull))
    giou = iou - penalty
    # identical boxes match perfectly even when flat (see module docstring)
    identical = (a == b).all(dim=-1) & ~positive_union
    one = torch.ones_like(iou)
    return torch.where(identical, one, iou), torch.where(identical, one, giou)


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.ndim != 2 or b.ndim != 2 or a.shape[-1] != 6 or b.shape[-1] != 6:
        raise ValueError(f"boxes must be (N, 6) and (M, 6), got {tuple(a.shape)} and {tuple(b.shape)}")
    return _iou_and_giou(a[:, None, :], b[None, :, :])


def box_iou_3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact IoU of every pair: a (N, 6), b (M, 6) -> (N, M)."""
    return _pairwise(a, b)[0]


def generalized_box_iou_3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU = IoU - (C - U) / C of every pair (C: smallest enclosing box): (N, 6), (M, 6) -> (N, M).

    Differentiable with respect to both inputs; values lie in [-1, 1]."""
    return _pairwise(a, b)[1]


def paired_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of matched pairs: a (N, 6), b (N, 6) -> (N,) (the DETR-style box loss uses 1 - this)."""
    if a.shape != b.shape or a.shape[-1] != 6:
        raise ValueError(f"paired boxes must have equal (N, 6) shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _iou_and_giou(a, b)[1]


def nms_3d(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
           labels: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression: keep the best-scoring box, drop boxes with IoU > threshold.

    With `labels`, boxes only suppress boxes of the same label (per-class NMS, as VoteNet/3DETR's
    `cls_nms`). Ties in score keep the earlier box. Returns kept indices, best score first.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 6 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms_3d needs boxes (N, 6) and scores (N,), got {tuple(boxes.shape)}, "
                         f"{tuple(scores.shape)}")
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    with torch.no_grad():
        overlap = box_iou_3d(boxes[order], boxes[order]) > iou_threshold
        if labels is not None:
            ordered_labels = labels[order]
            overlap &= ordered_labels[:, None] == ordered_labels[None, :]
    overlap = overlap.cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlap[i]
    return order[torch.as_tensor(kept, dtype=torch.long, device=boxes.device)]


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a (N, M) cost matrix (scipy's linear_sum_assignment).

    Returns (rows, cols) LongTensors of length min(N, M) on the cost's device, rows ascending."""
    if cost.ndim != 2:
        raise ValueError(f"cost must be (N, M), got {tuple(cost.shape)}")
    matrix = cost.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(matrix).all():
        raise ValueError("cost matrix contains NaN or inf")
    rows, cols = linear_sum_assignment(matrix)
    return (torch.as_tensor(rows, dtype=torch.long, device=cost.device),
            torch.as_tensor(cols, dtype=torch.long, device=cost.device))
