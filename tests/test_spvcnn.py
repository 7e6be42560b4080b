"""SPVCNN on spconv: devoxelisation by hand, shapes and gradients, and zero-shot training on synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.models.spvcnn import SPVCNN, PointCloudBatch, voxel_to_point

TINY = [8, 8, 16, 16, 32, 32, 16, 16, 16]


def test_trilinear_devoxelisation_by_hand():
    import spconv.pytorch as spconv

    cells = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 1]], dtype=torch.int32)
    feats = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    x = spconv.SparseConvTensor(feats, cells, [4, 4, 4], 1)
    point = PointCloudBatch(torch.tensor([[0.75, 0.5, 0.5]]), torch.zeros(1, dtype=torch.long), torch.zeros(1, 1))
    # centres at +0.5: fractions (0.25, 0, 0) -> corners (0,0,0) 0.75 and (1,0,0) 0.25, others weight 0
    assert torch.allclose(voxel_to_point(x, point, 1), torch.tensor([[0.75 * 1 + 0.25 * 3]]))
    # a point whose corners are partly missing: weights of the present ones are renormalised
    point = PointCloudBatch(torch.tensor([[1.0, 1.0, 0.5]]), torch.zeros(1, dtype=torch.long), torch.zeros(1, 1))
    assert torch.allclose(voxel_to_point(x, point, 1), torch.tensor([[(1 + 3 + 5) / 3]]))


def test_forward_shapes_and_gradients():
    torch.manual_seed(0)
    model = SPVCNN(4, TINY, voxel_size=0.3)
    xyz = torch.rand(600, 3) * torch.tensor([12.0, 12.0, 2.0])
    batch = (torch.arange(600) >= 350).long()
    out, scales = model(xyz, batch, torch.cat([xyz, torch.rand(600, 1)], 1))
    assert out.shape == (600, 16) and [s.shape[1] for s in scales] == TINY[1:5]
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_zero_shot_training_lowers_loss_and_beats_chance(tmp_path):
    from pc3d.config import load_preset, validate_preset
    from pc3d.data import layouts
    from pc3d.data.readers.semantickitti import NUM_CLASSES, SemanticKITTI, class_weights
    from pc3d.data.synthetic.lidar import generate_lidar_sequence, lidar_rng
    from pc3d.engine.method import StepState
    from pc3d.methods.zeroshot_seg import SegFrames, ZeroShotSeg, _label_counts, collate_frames, evaluate

    frames = generate_lidar_sequence(lidar_rng(0, 0), 3, 64 * 100, (94, 310))
    root = layouts.write_semantickitti(tmp_path, [frames])
    preset = load_preset("affinity3d-semantickitti", variant_of=None)
    preset["model"] = {"channels": TINY, "voxel_size": 0.25, "text_classifier": False}
    preset["image"] = {"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "hidden": 8, "crop": None}
    preset["data"].update(root=str(root))
    config = validate_preset(preset)
    train = SegFrames(SemanticKITTI(root, ["00"], "gzs", with_image=True, max_frames=2), None, True, False, None)
    val = SegFrames(SemanticKITTI(root, ["00"], "full", with_image=True), None, False, False, None)
    val.kitti.frames = val.kitti.frames[2:]
    torch.manual_seed(0)
    method = ZeroShotSeg(config, None, class_weights(_label_counts(train)))
    optimizer = torch.optim.AdamW(method.parameters(), lr=0.01)
    batch = collate_frames([train[0], train[1]])
    losses = []
    for step in range(25):
        terms = method.training_step(batch, StepState(step, 0, 25, step / 25, 0.01))
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    scores = evaluate(method, val, tta=1, convention="scannet")
    confusion = np.array(scores["confusion"])
    support = confusion[1:, 1:].sum(1)
    present = support > 0
    # chance: uniform prediction over the 19 classes; expected IoU_c = (n_c/19) / (n_c + N/19 - n_c/19)
    total = support.sum()
    chance = np.mean((support[present] / 19) / (support[present] + total / 19 - support[present] / 19))
    assert scores["seen_miou"] > 3 * chance and NUM_CLASSES == 20
