"""Scene probing pieces: Lovasz, instance targets, PointGroup clustering, Hungarian matching, decoder, PQ path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.methods.scene_probe import (
    SceneLabels,
    cluster_proposals,
    instance_centroid_offsets,
    lovasz_softmax,
    match_clusters,
    parse_instances,
    score_scenes,
)
from pc3d.models.ptv3 import GridPooling, Point


def test_lovasz_on_hard_predictions_is_one_minus_jaccard() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 2])
    probs = torch.nn.functional.one_hot(pred, 3).float()
    jaccard = []
    for c in range(3):
        inter = ((labels == c) & (pred == c)).sum().item()
        union = ((labels == c) | (pred == c)).sum().item()
        jaccard.append(inter / union)
    assert float(lovasz_softmax(probs, labels)) == pytest.approx(1 - np.mean(jaccard))


def test_parse_instances_and_centroid_targets() -> None:
    segment = np.array([0, 1, 5, 5, 7, 7, -1])
    instance = np.array([3, 4, 9, 9, 2, 2, 8])
    assert parse_instances(segment, instance, (0, 1)).tolist() == [-1, -1, 1, 1, 0, 0, -1]
    coord = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 0, 0], [0, 4, 0]])
    target, valid = instance_centroid_offsets(coord, torch.tensor([0, 0, 0, -1]), torch.tensor([0, 0, 1, 1]))
    assert valid.tolist() == [True, True, True, False]
    torch.testing.assert_close(target, torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 0, 0], [0, 0, 0]]))


def test_pointgroup_clustering_separates_instances_of_a_class() -> None:
    rng = np.random.default_rng(0)
    blobs = torch.from_numpy(np.concatenate([rng.normal(c, 0.02, (30, 3)) for c in ([0, 0, 0], [1, 0, 0])])).float()
    pred = torch.tensor([4] * 60)
    probs = torch.full((60, 6), 0.1)
    probs[:30, 4], probs[30:, 4] = 0.9, 0.5
    masks, labels, scores = cluster_proposals(blobs, pred, probs, (2, 3, 4), radius=0.2, max_neighbors=20,
                                              min_points=5, propose_points=10)
    assert labels == [4, 4]
    assert sorted(m.tolist() for m in masks) == [list(range(30)), list(range(30, 60))]
    assert sorted(scores) == pytest.approx([0.5, 0.9])


def test_hungarian_matching_of_clusters() -> None:
    gt = np.array([0, 0, 0, 0, 1, 1, -1, -1])
    pred = np.array([5, 5, 5, 7, 7, 7, 7, -1])
    out = match_clusters(pred, gt)
    # gt0 <-> cluster 5: IoU 3/4; gt1 <-> cluster 7: IoU 2/4
    assert out["miou"] == pytest.approx((0.75 + 0.5) / 2)
    assert out["recall50"] == pytest.approx(0.5)


def test_scores_for_perfect_predictions() -> None:
    labels = SceneLabels(num_classes=4, instance_classes=(2, 3), stuff_classes=(0, 1))
    segment = np.array([0] * 150 + [1] * 120 + [2] * 150 + [3] * 150)
    instance = np.array([-1] * 270 + [0] * 150 + [1] * 150)
    scene = {"pred": segment.copy(), "segment": segment, "instance": instance, "pred_instance": instance.copy(),
             "pred_labels": np.array([2, 3]), "pred_scores": np.array([0.9, 0.8])}
    ins = score_scenes([scene], "insseg", labels, min_region_size=100)
    assert ins["miou"] == pytest.approx(1.0) and ins["ap"] == pytest.approx(1.0) and ins["ap50"] == pytest.approx(1.0)
    pan = score_scenes([scene], "panoptic", labels, min_region_size=100)  # every class present: PQ 1
    assert pan["pq"] == pytest.approx(1.0) and pan["sq"] == pytest.approx(1.0) and pan["rq"] == pytest.approx(1.0)


def test_semantickitti_scans_become_scene_samples(tmp_path) -> None:
    from types import SimpleNamespace

    from pc3d.data.readers.semantickitti import SemanticKITTI
    from pc3d.data.synthetic import write_synthetic
    from pc3d.methods.sonata import KITTI_THING_CLASSES, KittiScenes

    write_synthetic("lidar", tmp_path, count=1, points=64 * 60, preview=False)
    data = SimpleNamespace(root=str(tmp_path), train_sequences=("00",), val_sequences=("00",), max_frames=1)
    sample = KittiScenes(data, "train")[0]
    raw = SemanticKITTI(tmp_path, ("00",), "full")[0]
    np.testing.assert_array_equal(sample["coord"], raw["points"])
    np.testing.assert_array_equal(sample["segment"], raw["labels"] - 1)
    things = np.isin(sample["segment"], KITTI_THING_CLASSES) & (raw["instance"] > 0)
    np.testing.assert_array_equal(sample["instance"], np.where(things, raw["instance"], -1))
    np.testing.assert_allclose(sample["color"][:, 0], np.clip(raw["intensity"], 0, 1) * 255, rtol=1e-6)


# ----------------------------------------------------------------------------- pretrained offset head in the probe

TINY_MODEL = {"depths": [1, 1, 1], "channels": [4, 8, 16], "heads": [2, 2, 2], "patch_size": 16, "drop_path": 0.0}


def _pointins_and_probe(offset_init: str, pretrain_levels: int = 1, probe_levels: int = 1, network: str = "student"):
    from pc3d.config.pointins import PointINSPreset, ScenePreset
    from pc3d.methods.pointins import PointINS
    from pc3d.methods.scene_probe import SceneProbe

    torch.manual_seed(0)
    pretrain = PointINS(PointINSPreset.model_validate({
        "model": TINY_MODEL,
        "head": {"hidden": 8, "bottleneck": 4, "prototypes": 4, "up_cast_levels": pretrain_levels}}))
    weights = {k: v.clone() for k, v in pretrain.state_dict().items()}
    for key in weights:  # teacher and student heads differ, so the test sees which one was loaded
        if ".offset_head." in key and key.endswith(("weight", "bias", "running_mean")):
            weights[key] = torch.randn_like(weights[key]) + (5.0 if key.startswith("teacher.") else -5.0)
    config = ScenePreset.model_validate({"model": TINY_MODEL, "probe": {
        "offset_init": offset_init, "up_cast_levels": probe_levels, "encoder_source": network}})
    return SceneProbe(config, SceneLabels(4, (2, 3), (0, 1))), weights


@pytest.mark.parametrize("network", ["student", "teacher"])
def test_probe_offset_head_loads_the_head_of_the_probed_network(network: str) -> None:
    probe, weights = _pointins_and_probe("pretrained", network=network)
    assert probe.offset_init_note == "random (no checkpoint)"
    report = probe.load_pretrained(weights, "ckpt.safetensors")
    assert report["offset_init"] == f"pretrained ({network}.offset_head, up-cast level 1)"
    assert report["network"] == network
    own = probe.offset_head.state_dict()
    key = f"{network}.offset_head."
    teacher = {k[len(key):]: v for k, v in weights.items() if k.startswith(key)}
    assert set(own) == set(teacher)
    for key, value in teacher.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0)
    # the head is the pretraining one: Linear(16+8 -> 24) at up-cast level 1, and it trains in the probe
    assert own["net.0.weight"].shape == (24, 24)
    assert all(p.requires_grad for p in probe.offset_head.parameters())
    assert not any(p.requires_grad for p in probe.encoder.parameters())


def test_probe_offset_head_without_checkpoint_head_or_when_random_stays_random() -> None:
    probe, weights = _pointins_and_probe("pretrained")
    before = {k: v.clone() for k, v in probe.offset_head.state_dict().items()}
    sonata_like = {k: v for k, v in weights.items() if ".offset_head." not in k}
    assert probe.load_pretrained(sonata_like, "sonata.safetensors")["offset_init"] == \
        "random (checkpoint has no offset head)"
    for key, value in probe.offset_head.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    probe, weights = _pointins_and_probe("random")
    before = {k: v.clone() for k, v in probe.offset_head.state_dict().items()}
    assert probe.load_pretrained(weights, "ckpt")["offset_init"].startswith("random (head of the pretraining shape")
    torch.testing.assert_close(probe.offset_head.state_dict()["net.0.weight"], before["net.0.weight"], rtol=0, atol=0)


def test_probe_offset_head_of_another_level_is_refused() -> None:
    from pc3d.errors import InputError

    probe, weights = _pointins_and_probe("pretrained", pretrain_levels=2, probe_levels=1)
    with pytest.raises(InputError, match="up_cast_levels"):
        probe.load_pretrained(weights, "ckpt")


def test_lifted_offsets_keep_each_cells_predicted_centre() -> None:
    from pc3d.methods.scene_probe import lift_offsets

    torch.manual_seed(0)
    grid = torch.unique(torch.randint(0, 8, (150, 3)), dim=0)
    assert (grid.min(0).values == 0).all()  # so two poolings make cells grid // 4
    coord = grid.float() * 0.1 + 0.01 * torch.rand(len(grid), 3)
    fine = Point(coord, grid, torch.zeros(len(grid), dtype=torch.long), torch.randn(len(grid), 4))
    mid = GridPooling(4, 4)(fine)
    top = GridPooling(4, 4)(mid)
    offsets = torch.randn(top.coord.shape[0], 3)
    lifted = lift_offsets(top, offsets, 2, coord)
    for i in range(len(grid)):  # brute force: every point of a coarse cell predicts cell coord + cell offset
        # a pooled coord is the mean of its children's coords: here the mean of the means of the 2x2x2 cells
        mid_keys = torch.unique(grid[((grid // 4) == (grid[i] // 4)).all(1)] // 2, dim=0)
        base = torch.stack([coord[((grid // 2) == k).all(1)].mean(0) for k in mid_keys]).mean(0)
        cell = int(top.pooling_inverse[int(mid.pooling_inverse[i])])
        torch.testing.assert_close(coord[i] + lifted[i], base + offsets[cell])
    torch.testing.assert_close(lift_offsets(fine, offsets[:0], 0, coord[:0]), offsets[:0])


# ----------------------------------------------------------------------------- the probing protocol (issue 19)


def _probe(mode: str, **probe: object):
    from pc3d.config.pointins import ScenePreset
    from pc3d.methods.scene_probe import SceneProbe

    torch.manual_seed(0)
    extra = {"decoder_depths": [1, 1], "decoder_channels": [6, 10], "decoder_heads": [2, 2],
             "decoder_patch_size": 16} if mode == "decoder" else {}
    config = ScenePreset.model_validate({"model": TINY_MODEL, "probe": {"mode": mode, **extra, **probe}})
    return SceneProbe(config, SceneLabels(20, (2, 3), (0, 1)))


def _batch(scenes: int = 2):
    from pc3d.data.readers.scannet import SyntheticScanNet
    from pc3d.methods.scene_probe import ProbeScenes, collate_scenes

    torch.manual_seed(0)
    rooms = SyntheticScanNet(scenes, 0, 1500)
    data = ProbeScenes(rooms, SceneLabels(20, (2, 3), (0, 1)), 0.1, train=True, augment=False)
    return collate_scenes([data[i] for i in range(scenes)])


@pytest.mark.parametrize("mode", ["linear", "decoder"])
def test_frozen_encoder_gets_no_grad_and_does_not_change(mode: str) -> None:
    """linear / decoder: a training step + AdamW step (weight decay on) leaves every encoder tensor as it was."""
    from pc3d.engine.method import StepState

    probe = _probe(mode, task="insseg")
    probe.train()
    before = {k: v.clone() for k, v in probe.encoder.state_dict().items()}
    heads_before = probe.seg_head.weight.clone()
    optimizer = torch.optim.AdamW([p for p in probe.parameters() if p.requires_grad], lr=0.1, weight_decay=0.05)
    for _ in range(2):
        terms = probe.training_step(_batch(), StepState(step=0, epoch=0, progress=0.0, total_steps=1, lr=0.1))
        sum(terms.values()).backward()
        assert all(p.grad is None for p in probe.encoder.parameters())
        assert not any(p.requires_grad for p in probe.encoder.parameters())
        optimizer.step()
        optimizer.zero_grad()
    for key, value in probe.encoder.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not torch.equal(probe.seg_head.weight, heads_before)  # the heads did train
    assert probe.offset_head.net[0].weight.grad is None  # zeroed; it had one (it is in the optimiser)
    if mode == "decoder":
        assert all(p.requires_grad for p in probe.decoder.parameters())


def test_full_mode_trains_the_encoder() -> None:
    from pc3d.engine.method import StepState

    probe = _probe("full", task="semseg")
    probe.train()
    terms = probe.training_step(_batch(), StepState(step=0, epoch=0, progress=0.0, total_steps=1, lr=0.1))
    sum(terms.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in probe.encoder.parameters())


def test_linear_heads_read_the_sum_of_all_level_widths() -> None:
    probe = _probe("linear", task="insseg")
    width = sum(TINY_MODEL["channels"])  # 4 + 8 + 16
    assert probe.seg_head.in_features == width == 28
    assert probe.offset_head.net[0].in_features == width  # offset_init probe (the default): a fresh head on them
    feat, _ = probe.features(_batch())
    assert feat.shape[1] == width


def test_linear_features_are_each_levels_feature_of_the_containing_cell() -> None:
    """Independent of the pooling's inverse: a level-s cell is grid // 2^s (grids start at 0 in each scene), so
    the probe feature of a grid point is [f_0(p), f_1(cell_1(p)), f_2(cell_2(p))], finest first."""
    probe = _probe("linear", task="semseg")
    probe.eval()
    batch = _batch()
    feat, top = probe.features(batch)
    levels = [top.parent.parent, top.parent, top]
    assert torch.equal(levels[0].grid_coord, batch["grid"])  # level 0 = the input grid points, in input order
    widths = TINY_MODEL["channels"]
    starts = np.cumsum([0, *widths])
    for s, level in enumerate(levels):
        lookup = {(int(b), *map(int, g)): i for i, (b, g) in enumerate(zip(level.batch, level.grid_coord,
                                                                             strict=True))}
        rows = [lookup[(int(b), *map(int, g // 2**s))] for b, g in zip(batch["batch"], batch["grid"], strict=True)]
        torch.testing.assert_close(feat[:, starts[s]:starts[s + 1]], level.feat[rows], rtol=0, atol=0)


def test_decoder_probe_has_sonatas_ptv3_decoder() -> None:
    """probe-scannet-decoder builds Pointcept's PT-v3m2 decoder: (2,2,2,2) blocks, (64,96,192,384) widths, heads
    (4,6,12,24), each stage un-pooling from the stage below it (the last from the encoder's 512)."""
    from recipes import shipped

    from pc3d.methods.scene_probe import build_decoder, probe_feature_width

    config = shipped("probe-scannet-decoder")
    decoder = build_decoder(config)
    assert [len(stage) for stage in decoder.stages] == [2, 2, 2, 2]
    assert [stage[0].norm1.normalized_shape[0] for stage in decoder.stages] == [64, 96, 192, 384]
    assert [stage[0].attn.heads for stage in decoder.stages] == [4, 6, 12, 24]
    assert [(up.proj[0].in_features, up.proj_skip[0].in_features, up.proj[0].out_features) for up in decoder.up] == \
        [(96, 32, 64), (192, 64, 96), (384, 128, 192), (512, 256, 384)]
    assert probe_feature_width(config) == 64
    rates = [b.drop_path.p for stage in decoder.stages for b in stage]
    assert max(rates) == pytest.approx(0.3) and min(rates) == 0.0


def test_decoder_output_is_at_the_finest_level_and_trains() -> None:
    from pc3d.engine.method import StepState

    probe = _probe("decoder", task="semseg")
    probe.train()
    batch = _batch()
    feat, _ = probe.features(batch)
    assert feat.shape == (batch["coord"].shape[0], 6) and probe.seg_head.in_features == 6
    terms = probe.training_step(batch, StepState(step=0, epoch=0, progress=0.0, total_steps=1, lr=0.1))
    sum(terms.values()).backward()
    for name, param in probe.decoder.named_parameters():
        assert param.grad is not None, name


def test_decoder_stage_count_must_fit_the_encoder() -> None:
    from pc3d.errors import InputError

    with pytest.raises(InputError, match="decoder_depths"):
        _probe("decoder", decoder_depths=[1, 1, 1], decoder_channels=[6, 10, 12], decoder_heads=[2, 2, 2])


def test_no_shipped_preset_warm_starts_the_pretrained_offset_head() -> None:
    from recipes import shipped

    from pc3d.config.loading import load_preset

    probes = []
    for path in sorted((__import__("pathlib").Path(__file__).parents[1] / "presets").glob("*.yaml")):
        if load_preset(path.stem).get("method") != "scene-probe":
            continue
        probes.append(path.stem)
        assert shipped(path.stem).probe.offset_init != "pretrained", path.stem
    assert "probe-scannet-quickstart" in probes and len(probes) >= 10


def test_encoder_source_picks_student_or_teacher() -> None:
    from pc3d.methods.scene_probe import load_encoder

    probe = _probe("linear")
    own = probe.state_dict()
    weights = {}
    for key, value in own.items():
        if key.startswith("encoder."):
            weights["student." + key] = torch.full_like(value, 1.0)
            weights["teacher." + key] = torch.full_like(value, 2.0)
    for network, fill in (("student", 1.0), ("teacher", 2.0)):
        report = load_encoder(probe, weights, "ckpt", network=network)
        assert report["network"] == network
        assert all(float(v.float().mean()) == fill for k, v in probe.state_dict().items()
                   if k.startswith("encoder.") and v.is_floating_point())


def test_synthetic_test_split_is_disjoint_and_scored_after_training(tmp_path, cli) -> None:
    """Train / val / test rooms are different scenes; the run picks its checkpoint on val and scores it on test."""
    import json

    from pc3d.data.readers.scannet import SyntheticScanNet
    from pc3d.methods.scene_probe import TEST_INDEX_OFFSET
    from pc3d.methods.sonata import load_scenes

    config = _probe("linear").config.model_copy(update={"data": _probe("linear").config.data.model_copy(
        update={"source": "synthetic", "synthetic_count": 3, "synthetic_val_count": 2, "num_points": 500})})
    splits = {name: load_scenes(config.data, 0, name) for name in ("train", "val")}
    splits["test"] = SyntheticScanNet(2, 0, 500, index_offset=TEST_INDEX_OFFSET)
    coords = {name: [s["coord"].tobytes() for s in scenes] for name, scenes in splits.items()}
    assert not set(coords["test"]) & (set(coords["train"]) | set(coords["val"]))
    out = cli("finetune", "probe-scannet", "--preset", "quickstart", "--out", tmp_path, "--json",
              "--set", "train.epochs=2", "--set", "train.eval_every=1", "--set", "train.best_metric=miou",
              "--set", "data.synthetic_count=4", "--set", "data.synthetic_val_count=1",
              "--set", "data.num_points=1000", "--set", "probe.task=semseg")
    assert out.code == 0, out.err
    result = json.loads(out.out)
    assert result["selection"]["checkpoint"] == "best" and result["selection"]["metric"] == "val/miou"
    assert result["selection"]["test_scenes"] == 1
    assert {"test/miou", "test/oa"} <= set(result["test_metrics"])
    assert 0.0 <= result["test_metrics"]["test/miou"] <= 1.0
