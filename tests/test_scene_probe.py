"""Scene probing pieces: Lovasz, instance targets, PointGroup clustering, Hungarian matching, decoder, PQ path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.methods.scene_probe import (
    SceneLabels,
    UnpoolDecoder,
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


def test_decoder_probe_returns_finest_resolution() -> None:
    grid = torch.unique(torch.randint(0, 8, (200, 3)), dim=0)
    point = Point(grid.float(), grid, torch.zeros(len(grid), dtype=torch.long), torch.randn(len(grid), 4))
    coarse = GridPooling(4, 8)(point)
    decoder = UnpoolDecoder((4, 8), 6)
    assert decoder(coarse).shape == (len(grid), 6)


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


def _pointins_and_probe(offset_init: str, pretrain_levels: int = 1, probe_levels: int = 1):
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
    config = ScenePreset.model_validate({"model": TINY_MODEL, "probe": {"offset_init": offset_init,
                                                                         "up_cast_levels": probe_levels}})
    return SceneProbe(config, SceneLabels(4, (2, 3), (0, 1))), weights


def test_probe_offset_head_loads_the_teacher_head_of_the_checkpoint() -> None:
    probe, weights = _pointins_and_probe("pretrained")
    assert probe.offset_init_note == "random (no checkpoint)"
    report = probe.load_pretrained(weights, "ckpt.safetensors")
    assert report["offset_init"] == "pretrained (teacher.offset_head, up-cast level 1)"
    own = probe.offset_head.state_dict()
    teacher = {k[len("teacher.offset_head."):]: v for k, v in weights.items() if k.startswith("teacher.offset_head.")}
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
