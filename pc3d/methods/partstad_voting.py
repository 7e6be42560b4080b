"""PartSLIP's `bbox2seg` on pc3d's data: which visible point of which superpoint lies in which box (the votes),
the label rule, and instance merging.

PartSTAD keeps PartSLIP's voting data and replaces its unit box weights (`pc3d.methods.partstad`); the edge rules
here follow the released bbox2seg, each pinned by a test in tests/test_partstad_voting.py:
  * a point on a box border is outside the box (strict inequalities);
  * the share of a superpoint's visible points divides by (visible + 1e-6), so a share of exactly 0.5 stays
    below the 0.5 threshold (`VISIBLE_EPS`, applied in `superpoint_scores`);
  * between two passing small parts the last-indexed one wins (`assign_labels`);
  * a superpoint votes for a box only where its 2-D box meets the box with IoU >= 1e-6 (`GATE_IOU`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pc3d.methods.partstad_detections import ViewDetections
from pc3d.methods.partstad_render import Views

GATE_IOU = 1e-6  # bbox2seg: get_iou(superpoint box, box) < 1e-6 -> the superpoint ignores the box in that view
VISIBLE_EPS = 1e-6  # bbox2seg: sem_score = in-box count / (visible count + 1e-6)


@dataclass
class ShapeVotes:
    """Everything the 3D side needs from the 2D side of one shape (what the few-shot cache stores)."""

    superpoint: Tensor  # (N,) int64
    sp_size: Tensor  # (S,) points per superpoint
    sp_visible: Tensor  # (S,) V_j: visible (point, view) pairs over all views
    entry_sp: Tensor  # (E,) superpoint of each (point, view) pair that lies in some box
    hit_entry: Tensor  # (H,) entry of each (pair, box) hit
    hit_box: Tensor  # (H,) box of each hit
    box_label: Tensor  # (B,) part index
    box_score: Tensor  # (B,)
    box_feature: Tensor  # (B,D)
    box_geometry: Tensor  # (B,7) view direction xyz, x1, y1, x2, y2 (/ image size)
    box_cover: Tensor  # (B,) share of all projected points inside the box (PartSLIP whole-object filter)
    box_view: Tensor  # (B,)
    box_xyxy: Tensor  # (B,4) pixels
    sp_box_ratio: Tensor  # (S,B) share of j's visible points (view of b) inside box b; -1 invisible; 0 apart
    sp_view_box: Tensor  # (S,V,4) 2-D box of j's visible points per view (nan where invisible)
    sp_extent: Tensor  # (S,6) 3-D axis-aligned box (min xyz, max xyz)
    num_parts: Tensor  # () int64

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name).numpy() for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ShapeVotes:
        return cls(**{f.name: torch.as_tensor(np.asarray(arrays[f.name])) for f in fields(cls)})


def strictly_inside(uv: Tensor, boxes: Tensor) -> Tensor:
    """(K,N): point n lies strictly inside box k. bbox2seg's `check_pc_within_bbox` uses > and <, so a point on
    a border is outside (it matters: tight boxes of a part's points have its extreme points on their borders)."""
    return ((uv[None, :, 0] > boxes[:, None, 0]) & (uv[None, :, 0] < boxes[:, None, 2])
            & (uv[None, :, 1] > boxes[:, None, 1]) & (uv[None, :, 1] < boxes[:, None, 3]))


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(A,B) IoU of xyxy boxes; 0 where the union has no area (bbox2seg's `get_iou`, degenerate boxes allowed:
    a superpoint with one visible point has a zero-area box, and its IoU with any box is 0)."""
    width = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_min(0)
    height = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_min(0)
    inter = width * height
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.where(union > 0, torch.ones_like(union)), torch.zeros_like(union))


def _pixels(uv: Tensor, size: int) -> Tensor:
    return torch.floor(uv).long().clamp(0, size - 1)


def build_votes(points: np.ndarray, superpoint: np.ndarray, views: Views, detections: ViewDetections,
                num_parts: int) -> ShapeVotes:
    """Point/box memberships (SAM mask when `detections.masks`, else the box, borders outside) of every visible
    point, gated by bbox2seg's rule that j's 2-D box must overlap box b (IoU >= 1e-6); plus what instance merging
    needs."""
    from pc3d.ops import scatter_max, scatter_min

    sp = torch.as_tensor(superpoint, dtype=torch.long)
    num_sp = int(sp.max()) + 1 if len(sp) else 0
    num_views, size = len(views.images), views.images.shape[1]
    num_boxes = len(detections.scores)
    sp_visible = torch.zeros(num_sp, dtype=torch.float64)
    sp_view_box = torch.full((num_sp, num_views, 4), float("nan"), dtype=torch.float64)
    ratio = torch.zeros(num_sp, num_boxes, dtype=torch.float64)
    cover = torch.zeros(num_boxes, dtype=torch.float64)
    entry_sp, hit_entry, hit_box = [], [], []
    entries = 0
    for v in range(num_views):
        vis = torch.nonzero(views.visible[v]).reshape(-1)
        box_ids = detections.in_view(v)
        uv_all = views.uv[v]
        boxes = detections.boxes[box_ids].double()
        inside_all = strictly_inside(uv_all, boxes)  # (K,N)
        cover[box_ids] = inside_all.double().mean(1) if len(uv_all) else cover[box_ids]
        if len(vis) == 0:
            ratio[:, box_ids] = -1
            continue
        sp_v = sp[vis]
        count = torch.bincount(sp_v, minlength=num_sp).double()
        sp_visible += count
        uv = uv_all[vis]
        low = torch.stack([scatter_min(uv[:, i], sp_v, dim_size=num_sp)[0] for i in range(2)], 1)
        high = torch.stack([scatter_max(uv[:, i], sp_v, dim_size=num_sp)[0] for i in range(2)], 1)
        seen = count > 0
        sp_view_box[seen, v] = torch.cat([low, high], 1)[seen]
        in_box = inside_all[:, vis]  # (K,n) box membership
        if detections.masks is not None:
            pix = _pixels(uv, size)
            member = detections.masks[v][:, pix[:, 1], pix[:, 0]]  # mask[y, x]
        else:
            member = in_box
        # gate: j votes for box b in this view only when the 2-D box of j's visible points meets b with
        # IoU >= GATE_IOU (bbox2seg's `get_iou(bb1, bb2) < 1e-6` -> ratio 0, no vote)
        overlap = (box_iou(torch.cat([low, high], 1), boxes) >= GATE_IOU) & seen[:, None]  # (S,K)
        gated = member & overlap.t()[:, sp_v]
        # instance merging uses box membership ratios
        in_count = torch.zeros(num_sp, len(box_ids), dtype=torch.float64).index_add_(0, sp_v, in_box.t().double())
        r = torch.where(seen[:, None], in_count / count.clamp_min(1)[:, None], torch.full_like(in_count, -1.0))
        ratio[:, box_ids] = torch.where(seen[:, None] & ~overlap, torch.zeros_like(r), r)
        has_hit = gated.any(0)
        local = torch.full((len(vis),), -1, dtype=torch.long)
        local[has_hit] = torch.arange(int(has_hit.sum())) + entries
        entry_sp.append(sp_v[has_hit])
        b_idx, p_idx = torch.nonzero(gated, as_tuple=True)
        hit_entry.append(local[p_idx])
        hit_box.append(box_ids[b_idx])
        entries += int(has_hit.sum())
    p = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    extent = torch.cat([torch.stack([scatter_min(p[:, i], sp, dim_size=num_sp)[0] for i in range(3)], 1),
                        torch.stack([scatter_max(p[:, i], sp, dim_size=num_sp)[0] for i in range(3)], 1)], 1)
    boxes_n = detections.boxes.double() / size
    geometry = torch.cat([views.directions.double()[detections.view], boxes_n], 1) if num_boxes \
        else torch.zeros(0, 7, dtype=torch.float64)
    cat = lambda parts: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)  # noqa: E731
    return ShapeVotes(
        superpoint=sp, sp_size=torch.bincount(sp, minlength=num_sp).double(), sp_visible=sp_visible,
        entry_sp=cat(entry_sp), hit_entry=cat(hit_entry), hit_box=cat(hit_box), box_label=detections.labels.long(),
        box_score=detections.scores.double(), box_feature=detections.features.float(), box_geometry=geometry.float(),
        box_cover=cover, box_view=detections.view.long(), box_xyxy=detections.boxes.double(), sp_box_ratio=ratio,
        sp_view_box=sp_view_box, sp_extent=extent, num_parts=torch.tensor(num_parts))


def assign_labels(scores: Tensor, valid: Tensor, threshold: float, small: Sequence[bool]) -> Tensor:
    """(S,) part index or -1, bbox2seg's rule (the released code; the paper writes an argmax):

    a superpoint whose best score is below `threshold` (0.5: a share of its visible points, or PartSTAD's
    probability) stays unlabelled; otherwise the LAST-indexed small part (handle, button, wheel, ...) whose score
    passes wins -- bbox2seg scans the parts in reverse and stops at the first small one, so between two passing
    small parts the later one in the part list wins, not the higher-scoring one; without a passing small part the
    highest score wins (argmax: the first of equal best)."""
    scores = scores.detach()
    passing = (scores >= threshold) & valid[:, None]
    small_t = torch.as_tensor(list(small), dtype=torch.bool)
    small_pass = passing & small_t[None, :]
    column = torch.arange(scores.shape[1]).expand_as(scores)
    last_small = torch.where(small_pass, column, torch.full_like(column, -1)).max(1).values
    best = torch.where(passing, scores, torch.full_like(scores, -math.inf)).argmax(1)
    labels = torch.where(small_pass.any(1), last_small, best)
    return torch.where(passing.any(1), labels, torch.full_like(labels, -1))


def merge_instances(votes: ShapeVotes, sp_labels: Tensor, confidence: Tensor, adjacency: float = 0.02,
                    max_dis: float = 0.2, max_size_ratio: float = 100.0, keep_iou: float = 0.5,
                    whole_object: float = 0.98) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bbox2seg's instance step: per part, union two superpoints of that part when their 3-D boxes are closer
    than `adjacency`, their sizes differ by less than `max_size_ratio` times, and their in-box ratios over the
    part's boxes (those not covering the whole object, as for the votes) differ by less than `max_dis` (L1
    distance / the larger ratio sum); keep a union when, in some view, its visible points' 2-D box meets a box of
    its part (whole-object ones too) with IoU > `keep_iou`.
    Returns masks (K,N) bool, labels (K,), scores (K,) = size-weighted mean confidence of their part."""
    labels = sp_labels.numpy()
    extent = votes.sp_extent.numpy()
    ratio = votes.sp_box_ratio.numpy()
    sizes = votes.sp_size.numpy()
    box_label = votes.box_label.numpy()
    cover = votes.box_cover.numpy()
    masks, out_labels, scores = [], [], []
    sp_of_point = votes.superpoint.numpy()
    for part in np.unique(labels[labels >= 0]):
        members = np.nonzero(labels == part)[0]
        part_boxes = np.nonzero(box_label == part)[0]
        ratio_boxes = np.nonzero((box_label == part) & (cover < whole_object))[0]
        parent = {int(j): int(j) for j in members}
        root = _union_find_root(parent)
        for a_i, a in enumerate(members):
            for b in members[a_i + 1:]:
                gap = np.maximum(extent[a, :3] - extent[b, 3:], extent[b, :3] - extent[a, 3:]).max()
                if gap >= adjacency or max(sizes[a], sizes[b]) / max(min(sizes[a], sizes[b]), 1) >= max_size_ratio:
                    continue
                ra, rb = ratio[a, ratio_boxes], ratio[b, ratio_boxes]
                both = (ra >= 0) & (rb >= 0)  # -1: invisible in that box's view
                denominator = max(ra[both].sum(), rb[both].sum()) if both.any() else 0.0
                # nearly empty ratios say nothing: bbox2seg calls them far apart (dis = 1) below 1e-3
                dis = np.abs(ra[both] - rb[both]).sum() / denominator if denominator >= 1e-3 else 1.0
                if dis < max_dis:
                    parent[root(int(a))] = root(int(b))
        groups: dict[int, list[int]] = {}
        for j in members:
            groups.setdefault(root(int(j)), []).append(int(j))
        for group in groups.values():
            if not _matches_a_box(votes, group, part_boxes, keep_iou):
                continue
            masks.append(np.isin(sp_of_point, group))
            weight = sizes[group]
            scores.append(float((confidence[group, part].numpy() * weight).sum() / weight.sum()))
            out_labels.append(int(part))
    n = len(sp_of_point)
    return (np.array(masks, dtype=bool).reshape(-1, n), np.array(out_labels, np.int64), np.array(scores))


def _union_find_root(parent: dict[int, int]) -> Any:
    def root(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]  # path halving
            j = parent[j]
        return j

    return root


def _matches_a_box(votes: ShapeVotes, group: list[int], part_boxes: np.ndarray, keep_iou: float) -> bool:
    view_box = votes.sp_view_box.numpy()[group]  # (G,V,4)
    for b in part_boxes:
        v = int(votes.box_view[b])
        seen = ~np.isnan(view_box[:, v, 0])
        if not seen.any():
            continue
        lo, hi = view_box[seen, v, :2].min(0), view_box[seen, v, 2:].max(0)
        box = votes.box_xyxy[b].numpy()
        inter = np.prod(np.clip(np.minimum(hi, box[2:]) - np.maximum(lo, box[:2]), 0, None))
        union = np.prod(hi - lo) + np.prod(box[2:] - box[:2]) - inter
        if union > 0 and inter / union > keep_iou:
            return True
    return False

