"""Recipe tests of the full PointINS / Sonata presets: each preset goes through pc3d's preset loader and validator
and is compared with the paper's values (PointINS Table 9, Appendix A) or, where the paper defers to its base,
Sonata's (Pointcept configs/sonata/pretrain-sonata-v1m1-0-base.py, models/sonata/sonata_v1m1_base.py). Each row
names its source, so a drifting preset fails CI with the reference to check against.

Sources: shared/reference/pointins.md (section 6 = the paper: Table 9, Algorithm 1, Eq. 4, Appendix A; sections
1-2 = Sonata's code); Pointcept configs/sonata/insseg-sonata-v1m1-0a-scannet-pg-lin.py for the probes' warm-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from recipes import check_recipe, shipped

INDOOR = ("pointins", "pointins-large", "pointins-s3dis", "pointins-scannet200")
OUTDOOR = ("pointins-outdoor", "sonata-outdoor")
PRETRAIN = (*INDOOR, *OUTDOOR, "sonata", "sonata-large")

# (preset, key, value, reference) for values every pretraining preset of a group shares
SHARED: list[tuple[tuple[str, ...], str, Any, str]] = [
    (PRETRAIN, "optim.name", "adamw", "Table 9: optimiser AdamW"),
    (PRETRAIN, "optim.warmup_ratio", 0.05, "Table 9: warm-up ratio 0.05 (of all iterations)"),
    (PRETRAIN, "optim.warmup_epochs", None, "Table 9 gives a ratio, not epochs"),
    (PRETRAIN, "optim.weight_decay", 0.04, "Table 9: weight decay 4e-2"),
    (PRETRAIN, "optim.weight_decay_end", 0.2, "Sonata: weight decay cosine 0.04 -> 0.2 (WeightDecaySchedular)"),
    (PRETRAIN, "optim.clip_grad", 3.0, "Sonata: grad clip 3.0"),
    (PRETRAIN, "train.batch_size", 16, "Table 9: batch size 16"),
    (PRETRAIN, "train.ema_momentum", 0.994, "Sonata: EMA momentum cosine from 0.994"),
    (PRETRAIN, "train.ema_momentum_final", 1.0, "Sonata: ... to 1 over training"),
    (PRETRAIN, "loss.teacher_temp", [0.04, 0.07], "Sonata: teacher temperature 0.04 -> 0.07 over the warm-up"),
    (PRETRAIN, "loss.student_temp", 0.1, "Sonata: student temperature 0.1"),
    (PRETRAIN, "loss.warmup", 0.05, "Sonata: mask / temperature schedules warm up over 5 % of the iterations"),
    (PRETRAIN, "loss.sinkhorn_iters", 3, "Sonata: 3 Sinkhorn-Knopp iterations"),
    (PRETRAIN, "loss.weights", [0.25, 0.25, 0.5], "Sonata: mask 2/8, roll-mask 2/8, unmask 4/8"),
    (PRETRAIN, "loss.match_max_r", 0.32, "Sonata config: match_max_r 0.32"),
    (PRETRAIN, "loss.layer_decay", 0.9, "Sonata: layer-wise lr decay 0.9"),
    (PRETRAIN, "loss.mask_ratio", [0.3, 0.7], "Table 9: mask ratio 0.7 (Sonata: from 0.3 over the warm-up)"),
    (PRETRAIN, "data.global_views", 2, "Sonata: 2 global crops"),
    (PRETRAIN, "data.local_views", 4, "Sonata: 4 local crops"),
    (PRETRAIN, "data.global_scale", [0.4, 1.0], "Sonata: global crops 0.4-1.0 of the scene"),
    (PRETRAIN, "data.local_scale", [0.1, 0.4], "Sonata: local crops 0.1-0.4"),
    (PRETRAIN, "data.max_view_points", 65536, "Sonata: <= 65 536 points per view"),
    (PRETRAIN, "head.prototypes", 4096, "Sonata: 4096 prototypes"),
    (PRETRAIN, "head.hidden", 4096, "Sonata: head MLP 4096 wide"),
    (PRETRAIN, "head.bottleneck", 256, "Sonata: head bottleneck 256"),
    (PRETRAIN, "head.up_cast_levels", 2, "Appendix A: concatenation of the last three encoder stages"),
    (PRETRAIN, "model.patch_size", 1024, "Sonata: patch size 1024"),
    (PRETRAIN, "model.drop_path", 0.3, "Sonata: drop path 0.3"),
    (INDOOR + ("sonata", "sonata-large"), "model.grid_size", 0.02, "Sonata / PointGroup protocol: 2 cm grid"),
    (INDOOR + ("sonata", "sonata-large"), "optim.lr", 4e-3, "Table 9 indoor: learning rate 4e-3"),
    (INDOOR + ("sonata", "sonata-large"), "loss.mask_size", [0.1, 0.4], "Table 9 indoor: mask size 40 cm "
     "(Sonata: from 0.1 m over the warm-up)"),
    (INDOOR, "offset.prior", "gamma", "Table 9 indoor: magnitude prior Gamma"),
    (INDOOR, "offset.gamma", [0.24, 2.53], "Table 9 indoor: Gamma(a=0.24, theta=2.53)"),
    (INDOOR, "offset.knn", 150, "Table 9 indoor: k_nn 150"),
    (INDOOR, "offset.radius", 1.2, "Table 9 indoor: tau_d 120 cm"),
    (INDOOR, "offset.min_points", 30, "Table 9 indoor: tau_min 30"),
    (INDOOR + ("pointins-outdoor",), "offset.weight", 0.25, "Table 9: lambda_off 0.25"),
    (INDOOR + ("pointins-outdoor",), "offset.warmup", 0.1, "Table 9: warm-up ratio of L_off 0.1"),
    (INDOOR + ("pointins-outdoor",), "offset.kmeans_k", 20, "Table 9: K (k-means) 20"),
    (INDOOR + ("pointins-outdoor",), "offset.kmeans_iters", 10, "Table 9: k-means iterations 10"),
    (INDOOR + ("pointins-outdoor",), "offset.odr", True, "Alg. 1: ODR"),
    (INDOOR + ("pointins-outdoor",), "offset.scr", True, "Alg. 1: SCR"),
    (INDOOR + ("pointins-outdoor",), "offset.order", "odr-scr", "Alg. 1 (Table 8: SCR first is worse)"),
    (INDOOR + ("pointins-outdoor",), "offset.odr_source", "teacher", "Alg. 1 (Table 8: student-side ODR is worse)"),
    (INDOOR + ("pointins-outdoor",), "offset.centroid", "coordinates", "Eq. 4 / Alg. 1 line 5: mean of the "
     "points (Alg. 2 in the appendix: predicted centroids)"),
    (INDOOR + ("pointins-outdoor",), "offset.observable_only", True, "the student's offsets at the points it saw"),
    (INDOOR + ("pointins-outdoor",), "loss.observable_only", True, "DOS: soft-maps of observable points only"),
    (("sonata", "sonata-large"), "loss.observable_only", False, "Sonata: every matched point"),
]

RECIPES: list[tuple[str, str, Any, str]] = [
    (name, key, want, ref) for names, key, want, ref in SHARED for name in names
] + [
    ("pointins", "method", "pointins", "PointINS"),
    ("pointins", "train.epochs", 800, "Table 9: 800 epochs (ScanNet)"),
    ("pointins", "loss.zipf_alpha", 0.1, "Table 9: alpha_zipf 0.1 (ScanNet)"),
    ("pointins", "data.dataset", "scannet", "Table 9: ScanNet column"),
    ("pointins-large", "train.epochs", 800, "Table 9: 800 epochs (ScanNet)"),
    ("pointins-large", "model.depths", [3, 3, 3, 12, 3], "Appendix A: large encoder depths [3,3,3,12,3]"),
    ("pointins-large", "model.channels", [48, 96, 192, 384, 512], "Appendix A: widths [48,96,192,384,512]"),
    ("pointins-large", "model.heads", [3, 6, 12, 24, 32], "Sonata PT-v3m2: enc_num_head (3, 6, 12, 24, 32)"),
    ("pointins-s3dis", "train.epochs", 3000, "Table 9: 3000 epochs (S3DIS)"),
    ("pointins-s3dis", "loss.zipf_alpha", 0.1, "Table 9: alpha_zipf 0.1 (S3DIS)"),
    ("pointins-s3dis", "data.dataset", "s3dis", "Table 9: S3DIS column"),
    ("pointins-outdoor", "optim.lr", 2e-3, "Table 9 outdoor: learning rate 2e-3"),
    ("pointins-outdoor", "train.epochs", 50, "Table 9 outdoor: 50 epochs"),
    ("pointins-outdoor", "loss.zipf_alpha", 1.3, "Table 9 outdoor: alpha_zipf 1.3"),
    ("pointins-outdoor", "loss.mask_size", [0.1, 1.0], "Table 9 outdoor: mask size 1 m"),
    ("pointins-outdoor", "offset.prior", "lognormal", "Table 9 outdoor: magnitude prior LogNormal"),
    ("pointins-outdoor", "offset.lognormal", [0.0, 0.76], "Table 9 outdoor: LogNormal(mu=0, sigma=0.76)"),
    ("pointins-outdoor", "offset.knn", 20, "Table 9 outdoor: k_nn 20"),
    ("pointins-outdoor", "offset.radius", 1.0, "Table 9 outdoor: tau_d 1 m"),
    ("pointins-outdoor", "offset.min_points", 10, "Table 9 outdoor: tau_min 10"),
    ("pointins-scannet200", "loss.zipf_alpha", 1.3, "Table 9: alpha_zipf 1.3 (ScanNet200)"),
    ("pointins-scannet200", "train.epochs", 800, "Table 9: 800 epochs (ScanNet200)"),
    ("probe-scannet200", "data.dataset", "scannet200", "section 4: ScanNet200 instance segmentation"),
    # outdoor pretraining: both LiDAR datasets of the paper's evaluation (section 4: nuScenes / SemanticKITTI
    # panoptic), at the LiDAR grid of Pointcept's configs and of probe-semantickitti
    (OUTDOOR[0], "data.dataset", "semantickitti", "section 4 / issue 19: outdoor = SemanticKITTI + nuScenes"),
    (OUTDOOR[0], "data.also", [{"dataset": "nuscenes", "root": "data/nuscenes"}], "section 4: nuScenes"),
    (OUTDOOR[0], "model.grid_size", 0.05, "Pointcept / Sonata LiDAR configs: grid 0.05 (= probe-semantickitti)"),
    ("probe-semantickitti", "model.grid_size", 0.05, "the grid of outdoor pretraining (pointins-outdoor)"),
    ("sonata-outdoor", "data.dataset", "semantickitti", "same data as pointins-outdoor"),
    ("sonata-outdoor", "data.also", [{"dataset": "nuscenes", "root": "data/nuscenes"}], "same data as "
     "pointins-outdoor"),
    ("sonata-outdoor", "model.grid_size", 0.05, "same grid as pointins-outdoor"),
    ("sonata-outdoor", "optim.lr", 2e-3, "Table 9 outdoor: learning rate 2e-3"),
    ("sonata-outdoor", "train.epochs", 50, "Table 9 outdoor: 50 epochs"),
    ("sonata-outdoor", "loss.zipf_alpha", 1.3, "Table 9 outdoor: alpha_zipf 1.3"),
    ("sonata-outdoor", "loss.mask_size", [0.1, 1.0], "Table 9 outdoor: mask size 1 m"),
    ("sonata", "model.color_norm", "unit", "Sonata sonata/transform.py NormalizeColor: colour / 255"),
    ("sonata", "model.center_precision", "float32", "Sonata CenterShift on float32 arrays"),
    ("sonata", "method", "sonata", "Sonata"),
    ("sonata", "train.epochs", 800, "Table 9: 800 epochs (ScanNet)"),
    ("sonata", "loss.zipf_alpha", 0.1, "Table 9: alpha_zipf 0.1 (ScanNet)"),
    ("sonata-large", "model.depths", [3, 3, 3, 12, 3], "Appendix A: large encoder depths"),
    ("sonata-large", "model.channels", [48, 96, 192, 384, 512], "Appendix A: large encoder widths"),
    # probes: Table 9 is pretraining only; Sonata's probes warm up over pct_start 0.05 of the iterations
    ("probe-scannet", "optim.warmup_ratio", 0.05, "Pointcept insseg-sonata-v1m1-0a-scannet-pg-lin: pct_start 0.05"),
    ("probe-scannet", "optim.lr", 2e-3, "Pointcept insseg-sonata-v1m1-0a-scannet-pg-lin: lr 0.002"),
    ("probe-scannet", "optim.weight_decay", 0.05, "Pointcept insseg-sonata-v1m1-0a-scannet-pg-lin: wd 0.05"),
    ("probe-scannet", "train.epochs", 800, "Pointcept insseg-sonata-v1m1-0a-scannet-pg-lin: 800 epochs"),
    ("probe-scannet", "train.batch_size", 24, "Pointcept insseg-sonata-v1m1-0a-scannet-pg-lin: batch 24"),
    ("probe-s3dis", "optim.warmup_ratio", 0.05, "Pointcept Sonata probes: pct_start 0.05"),
    ("probe-semantickitti", "optim.warmup_ratio", 0.05, "Pointcept Sonata probes: pct_start 0.05 (was 40 of 50 "
     "epochs)"),
    # the probing protocol (PointINS section 4: "the backbone is frozen and only a head is trained"; Sonata's)
    ("probe-scannet", "probe.mode", "linear", "Pointcept insseg-sonata-v1m1-0a-scannet-pg-lin: freeze_backbone, "
     "enc_mode (all levels concatenated)"),
    ("probe-scannet", "probe.offset_init", "probe", "Pointcept PG-v1m2: a fresh bias_head on the backbone output"),
    ("probe-scannet", "probe.encoder_source", "student", "Pointcept insseg-sonata-*: CheckpointLoader keywords "
     "'module.student.backbone'"),
    ("probe-scannet-sonata", "probe.offset_init", "probe", "Pointcept PG-v1m2: a fresh bias_head"),
    ("probe-scannet-decoder", "probe.mode", "decoder", "Pointcept insseg-sonata-v1m1-0b-scannet-pg-dec: enc_mode "
     "False, freeze_encoder True"),
    ("probe-scannet-decoder", "probe.decoder_depths", [2, 2, 2, 2], "Pointcept insseg-sonata-v1m1-0b: dec_depths"),
    ("probe-scannet-decoder", "probe.decoder_channels", [64, 96, 192, 384], "Pointcept insseg-sonata-v1m1-0b: "
     "dec_channels"),
    ("probe-scannet-decoder", "probe.decoder_heads", [4, 6, 12, 24], "Pointcept insseg-sonata-v1m1-0b: dec_num_head"),
    ("probe-scannet-decoder", "probe.decoder_patch_size", 1024, "Pointcept insseg-sonata-v1m1-0b: dec_patch_size"),
    ("probe-scannet-decoder", "probe.decoder_drop_path", 0.3, "Pointcept insseg-sonata-v1m1-0b: drop_path 0.3"),
    ("probe-scannet-full", "probe.mode", "full", "Pointcept insseg-sonata-v1m1-0c-scannet-pg-ft: nothing frozen"),
    ("probe-scannet-full", "backbone_lr_scale", 0.1, "Pointcept insseg-sonata-v1m1-0c: param_dicts block lr 0.1x"),
    ("probe-scannet", "probe.cluster_radius", 0.03, "Pointcept insseg-sonata-v1m1-0a: cluster_thresh 1.5 voxels of "
     "2 cm"),
    ("probe-scannet", "probe.cluster_max_neighbors", 600, "Pointcept insseg-sonata-v1m1-0a: cluster_closed_points"),
    ("probe-scannet", "probe.propose_min_points", 200, "Pointcept insseg-sonata-v1m1-0a: cluster_propose_points"),
    ("probe-scannet", "probe.cluster_min_points", 50, "Pointcept insseg-sonata-v1m1-0a: cluster_min_points"),
]


@pytest.mark.parametrize("name,key,want,ref", RECIPES, ids=[f"{r[0]}:{r[1]}" for r in RECIPES])
def test_preset_value_matches_the_paper(name: str, key: str, want: Any, ref: str) -> None:
    check_recipe(name, key, want, ref)


@pytest.mark.parametrize("name,millions", [("pointins", 38), ("sonata", 38), ("pointins-large", 108),
                                           ("sonata-large", 108)])
def test_encoder_sizes(name: str, millions: int) -> None:
    """Appendix A: the default encoder has ~38M parameters (38.6M here), the large one 108M (108.5M here)."""
    from pc3d.methods.sonata import build_encoder

    torch.manual_seed(0)
    count = sum(p.numel() for p in build_encoder(shipped(name).model).parameters())
    assert int(count // 1_000_000) == millions, f"{name}: {count / 1e6:.1f}M encoder parameters"


def test_every_pointins_and_sonata_preset_warms_up_by_the_ratio() -> None:
    """Every pretraining variant (quickstarts and ablations too) keeps Table 9's 5 % share of the iterations."""
    from pc3d.config.loading import available_presets

    names = [n for n in available_presets("pretrain") if n.startswith(("pointins", "sonata"))]
    assert len(names) > 10
    for name in names:
        optim = shipped(name).optim
        assert (optim.warmup_ratio, optim.warmup_epochs) == (0.05, None), name


# ----------------------------------------------------------------------------- ablations as the paper states them

TINY = {"model": {"depths": [1, 1], "channels": [8, 16], "heads": [2, 2], "patch_size": 16},
        "head": {"hidden": 8, "bottleneck": 4, "prototypes": 4, "up_cast_levels": 1}}


class FirstThree(torch.nn.Module):
    """Stands in for an offset head: the offset of a point is its first three feature channels."""

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return feat[:, :3] * 1.0


def _rotation_z(angle: float) -> torch.Tensor:
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _hand_built(offset: dict[str, Any]) -> tuple[Any, dict[str, torch.Tensor], Any, dict[str, torch.Tensor]]:
    """A PointINS whose Sonata part is replaced by a hand-built step: one scene, two global views (the second
    rotated by 90 degrees, so offsets must be mapped back) of four head-level teacher / student points each, and
    one local view of two points. Returns (method, batch, context, by-hand pieces)."""
    from pc3d.config.pointins import PointINSPreset
    from pc3d.methods.pointins import PointINS
    from pc3d.methods.sonata import SSLContext
    from pc3d.models.ptv3 import Point

    config = PointINSPreset.model_validate({**TINY, "offset": offset})
    method = PointINS(config)
    method.student.offset_head = FirstThree()
    method.teacher.offset_head = FirstThree()
    transforms = torch.stack([torch.eye(3), _rotation_z(np.pi / 2)])
    g_view = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    t_origin = torch.tensor([[0.0, 0, 0], [0.2, 0, 0], [1.0, 1, 0], [1.2, 1, 0],
                             [0.0, 0.1, 0], [0.2, 0.1, 0], [1.0, 1.1, 0], [1.2, 1.1, 0]])
    t_off = torch.tensor([[0.1, 0, 0], [-0.1, 0, 0], [0.1, 0.1, 0], [-0.1, -0.1, 0],
                          [0.1, -0.1, 0], [-0.1, 0.0, 0.1], [0.2, 0.0, 0], [-0.2, 0.1, 0]])
    s_origin = t_origin + 0.01  # the student's points sit next to (not on) the teacher's
    s_off = torch.tensor([[0.05, 0, 0], [0.0, 0.1, 0], [0.3, 0, 0], [0, 0, 0.2],
                          [0.1, 0.1, 0], [0.0, -0.2, 0], [0.1, 0.0, 0.1], [-0.1, 0.0, 0]])
    masked = torch.tensor([0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0])  # 1 and 0.5: the student did not see it all
    l_origin = torch.tensor([[0.21, 0.0, 0], [1.01, 1.0, 0]])
    l_off = torch.tensor([[0.0, 0.1, 0], [0.1, 0.1, 0.1]])
    local_transform = _rotation_z(-np.pi / 2).unsqueeze(0)

    def augmented(off: torch.Tensor, view: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.bmm(a[view], off.unsqueeze(2)).squeeze(2)  # what a head sees in the view's frame

    def point(origin: torch.Tensor, feat: torch.Tensor, view: torch.Tensor, extras: dict | None = None) -> Any:
        return Point(coord=origin.clone(), grid_coord=torch.zeros(len(origin), 3, dtype=torch.long), batch=view,
                     feat=feat, extras={"origin": origin, **(extras or {})})

    t_feat = torch.cat([augmented(t_off, g_view, transforms), torch.eye(8)[:, :2]], 1)  # + 2 channels for k-means
    s_feat = augmented(s_off, g_view, transforms).requires_grad_(True)
    l_feat = augmented(l_off, torch.zeros(2, dtype=torch.long), local_transform).requires_grad_(True)
    teacher = point(t_origin, t_feat, g_view)
    student = point(s_origin, s_feat, g_view, {"masked": masked})
    local = point(l_origin, l_feat, torch.zeros(2, dtype=torch.long))
    idx = torch.arange(8)
    pairs = {"mask": (idx, idx, "global"),
             "roll_mask": (idx, torch.tensor([4, 5, 6, 7, 0, 1, 2, 3]), "global"),  # the other view's points
             "unmask": (torch.tensor([0, 1]), torch.tensor([1, 2]), "local")}
    context = SSLContext(teacher, student, local, pairs, 2, 1)
    method.ssl_step = lambda batch, state: ({}, context)  # the Sonata terms are tested in test_sonata.py
    batch = {"global_transform": transforms, "local_transform": local_transform}
    parts = {"t_origin": t_origin, "t_off": t_off, "s_origin": s_origin, "s_off": s_off, "masked": masked,
             "l_origin": l_origin, "l_off": l_off, "g_view": g_view, "s_feat": s_feat}
    return method, batch, context, parts


def _state(progress: float = 0.5) -> Any:
    from pc3d.engine.method import StepState

    return StepState(step=3, epoch=0, total_steps=10, progress=progress, lr=1e-3)


def _expected_raw(centre: torch.Tensor, parts: dict, kinds: list[tuple[str, torch.Tensor, torch.Tensor]],
                  seen_only: bool) -> torch.Tensor:
    """offset_loss of the kept (student, teacher) matches, written out: goal = c[t] - x_s."""
    from pc3d.methods.pointins import offset_loss

    preds, goals = [], []
    for kind, s_idx, t_idx in kinds:
        for s, t in zip(s_idx.tolist(), t_idx.tolist(), strict=True):
            if kind == "global" and seen_only and parts["masked"][s] != 0:
                continue
            pred, x_s = (parts["s_off"][s], parts["s_origin"][s]) if kind == "global" else \
                (parts["l_off"][s], parts["l_origin"][s])
            preds.append(pred)
            goals.append(centre[t] - x_s)
    return offset_loss(torch.stack(preds), torch.stack(goals))


ALL_KINDS = [("global", torch.arange(8), torch.arange(8)),
             ("global", torch.arange(8), torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])),
             ("local", torch.tensor([0, 1]), torch.tensor([1, 2]))]


@pytest.mark.parametrize("seen_only", [True, False])
def test_training_step_regresses_teacher_centres_across_views(seen_only: bool) -> None:
    """"L_off only" (Table 3): the target of a student point is its matched teacher point's centre c[t] = x_t + o_t
    (teacher offsets, mapped back from the view's frame) minus the student's own x_s; masked points count only
    with observable_only off."""
    method, batch, _, parts = _hand_built({"odr": False, "scr": False, "observable_only": seen_only})
    terms = method.training_step(batch, _state())
    centre = parts["t_origin"] + parts["t_off"]
    expected = _expected_raw(centre, parts, ALL_KINDS, seen_only)
    torch.testing.assert_close(terms["metric/offset_raw"], expected)
    torch.testing.assert_close(terms["offset"], 0.25 * expected)
    assert float(terms["metric/offset_seen_share"]) == (0.625 if seen_only else 1.0)  # 5 of 8 unmasked
    terms["offset"].backward()
    grad = parts["s_feat"].grad.abs().sum(1)
    unseen = parts["masked"] != 0
    assert torch.all(grad[~unseen] > 0)
    assert torch.all(grad[unseen] == 0) if seen_only else torch.all(grad[unseen] > 0)


def test_training_step_targets_come_from_the_teacher_through_odr() -> None:
    """Alg. 1: ODR transforms the teacher's offsets (per view); the student's offsets never enter the targets."""
    from pc3d.methods.pointins import offset_distribution_regularization

    method, batch, context, parts = _hand_built({"odr": True, "scr": False})
    terms = method.training_step(batch, _state())
    odr = offset_distribution_regularization(parts["t_off"], "gamma", {"shape": 0.24, "scale": 2.53},
                                             group=parts["g_view"])
    expected = _expected_raw(parts["t_origin"] + odr, parts, ALL_KINDS, seen_only=True)
    torch.testing.assert_close(terms["metric/offset_raw"], expected)
    with torch.no_grad():
        context.student_global.feat.mul_(3.0)  # other student offsets: the same targets, another loss
    parts["s_off"] = parts["s_off"] * 3.0
    again = method.training_step(batch, _state())
    torch.testing.assert_close(again["metric/offset_raw"],
                               _expected_raw(parts["t_origin"] + odr, parts, ALL_KINDS, seen_only=True))
    assert "metric/offset_kl" not in terms


def test_student_side_odr_is_a_kl_regulariser_on_the_student() -> None:
    """Table 8 (dagger): no ODR in the targets (raw teacher offsets here, SCR off), and L_off + w KL(student)."""
    from pc3d.methods.pointins import student_odr_kl

    method, batch, _, parts = _hand_built({"odr": True, "scr": False, "odr_source": "student", "kl_weight": 0.5,
                                           "kl_bins": 4})
    terms = method.training_step(batch, _state())
    raw = _expected_raw(parts["t_origin"] + parts["t_off"], parts, ALL_KINDS, seen_only=True)
    seen = parts["masked"] == 0
    kl = student_odr_kl(parts["s_off"][seen], parts["g_view"][seen], "gamma", {"shape": 0.24, "scale": 2.53}, 4)
    torch.testing.assert_close(terms["metric/offset_raw"], raw)
    torch.testing.assert_close(terms["metric/offset_kl"], kl)
    torch.testing.assert_close(terms["offset"], 0.25 * (raw + 0.5 * kl))
    assert float(kl) > 0


def _kl_by_hand(offsets: np.ndarray, shape: float, scale: float, bins: int) -> float:
    """student_odr_kl of one group with scipy and loops: magnitudes through the Gamma CDF, direction axes through
    (d + 1) / 2, each linearly binned between bin centres, KL(Q || uniform), mean of the four."""
    from scipy import stats

    m = np.linalg.norm(offsets, axis=1)
    d = offsets / m[:, None]
    kls = []
    for u in [stats.gamma(shape, scale=scale).cdf(m)] + [(d[:, k] + 1) / 2 for k in range(3)]:
        q = np.zeros(bins)
        for value in u:
            pos = min(max(value * bins - 0.5, 0.0), bins - 1.0)
            low = min(int(np.floor(pos)), bins - 2)
            q[low] += 1 - (pos - low)
            q[low + 1] += pos - low
        q /= q.sum()
        kls.append(sum(p * np.log(p * bins) for p in q if p > 0))
    return float(np.mean(kls))


def test_student_odr_kl_by_hand_zero_on_the_prior_and_differentiable() -> None:
    from scipy import stats

    from pc3d.methods.pointins import student_odr_kl

    prior = ("gamma", {"shape": 0.24, "scale": 2.53})
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 0.3, (40, 3))
    got = student_odr_kl(torch.from_numpy(offsets), torch.zeros(40, dtype=torch.long), *prior, bins=8)
    assert float(got) == pytest.approx(_kl_by_hand(offsets, 0.24, 2.53, 8), rel=1e-6)
    # per view: the mean of each view's own KL
    view = torch.tensor([0] * 15 + [2] * 25)
    both = student_odr_kl(torch.from_numpy(offsets), view, *prior, bins=8)
    assert float(both) == pytest.approx((_kl_by_hand(offsets[:15], 0.24, 2.53, 8)
                                         + _kl_by_hand(offsets[15:], 0.24, 2.53, 8)) / 2, rel=1e-6)
    # magnitudes at the prior's quantiles, directions spread evenly over the axes: every histogram is uniform
    n, bins = 64, 8
    magnitude = stats.gamma(0.24, scale=2.53).ppf((np.arange(n) + 0.5) / n)
    axis_values = (np.arange(n) + 0.5) / n * 2 - 1  # an even spread of one coordinate in [-1, 1]
    z = rng.permutation(axis_values)
    phi = rng.uniform(0, 2 * np.pi, n)
    direction = np.stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z], 1)
    on_prior = torch.from_numpy(magnitude[:, None] * direction)
    kl_on_prior = student_odr_kl(on_prior, torch.zeros(n, dtype=torch.long), *prior, bins=bins)
    collapsed = student_odr_kl(torch.full((n, 3), 0.1, dtype=torch.float64), torch.zeros(n, dtype=torch.long),
                               *prior, bins=bins)
    # one offset repeated: each histogram holds one or two bins, near the bound log(bins)
    assert float(collapsed) == pytest.approx(_kl_by_hand(np.full((n, 3), 0.1), 0.24, 2.53, bins), rel=1e-6)
    assert 0.7 * np.log(bins) < float(collapsed) <= np.log(bins)
    assert float(kl_on_prior) < 0.1 * float(collapsed)
    # gradient descent on the KL alone spreads collapsed offsets out
    o = (torch.tensor(offsets) * 0.1).requires_grad_(True)
    start = float(student_odr_kl(o.detach(), torch.zeros(40, dtype=torch.long), *prior, bins=8))
    optimiser = torch.optim.SGD([o], lr=0.05)
    for _ in range(30):
        optimiser.zero_grad()
        student_odr_kl(o, torch.zeros(40, dtype=torch.long), *prior, bins=8).backward()
        optimiser.step()
    assert float(student_odr_kl(o.detach(), torch.zeros(40, dtype=torch.long), *prior, bins=8)) < start


def test_scr_centre_defaults_to_the_mean_of_the_points() -> None:
    """Eq. 4 / Alg. 1 line 5 (mean of x) by default; the appendix's Alg. 2 (mean of x + o) is the switch."""
    from pc3d.config.pointins import OffsetConfig
    from pc3d.methods.pointins import spatial_clustering_regularization

    assert OffsetConfig().centroid == "coordinates"
    assert shipped("pointins-ablation-predicted-centroid").offset.centroid == "predicted"
    coord = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0]])
    offsets = torch.tensor([[0.1, 0, 0], [0.0, 0, 0], [0.3, 0, 0]])
    default, valid = spatial_clustering_regularization(coord, offsets, torch.ones(3, 2), k=1, iters=2, knn=3,
                                                       radius=1.0, min_points=2)
    assert valid.all()
    torch.testing.assert_close(default, torch.tensor([0.1, 0.1, 0.1]).unsqueeze(1) * torch.tensor([1.0, 0, 0])
                               - coord)
    predicted, _ = spatial_clustering_regularization(coord, offsets, torch.ones(3, 2), k=1, iters=2, knn=3,
                                                     radius=1.0, min_points=2, centroid="predicted")
    torch.testing.assert_close(predicted[:, 0], torch.full((3,), (0.1 + 0.1 + 0.5) / 3) - coord[:, 0])


def test_ablation_presets_switch_one_thing() -> None:
    """Each quickstart ablation differs from pointins-quickstart only in its offset switch."""
    base = shipped("pointins-quickstart").model_dump()
    cases = {"pointins-ablation-loff-only": {"odr": False, "scr": False},
             "pointins-ablation-student-odr": {"odr_source": "student"},
             "pointins-ablation-predicted-centroid": {"centroid": "predicted"}}
    for name, switch in cases.items():
        dumped = shipped(name).model_dump()
        changed = {k: v for k, v in dumped["offset"].items() if base["offset"][k] != v}
        assert changed == switch, name
        assert {k: v for k, v in dumped.items() if k not in ("offset", "description")} == \
            {k: v for k, v in base.items() if k not in ("offset", "description")}, name
