"""PointINS: instance-aware self-supervised pretraining on scene point clouds (Sonata base + offset branch).

Algorithm (per step, on top of the Sonata/DOS objective of `pc3d.methods.sonata`):
1. the teacher's offset head gives offsets O for the global views (mapped back to the original frame
   through the inverse of each view's augmentation);
2. ODR: magnitudes are probability-integral-transformed onto the prior (Gamma indoor / LogNormal outdoor /
   fitted from a label-free clustering), each direction axis onto Uniform[-1, 1] (then renormalised):
   O~ = m* d*;
3. SCR: predicted centroids c = x + O~; k-means (K = 20) on the teacher's features; inside each cluster a
   kNN graph on c keeps edges shorter than tau_d, BFS components smaller than tau_min are dropped (their
   points get no target); the target centre is the component's mean coordinate (Eq. 4, Alg. 1; default) or
   mean predicted centroid (appendix Alg. 2): one target O* = centre - x per point;
4. the student's offsets (masked global views, and across views: the other global view and the local
   views, all mapped back to the original frame) regress the offset to their matched teacher point's centre,
   c[t] - x_s (= O*[t] on the same point), at the points the student saw (by default):
   L_off = mean(|o - O*|_1 + (1 - cos(o, O*))), weighted by lambda_off = 0.25 once the first 10 % of
   training (the offset warm-up) is over.
Switches reproduce the ablations: ODR/SCR off (both off: "L_off only"), SCR before ODR, ODR on the student side
(Table 8: a KL regulariser on the student's offsets instead of ODR in the targets).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import record_function

from pc3d.engine.method import StepState
from pc3d.errors import InputError
from pc3d.methods.sonata import SceneViews, Sonata, collate_views, load_scenes, view_rules
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


def prior_cdf(values: Tensor, prior: str, params: dict[str, float]) -> Tensor:
    """CDF (float64) of the magnitude prior at values >= 0, differentiable in the values (the KL regulariser
    backpropagates through it; ODR itself needs only the inverse)."""
    v = values.double().clamp_min(1e-12)
    if prior == "lognormal":
        return 0.5 * (1.0 + torch.erf((torch.log(v) - params["mu"]) / (params["sigma"] * math.sqrt(2.0))))
    if prior == "gamma":
        return torch.special.gammainc(torch.full_like(v, params["shape"]), v / params["scale"])
    raise InputError(f"prior_cdf: unknown prior {prior!r}")


def soft_histogram(u: Tensor, group: Tensor, groups: int, bins: int) -> Tensor:
    """(groups, bins): each group's share of the values u in [0, 1] per equal-width bin, by linear binning between
    bin centres so that it is differentiable in u. A uniform u fills every bin with 1/bins in expectation (the
    two edge bins also take the half-bins outside the outer centres)."""
    pos = (u.double().clamp(0.0, 1.0) * bins - 0.5).clamp(0.0, bins - 1.0)  # in bin-centre units
    low = pos.detach().floor().long().clamp(max=bins - 2)
    frac = pos - low.double()
    hist = torch.zeros(groups, bins, dtype=torch.float64, device=u.device)
    hist = hist.index_put((group, low), 1.0 - frac, accumulate=True).index_put((group, low + 1), frac,
                                                                              accumulate=True)
    return hist / hist.sum(1, keepdim=True).clamp_min(1e-12)


def student_odr_kl(offsets: Tensor, group: Tensor, prior: str, params: dict[str, float], bins: int = 16) -> Tensor:
    """Student-side ODR (paper Table 8, dagger: "regularization loss via KL divergence"): how far the student's
    offsets (N,3) are from the ODR priors, per group (view), as a differentiable scalar.

    The paper does not give the form; this one mirrors ODR's two parts on the probability-integral scale: the
    magnitudes through the prior's CDF F_M and each direction axis through (d_k + 1) / 2 should all be Uniform[0, 1]
    (a direction uniform on the sphere has exactly uniform axes), so each gets KL(Q || U) = sum_b q_b log(q_b B)
    of its soft B-bin histogram Q against the uniform one. Bounded by log B, zero when the offsets follow the
    priors; the mean of the four KLs over the groups that have points."""
    if offsets.shape[0] == 0:
        return offsets.sum() * 0.0
    o = offsets.double()
    magnitude = o.norm(dim=1)
    direction = o / magnitude.clamp_min(1e-12).unsqueeze(1)
    _, group = torch.unique(group, return_inverse=True)  # dense ids: empty views add no term
    groups = int(group.max()) + 1
    scaled = [prior_cdf(magnitude, prior, params)] + [(direction[:, k] + 1.0) / 2.0 for k in range(3)]
    kls = []
    for u in scaled:
        q = soft_histogram(u, group, groups, bins)
        kls.append((q * torch.log(q.clamp_min(1e-12) * bins)).sum(1).mean())
    return torch.stack(kls).mean().to(offsets.dtype)


# ----------------------------------------------------------------------------- SCR


def spatial_clustering_regularization(coord: Tensor, offsets: Tensor, features: Tensor, k: int, iters: int,
                                      knn: int, radius: float, min_points: int, centroid: str = "coordinates",
                                      seed: int = 0, group: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """SCR: (target offsets (N,3), has-target mask (N,)), of one scene or, with `group` (N,) int64 (the views),
    of each group independently in one pass (k-means of group g seeded with seed + g).

    k-means on L2-normalised features; inside each cluster, components of the kNN graph on the predicted
    centroids c = x + o with edges shorter than `radius`; components below `min_points` get no target. The target
    centre is the component's mean coordinate (centroid="coordinates": Eq. 4 and Alg. 1 line 5) or its mean
    predicted centroid (centroid="predicted": the appendix's Alg. 2)."""
    n = coord.shape[0]
    group = torch.zeros(n, dtype=torch.long, device=coord.device) if group is None else group
    centres = (coord + offsets).detach().float()
    target = torch.zeros_like(centres)
    if n == 0:
        return target, torch.zeros(0, dtype=torch.bool, device=coord.device)
    with record_function("pointins/scr_kmeans"):
        labels, _ = grouped_kmeans(F.normalize(features.detach().float(), dim=1), group, k, iters, seed)
    # one graph for every (group, k-means cluster): connected_components keeps groups apart, so the
    # components are those of one graph per cluster, in a single radius-bounded kNN pass (k-d tree on CPU, cell
    # list on CUDA: sub-quadratic, pc3d.ops.radius_graph)
    with record_function("pointins/scr_graph"):
        component = connected_components(centres, radius, k=min(knn, n), min_size=min_points,
                                         group=group * k + labels)
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
            with record_function("pointins/odr"):
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
    distances from each clustered point to its cluster's centroid.

    Table 5 fits the prior from HDBSCAN clusters of raw points. HDBSCAN (scikit-learn) is not a dependency here,
    so radius components (single linkage cut at `radius`, clusters of >= `min_points`) approximate it: the same
    family (density-based, label-free) at one fixed density level instead of HDBSCAN's most stable levels."""
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
        # the record_function scopes name the parts of the offset branch for torch.profiler (bench/pointins.py)
        with record_function("pointins/ssl"):
            terms, ctx = self.ssl_step(batch, state)
        cfg = self.config.offset
        teacher, student = ctx.teacher, ctx.student_global
        g_transform = batch["global_transform"]
        with record_function("pointins/offset_heads"):
            with torch.no_grad():
                t_offsets = to_original_frame(self.teacher.offset_head(teacher.feat), teacher.batch, g_transform)
            s_global = to_original_frame(self.student.offset_head(student.feat), student.batch, g_transform)
        # Table 8's student-side ODR moves ODR out of the (teacher-sourced) targets into a KL term on the student
        student_odr = cfg.odr and cfg.odr_source == "student"
        target_cfg = cfg.model_copy(update={"odr": False}) if student_odr else cfg
        with record_function("pointins/targets"):
            target, valid = offset_targets(teacher.extras["origin"], t_offsets, teacher.feat, teacher.batch,
                                           target_cfg, self.prior, seed=state.step)
        centre = teacher.extras["origin"].float() + target  # the point's instance centre, original frame
        # the masked global view's head-level points that contain no masked input point (what the student saw)
        seen = (student.extras["masked"] == 0 if cfg.observable_only
                else torch.ones(s_global.shape[0], dtype=torch.bool, device=s_global.device))
        offsets = {"global": (s_global, student)}
        names = ["mask"]
        if cfg.cross_view:
            names.append("roll_mask")
            if ctx.student_local is not None and "unmask" in ctx.pairs:
                local = ctx.student_local
                with record_function("pointins/offset_heads"):
                    offsets["local"] = (to_original_frame(self.student.offset_head(local.feat), local.batch,
                                                          batch["local_transform"]), local)
                names.append("unmask")
        with record_function("pointins/offset_loss"):
            preds, goals = [], []
            for name in names:
                if name not in ctx.pairs:
                    continue
                s_idx, t_idx, kind = ctx.pairs[name]
                keep = valid[t_idx]
                if kind == "global":  # local views are never masked
                    keep = keep & seen[s_idx]
                s_idx, t_idx = s_idx[keep], t_idx[keep]
                pred, point = offsets[kind]
                preds.append(pred[s_idx])
                # across views the student point x_s is not the teacher point: regress the offset to its centre
                goals.append(centre[t_idx] - point.extras["origin"][s_idx].float())
            raw = offset_loss(torch.cat(preds), torch.cat(goals))
            loss = raw
            if student_odr:
                kl = student_odr_kl(s_global[seen], student.batch[seen], *self.prior, bins=cfg.kl_bins)
                loss = raw + cfg.kl_weight * kl
                terms["metric/offset_kl"] = kl.detach()
        weight = self.offset_weight(state.progress)
        terms["offset"] = weight * loss
        terms["metric/offset_raw"] = raw.detach()
        terms["metric/offset_on"] = torch.tensor(float(weight > 0))
        terms["metric/offset_target_share"] = valid.float().mean()
        terms["metric/offset_seen_share"] = seen.float().mean()
        return terms


def build(config: Any, rank: int) -> Any:
    from pc3d.engine.trainer import TrainingSetup

    scenes = load_scenes(config.data, config.run.seed, "train")
    fitted = None
    if config.offset.prior == "fitted":
        o = config.offset
        fitted = fit_gamma_prior(scenes, o.fit_scenes, o.fit_radius, o.fit_min_points)
    train_set = SceneViews(scenes, config.data, config.model.grid_size, rules=view_rules(config.model))
    return TrainingSetup(method=PointINS(config, fitted), train_set=train_set, collate_fn=collate_views)


def run(request: Any) -> dict:
    from pc3d.engine.trainer import fit

    result = fit(request, build)
    return result
