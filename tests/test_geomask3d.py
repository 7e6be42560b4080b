"""GeoMask3D: curriculum mask selection, DRC loss, EMA schedule, and the GC predictor learning to rank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from pc3d.methods.geomask3d import drc_loss, ema_decay, geometric_mask, hard_share


def test_curriculum_rises_linearly_to_0_8():
    assert hard_share(0, 400) == pytest.approx(0.002)
    assert hard_share(199, 400) == pytest.approx(0.4)
    assert hard_share(399, 400) == pytest.approx(0.8)
    shares = [hard_share(e, 400) for e in range(400)]
    assert np.allclose(np.diff(shares), 0.8 / 400)


@pytest.mark.parametrize("epoch", [0, 3, 7, 9])
def test_mask_has_scheduled_hard_share_and_always_hides_the_hardest(epoch):
    epochs, trials = 10, 400
    gen = torch.Generator().manual_seed(epoch)
    scores = torch.randn(trials, 64, generator=gen)
    share = hard_share(epoch, epochs)
    mask = geometric_mask(scores, 0.6, share, generator=gen)
    num_mask = 64 - int(64 * 0.4)
    assert num_mask == 39
    assert mask.sum(dim=1).tolist() == [num_mask] * trials
    num_hard = int(num_mask * 0.8 * (epoch + 1) / epochs)
    order = scores.argsort(dim=1, descending=True)
    hardest = torch.zeros_like(mask).scatter_(1, order[:, :num_hard], True)
    assert mask[hardest].all()  # every one of the n_hard highest-scoring patches is hidden
    # the scheduled share: patches in the hidden set because they are hardest
    assert num_hard == int(num_mask * share)
    assert (mask & hardest).sum(dim=1).tolist() == [num_hard] * trials
    # the rest are random: each other patch hidden with probability (Nm - n_hard) / (G - n_hard)
    others = ~hardest
    expected = (num_mask - num_hard) / (64 - num_hard)
    rate = mask[others].float().mean().item()
    count = others.sum().item()
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / count)


def test_zero_share_mask_is_uniformly_random():
    gen = torch.Generator().manual_seed(3)
    scores = torch.arange(64.0).expand(2000, 64)  # the same, very informative score everywhere
    mask = geometric_mask(scores, 0.6, 0.0, generator=gen)
    per_patch = mask.float().mean(dim=0)
    assert torch.allclose(per_patch, torch.full((64,), 39 / 64), atol=0.06)


def brute_force_drc(pred: torch.Tensor, target: torch.Tensor) -> float:
    total, pairs = 0.0, 0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[1]):
            for j in range(pred.shape[1]):
                s = 1 / (1 + math.exp(-(pred[b, j] - pred[b, i]).item()))
                if target[b, j] > target[b, i]:
                    total += -math.log(s + 1e-6)
                    pairs += 1
                elif target[b, j] < target[b, i]:
                    total += -math.log(1 - s + 1e-6)
                    pairs += 1
    return total / pairs


def test_drc_loss_equals_pairwise_loop():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 9, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 9), generator=gen).double()  # ties must be skipped
    assert drc_loss(pred, target).item() == pytest.approx(brute_force_drc(pred, target), rel=1e-10)


def test_drc_loss_is_low_for_a_correct_ranking_and_has_gradients():
    target = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    good = (target * 20).requires_grad_()
    bad = (-target * 20).requires_grad_()
    assert drc_loss(good, target) < 0.01 < 5 < drc_loss(bad, target)
    drc_loss(bad, target).backward()
    assert bad.grad is not None and bad.grad.abs().sum() > 0


def test_ema_decay_schedule():
    assert ema_decay(0, 0.999, 0.9999, 100) == pytest.approx(0.999)
    assert ema_decay(50, 0.999, 0.9999, 100) == pytest.approx(0.99945)
    assert ema_decay(100, 0.999, 0.9999, 100) == pytest.approx(0.9999)
    assert ema_decay(250, 0.999, 0.9999, 100) == pytest.approx(0.9999)


def tiny_config(**extra):
    from pc3d.config import validate_preset

    data = {"command": "pretrain", "method": "geomask3d",
            "model": {"dim": 48, "depth": 2, "heads": 4, "decoder_depth": 1, "num_groups": 16,
                      "group_size": 16, "drop_path": 0.0},
            "gc_depth": 2, "data": {"num_points": 256, "augment": False, "synthetic_count": 16},
            "train": {"epochs": 4, "batch_size": 16}, "ema_decay": [0.9, 0.99], "ema_ramp_epochs": 2,
            "teacher": {"bootstrap_steps": 15, "bootstrap_lr": 2e-3}, "svm_probe": False}
    data.update(extra)
    return validate_preset(data)


def test_gc_predictor_ranking_correlates_with_true_patch_loss():
    from pc3d.data.readers.objects import SyntheticObjects
    from pc3d.engine.method import StepState
    from pc3d.methods.geomask3d import GeoMask3D, bootstrap_teacher, per_patch_targets

    torch.manual_seed(0)
    config = tiny_config()
    train = SyntheticObjects(16, seed=0, num_points=256)
    method = GeoMask3D(config, bootstrap_teacher(config, train))
    points = torch.stack([train[i]["points"] for i in range(16)])
    optimizer = torch.optim.AdamW(method.param_groups(0.05), lr=2e-3)
    method.train()
    for step in range(30):
        state = StepState(step=step, epoch=step // 10, total_steps=40, progress=step / 40, lr=2e-3)
        losses = method.training_step({"points": points}, state)
        optimizer.zero_grad()
        sum(v for k, v in losses.items() if not k.startswith("metric/")).backward()
        optimizer.step()
        method.after_optimizer_step(state)
    # unseen objects, a random mask: does the student's GC score rank the true per-patch losses?
    method.eval()
    test = SyntheticObjects(16, seed=0, num_points=256, index_offset=500)
    points = torch.stack([test[i]["points"] for i in range(16)])
    with torch.no_grad():
        neighborhood, center = method.student.grouper(points)
        mask = geometric_mask(torch.zeros(16, 16), 0.6, 0.0, torch.Generator().manual_seed(5))
        decoded, gc_pred = method.student(neighborhood, center, mask)
        num_mask = int(mask[0].sum())
        feat, chamfer = per_patch_targets(decoded[:, -num_mask:], method.kd_teacher, neighborhood, center,
                                          mask, cd_grad=False)
    truth = (feat + chamfer).numpy()
    predicted = gc_pred[:, -num_mask:].numpy()
    rho = [spearmanr(p, t).statistic for p, t in zip(predicted, truth, strict=True)]
    assert np.mean(rho) > 0, rho  # ~0.26 here; about -0.4 before training


def test_chamfer_gradient_flag_controls_student_gradient():
    from pc3d.data.readers.objects import SyntheticObjects
    from pc3d.methods.geomask3d import GeoMask3D, bootstrap_teacher

    torch.manual_seed(0)
    train = SyntheticObjects(4, seed=0, num_points=256)
    points = torch.stack([train[i]["points"] for i in range(4)])
    grads = {}
    for flag in (True, False):
        config = tiny_config(cd_grad=flag, teacher={"bootstrap_steps": 1})
        method = GeoMask3D(config, bootstrap_teacher(config, train))
        losses = method.masked_losses(points, epoch=0, total_epochs=4)
        assert losses["chamfer"].requires_grad is flag
        if flag:
            losses["chamfer"].backward()
            grads[flag] = method.student.decoder.norm.weight.grad.abs().sum().item()
            assert all(p.grad is None for p in method.kd_teacher.parameters())  # the teacher stays frozen
    assert grads[True] > 0


def test_teacher_checkpoint_must_be_complete(tmp_path):
    from pc3d.errors import ConfigError, InputError
    from pc3d.methods.geomask3d import GeoMask3D

    with pytest.raises(ConfigError, match="teacher"):
        tiny_config(teacher={"bootstrap_steps": 0})
    with pytest.raises(InputError, match="lacks"):
        GeoMask3D(tiny_config(), {"mask_token": torch.zeros(1, 1, 48)})
