"""PointINS: instance-aware self-supervised pretraining on scene point clouds (Sonata base + offset branch).

Algorithm (per step, on top of the Sonata/DOS objective of `pc3d.methods.sonata`):
1. the teacher's offset head gives offsets O for the global views (mapped back to the original frame
   through the inverse of each view's augmentation);
2. ODR: magnitudes are probability-integral-transformed onto the prior (Gamma indoor / LogNormal outdoor /
   fitted from a label-free clustering), each direction axis onto Uniform[-1, 1] (then renormalised):
   O~ = m* d*;
3. SCR: predicted centroids c = x + O~; k-means (K = 20) on the teacher's features; inside each cluster a
   kNN graph on c keeps edges shorter than tau_d, BFS components smaller than tau_min are dropped (their
   points get no target); the target centre is the component's mean predicted centroid (appendix) or mean
   coordinate (eq. 4): one target O* = centre - x per point;
4. the student's offsets (masked global views, and across views: the other global view and the local
   views, all mapped back to the original frame) regress O* at their matched teacher point:
   L_off = mean(|o - O*|_1 + (1 - cos(o, O*))), weighted by lambda_off = 0.25 once the first 10 % of
   training (the offset warm-up) is over.
Switches reproduce the ablations: ODR/SCR off, SCR before ODR, ODR on the student's own offsets.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pc3d.engine.method import StepState
from pc3d.errors import InputError
from pc3d.methods.sonata import SceneViews, Sonata, collate_views, load_scenes
from pc3d.ops.clustering import connected_components, grouped_kmeans
from pc3d.ops.pit import probability_integral_transform

# ----------------------------------------------------------------------------- ODR


def magnitude_prior(offset_cfg: Any, fitted: tuple[float, float] | None = None) -> tuple[str, dict[str, float]]:
    """(prior name, parameters) for `probability_integral_transform` from the preset."""
    if offset_cfg.prior == "gamma":
        return "gamma", {"shape": offset_cfg.gamma[0], "scale": offset_cfg.gamma[1]}
    if offset_cfg.prior == "lognormal":
        return "lognormal", {"mu": offset_cfg.lognormal[0], "sigma": offset_cfg.lognormal[1]}
    if fitted is None:
        raise InputError("offset.prior 'fitted' needs the prior fitted on the training scenes first")
    return "gamma", {"shape": fitted[0], "scale": fitted[1]}


def direction_transform(direction: Tensor, group: Tensor | None = None) -> Tensor:
    """Each axis of the unit directions (N,3) rank-mapped onto Uniform[-1, 1] (within each group), then
    renormalised."""
    axes = [probability_integral_transform(direction[:, k], "uniform", group, low=-1.0, high=1.0) for k in range(3)]
    return F.normalize(torch.stack(axes, 1), dim=1)


def offset_distribution_regularization(offsets: Tensor, prior: str, params: dict[str, float],
                                       group: Tensor | None = None) -> Tensor:
    """ODR of offsets (N,3), per group (the views; None: one scene): t = F_M^-1(u(|o|)) *
    direction_transform(o / |o|) (no gradient)."""
    offsets = offsets.detach().float()
    if offsets.shape[0] == 0:
        return offsets
    magnitude = offsets.norm(dim=1)
    direction = offsets / magnitude.clamp_min(1e-12).unsqueeze(1)
    target_magnitude = probability_integral_transform(magnitude, prior, group, **params)
    return target_magnitude.unsqueeze(1) * direction_transform(direction, group)


# ----------------------------------------------------------------------------- SCR


def spatial_clustering_regularization(coord: Tensor, offsets: Tensor, features: Tensor, k: int, iters: int,
                                      knn: int, radius: float, min_points: int, centroid: str = "predicted",
                                      seed: int = 0, group: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """SCR: (target offsets (N,3), has-target mask (N,)), of one scene or, with `group` (N,) int64 (the views),
    of each group independently in one pass (k-means of group g seeded with seed + g).

    k-means on L2-normalised features; inside each cluster, components of the kNN graph on the predicted
    centroids c = x + o with edges shorter than `radius`; components below `min_points` get no target."""
    n = coord.shape[0]
    group = torch.zeros(n, dtype=torch.long, device=coord.device) if group is None else group
    centres = (coord + offsets).detach().float()
    target = torch.zeros_like(centres)
    if n == 0:
        return target, torch.zeros(0, dtype=torch.bool, device=coord.device)
    labels, _ = grouped_kmeans(F.normalize(features.detach().float(), dim=1), group, k, iters, seed)
    # one graph for every (group, k-means cluster): connected_components keeps groups apart, so the
    # components are those of one graph per cluster, in a single kNN pass
    component = connected_components(centres, radius, k=min(knn, n), min_size=min_points, group=group * k + labels)
    next_id = int(component.max()) + 1
    valid = component >= 0
    if next_id:
        source = centres if centroid == "predicted" else coord.float()
        ids = component[valid]
        sums = torch.zeros(next_id, 3, dtype=source.dtype, device=source.device).index_add_(0, ids, source[valid])
        counts = torch.bincount(ids, minlength=next_id).unsqueeze(1).to(source.dtype)
        target[valid] = (sums / counts)[ids] - coord[valid].float()
    return target, valid


# ----------------------------------------------------------------------------- targets and loss


def offset_targets(coord: Tensor, offsets: Tensor, features: Tensor, view: Tensor, cfg: Any,
                   prior: tuple[str, dict[str, float]], seed: int = 0) -> tuple[Tensor, Tensor]:
    """One target per point, each view on its own (ranks, k-means seeded with seed + view, graphs), all views
    in one batched pass, in the configured order (ODR then SCR by default)."""
    o, x = offsets.detach().float(), coord.float()
    view = view.long()
    ok = torch.ones(o.shape[0], dtype=torch.bool, device=o.device)
    if o.shape[0] == 0:
        return o, ok

    def scr(o: Tensor) -> tuple[Tensor, Tensor]:
        return spatial_clustering_regularization(x, o, features, cfg.kmeans_k, cfg.kmeans_iters, cfg.knn,
                                                 cfg.radius, cfg.min_points, cfg.centroid, seed, group=view)

    if cfg.order == "odr-scr":
        if cfg.odr:
            o = offset_distribution_regularization(o, *prior, group=view)
        if cfg.scr:
            o, ok = scr(o)
    else:
        if cfg.scr:
            o, ok = scr(o)
        if cfg.odr and ok.any():
            o = o.clone()
            o[ok] = offset_distribution_regularization(o[ok], *prior, group=view[ok])
    return o, ok


def offset_loss(pred: Tensor, target: Tensor) -> Tensor:
    """PointGroup's offset loss: mean L1 (summed over xyz) + mean (1 - cosine)."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    l1 = (pred - target).abs().sum(1).mean()
    cos = F.cosine_similarity(pred, target, dim=1, eps=1e-8)
    return l1 + (1.0 - cos).mean()


def to_original_frame(vectors: Tensor, view: Tensor, transforms: Tensor) -> Tensor:
    """Undo each view's linear augmentation A (x_aug = A x): v_orig = A^-1 v_aug."""
    inverse = torch.linalg.inv(transforms.float())
    return torch.bmm(inverse[view], vectors.float().unsqueeze(2)).squeeze(2)


def fit_gamma_prior(scenes: Any, count: int, radius: float, min_points: int) -> tuple[float, float]:
    """A label-free magnitude prior: DBSCAN-like radius clustering of raw points, Gamma fit (loc 0) of the
    distances from each clustered point to its cluster's centroid."""
    from scipy import stats

    distances = []
    for i in range(min(count, len(scenes))):
        coord = torch.as_tensor(scenes[i]["coord"]).float()
        labels = connected_components(coord, radius, k=16, min_size=min_points)
        keep = labels >= 0
        if not keep.any():
            continue
        ids = labels[keep]
        sums = torch.zeros(int(ids.max()) + 1, 3).index_add_(0, ids, coord[keep])
        centre = sums / torch.bincount(ids).unsqueeze(1).float()
        distances.append((coord[keep] - centre[ids]).norm(dim=1))
    values = torch.cat(distances).double().numpy() if distances else None
    if values is None or values.size < 2:
        raise InputError(f"offset.prior fitted: no cluster of >= {min_points} points at radius {radius} in the "
                         "training scenes; lower offset.fit_min_points or raise offset.fit_radius")
    shape, _, scale = stats.gamma.fit(values[values > 0], floc=0)
    return float(shape), float(scale)


# ----------------------------------------------------------------------------- the method


class PointINS(Sonata):
    with_offset = True

    def __init__(self, config: Any, fitted_prior: tuple[float, float] | None = None) -> None:
        super().__init__(config)
        self.prior = magnitude_prior(config.offset, fitted_prior)
        self.fitted_prior = fitted_prior

    def offset_weight(self, progress: float) -> float:
        """Hard switch: 0 during the offset warm-up, lambda_off afterwards."""
        cfg = self.config.offset
        return cfg.weight if progress >= cfg.warmup else 0.0

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        terms, ctx = self.ssl_step(batch, state)
        cfg = self.config.offset
        teacher, student = ctx.teacher, ctx.student_global
        g_transform = batch["global_transform"]
        with torch.no_grad():
            t_offsets = to_original_frame(self.teacher.offset_head(teacher.feat), teacher.batch, g_transform)
        s_global = to_original_frame(self.student.offset_head(student.feat), student.batch, g_transform)
        source = t_offsets
        s_same, t_same, _ = ctx.pairs["mask"]
        if cfg.odr_source == "student":  # ablation: ODR transforms the student's own (detached) offsets
            source = t_offsets.clone()
            source[t_same] = s_global.detach()[s_same]
        target, valid = offset_targets(teacher.extras["origin"], source, teacher.feat, teacher.batch, cfg,
                                       self.prior, seed=state.step)
        centre = teacher.extras["origin"].float() + target  # the point's instance centre, original frame
        preds, goals = [], []
        kinds = [("mask", s_global, student)]
        if cfg.cross_view:
            kinds.append(("roll_mask", s_global, student))
            if ctx.student_local is not None:
                local = ctx.student_local
                s_local = to_original_frame(self.student.offset_head(local.feat), local.batch,
                                            batch["local_transform"])
                kinds.append(("unmask", s_local, local))
        for name, offsets, point in kinds:
            if name not in ctx.pairs:
                continue
            s_idx, t_idx, _ = ctx.pairs[name]
            keep = valid[t_idx]
            s_idx, t_idx = s_idx[keep], t_idx[keep]
            preds.append(offsets[s_idx])
            goals.append(centre[t_idx] - point.extras["origin"][s_idx].float())
        raw = offset_loss(torch.cat(preds), torch.cat(goals))
        weight = self.offset_weight(state.progress)
        terms["offset"] = weight * raw
        terms["metric/offset_raw"] = raw.detach()
        terms["metric/offset_on"] = torch.tensor(float(weight > 0))
        terms["metric/offset_target_share"] = valid.float().mean()
        return terms


def build(config: Any, rank: int) -> Any:
    from pc3d.engine.trainer import TrainingSetup

    scenes = load_scenes(config.data, config.run.seed, "train")
    fitted = None
    if config.offset.prior == "fitted":
        o = config.offset
        fitted = fit_gamma_prior(scenes, o.fit_scenes, o.fit_radius, o.fit_min_points)
    train_set = SceneViews(scenes, config.data, config.model.grid_size)
    return TrainingSetup(method=PointINS(config, fitted), train_set=train_set, collate_fn=collate_views)


def run(request: Any) -> dict:
    from pc3d.engine.trainer import fit

    result = fit(request, build)
    return result
