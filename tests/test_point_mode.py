"""Point-MoDE pretraining: blocks, box targets, object view, 3DETR pieces, stop-gradient, ablations, CLI run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pc3d.config import load_preset, validate_preset
from pc3d.models.detr3d import FourierPositionEncoding, SetAbstraction
from pc3d.models.point_mode import block_boxes, replicate_to, sample_blocks, to_object_view

TINY = {
    "scene": {"dim": 32, "heads": 4, "encoder_layers": 1, "decoder_layers": 2, "encoder_ffn": 32, "decoder_ffn": 32,
              "dropout": 0.0, "tokens": 32, "radius": 0.6, "samples": 8, "tokenizer_hidden": [16],
              "head_dropout": 0.0},
    "object": {"dim": 24, "depth": 1, "heads": 4, "decoder_depth": 1, "drop_path": 0.0, "num_groups": 4,
               "group_size": 8},
    "blocks": {"count": 3, "points": 32},
    "data": {"source": "synthetic", "num_points": 256, "synthetic_points": 512, "synthetic_count": 8, "extra": []},
}


def tiny_config(**ablation):
    data = load_preset("point-mode")
    for key, value in TINY.items():
        data[key] = {**data.get(key, {}), **value}
    data["ablation"] = {**data["ablation"], **ablation}
    return validate_preset(data, "point-mode")


def scene_batch(batch=2, n=256, seed=0):
    from pc3d.data.synthetic.scenes import generate_scene, scene_rng

    return torch.stack([torch.from_numpy(generate_scene(scene_rng(seed, i), n).points) for i in range(batch)])


def test_blocks_are_knn_neighbourhoods_of_scene_points():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(2, 200, 3, generator=gen, dtype=torch.float64)
    blocks = sample_blocks(points, 5, 17, gen)
    assert blocks.shape == (2, 5, 17, 3)
    for b in range(2):
        pts = points[b].numpy()
        for k in range(5):
            block = blocks[b, k].numpy()
            rows = [int(np.flatnonzero((pts == p).all(1))[0]) for p in block]  # every block point is a scene point
            assert len(set(rows)) == 17
            centre = block[0]  # nearest first: the centre itself at distance 0
            dist = np.linalg.norm(pts - centre, axis=1)
            assert dist[rows[0]] == 0
            assert sorted(rows) == sorted(np.argsort(dist, kind="stable")[:17].tolist())


def test_block_box_targets_match_numpy():
    blocks = torch.randn(2, 3, 40, 3, dtype=torch.float64)
    boxes = block_boxes(blocks, "mean").numpy()
    ref = blocks.numpy()
    assert np.allclose(boxes[..., :3], ref.mean(axis=2))
    assert np.allclose(boxes[..., 3:], ref.max(axis=2) - ref.min(axis=2))
    mid = block_boxes(blocks, "bbox").numpy()
    assert np.allclose(mid[..., :3], (ref.max(axis=2) + ref.min(axis=2)) / 2)


@pytest.mark.parametrize("rotation", ["none", "z", "so3"])
def test_object_view_centres_scales_and_rotates_rigidly(rotation):
    gen = torch.Generator().manual_seed(1)
    blocks = torch.randn(2, 3, 30, 3, dtype=torch.float64) * 4 + 10
    view = to_object_view(blocks, rotation, gen)
    assert torch.allclose(view.mean(dim=-2), torch.zeros(2, 3, 3, dtype=torch.float64), atol=1e-12)
    norms = view.norm(dim=-1)
    assert torch.allclose(norms.amax(dim=-1), torch.ones(2, 3, dtype=torch.float64))
    assert view.abs().max() <= 1 + 1e-12
    # rigid up to the scale: pairwise distances are the originals divided by the block's max centred norm
    centred = blocks - blocks.mean(dim=-2, keepdim=True)
    scale = centred.norm(dim=-1).amax(dim=-1)
    exact = "donot_use_mm_for_euclid_dist"
    expected = torch.cdist(blocks, blocks, compute_mode=exact) / scale[..., None, None]
    assert torch.allclose(torch.cdist(view, view, compute_mode=exact), expected, atol=1e-10)
    if rotation == "z":  # z coordinates are only centred and scaled
        assert torch.allclose(view[..., 2], centred[..., 2] / scale[..., None], atol=1e-12)
    if rotation == "none":
        assert torch.allclose(view, centred / scale[..., None, None])


def test_replicate_cycles_block_features():
    feats = torch.arange(6.0).reshape(1, 3, 2)
    out = replicate_to(feats, 7)
    assert out[0, :, 0].tolist() == [0, 2, 4, 0, 2, 4, 0]


def test_fourier_encoding_matches_formula():
    enc = FourierPositionEncoding(8)
    xyz = torch.rand(1, 5, 3)
    low, high = torch.tensor([[-1.0, 0.0, 2.0]]), torch.tensor([[1.0, 4.0, 3.0]])
    out = enc(xyz, low, high).numpy()
    unit = (xyz[0].numpy() - low.numpy()) / (high - low).numpy()
    proj = 2 * math.pi * unit @ enc.gauss_b.numpy()
    assert np.allclose(out[0], np.concatenate([np.sin(proj), np.cos(proj)], axis=1), atol=1e-5)


def test_fourier_scale_multiplies_the_gaussian_matrix():
    # scene.pos_scale: B ~ N(0, scale^2), drawn from the same RNG stream as scale 1
    torch.manual_seed(3)
    unit_b = FourierPositionEncoding(16).gauss_b.clone()
    torch.manual_seed(3)
    assert torch.allclose(FourierPositionEncoding(16, scale=8.0).gauss_b, 8.0 * unit_b)


@pytest.mark.parametrize("encoder_pos", [False, True])
def test_encoder_input_carries_position_only_when_asked(encoder_pos):
    from pc3d.models.point_mode import SceneExpert

    cfg = tiny_config().scene.model_copy(update={"encoder_pos": encoder_pos})
    torch.manual_seed(0)
    expert = SceneExpert(cfg).eval()
    seen = {}
    expert.encoder[0].register_forward_pre_hook(lambda module, args: seen.update(x=args[0].clone()))
    points = scene_batch(1, 128)
    scene = expert.encode(points)
    _, tokens, _ = expert.tokenizer(points)
    pos = expert.pos_encoding(scene.xyz, points.amin(dim=1), points.amax(dim=1))
    assert torch.allclose(scene.pos, pos)
    assert torch.allclose(seen["x"], tokens + pos if encoder_pos else tokens, atol=1e-6)


def test_set_abstraction_is_max_over_ball_neighbourhoods():
    torch.manual_seed(0)
    sa = SetAbstraction(tokens=6, radius=0.3, samples=64, widths=[3, 8]).eval()
    xyz = torch.rand(1, 50, 3)
    centres, tokens, idx = sa(xyz)
    for t in range(6):
        c = centres[0, t]
        inside = ((xyz[0] - c).norm(dim=1) <= 0.3)
        rel = ((xyz[0][inside] - c) / 0.3).T[None, :, :, None]  # (1, 3, n, 1)
        expected = sa.mlp(rel)[0, :, :, 0].max(dim=1).values
        assert torch.allclose(tokens[0, t], expected, atol=1e-5)
    assert torch.equal(centres[0], xyz[0][idx[0]])


def _grads(module):
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("stop", [True, False])
def test_box_loss_leaves_object_expert_gradients_at_zero(stop):
    from pc3d.methods.point_mode import PointMoDEPretraining

    torch.manual_seed(0)
    method = PointMoDEPretraining(tiny_config(stop_gradient=stop))
    terms = method.block_losses(scene_batch(), torch.Generator().manual_seed(0))
    assert set(terms) >= {"chamfer", "giou"}
    terms["giou"].backward()  # the box loss alone
    object_grads = [g for g in _grads(method.model.object) if g is not None]
    scene_grads = [g for g in _grads(method.model.scene) if g is not None]
    projection = method.model.block_projection.weight.grad
    assert scene_grads and any(g.abs().sum() > 0 for g in scene_grads)
    assert projection is not None and projection.abs().sum() > 0  # the projection itself still learns
    if stop:
        assert all(g.abs().sum() == 0 for g in object_grads)
    else:  # without stop-gradient the box loss reaches the object encoder
        encoder = [p.grad for p in method.model.object.encoder.parameters() if p.grad is not None]
        assert encoder and sum(float(g.abs().sum()) for g in encoder) > 0


def test_reconstruction_loss_trains_object_expert_only():
    from pc3d.methods.point_mode import PointMoDEPretraining

    torch.manual_seed(0)
    method = PointMoDEPretraining(tiny_config())
    terms = method.block_losses(scene_batch(), torch.Generator().manual_seed(0))
    terms["chamfer"].backward()
    assert all(p.grad is None for p in method.model.scene.parameters())
    assert method.model.object.encoder.tokenizer.first_conv[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("ablation,present,absent", [
    ({"object_reconstruction": False}, {"giou"}, {"chamfer"}),
    ({"scene_regression": False}, {"chamfer"}, {"giou"}),
    ({"joint_projection": False}, {"chamfer", "giou"}, set()),
    ({"coord_transform": False}, {"chamfer", "giou"}, set()),
])
def test_ablation_switches_change_the_losses(ablation, present, absent):
    from pc3d.methods.point_mode import PointMoDEPretraining

    torch.manual_seed(0)
    method = PointMoDEPretraining(tiny_config(**ablation))
    terms = method.block_losses(scene_batch(), torch.Generator().manual_seed(0))
    losses = {k for k in terms if not k.startswith("metric/")}
    assert present <= losses and not (absent & losses)
    sum(terms[k] for k in losses).backward()
    if ablation.get("joint_projection") is False:
        assert method.model.block_projection.weight.grad is None
    assert method.find_unused_parameters == (ablation.get("coord_transform") is None)


def test_ablation_presets_validate():
    for variant, key in (("scene-only", "object_reconstruction"), ("object-only", "scene_regression"),
                         ("no-coord-transform", "coord_transform"), ("no-joint-projection", "joint_projection"),
                         ("no-stop-gradient", "stop_gradient")):
        config = validate_preset(load_preset(f"point-mode-{variant}"), variant)
        assert getattr(config.ablation, key) is False


def test_object_expert_loads_official_point_mae(tmp_path):
    from pc3d.methods.point_mode import PointMoDEPretraining
    from pc3d.models.convert import export_official
    from pc3d.models.point_mode import build_object_expert

    config = tiny_config()
    source = build_object_expert(config.object)
    path = export_official(source, tmp_path / "pretrain.pth")
    method = PointMoDEPretraining(config)
    from pc3d.engine.checkpoint import load_weights

    report = method.load_pretrained(load_weights(str(path)), str(path))
    assert report["missing"] == [] and report["loaded"] == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(method.model.object.state_dict()[key], value)


@pytest.mark.slow
def test_pretraining_cli_writes_checkpoint_and_both_losses_fall(cli, tmp_path):
    sets = ["scene.dim=32", "scene.heads=4", "scene.encoder_layers=1", "scene.decoder_layers=2",
            "scene.tokens=64", "object.dim=24", "object.depth=1", "blocks.count=4", "blocks.points=64",
            "data.synthetic_count=12", "data.num_points=1024", "data.synthetic_points=1024",
            "train.epochs=4", "train.batch_size=4", "train.log_every=1", "optim.lr=0.002", "optim.warmup_epochs=0"]
    args = ["pretrain", "point-mode", "--preset", "quickstart", "--out", tmp_path, "--json"]
    for s in sets:
        args += ["--set", s]
    result = cli(*args)
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["steps"] == 12
    from pc3d.engine.checkpoint import read_checkpoint

    state = read_checkpoint(out["checkpoints"]["last"]).model_state
    assert any(k.startswith("model.scene.") for k in state) and any(k.startswith("model.object.") for k in state)
    rows = [json.loads(line) for line in open(f"{out['run_dir']}/metrics.jsonl") if '"split"' not in line]
    first, last = rows[:3], rows[-3:]
    for name in ("chamfer", "giou"):
        before, after = np.mean([r[name] for r in first]), np.mean([r[name] for r in last])
        assert after < before, (name, before, after)


def test_pretrained_experts_load_into_detector_and_segmenter():
    from pc3d.config import apply_overrides
    from pc3d.methods.point_mode import PointMoDEPretraining
    from pc3d.methods.scene_detection import SceneDetection
    from pc3d.methods.scene_semseg import SceneSemseg

    torch.manual_seed(0)
    pre = PointMoDEPretraining(tiny_config())
    weights = pre.state_dict()
    sets = [f"scene.{k}={v}" for k, v in TINY["scene"].items() if k != "tokenizer_hidden"]
    sets += ["scene.tokenizer_hidden=[16]", "queries=8"] + [f"object.{k}={v}" for k, v in TINY["object"].items()]
    sets += ["blocks.count=3", "blocks.points=32", "data.num_points=256"]
    det = SceneDetection(validate_preset(apply_overrides(load_preset("det-scannet-quickstart"), sets), "det"))
    report = det.load_pretrained(weights)
    assert not [k for k in report["missing"] if k.startswith(("model.scene.", "model.object."))]
    for key in ("model.scene.tokenizer.mlp.0.weight", "model.object.encoder.blocks.0.attn.qkv.weight",
                "model.block_projection.weight", "model.scene.decoder.layers.1.cross_attn.in_proj_weight"):
        assert torch.equal(det.state_dict()[key], weights[key])
    seg_sets = [s for s in sets if s.startswith("scene.")] + ["data.num_points=256"]
    seg = SceneSemseg(validate_preset(apply_overrides(load_preset("semseg-s3dis-quickstart"), seg_sets), "seg"), 13)
    seg.load_pretrained(weights)
    key = "model.scene.encoder.0.linear1.weight"
    assert torch.equal(seg.state_dict()[key], weights[key])
    points = scene_batch(2, 256)
    logits = seg.model(points, torch.zeros_like(points))
    assert logits.shape == (2, 256, 13) and torch.isfinite(logits).all()
