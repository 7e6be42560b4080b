"""GeoMask3D (Bahri et al., TMLR 2025): geometrically informed mask selection.

Per step (shared/reference/geomask3d.md, section 2):
  1. the EMA teacher scores the geometric complexity (GC) of every patch of the unmasked cloud;
  2. curriculum: the n_hard = int(Nm * A(e)) highest-scoring patches are always masked, the other
     masked patches are drawn at random; A(e) = A_max * (e + 1) / E rises linearly to 0.8;
  3. the student encodes the visible patches, decodes [visible, mask tokens], and its GC predictor
     scores the masked patches;
  4. a frozen pretrained Point-MAE gives per-masked-patch targets: feature distance to its encoder
     tokens of the complete cloud, plus the Chamfer distance between its own reconstruction and the
     student's masked tokens decoded by its (frozen) decoder;
  5. loss = weighted mean feature + Chamfer terms + dense relation comparison (DRC) of the GC
     predictions against those per-patch targets; then one AdamW step and the EMA update.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pc3d.engine.ema import EMA
from pc3d.engine.method import Method, StepState
from pc3d.errors import InputError
from pc3d.methods.point_mae import pooled_features, summarize_validation
from pc3d.models.convert import (
    backbone_state,
    is_official_layout,
    load_state,
    official_to_pc3d,
    strip_wrappers,
)
from pc3d.models.geomask3d import GeoMask3DStudent
from pc3d.models.point_mae import PointMAE, step_generator
from pc3d.ops.chamfer import chamfer_distance
from pc3d.ops.transforms import scale_and_translate


def hard_share(epoch: int, total_epochs: int, max_share: float = 0.8) -> float:
    """Curriculum A(e) = max_share * (e + 1) / E: the share of masked patches chosen as the hardest.

    Evaluated as the release does, float((e + 1) / E) * 0.8 (divide first, then scale): the other
    order rounds differently in the last bit, which moves int(Nm * share) by one in some settings
    (e.g. Nm = 77, e = 4, E = 77: 3 hard patches here, 4 with 0.8 * (e + 1) / E)."""
    return float(min(epoch + 1, total_epochs) / total_epochs) * max_share


def ema_decay(epoch: int, start: float, end: float, ramp_epochs: int) -> float:
    """EMA decay set at the start of each epoch: linear start -> end over `ramp_epochs`, then end."""
    return start + min(epoch, ramp_epochs) / ramp_epochs * (end - start)


def geometric_mask(gc_scores: Tensor, mask_ratio: float, share: float,
                   generator: torch.Generator | None = None) -> Tensor:
    """(B,G) scores -> (B,G) bool mask (True = hidden) with G - int(G*(1-ratio)) hidden patches.

    The n_hard = int(Nm*share) highest scores get a sort key above every random one, so they land at
    the end of the shuffle (always masked); the rest of the order is a uniform random permutation."""
    b, g = gc_scores.shape
    num_keep = int(g * (1 - mask_ratio))
    num_hard = int((g - num_keep) * share)
    noise = torch.rand(b, g, device=gc_scores.device, generator=generator)
    if num_hard > 0:
        hardest = gc_scores.topk(num_hard, dim=1).indices
        noise.scatter_(1, hardest, 2.0)
    order = noise.argsort(dim=1)
    mask = torch.ones(b, g, dtype=torch.bool, device=gc_scores.device)
    mask.scatter_(1, order[:, :num_keep], False)
    return mask


def drc_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Dense relation comparison: a logistic ranking loss over every ordered pair (i, j) of a sample.

    For s = pred, g = target (B,K): sum over pairs of -[g_j>g_i] log(sig(s_j-s_i)+1e-6)
    - [g_j<g_i] log(1-sig(s_j-s_i)+1e-6), divided by the number of pairs with g_i != g_j."""
    target = target.detach()
    s_diff = pred.unsqueeze(1) - pred.unsqueeze(2)  # [b, i, j] = s_j - s_i
    g_diff = target.unsqueeze(1) - target.unsqueeze(2)
    above = (g_diff > 0).to(pred.dtype)
    below = (g_diff < 0).to(pred.dtype)
    prob = torch.sigmoid(s_diff)
    losses = -above * torch.log(prob + 1e-6) - below * torch.log(1 - prob + 1e-6)
    return losses.sum() / (above + below).sum().clamp_min(1.0)


def per_patch_targets(student_masked: Tensor, teacher: PointMAE, neighborhood: Tensor, center: Tensor,
                      mask: Tensor, cd_grad: bool) -> tuple[Tensor, Tensor]:
    """Feature distance and Chamfer distance per masked patch, each (B, Nm).

    Teacher features/reconstruction come from the complete cloud (no masking, no gradient); the
    student's masked tokens are decoded to points by the teacher's frozen decoder + head."""
    b, num_mask, c = student_masked.shape
    with torch.no_grad():
        feat_t = teacher.encoder(neighborhood, center)  # (B,G,C)
        pos_all = teacher.decoder_pos_embed(center)
        pts_t = teacher.patches_from_tokens(teacher.decoder(feat_t, pos_all))  # (B,G,M,3)
    with torch.set_grad_enabled(cd_grad and torch.is_grad_enabled()):
        pos_mask = teacher.decoder_pos_embed(center[mask]).reshape(b, num_mask, c)
        pts_s = teacher.patches_from_tokens(teacher.decoder(student_masked, pos_mask))
    feat_p = F.normalize(student_masked.float(), dim=-1)
    feat_t = F.normalize(feat_t[mask].reshape(b, num_mask, c).float(), dim=-1)
    feature_dist = ((feat_p - feat_t) ** 2).sum(dim=-1)
    m = pts_s.shape[2]
    chamfer = chamfer_distance(pts_s.reshape(-1, m, 3).float(), pts_t[mask].reshape(-1, m, 3).float(),
                               variant="l2", reduction="none").reshape(b, num_mask)
    return feature_dist, chamfer


class FrozenPointMAE(PointMAE):
    """The KD teacher: always in eval mode, never trained (its decoder may still pass gradients)."""

    def train(self, mode: bool = True) -> FrozenPointMAE:
        return super().train(False)


class GeoMask3D(Method):
    def __init__(self, config: Any, teacher_state: dict[str, Tensor]) -> None:
        super().__init__()
        m = config.model
        self.config = config
        self.student = GeoMask3DStudent(m.dim, m.depth, m.heads, m.decoder_depth, config.gc_depth,
                                        m.drop_path, m.num_groups, m.group_size)
        self.ema_teacher = copy.deepcopy(self.student)
        self.ema_teacher.requires_grad_(False)
        # built on first use: `.to(device)` and SyncBatchNorm conversion replace buffers/modules after __init__
        self._ema: EMA | None = None
        self.kd_teacher = FrozenPointMAE(m.dim, m.depth, m.heads, m.decoder_depth, m.heads, 0.0,
                                         m.num_groups, m.group_size, mask_ratio=0.0)
        report = load_state(self.kd_teacher, teacher_state)
        if report.missing:
            raise InputError(f"GeoMask3D teacher: the Point-MAE checkpoint lacks {len(report.missing)} "
                             f"weights ({', '.join(report.missing[:3])}, ...)")
        self.kd_teacher.requires_grad_(False)
        self.kd_teacher.eval()

    def train(self, mode: bool = True) -> GeoMask3D:
        super().train(mode)
        self.ema_teacher.eval()  # the teacher scores patches in inference mode (no drop-path, BN stats)
        return self

    def masked_losses(self, points: Tensor, epoch: int, total_epochs: int) -> dict[str, Tensor]:
        cfg = self.config
        neighborhood, center = self.student.grouper(points)
        b, g = center.shape[:2]
        # 1. the EMA teacher scores every patch of the unmasked cloud
        with torch.no_grad():
            _, gc_all = self.ema_teacher(neighborhood, center, torch.zeros(b, g, dtype=torch.bool,
                                                                           device=center.device))
        # 2. hardest patches always masked, the rest at random
        mask = geometric_mask(gc_all, cfg.mask_ratio, hard_share(epoch, total_epochs, cfg.max_hard_share))
        num_mask = int(mask[0].sum())
        # 3. student reconstruction features and GC predictions (order: visible, then masked)
        decoded, gc_pred = self.student(neighborhood, center, mask)
        student_masked = decoded[:, -num_mask:]
        # 4. per-masked-patch targets from the frozen Point-MAE
        feature_dist, chamfer = per_patch_targets(student_masked, self.kd_teacher, neighborhood, center,
                                                  mask, cfg.cd_grad)
        w_feat, w_cd = (1.0, 1.0) if epoch < cfg.loss_switch_epoch else cfg.late_weights
        # 5. rank the masked patches by their target (the GC the predictor should learn)
        gc_target = (feature_dist + chamfer).detach()
        return {
            "feature": w_feat * feature_dist.mean(),
            "chamfer": w_cd * chamfer.mean(),
            "drc": cfg.drc_weight * drc_loss(gc_pred[:, -num_mask:], gc_target),
            "metric/hard_share": torch.tensor(hard_share(epoch, total_epochs, cfg.max_hard_share)),
        }

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        points = batch["points"]
        if self.config.data.augment:
            points = scale_and_translate(points, step_generator())
        return self.masked_losses(points, state.epoch, self.config.train.epochs)

    def after_optimizer_step(self, state: StepState) -> None:
        cfg = self.config
        if self._ema is None:
            self._ema = EMA(self.student, self.ema_teacher)
        self._ema.update(ema_decay(state.epoch, cfg.ema_decay[0], cfg.ema_decay[1], cfg.ema_ramp_epochs))

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if "probe_split" in batch:
            neighborhood, center = self.student.grouper(batch["points"])
            tokens = self.student.encoder(neighborhood, center)
            out = {"probe/features": pooled_features(tokens), "probe/label": batch["label"],
                   "probe/split": batch["probe_split"]}
        return out

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        return summarize_validation(outputs)

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        """Start the student (and its EMA copy) from a Point-MAE/GeoMask3D encoder."""
        state = {k: v for k, v in backbone_state(weights).items() if k.startswith("encoder.")}
        report = load_state(self.student, state, only_prefix="encoder.")
        self.ema_teacher.load_state_dict(self.student.state_dict())
        return {"loaded": report.loaded, "skipped": report.unexpected, "missing": report.missing}


def teacher_state_from(spec: str) -> dict[str, Tensor]:
    """A complete pc3d PointMAE state from an official pretrain.pth or a pc3d point-mae checkpoint."""
    from pc3d.engine.checkpoint import load_weights

    state = strip_wrappers(load_weights(spec))
    if is_official_layout(state):
        state, _ = official_to_pc3d(state)
    elif any(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return state


def bootstrap_teacher(config: Any, train_set: Any) -> dict[str, Tensor]:
    """Offline quickstart: pretrain a Point-MAE teacher for `teacher.bootstrap_steps` steps."""
    from torch.utils.data import DataLoader

    from pc3d.methods.point_mae import PointMAEPretraining

    point_mae_cfg = _PointMAESettings(config)
    method = PointMAEPretraining(point_mae_cfg)
    optimizer = torch.optim.AdamW(method.param_groups(config.optim.weight_decay), lr=config.teacher.bootstrap_lr)
    loader = DataLoader(train_set, batch_size=min(config.train.batch_size, len(train_set)), shuffle=True,
                        drop_last=True)
    step = 0
    method.train()
    while step < config.teacher.bootstrap_steps:
        for batch in loader:
            state = StepState(step=step, epoch=0, total_steps=config.teacher.bootstrap_steps,
                              progress=step / config.teacher.bootstrap_steps, lr=config.teacher.bootstrap_lr)
            loss = method.training_step(batch, state)["chamfer"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step >= config.teacher.bootstrap_steps:
                break
    return {k: v.detach().clone() for k, v in method.model.state_dict().items()}


class _PointMAESettings:
    """The slice of a Point-MAE preset that PointMAEPretraining reads, taken from a GeoMask3D preset."""

    def __init__(self, config: Any) -> None:
        self.model = config.model
        self.mask_ratio = 0.6
        self.loss = "cdl2"
        self.data = config.data


def build(config: Any, rank: int) -> Any:
    from pc3d.data.readers.objects import pretrain_sets
    from pc3d.engine.trainer import TrainingSetup

    torch.manual_seed(config.run.seed)
    train_set, val_set = pretrain_sets(config)
    if config.teacher.weights is not None:
        teacher_state = teacher_state_from(config.teacher.weights)
    else:
        teacher_state = bootstrap_teacher(config, train_set)
    torch.manual_seed(config.run.seed + 1)
    return TrainingSetup(method=GeoMask3D(config, teacher_state), train_set=train_set, val_set=val_set)


def run(request: Any) -> dict:
    from pc3d.engine.trainer import fit

    return fit(request, build)


