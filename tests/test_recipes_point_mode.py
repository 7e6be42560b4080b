"""Recipe tests of the Point-MoDE presets: each full preset is loaded through pc3d's preset loader and validator and
compared with a table of the paper's values (section / table per row) and, for detection, 3DETR's ScanNet recipe.
Also the numeric tests of issue 18: Eq. 1's total loss, the query <-> block pairing (with q != K replication), the
up-axis block rotation, the object-expert initialisation guard and 3DETR's RandomCuboid.

Sources: Point-MoDE = the seed paper (shared/reference/point-mode.md section 7); 3DETR = facebookresearch/3detr
(scripts/scannet_ep1080.sh, main.py, datasets/scannet.py, utils/random_cuboid.py).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from recipes import check_recipe

from pc3d.config import load_preset, validate_preset

ALL_ON = {"scene_regression": True, "object_reconstruction": True, "coord_transform": True,
          "joint_projection": True, "stop_gradient": True}

RECIPES: list[tuple[str, str, Any, str]] = [
    # ---- pretraining (point-mode.md section 7 = the paper)
    ("point-mode", "data.num_points", 50_000, "4.1: 50k points per scene"),
    ("point-mode", "data.dataset", "scannet_detection", "4.1: ScanNetV2 training scenes"),
    ("point-mode", "data.extra", [{"dataset": "sunrgbd", "root": "data/sunrgbd"}], "4.1: + SUN RGB-D scenes"),
    ("point-mode", "blocks.count", 32, "4.1: 32 blocks per scene"),
    ("point-mode", "blocks.points", 2048, "4.1: 2k points per block"),
    ("point-mode", "blocks.rotation", "z", "4.1: 'simple rotation' of each block (about the up axis)"),
    ("point-mode", "blocks.centre", "mean", "3.2: box centre = mean of the block's points"),
    ("point-mode", "scene_rotation", "z", "4.1: simple rotation of the scene"),
    ("point-mode", "queries", None, "3.2: one query per block unless set (then B_g is replicated)"),
    ("point-mode", "object.mask_ratio", 0.6, "4.1: mask ratio 60 %"),
    ("point-mode", "object.dim", 384, "3.2: object expert = Point-MAE (384 wide)"),
    ("point-mode", "object.depth", 12, "3.2: Point-MAE encoder, 12 blocks"),
    ("point-mode", "object.num_groups", 64, "3.2: Point-MAE, 64 patches"),
    ("point-mode", "object.group_size", 32, "3.2: Point-MAE, 32 points per patch"),
    ("point-mode", "object.weights", None, "3.2: ShapeNet Point-MAE init - unset, so a run must name it"),
    ("point-mode", "scene.encoder_layers", 3, "3.1: 3DETR scene expert, 3 encoder layers"),
    ("point-mode", "scene.decoder_layers", 8, "3.1: 3DETR decoder, 8 layers"),
    ("point-mode", "scene.dim", 256, "3DETR d_model 256"),
    ("point-mode", "loss.chamfer", 1.0, "Eq. 1 lambda_1 (not given in the paper: 1)"),
    ("point-mode", "loss.giou", 1.0, "Eq. 1 lambda_2 (not given in the paper: 1)"),
    ("point-mode", "loss.center_l1", 0.0, "Eq. 1 has only L_rec and L_GIoU"),
    ("point-mode", "loss.size_l1", 0.0, "Eq. 1 has only L_rec and L_GIoU"),
    ("point-mode", "ablation.stop_gradient", True, "3.2 / Table 6: stop-gradient on B_g"),
    ("point-mode", "optim.name", "adamw", "4.1: AdamW"),
    ("point-mode", "optim.lr", 5e-4, "4.1: base learning rate 5e-4"),
    ("point-mode", "optim.weight_decay", 0.1, "4.1: weight decay 0.1"),
    ("point-mode", "train.epochs", 200, "4.1: 200 epochs"),
    # ---- Table 5 (rows as issue 18 reads them) and Table 6
    ("point-mode", "ablation", ALL_ON, "Table 5 last row: full Point-MoDE"),
    ("point-mode-scene-only", "ablation", {**ALL_ON, "object_reconstruction": False, "coord_transform": False,
                                            "joint_projection": False}, "Table 5 row 1: scene block regression"),
    ("point-mode-no-transform-no-projection", "ablation", {**ALL_ON, "coord_transform": False,
                                                            "joint_projection": False},
     "Table 5 row 2: + object masked reconstruction"),
    ("point-mode-no-reconstruction", "ablation", {**ALL_ON, "object_reconstruction": False},
     "Table 5 row 4: transform + projection without reconstruction"),
    ("point-mode-object-only", "ablation", {**ALL_ON, "scene_regression": False}, "Table 5: object only"),
    ("point-mode-no-coord-transform", "ablation", {**ALL_ON, "coord_transform": False}, "Table 5: no transform"),
    ("point-mode-no-joint-projection", "ablation", {**ALL_ON, "joint_projection": False}, "Table 5: no projection"),
    ("point-mode-no-stop-gradient", "ablation", {**ALL_ON, "stop_gradient": False}, "Table 6: no stop-gradient"),
    # ---- ScanNetV2 detection: 3DETR scripts/scannet_ep1080.sh (point-mode.md section 4)
    ("det-scannet", "data.num_points", 40_000, "3DETR ScanNet: 40000 points"),
    ("det-scannet", "queries", 256, "3DETR --nqueries 256"),
    ("det-scannet", "scene.encoder_layers", 3, "3DETR --enc_nlayers 3"),
    ("det-scannet", "scene.decoder_layers", 8, "3DETR --dec_nlayers 8"),
    ("det-scannet", "scene.tokens", 2048, "3DETR preencoder npoint 2048"),
    ("det-scannet", "scene.radius", 0.2, "3DETR preencoder radius 0.2"),
    ("det-scannet", "scene.samples", 64, "3DETR preencoder nsample 64"),
    ("det-scannet", "max_boxes", 64, "3DETR ScanNet MAX_NUM_OBJ 64"),
    ("det-scannet", "blocks.count", 32, "Point-MoDE 3.3: 32 object encoders on 32 random blocks"),
    ("det-scannet", "matcher.cost_class", 1.0, "3DETR --matcher_cls_cost 1"),
    ("det-scannet", "matcher.cost_giou", 2.0, "3DETR --matcher_giou_cost 2"),
    ("det-scannet", "matcher.cost_center", 0.0, "3DETR --matcher_center_cost 0"),
    ("det-scannet", "matcher.loss_giou", 1.0, "3DETR --loss_giou_weight 1"),
    ("det-scannet", "matcher.loss_center", 5.0, "3DETR --loss_center_weight 5"),
    ("det-scannet", "matcher.loss_size", 1.0, "3DETR --loss_size_weight 1"),
    ("det-scannet", "matcher.background_weight", 0.25, "3DETR --loss_no_object_weight 0.25"),
    ("det-scannet", "augment.flip", True, "3DETR scannet.py: flip x and y with p 0.5"),
    ("det-scannet", "augment.rotate_degrees", 5.0, "3DETR scannet.py: rotation about z U(-5, 5) degrees"),
    ("det-scannet", "augment.cuboid_crop", True, "3DETR --use_random_cuboid"),
    ("det-scannet", "augment.crop_size", [0.5, 1.0], "3DETR RandomCuboid min_crop 0.5, max_crop 1.0"),
    ("det-scannet", "augment.crop_min_points", 30_000, "3DETR random_cuboid_min_points 30000"),
    ("det-scannet", "augment.crop_min_share", 0.0, "3DETR: an absolute point count only"),
    ("det-scannet", "augment.crop_attempts", 100, "3DETR RandomCuboid: range(100)"),
    ("det-scannet", "augment.crop_aspect", 0.8, "3DETR RandomCuboid aspect 0.8"),
    ("det-scannet", "detect.eval_threshold", 0.05, "3DETR conf_thresh 0.05"),
    ("det-scannet", "detect.nms_iou", 0.25, "3DETR nms_iou 0.25"),
    ("det-scannet", "optim.lr", 5e-4, "3DETR --base_lr 5e-4"),
    ("det-scannet", "optim.weight_decay", 0.1, "3DETR --weight_decay 0.1"),
    ("det-scannet", "optim.warmup_epochs", 9, "3DETR --warm_lr_epochs 9"),
    ("det-scannet", "optim.warmup_start_lr", 1e-6, "3DETR --warm_lr 1e-6"),
    ("det-scannet", "optim.min_lr", 1e-6, "3DETR --final_lr 1e-6"),
    ("det-scannet", "optim.clip_grad", 0.1, "3DETR --clip_gradient 0.1"),
    ("det-scannet", "train.epochs", 1080, "3DETR --max_epoch 1080"),
    ("det-scannet", "train.batch_size", 8, "3DETR --batchsize_per_gpu 8"),
    ("det-scannet", "train.eval_every", 10, "3DETR --eval_every_epoch 10"),
]


@pytest.mark.parametrize(("preset", "key", "expected", "source"), RECIPES,
                         ids=[f"{p}:{k}" for p, k, _, _ in RECIPES])
def test_full_preset_carries_the_published_recipe(preset, key, expected, source):
    check_recipe(preset, key, expected, source)


# ------------------------------------------------------------------------------------------ object init guard


def request_for(name: str, *sets: str, **flags: Any) -> Any:
    from pc3d.config import apply_overrides
    from pc3d.runs import RunRequest

    config = validate_preset(apply_overrides(load_preset(name), list(sets)), name)
    return RunRequest(config=config, preset_name=name, **flags)


def test_full_preset_refuses_to_start_without_object_expert_weights():
    from pc3d.errors import ConfigError
    from pc3d.methods.point_mode import check_object_init

    with pytest.raises(ConfigError) as err:
        check_object_init(request_for("point-mode").config, request_for("point-mode"))
    message = str(err.value)
    assert "\n" not in message and "object.weights=none" in message and "Point-MAE" in message
    # either way out is accepted: weights, explicit scratch, --from, or a resumed run
    for request in (request_for("point-mode", "object.weights=ckpt/pretrain.pth"),
                    request_for("point-mode", "object.weights=none"),
                    request_for("point-mode", init_from="ckpt/pretrain.pth"),
                    request_for("point-mode", resume=True)):
        check_object_init(request.config, request)
    # Table 5 row 1 never runs the object expert, so it needs no weights; the other ablations do
    check_object_init(request_for("point-mode-scene-only").config, request_for("point-mode-scene-only"))
    with pytest.raises(ConfigError):
        request = request_for("point-mode-no-reconstruction")
        check_object_init(request.config, request)


def test_cli_prints_one_error_line_naming_both_ways(cli):
    result = cli("pretrain", "point-mode", "--device", "cpu")
    assert result.code == 2
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pc3d: error:"), result.err
    assert "object.weights=none" in lines[0] and "Point-MAE" in lines[0]


def test_scratch_spelling_loads_nothing():
    from pc3d.methods.point_mode import object_weights

    for spelling, expected in (("none", None), ("None", None), (" NONE ", None), ("a.pth", "a.pth")):
        config = SimpleNamespace(object=SimpleNamespace(weights=spelling))
        assert object_weights(config) == expected


# ------------------------------------------------------------------------------------------ Eq. 1 and pairing

TINY = {
    "scene": {"dim": 32, "heads": 4, "encoder_layers": 1, "decoder_layers": 2, "encoder_ffn": 32, "decoder_ffn": 32,
              "dropout": 0.0, "tokens": 32, "radius": 0.6, "samples": 8, "tokenizer_hidden": [16],
              "head_dropout": 0.0},
    "object": {"dim": 24, "depth": 1, "heads": 4, "decoder_depth": 1, "drop_path": 0.0, "num_groups": 4,
               "group_size": 8, "weights": "none"},
    "blocks": {"count": 3, "points": 32},
    "data": {"source": "synthetic", "num_points": 256, "synthetic_points": 512, "synthetic_count": 8, "extra": []},
}


def tiny_config(**top: Any) -> Any:
    data = load_preset("point-mode")
    for key, section in TINY.items():
        data[key] = {**data.get(key, {}), **section}
    data.update(top)
    return validate_preset(data, "point-mode")


def scenes(batch: int = 2) -> torch.Tensor:
    from pc3d.data.synthetic.scenes import generate_scene, scene_rng

    return torch.stack([torch.from_numpy(generate_scene(scene_rng(0, i), 256).points) for i in range(batch)])


def test_eq1_total_is_lambda1_chamfer_plus_lambda2_giou(monkeypatch):
    """L = lambda_1 L_rec + lambda_2 mean over decoder layers, queries of (1 - GIoU(box_hat_j, box_{j mod K}))."""
    import pc3d.methods.point_mode as pm
    from pc3d.models.point_mode import block_boxes, replicate_to
    from pc3d.ops.boxes import paired_giou

    torch.manual_seed(0)
    base = pm.PointMoDEPretraining(tiny_config(loss={"chamfer": 1.0, "giou": 1.0}))
    weighted = pm.PointMoDEPretraining(tiny_config(loss={"chamfer": 2.5, "giou": 0.4}))
    weighted.load_state_dict(copy.deepcopy(base.state_dict()))
    blocks_seen: list[torch.Tensor] = []
    sampler = pm.sample_blocks
    monkeypatch.setattr(pm, "sample_blocks", lambda *a: blocks_seen.append(sampler(*a)) or blocks_seen[-1])
    boxes_seen: list[torch.Tensor] = []
    scene_pass = base.scene_pass
    monkeypatch.setattr(base, "scene_pass", lambda *a: boxes_seen.append(scene_pass(*a)[0]) or (boxes_seen[-1],
                                                                                                None))
    points = scenes()
    one = base.block_losses(points, torch.Generator().manual_seed(3))
    two = weighted.block_losses(points, torch.Generator().manual_seed(3))
    assert two["chamfer"].item() == pytest.approx(2.5 * one["chamfer"].item(), rel=1e-5)
    assert two["giou"].item() == pytest.approx(0.4 * one["giou"].item(), rel=1e-5)
    # lambda_2 = 1: the GIoU term recomputed from the predicted boxes and the blocks' own boxes
    boxes, targets = boxes_seen[0], block_boxes(blocks_seen[0], "mean")
    target = replicate_to(targets, boxes.shape[2]).unsqueeze(0).expand_as(boxes)
    expected = (1 - paired_giou(boxes.reshape(-1, 6).float(), target.reshape(-1, 6).float())).mean()
    assert one["giou"].item() == pytest.approx(expected.item(), rel=1e-6)
    total = sum(v for k, v in two.items() if not k.startswith("metric/"))
    assert total.item() == pytest.approx(2.5 * one["chamfer"].item() + 0.4 * one["giou"].item(), rel=1e-5)


@pytest.mark.parametrize("queries", [None, 7])
def test_query_j_carries_block_j_mod_k_in_features_and_targets(monkeypatch, queries):
    import pc3d.methods.point_mode as pm
    from pc3d.models.point_mode import block_boxes

    torch.manual_seed(0)
    config = tiny_config(queries=queries)
    method = pm.PointMoDEPretraining(config)
    k, q = config.blocks.count, config.num_queries
    assert method.model.query_embed.shape[0] == q == (queries or k)
    # features: tgt_j = proj(f_{j mod K}) + e_j, query_pos_j = e_j
    feats = torch.randn(2, k, config.object.dim)
    tgt, pos = method.model.block_queries(feats, 2)
    projected = method.model.block_projection(feats)
    for j in range(q):
        torch.testing.assert_close(tgt[:, j], projected[:, j % k] + method.model.query_embed[j])
        torch.testing.assert_close(pos[:, j], method.model.query_embed[j].expand(2, -1))
    # targets: the loss pairs query j with block j mod K on every decoder layer
    seen: dict[str, Any] = {}
    sampler = pm.sample_blocks
    monkeypatch.setattr(pm, "sample_blocks", lambda *a: seen.setdefault("blocks", sampler(*a)))
    giou = pm.paired_giou
    monkeypatch.setattr(pm, "paired_giou", lambda a, b: seen.setdefault("target", b) is b and giou(a, b))
    method.block_losses(scenes(), torch.Generator().manual_seed(1))
    layers = config.scene.decoder_layers
    target = seen["target"].reshape(layers, 2, q, 6)
    boxes = block_boxes(seen["blocks"], "mean")
    for j in range(q):
        torch.testing.assert_close(target[:, :, j], boxes[:, j % k].float().expand(layers, -1, -1))


def test_fewer_queries_than_blocks_is_refused():
    with pytest.raises(Exception, match="queries 2 is below blocks.count 3"):
        tiny_config(queries=2)


def test_up_axis_block_rotation_keeps_the_normalised_height():
    from pc3d.models.point_mode import to_object_view

    blocks = torch.randn(2, 4, 50, 3, dtype=torch.float64) * 3 + 5
    plain = to_object_view(blocks, "none", torch.Generator().manual_seed(0))
    turned = to_object_view(blocks, "z", torch.Generator().manual_seed(0))
    torch.testing.assert_close(turned[..., 2], plain[..., 2], rtol=0, atol=1e-12)
    torch.testing.assert_close(turned.norm(dim=-1), plain.norm(dim=-1), rtol=0, atol=1e-12)
    assert not torch.allclose(turned[..., :2], plain[..., :2])


# ------------------------------------------------------------------------------------------ RandomCuboid


def cuboid_settings(**changes: Any) -> SimpleNamespace:
    base = {"crop_size": (0.5, 1.0), "crop_min_points": 1500, "crop_min_share": 0.0, "crop_attempts": 100,
            "crop_aspect": 0.8}
    return SimpleNamespace(**{**base, **changes})


def test_random_cuboid_follows_3detr():
    from pc3d.methods.scene_detection import crop_aspect_ok, random_cuboid

    assert crop_aspect_ok(np.array([0.5, 0.55, 1.0]), 0.8)  # xy: 0.91
    assert not crop_aspect_ok(np.array([0.5, 0.7, 0.95]), 0.8)  # 0.71, 0.53, 0.74
    rng = np.random.default_rng(0)
    points = rng.uniform(0, [8, 6, 3], size=(5000, 3))
    boxes = np.column_stack([rng.uniform(0, [8, 6, 3], size=(20, 3)), np.full((20, 3), 0.5)])
    crops = 0
    for seed in range(30):
        crop = random_cuboid(points, boxes, np.random.default_rng(seed), cuboid_settings())
        if crop is None:
            continue
        crops += 1
        inside, keep = crop
        assert inside.sum() >= 1500 and keep.any()
        low, high = points[inside].min(0), points[inside].max(0)
        centres_in = ((boxes[:, :3] >= low) & (boxes[:, :3] <= high)).all(1)
        assert np.array_equal(keep, centres_in)  # the "center" policy on the cropped points' extent
    assert crops > 10
    # too many points asked for: every try fails and the scene stays whole
    assert random_cuboid(points, boxes, np.random.default_rng(0), cuboid_settings(crop_min_points=6000)) is None
    # the share form used by the CPU quickstart
    share = cuboid_settings(crop_min_points=0, crop_min_share=0.75, crop_attempts=10, crop_aspect=0.0)
    crop = random_cuboid(points, boxes, np.random.default_rng(1), share)
    assert crop is None or crop[0].sum() >= 0.75 * len(points)
