"""PartSTAD: few-shot 3D part segmentation by 2D box voting with learned box weights (on PartSLIP).

Per shape (`prepare_shape`):
  1. normalise to the unit sphere; render 10 fixed views with pc3d's rasteriser (`render_views`): image,
     per-pixel point index, per-point visibility and screen coordinates;
  2. detect text-prompted part boxes in every view (Grounding DINO / OWLv2 / oracle: true part boxes with
     detector-like noise and confidences) and, optionally, SAM masks;
  3. oversegment the cloud into superpoints (`superpoints`: normals, kNN graph, geometry+colour edge weights,
     L0 cut pursuit or region-growing graph partition, small components merged);
  4. record which visible point of which superpoint falls in which box / mask (`ShapeVotes`).
Then (`superpoint_scores` -> `assign_labels`):
  s_jc = (1/V_j) sum_v sum_{p in j visible in v} max_{b in v, label c} [p in b] w_b ,
with w_b = 1 (PartSLIP voting), tau x detector score, or the PartSTAD weight network
w_b = ReLU(tau + MLP_CN([feature_b, PE(view dir, box)])); P_j = softmax([max(w_0, 5e-4), s_j1..s_jC]).
Training (`pc3d finetune partstad-fewshot`) minimises the relaxed mIoU loss on the 8 few-shot shapes of a
category, with the 2D outputs cached per shape; `assign_labels` thresholds P (small parts first) and
`merge_instances` groups superpoints into part instances (PartSLIP).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pc3d import console as con
from pc3d.config.partstad import (
    DetectorConfig,
    NetworkConfig,
    PartstadFewShotPreset,
    PartstadSections,
    PartstadSegmentPreset,
    RenderConfig,
    SuperpointConfig,
    VotingConfig,
)
from pc3d.engine.device import resolve_device
from pc3d.engine.method import Method, StepState
from pc3d.errors import InputError
from pc3d.runs import RunRequest

NULL_FLOOR = 5e-4  # PartSTAD: the null score never drops below this
BACKGROUND = 1.0  # white, as PartSLIP renders
DEFAULT_GREY = 0.6  # colour of points when the file has none

# ================================================================ 1. rendering


@dataclass
class Views:
    images: np.ndarray  # (V,H,W,3) uint8 renders, white background
    index: Tensor  # (V,H,W) int64 point index per pixel, -1 = background
    visible: Tensor  # (V,N) bool: the point wins at least one pixel of view v
    uv: Tensor  # (V,N,2) float64 screen coordinates (x = column, y = row) of every point
    directions: Tensor  # (V,3) unit vectors from the object centre to the camera


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Subtract the mean, divide by the largest point norm (PartNetE's normalisation)."""
    centred = np.asarray(points, dtype=np.float64) - np.asarray(points, dtype=np.float64).mean(0)
    scale = np.linalg.norm(centred, axis=1).max()
    return centred / (scale if scale > 0 else 1.0)


def camera_position(elevation: float, azimuth: float, distance: float) -> np.ndarray:
    """PyTorch3D's look_at_view_transform convention (y up): azimuth 0 looks from +z, elevation from the xz plane."""
    el, az = math.radians(elevation), math.radians(azimuth)
    return distance * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def camera_matrices(elevation: float, azimuth: float, cfg: RenderConfig) -> tuple[Tensor, Tensor]:
    """Intrinsics K (3,3) of a square image with vertical field of view `fov`, and world->camera E (4,4)."""
    from pc3d.ops import look_at

    size = cfg.image_size
    focal = (size / 2) / math.tan(math.radians(cfg.fov) / 2)
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]], dtype=torch.float64)
    eye = torch.tensor(camera_position(elevation, azimuth, cfg.distance))
    E = look_at(eye, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    return K, E


def render_views(points: np.ndarray, colors: np.ndarray | None, cfg: RenderConfig) -> Views:
    """Render the (already normalised) cloud from every view of `cfg`."""
    from pc3d.ops import project_points, rasterize_points

    xyz = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    rgb = (torch.full((len(xyz), 3), DEFAULT_GREY, dtype=torch.float64) if colors is None
           else torch.as_tensor(np.asarray(colors), dtype=torch.float64) / 255.0)
    radius = int(round(cfg.point_radius * cfg.image_size / 2))  # NDC radius -> pixels
    images, index, visible, uv, directions = [], [], [], [], []
    for elevation, azimuth in cfg.views:
        K, E = camera_matrices(elevation, azimuth, cfg)
        raster = rasterize_points(xyz, K, E, cfg.image_size, cfg.image_size, radius, colors=rgb, background=BACKGROUND)
        images.append(np.round(raster.color.clamp(0, 1).numpy() * 255).astype(np.uint8))
        index.append(raster.index)
        visible.append(raster.visible)
        uv.append(project_points(xyz, K, E)[0])
        eye = camera_position(elevation, azimuth, 1.0)
        directions.append(torch.as_tensor(eye / np.linalg.norm(eye)))
    return Views(np.stack(images), torch.stack(index), torch.stack(visible), torch.stack(uv),
                 torch.stack(directions).float())


# ================================================================ 2. superpoints (PartSLIP oversegmentation)


def estimate_normals(points: np.ndarray, radius: float, max_nn: int) -> np.ndarray:
    """Open3D hybrid-radius normals, as PartSLIP's gen_superpoint.py, then turned away from the centroid:
    Open3D leaves the sign arbitrary, and a flipped sign would look like a crease to the partition.

    Without open3d (or with PC3D_NO_OPEN3D=1) pc3d.ops.normals computes the same covariance normals with
    scipy; the sign is arbitrary there too, and the centroid rule below orients both alike."""
    from pc3d.optional import open3d_or_none

    xyz = np.asarray(points, dtype=np.float64)
    o3d = open3d_or_none()
    if o3d is None:
        from pc3d.ops.normals import estimate_normals_hybrid

        normals = estimate_normals_hybrid(xyz, radius, max_nn)
    else:
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn))
        normals = np.asarray(cloud.normals, dtype=np.float64)
    inward = ((xyz - xyz.mean(0)) * normals).sum(1) < 0
    normals[inward] *= -1
    return normals


def superpoint_graph(points: np.ndarray, colors: np.ndarray | None, cfg: SuperpointConfig
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node features [normal, color_weight * rgb] (N,6), kNN edges (E,2), weights (1/(1 + d/mean d + f/mean f))^2."""
    from pc3d.ops import knn

    n = len(points)
    normals = estimate_normals(points, cfg.normal_radius, cfg.normal_max_nn)
    rgb = np.full((n, 3), DEFAULT_GREY) if colors is None else np.asarray(colors, dtype=np.float64) / 255.0
    features = np.hstack([normals, cfg.color_weight * rgb]).astype(np.float32).astype(np.float64)
    k = min(cfg.knn + 1, n)
    xyz = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    _, idx = knn(xyz, xyz, k)
    idx = idx.numpy()
    src = np.repeat(np.arange(n), k - 1)
    dst = idx[:, 1:].reshape(-1)  # column 0 is the point itself
    keep = src != dst  # duplicate points can put another index first
    src, dst = src[keep], dst[keep]
    length = np.linalg.norm(np.asarray(points)[src] - np.asarray(points)[dst], axis=1)
    feature_gap = np.linalg.norm(features[src] - features[dst], axis=1)
    weights = (1.0 / (1.0 + length / max(length.mean(), 1e-12) + feature_gap / max(feature_gap.mean(), 1e-12))) ** 2
    return features, np.stack([src, dst], 1), weights


def superpoints(points: np.ndarray, colors: np.ndarray | None, cfg: SuperpointConfig) -> np.ndarray:
    """(N,) superpoint id 0..S-1 of every point: the graph's partition (`cfg.method`), small parts merged away."""
    from pc3d.ops.cut_pursuit import l0_cut_pursuit
    from pc3d.ops.graph_partition import merge_small_components, region_growing_partition

    if len(points) <= 2:
        return np.zeros(len(points), np.int64)
    features, edges, weights = superpoint_graph(points, colors, cfg)
    if cfg.method == "cut-pursuit":
        # libcp minimises 1/2 sum ||x - f||^2 + reg sum w [x_i != x_j]; l0_cut_pursuit has no 1/2, hence 2 * reg.
        # 15 iterations and a 5% progress stop: libcp's settings for superpoint graphs (speed 4), which PartSLIP uses.
        components, _ = l0_cut_pursuit(features, edges, weights, 2.0 * cfg.reg, max_iterations=15,
                                       stopping_ratio=0.05)
    else:
        # w = (1 / (1 + d/mean d + f/mean f))^2  ->  dissimilarity d/mean d + f/mean f
        components = region_growing_partition(len(points), edges, 1.0 / np.sqrt(weights) - 1.0, cfg.scale)
    return merge_small_components(points, components, cfg.min_size)


# ================================================================ 3. 2D detections (models or oracle)


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


# ================================================================ 4. votes: which visible point lies in which box


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


def _pixels(uv: Tensor, size: int) -> Tensor:
    return torch.floor(uv).long().clamp(0, size - 1)


def build_votes(points: np.ndarray, superpoint: np.ndarray, views: Views, detections: ViewDetections,
                num_parts: int) -> ShapeVotes:
    """Point/box memberships (SAM mask when `detections.masks`, else the box) of every visible point, gated by
    PartSTAD's rule that j's 2-D box must overlap box b; plus what instance merging needs."""
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
        inside_all = ((uv_all[None, :, 0] >= boxes[:, None, 0]) & (uv_all[None, :, 0] <= boxes[:, None, 2])
                      & (uv_all[None, :, 1] >= boxes[:, None, 1]) & (uv_all[None, :, 1] <= boxes[:, None, 3]))
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
        # gate: j's 2-D box of visible points overlaps box b with positive area
        top_x = torch.minimum(high[:, None, 0], boxes[None, :, 2])
        top_y = torch.minimum(high[:, None, 1], boxes[None, :, 3])
        overlap = ((top_x > torch.maximum(low[:, None, 0], boxes[None, :, 0]))
                   & (top_y > torch.maximum(low[:, None, 1], boxes[None, :, 1])) & seen[:, None])  # (S,K)
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


# ================================================================ 5. scores, weight network, loss, labels


def superpoint_scores(votes: ShapeVotes, box_weights: Tensor) -> Tensor:
    """s (S,C): per superpoint and part, the visible-point-averaged max weight of the boxes covering a point."""
    num_sp, num_parts = len(votes.sp_size), int(votes.num_parts)
    num_entries = len(votes.entry_sp)
    weights = box_weights.reshape(-1)
    key = votes.hit_entry * num_parts + votes.box_label[votes.hit_box]
    best = weights.new_zeros(num_entries * num_parts)  # weights are >= 0, so 0 is the empty max
    if len(key):
        best = best.scatter_reduce(0, key, weights[votes.hit_box], reduce="amax", include_self=True)
    per_sp = weights.new_zeros(num_sp, num_parts).index_add(0, votes.entry_sp, best.reshape(num_entries, num_parts))
    return per_sp / votes.sp_visible.to(weights.dtype).clamp_min(1)[:, None]


def valid_superpoints(votes: ShapeVotes) -> Tensor:
    """Superpoints that are visible somewhere and lie in at least one box (PartSTAD drops the others)."""
    mapped = torch.zeros(len(votes.sp_size), dtype=torch.bool)
    mapped[votes.entry_sp] = True
    return mapped & (votes.sp_visible > 0)


def positional_encoding(x: Tensor, num_freqs: int) -> Tensor:
    """NeRF encoding: [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(n-1) x), cos(2^(n-1) x)]."""
    parts = [x]
    for k in range(num_freqs):
        parts += [torch.sin(x * 2.0**k), torch.cos(x * 2.0**k)]
    return torch.cat(parts, -1)


class WeightNetwork(nn.Module):
    """PartSTAD's WeightPredNetworkCNe: x' = x + ReLU(CN(Linear(x))); w_b = ReLU(tau + Linear(x')); one shape's
    boxes form the context of the normalisation. A learnable null-label weight starts at `null_init`."""

    GEOMETRY = 7

    def __init__(self, feature_dim: int, cfg: NetworkConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or NetworkConfig()
        self.feature_dim, self.num_freqs, self.tau = feature_dim, cfg.num_freqs, cfg.tau
        width = feature_dim + self.GEOMETRY * (1 + 2 * cfg.num_freqs)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)
        for layer in (self.hidden, self.out):  # near-zero output at start: every box weighs tau
            nn.init.normal_(layer.weight, 0.0, cfg.init_std)
            nn.init.zeros_(layer.bias)
        self.null_weight = nn.Parameter(torch.tensor(float(cfg.null_init)))

    def forward(self, features: Tensor, geometry: Tensor) -> Tensor:
        """features (B,D), geometry (B,7) of ONE shape's boxes -> weights (B,) >= 0."""
        x = torch.cat([features.float(), positional_encoding(geometry.float(), self.num_freqs)], -1)
        if len(x) == 0:
            return x.new_zeros(0)
        h = self.hidden(x)
        mean = h.mean(0, keepdim=True)
        std = (h.var(0, unbiased=False, keepdim=True) + 1e-12).sqrt()  # population std over the shape's boxes
        x = x + torch.relu((h - mean) / std)
        return torch.relu(self.tau + self.out(x).squeeze(-1))

    def null_score(self) -> Tensor:
        return torch.relu(self.null_weight).clamp_min(NULL_FLOOR)


def box_weights(votes: ShapeVotes, voting: VotingConfig, network: WeightNetwork | None, tau: float = 10.0
                ) -> tuple[Tensor, Tensor | None]:
    """Weights w_b and the null score (None for PartSLIP voting, which thresholds raw shares)."""
    if voting.weighting in ("none", "score"):
        # PartSLIP voting; "score" weighs each vote by its box's confidence and thresholds the same way
        # (tau x score against a null of tau could never reach P >= 0.5: every s_jc < tau)
        votes_count = (votes.box_cover < voting.whole_object).double()
        return (votes_count * votes.box_score.double() if voting.weighting == "score" else votes_count), None
    if network is None:
        raise ValueError("weighting 'network' needs a WeightNetwork")
    return network(votes.box_feature, votes.box_geometry), network.null_score()


def part_probabilities(scores: Tensor, null: Tensor) -> Tensor:
    """P (S,C+1) = softmax([null, s_1..s_C]); column 0 is the null label."""
    return torch.softmax(torch.cat([null.to(scores.dtype).expand(len(scores), 1), scores], 1), 1)


def superpoint_targets(votes: ShapeVotes, semantic: Tensor) -> Tensor:
    """g (S,C+1): share of j's points with each label (column 0 = no part, label -1)."""
    num_parts = int(votes.num_parts)
    one_hot = torch.nn.functional.one_hot((semantic.long() + 1).clamp(0, num_parts), num_parts + 1).double()
    counts = torch.zeros(len(votes.sp_size), num_parts + 1, dtype=torch.float64)
    counts.index_add_(0, votes.superpoint, one_hot)
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def relaxed_miou_loss(probs: Tensor, targets: Tensor, sizes: Tensor, valid: Tensor) -> Tensor:
    """1 - mean over parts c >= 1 of RIoU_c = sum n g P / (sum n g + sum n P - sum n g P) over valid superpoints
    (RIoU_c = 0 where nothing is predicted as c)."""
    n = sizes[valid].to(probs.dtype)[:, None]
    P, g = probs[valid][:, 1:], targets[valid][:, 1:].to(probs.dtype)
    inter = (n * g * P).sum(0)
    predicted = (n * P).sum(0)
    union = (n * g).sum(0) + predicted - inter
    riou = torch.where(predicted > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))
    return (1 - riou).mean()


def assign_labels(scores: Tensor, valid: Tensor, threshold: float, small: Sequence[bool]) -> Tensor:
    """(S,) part index or -1: small parts over the threshold win, else the best part over the threshold."""
    scores = scores.detach()
    passing = (scores >= threshold) & valid[:, None]
    small_t = torch.as_tensor(list(small), dtype=torch.bool)
    small_pass = passing & small_t[None, :]
    neg = torch.full_like(scores, -math.inf)
    best_small = torch.where(small_pass, scores, neg).argmax(1)
    best = torch.where(passing, scores, neg).argmax(1)
    labels = torch.where(small_pass.any(1), best_small, best)
    return torch.where(passing.any(1), labels, torch.full_like(labels, -1))


def segment_votes(votes: ShapeVotes, voting: VotingConfig, network: WeightNetwork | None, parts: Sequence[str],
                  tau: float = 10.0) -> tuple[Tensor, Tensor]:
    """Per-superpoint labels (S,) and confidences (S,C) under the chosen weighting."""
    weights, null = box_weights(votes, voting, network, tau)
    scores = superpoint_scores(votes, weights)
    small = [p.lower() in {s.lower() for s in voting.small_parts} for p in parts]
    valid = valid_superpoints(votes)
    if null is None:  # PartSLIP: raw shares against the threshold
        return assign_labels(scores, valid, voting.threshold, small), scores.detach()
    probs = part_probabilities(scores, null)[:, 1:]
    return assign_labels(probs, valid, voting.threshold - 1e-4, small), probs.detach()


# ================================================================ 6. instances (PartSLIP merging)


def merge_instances(votes: ShapeVotes, sp_labels: Tensor, confidence: Tensor, adjacency: float = 0.02,
                    max_dis: float = 0.2, max_size_ratio: float = 100.0, keep_iou: float = 0.5
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union superpoints of the same part into instances; keep those matching some box of their part.
    Returns masks (K,N) bool, labels (K,), scores (K,) = size-weighted mean confidence of their part."""
    labels = sp_labels.numpy()
    extent = votes.sp_extent.numpy()
    ratio = votes.sp_box_ratio.numpy()
    sizes = votes.sp_size.numpy()
    box_label = votes.box_label.numpy()
    masks, out_labels, scores = [], [], []
    sp_of_point = votes.superpoint.numpy()
    for part in np.unique(labels[labels >= 0]):
        members = np.nonzero(labels == part)[0]
        part_boxes = np.nonzero(box_label == part)[0]
        parent = {int(j): int(j) for j in members}
        root = _union_find_root(parent)
        for a_i, a in enumerate(members):
            for b in members[a_i + 1:]:
                gap = np.maximum(extent[a, :3] - extent[b, 3:], extent[b, :3] - extent[a, 3:]).max()
                if gap >= adjacency or max(sizes[a], sizes[b]) / max(min(sizes[a], sizes[b]), 1) >= max_size_ratio:
                    continue
                ra, rb = ratio[a, part_boxes], ratio[b, part_boxes]
                both = (ra >= 0) & (rb >= 0)
                denominator = max(ra[both].sum(), rb[both].sum()) if both.any() else 0.0
                dis = np.abs(ra[both] - rb[both]).sum() / denominator if denominator > 0 else 1.0
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


# ================================================================ 7. one shape end to end (2D models + 3D side)


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


@dataclass
class PreparedShape:
    points: np.ndarray  # normalised
    views: Views
    detections: ViewDetections
    votes: ShapeVotes
    timings: dict[str, float]


def prepare_shape(points: np.ndarray, colors: np.ndarray | None, parts: Sequence[str], models: TwoDModels,
                  truth: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0) -> PreparedShape:
    import time

    cfg = models.cfg
    timings = {}
    tic = time.perf_counter()
    xyz = normalize_unit_sphere(points)
    views = render_views(xyz, colors, cfg.render)
    timings["render"] = time.perf_counter() - tic
    tic = time.perf_counter()
    detections = models.detect(views, parts, truth, seed)
    timings["models_2d"] = time.perf_counter() - tic
    tic = time.perf_counter()
    sp = superpoints(xyz, colors, cfg.superpoints)
    timings["superpoints"] = time.perf_counter() - tic
    tic = time.perf_counter()
    votes = build_votes(xyz, sp, views, detections, len(parts))
    timings["voting"] = time.perf_counter() - tic
    return PreparedShape(xyz, views, detections, votes, timings)


# ================================================================ 8. ground truth of an input (oracle, scores)


def ground_truth_parts(path: Path, cloud: Any, parts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(semantic (N,) index into `parts` or -1, instance (N,)) when the input carries part labels: a PartNetE
    pc.ply beside its label.npy, or a pc3d synthetic shape (global part ids in its 'part' field)."""
    wanted = [p.strip().lower() for p in parts]
    label_file = path.parent / "label.npy"
    if path.name == "pc.ply" and label_file.is_file():
        data = _load_partnete_label(label_file)
        meta = _find_meta(path)
        names = meta.get(path.parent.parent.name) if meta else None
        if names is None:
            return None
        lookup = np.array([wanted.index(n.lower()) if n.lower() in wanted else -1 for n in names] + [-1])
        semantic = lookup[np.where(data["semantic_seg"] >= 0, data["semantic_seg"], len(names))]
        return semantic.astype(np.int64), np.asarray(data["instance_seg"], np.int64)
    if "part" not in cloud.fields:
        return None
    from pc3d.data.synthetic.objects import CATEGORIES

    ids = np.asarray(cloud.fields["part"], np.int64)
    name_of: dict[int, set[str]] = {}
    for category in CATEGORIES:
        for name, pid in zip(category.parts, category.part_ids, strict=True):
            name_of.setdefault(pid, set()).update({name, category.partnete_parts.get(name, name)})
    lookup = {pid: next((wanted.index(n) for n in sorted(names) if n in wanted), -1) for pid, names in name_of.items()}
    semantic = np.array([lookup.get(int(i), -1) for i in ids], np.int64)
    instance = np.asarray(cloud.fields.get("instance", ids), np.int64)
    return semantic, instance


def _load_partnete_label(path: Path) -> dict[str, np.ndarray]:
    """PartNetE's label.npy is a pickled dict (the released format); only files of the dataset are read."""
    try:
        data = np.load(path, allow_pickle=True).item()
        return {"semantic_seg": np.asarray(data["semantic_seg"], np.int64),
                "instance_seg": np.asarray(data["instance_seg"], np.int64)}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise InputError(f"{path}: not a PartNetE label file ({exc})") from None


def _find_meta(path: Path) -> dict[str, list[str]] | None:
    for parent in list(path.parents)[:6]:
        meta = parent / "PartNetE_meta.json"
        if meta.is_file():
            return json.loads(meta.read_text())
    return None


# ================================================================ 9. `pc3d segment`


def load_network(spec: str, feature_dim: int, cfg: NetworkConfig) -> WeightNetwork:
    """A trained weight network from a pc3d checkpoint (path or hf://); its feature size must match."""
    from pc3d.engine.checkpoint import load_weights

    state = load_weights(spec)
    state = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")} or state
    network = WeightNetwork(feature_dim, cfg)
    own = network.state_dict()
    wrong = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise InputError(f"weights {spec}: not a PartSTAD weight network for this detector and part list "
                         f"(mismatch at {', '.join(wrong[:3])}; features of size {feature_dim} expected)")
    network.load_state_dict({k: state[k] for k in own})
    return network.eval()


def segment(request: RunRequest) -> dict[str, Any]:
    """`pc3d segment FILE --parts a,b,c`: per-point part labels of one object, with outputs written atomically."""
    from pc3d.io.pointcloud import read_point_cloud

    cfg: PartstadSegmentPreset = request.config
    inputs = request.inputs or {}
    path = Path(inputs["cloud"])
    parts = list(inputs["parts"])
    if len(set(p.lower() for p in parts)) != len(parts):
        raise InputError(f"--parts repeats a name: {', '.join(parts)}")
    category = inputs.get("category") or path.stem.split("_")[0]
    cloud = read_point_cloud(path, num_points=cfg.num_points, seed=cfg.run.seed)
    truth = ground_truth_parts(path, cloud, parts)
    models = TwoDModels(cfg, resolve_device(cfg.run.device))
    prepared = prepare_shape(cloud.points, cloud.colors, parts, models, truth, cfg.run.seed)
    weights = inputs.get("checkpoint") or cfg.weights
    voting = cfg.voting
    network = None
    if voting.weighting == "network":
        if weights:
            network = load_network(weights, models.feature_dim(len(parts)), cfg.network)
        else:
            con.info("no trained weight network (--checkpoint): PartSLIP voting")
            voting = voting.model_copy(update={"weighting": "none"})
    with torch.no_grad():
        sp_labels, confidence = segment_votes(prepared.votes, voting, network, parts, cfg.network.tau)
    labels = sp_labels[prepared.votes.superpoint].numpy()
    instances = None
    if cfg.instances:
        instances = merge_instances(prepared.votes, sp_labels, confidence)
    return write_segmentation(cfg, path, category, parts, cloud, prepared, labels, instances, truth, voting)


def write_segmentation(cfg: PartstadSegmentPreset, path: Path, category: str, parts: Sequence[str], cloud: Any,
                       prepared: PreparedShape, labels: np.ndarray, instances: tuple | None,
                       truth: tuple[np.ndarray, np.ndarray] | None, voting: VotingConfig) -> dict[str, Any]:
    from rich.table import Table

    from pc3d.io.atomic import atomic_write, write_text_atomic
    from pc3d.io.images import write_image
    from pc3d.io.pointcloud import PointCloud, write_point_cloud
    from pc3d.runs import RunDir

    run = RunDir.create(cfg.run.out, cfg.run.name or "partstad")
    run.save_config(cfg.model_dump(mode="json"))
    stem = path.stem
    with atomic_write(run.path / f"{stem}.labels.npy") as handle:
        np.save(handle, labels.astype(np.int64), allow_pickle=False)
    palette = part_palette(len(parts))
    colors = np.where(labels[:, None] >= 0, palette[np.maximum(labels, 0)], 160).astype(np.uint8)
    fields = {"label": labels.astype(np.int32)}
    instance_ids = None
    if instances is not None:
        instance_ids = np.full(len(labels), -1, np.int32)
        for k, mask in enumerate(instances[0]):
            instance_ids[mask] = k
        fields["instance"] = instance_ids
        with atomic_write(run.path / f"{stem}.instances.npy") as handle:
            np.save(handle, instance_ids.astype(np.int64), allow_pickle=False)
    write_point_cloud(run.path / f"{stem}.parts.ply", PointCloud(cloud.points, colors, fields=fields))
    sheet = contact_sheet(prepared, labels, parts, cfg.sheet_tile)
    write_image(run.path / f"{stem}.sheet.png", sheet)
    counts = {name: int((labels == i).sum()) for i, name in enumerate(parts)}
    counts["(none)"] = int((labels < 0).sum())
    summary: dict[str, Any] = {
        "input": str(path), "category": category, "parts": list(parts), "points": int(len(labels)),
        "points_per_part": counts, "superpoints": int(len(prepared.votes.sp_size)),
        "boxes": int(len(prepared.detections.scores)), "weighting": voting.weighting,
        "detector": cfg.detector.kind, "sam": cfg.sam.enabled,
        "seconds": {k: round(v, 3) for k, v in prepared.timings.items()},
        "out": str(run.path),
        "files": {"labels": str(run.path / f"{stem}.labels.npy"), "ply": str(run.path / f"{stem}.parts.ply"),
                  "sheet": str(run.path / f"{stem}.sheet.png")},
    }
    if instances is not None:
        summary["instances"] = int(len(instances[1]))
        summary["files"]["instances"] = str(run.path / f"{stem}.instances.npy")
    if truth is not None and (truth[0] >= 0).any():
        from pc3d.metrics import partnet_miou

        summary["miou"] = partnet_miou([(labels, truth[0])], len(parts))["miou"]
    write_text_atomic(run.path / "summary.json", json.dumps(summary, indent=2))
    if not con.is_quiet():
        table = Table(title=f"{stem}: points per part")
        table.add_column("part")
        table.add_column("points", justify="right")
        table.add_column("share", justify="right")
        for name, count in counts.items():
            table.add_row(name, str(count), f"{count / max(len(labels), 1):.1%}")
        con.console.print(table)
    return summary


def part_palette(count: int) -> np.ndarray:
    from pc3d.viz.preview import label_palette

    return label_palette(max(count, 1))


def contact_sheet(prepared: PreparedShape, labels: np.ndarray, parts: Sequence[str], tile: int) -> np.ndarray:
    """One tile per view: render with SAM masks tinted and boxes outlined in their part's colour; then the
    result coloured by part from the same views."""
    from PIL import Image, ImageDraw

    from pc3d.viz.preview import caption, resize_nearest, stack_rows, tile_grid

    palette = part_palette(len(parts))
    det = prepared.detections
    size = prepared.views.images.shape[1]
    inputs, results = [], []
    colors = np.where(labels[:, None] >= 0, palette[np.maximum(labels, 0)], 170).astype(np.uint8)
    for v, image in enumerate(prepared.views.images):
        picture = image.astype(np.float64)
        ids = det.in_view(v)
        if det.masks is not None:
            for k, b in enumerate(ids.tolist()):
                mask = det.masks[v][k].numpy()
                picture[mask] = 0.6 * picture[mask] + 0.4 * palette[int(det.labels[b])]
        canvas = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for b in ids.tolist():
            draw.rectangle([float(x) for x in det.boxes[b]], outline=tuple(int(c) for c in palette[int(det.labels[b])]),
                           width=max(1, size // 200))
        elevation_azimuth = f"view {v}"
        inputs.append(caption(resize_nearest(np.asarray(canvas), (tile, tile)), elevation_azimuth))
        index = prepared.views.index[v].numpy()
        result = np.full((size, size, 3), 255, np.uint8)
        result[index >= 0] = colors[index[index >= 0]]
        results.append(resize_nearest(result, (tile, tile)))
    legend = np.full((24, tile * 5, 3), 255, np.uint8)
    canvas = Image.fromarray(legend)
    draw = ImageDraw.Draw(canvas)
    x = 4
    for i, name in enumerate(parts):
        draw.rectangle([x, 6, x + 12, 18], fill=tuple(int(c) for c in palette[i]))
        draw.text((x + 16, 6), name, fill=(20, 20, 20))
        x += 24 + 7 * len(name)
    columns = 5
    return stack_rows([np.asarray(canvas), tile_grid(inputs, columns), tile_grid(results, columns)])


# ================================================================ 10. few-shot training (finetune partstad-fewshot)


@dataclass
class ShapeRecord:
    shape_id: str
    cloud: Path


def partnete_root(cfg: PartstadFewShotPreset) -> Path:
    """The PartNetE folder (PartNetE_meta.json + data/): the given one, or synthetic chairs written once."""
    data = cfg.data
    if data.source == "folder":
        root = Path(data.root).expanduser()
        for candidate in (root, root / "partnete"):
            if (candidate / "PartNetE_meta.json").is_file():
                return candidate
        raise InputError(f"{root}: no PartNetE_meta.json (expected the PartNet-Ensembled layout)")
    from pc3d.data.layouts import write_partnete
    from pc3d.data.synthetic.objects import generate_object, object_rng

    if data.category != "Chair":
        raise InputError(f"synthetic few-shot data has chairs only, not '{data.category}' (set data.category=Chair)")
    folder = Path(cache_root(cfg)) / f"synthetic-chairs-{cfg.run.seed}-{data.synthetic_count}-{data.synthetic_points}"
    if not (folder / "partnete" / "val_list.json").is_file():
        shapes = [generate_object("chair", object_rng(cfg.run.seed, i), data.synthetic_points)
                  for i in range(data.synthetic_count)]
        write_partnete(folder, shapes)
    return folder / "partnete"


def cache_root(cfg: PartstadFewShotPreset) -> str:
    return cfg.data.cache_dir or str(Path(cfg.run.out) / "partstad-cache")


def fewshot_splits(root: Path, category: str) -> tuple[list[str], dict[str, list[ShapeRecord]]]:
    """Part names and the few-shot (train), validation (val_list.json) and remaining test shapes."""
    meta = json.loads((root / "PartNetE_meta.json").read_text())
    if category not in meta:
        raise InputError(f"{root}: category '{category}' not in PartNetE_meta.json ({', '.join(sorted(meta))})")
    val_file = root / "val_list.json"
    val_ids = set(json.loads(val_file.read_text()).get(category, [])) if val_file.is_file() else set()

    def shapes(split: str) -> list[ShapeRecord]:
        folder = root / "data" / split / category
        found = sorted((p for p in folder.glob("*/pc.ply")), key=lambda p: (len(p.parent.name), p.parent.name))
        return [ShapeRecord(p.parent.name, p) for p in found]

    train, test = shapes("few_shot"), shapes("test")
    if not train:
        raise InputError(f"{root}: no few-shot shapes in data/few_shot/{category}/*/pc.ply")
    val = [s for s in test if s.shape_id in val_ids] or test[:8]
    rest = [s for s in test if s.shape_id not in {v.shape_id for v in val}] or val
    return list(meta[category]), {"train": train, "val": val, "test": rest}


def shape_cache_key(record: ShapeRecord, parts: Sequence[str], cfg: PartstadSections) -> str:
    digest = hashlib.sha1(record.cloud.read_bytes())
    digest.update(json.dumps([list(parts), cfg.render.model_dump(mode="json"),
                              cfg.detector.model_dump(mode="json"), cfg.sam.model_dump(mode="json"),
                              cfg.superpoints.model_dump(mode="json")], sort_keys=True).encode())
    return digest.hexdigest()[:20]


def cached_votes(record: ShapeRecord, parts: Sequence[str], cfg: PartstadFewShotPreset, models_box: list,
                 category: str) -> dict[str, Tensor]:
    """ShapeVotes + per-point ground truth of one shape, from the cache or computed (2D models run once)."""
    from pc3d.io.atomic import atomic_path
    from pc3d.io.pointcloud import read_point_cloud

    key = shape_cache_key(record, parts, cfg)
    path = Path(cache_root(cfg)) / category / f"{record.shape_id}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as arrays:
            data = {k: arrays[k] for k in arrays.files}
    else:
        if not models_box:
            models_box.append(TwoDModels(cfg, resolve_device(cfg.run.device)))
        cloud = read_point_cloud(record.cloud)
        truth = ground_truth_parts(record.cloud, cloud, parts)
        if truth is None:
            raise InputError(f"{record.cloud}: no label.npy / PartNetE_meta.json beside it")
        prepared = prepare_shape(cloud.points, cloud.colors, parts, models_box[0], truth,
                                 seed=int(hashlib.sha1(record.shape_id.encode()).hexdigest()[:8], 16))
        data = prepared.votes.to_arrays()
        data["gt_semantic"], data["gt_instance"] = truth
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **data)
    return {k: torch.as_tensor(v) for k, v in data.items()}


def votes_of(sample: dict[str, Tensor]) -> ShapeVotes:
    return ShapeVotes(**{f.name: sample[f.name] for f in fields(ShapeVotes)})


class FewShotShapes(torch.utils.data.Dataset):
    def __init__(self, samples: list[dict[str, Tensor]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.samples[i]


def collate_shapes(samples: Sequence[dict[str, Tensor]]) -> dict[str, list[dict[str, Tensor]]]:
    return {"shapes": list(samples)}


class PartstadMethod(Method):
    """Trains the weight network (and null weight) with the relaxed mIoU loss, validates with part mIoU."""

    def __init__(self, feature_dim: int, parts: Sequence[str], cfg: PartstadSections, null_lr_scale: float) -> None:
        super().__init__()
        self.network = WeightNetwork(feature_dim, cfg.network)
        self.parts = list(parts)
        self.voting = cfg.voting.model_copy(update={"weighting": "network"})
        self.null_lr_scale = null_lr_scale

    def training_step(self, batch: dict[str, Any], state: StepState) -> dict[str, Tensor]:
        losses = []
        for sample in batch["shapes"]:
            votes = votes_of(sample)
            weights = self.network(votes.box_feature, votes.box_geometry)
            probs = part_probabilities(superpoint_scores(votes, weights), self.network.null_score())
            targets = superpoint_targets(votes, sample["gt_semantic"])
            losses.append(relaxed_miou_loss(probs, targets, votes.sp_size, valid_superpoints(votes)))
        return {"loss": torch.stack(losses).mean().float(), "metric/null_weight": self.network.null_score().detach()}

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        preds, gts = [], []
        for sample in batch["shapes"]:
            votes = votes_of(sample)
            sp_labels, _ = segment_votes(votes, self.voting, self.network, self.parts)
            preds.append(sp_labels[votes.superpoint].cpu())
            gts.append(sample["gt_semantic"].cpu())
        return {"preds": preds, "gts": gts}

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        from pc3d.metrics import partnet_miou

        samples = [(p.numpy(), g.numpy()) for out in outputs for p, g in zip(out["preds"], out["gts"], strict=True)]
        return {"miou": float(partnet_miou(samples, len(self.parts))["miou"])}

    def param_groups(self, weight_decay: float) -> list[dict]:
        network = [(n, p) for n, p in self.named_parameters() if n != "network.null_weight"]
        return [
            {"params": [p for _, p in network], "param_names": [n for n, _ in network], "weight_decay": weight_decay},
            {"params": [self.network.null_weight], "param_names": ["network.null_weight"], "weight_decay": 0.0,
             "lr_scale": self.null_lr_scale},
        ]


def _load_split(cfg: PartstadFewShotPreset, split: str) -> tuple[list[str], list[dict[str, Tensor]], int]:
    root = partnete_root(cfg)
    parts, splits = fewshot_splits(root, cfg.data.category)
    records = splits[split]
    if split == "test" and cfg.data.max_test:
        records = records[:cfg.data.max_test]
    models_box: list = []
    samples = [cached_votes(r, parts, cfg, models_box, cfg.data.category)
               for r in con.track(records, total=len(records), description=f"{split} shapes (2D outputs)")]
    feature_dim = int(samples[0]["box_feature"].shape[1]) if samples else 0
    return parts, samples, feature_dim


def build(config: PartstadFewShotPreset, rank: int) -> Any:
    from pc3d.engine.trainer import TrainingSetup

    parts, train, feature_dim = _load_split(config, "train")
    _, val, _ = _load_split(config, "val")
    method = PartstadMethod(feature_dim, parts, config, config.null_lr / config.optim.lr)
    return TrainingSetup(method, FewShotShapes(train), FewShotShapes(val), collate_shapes)


def evaluate_shapes(samples: list[dict[str, Tensor]], parts: Sequence[str], voting: VotingConfig,
                    network: WeightNetwork | None, tau: float) -> dict[str, float]:
    """Category mIoU (PartSTAD's compute_iou) and part-aware / -agnostic mAP50 (PartSLIP merging)."""
    from pc3d.metrics import PartInstanceSample, part_map, partnet_miou

    semantic, instance = [], []
    with torch.no_grad():
        for sample in samples:
            votes = votes_of(sample)
            sp_labels, confidence = segment_votes(votes, voting, network, parts, tau)
            labels = sp_labels[votes.superpoint].numpy()
            gt = sample["gt_semantic"].numpy()
            semantic.append((labels, gt))
            masks, inst_labels, scores = merge_instances(votes, sp_labels, confidence)
            instance.append(PartInstanceSample(gt, sample["gt_instance"].numpy(), masks, inst_labels, scores))
    aps = part_map(instance, len(parts))
    return {"miou": float(partnet_miou(semantic, len(parts))["miou"]), "map50_part_aware": aps["map50_part_aware"],
            "map50_part_agnostic": aps["map50_part_agnostic"]}


def finetune(request: RunRequest) -> dict[str, Any]:
    """Few-shot training of one category's weight network, then test-set evaluation of the best checkpoint
    next to PartSLIP voting and the untrained network."""
    from pc3d.engine.checkpoint import load_weights
    from pc3d.engine.trainer import fit

    cfg: PartstadFewShotPreset = request.config
    result = fit(request, build)
    parts, test, feature_dim = _load_split(cfg, "test")
    best = result["checkpoints"].get("best") or result["checkpoints"]["last"]
    network = WeightNetwork(feature_dim, cfg.network)
    state = load_weights(best)
    network.load_state_dict({k[len("network."):]: v for k, v in state.items() if k.startswith("network.")})
    network.eval()
    untrained = WeightNetwork(feature_dim, cfg.network).eval()
    tau = cfg.network.tau
    network_voting = cfg.voting.model_copy(update={"weighting": "network"})
    result["test"] = {
        "shapes": len(test),
        "partstad": evaluate_shapes(test, parts, network_voting, network, tau),
        "untrained": evaluate_shapes(test, parts, network_voting, untrained, tau),
        "partslip_voting": evaluate_shapes(test, parts, cfg.voting.model_copy(update={"weighting": "none"}), None,
                                           tau),
    }
    result["weights"] = best
    result["category"] = cfg.data.category
    from pc3d.io.atomic import write_text_atomic

    write_text_atomic(Path(result["run_dir"]) / "test_metrics.json", json.dumps(result["test"], indent=2))
    return result
