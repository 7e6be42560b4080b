"""Engine pieces checked against hand-computed values: schedule, EMA, AdamW groups, sampler, collate."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from pc3d.config.base import OptimConfig
from pc3d.engine.data import ShardedSampler, default_collate
from pc3d.engine.ema import EMA, momentum_schedule
from pc3d.engine.method import Method, total_loss
from pc3d.engine.schedule import WarmupCosine


def test_warmup_cosine_by_hand():
    optim = OptimConfig(lr=1e-3, warmup_start_lr=1e-5, min_lr=2e-5, warmup_epochs=2)
    schedule = WarmupCosine.from_config(optim, epochs=10, steps_per_epoch=5)  # 10 warm-up of 50 steps
    assert (schedule.warmup_steps, schedule.total_steps) == (10, 50)
    assert schedule(0) == pytest.approx(1e-5)  # warm-up start
    assert schedule(5) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))  # linear half way
    assert schedule(10) == pytest.approx(1e-3)  # peak
    assert schedule(30) == pytest.approx(2e-5 + (1e-3 - 2e-5) * 0.5)  # cosine half way: cos(pi/2) = 0
    assert schedule(20) == pytest.approx(2e-5 + (1e-3 - 2e-5) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule(50) == pytest.approx(2e-5)  # end
    assert schedule(60) == pytest.approx(2e-5)  # stays at min_lr


def test_fractional_warmup_epochs_count_iterations():
    optim = OptimConfig(lr=1.0, warmup_start_lr=0.0, min_lr=0.0, warmup_epochs=0.5)
    schedule = WarmupCosine.from_config(optim, epochs=2, steps_per_epoch=8)
    assert schedule.warmup_steps == 4
    assert schedule(2) == pytest.approx(0.5)


def test_schedule_applies_lr_scale_per_group():
    params = [nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "lr_scale": 0.1}], lr=1.0)
    schedule = WarmupCosine(lr=2.0, min_lr=0.0, warmup_start_lr=0.0, warmup_steps=0, total_steps=10)
    schedule.apply(opt, 0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2.0, 0.2])


def test_momentum_schedule_cosine():
    assert momentum_schedule(0.996, 1.0, 0.0) == pytest.approx(0.996)
    assert momentum_schedule(0.996, 1.0, 0.5) == pytest.approx(0.998)
    assert momentum_schedule(0.996, 1.0, 0.25) == pytest.approx(1.0 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)
    assert momentum_schedule(0.996, 1.0, 1.0) == pytest.approx(1.0)


def test_ema_update_formula_and_buffers():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student[1].running_mean.fill_(0.25)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema = EMA(student, teacher)
    assert not any(p.requires_grad for p in teacher.parameters())
    ema.update(0.9)
    for name, param in teacher.named_parameters():
        expected = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name].detach()
        torch.testing.assert_close(param, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(teacher[1].running_mean, torch.full((4,), 0.25))
    with pytest.raises(ValueError):
        EMA(student, nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5)))


class _Groups(Method):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.cls_token = nn.Parameter(torch.ones(1, 1, 4))
        self.frozen = nn.Parameter(torch.ones(4, 4), requires_grad=False)


def test_param_groups_no_decay_for_bias_norm_token():
    groups = {g["weight_decay"]: sorted(g["param_names"]) for g in _Groups().param_groups(0.05)}
    assert groups == {0.05: ["proj.weight"], 0.0: ["cls_token", "norm.bias", "norm.weight", "proj.bias"]}


def test_adamw_decays_only_the_decay_group():
    """With zero gradients AdamW's update is exactly p *= (1 - lr * wd): only decayed weights move."""
    method = _Groups()
    opt = torch.optim.AdamW(method.param_groups(0.1), lr=0.5)
    before = {k: v.detach().clone() for k, v in method.named_parameters()}
    for param in method.parameters():
        param.grad = torch.zeros_like(param) if param.requires_grad else None
    opt.step()
    torch.testing.assert_close(method.proj.weight, before["proj.weight"] * (1 - 0.5 * 0.1))
    for name in ("proj.bias", "norm.weight", "norm.bias", "cls_token"):
        torch.testing.assert_close(dict(method.named_parameters())[name], before[name], rtol=0, atol=0)


def test_total_loss_skips_metric_terms():
    terms = {"a": torch.tensor(1.5), "b": torch.tensor(2.0), "metric/acc": torch.tensor(100.0)}
    assert float(total_loss(terms)) == 3.5


def test_sharded_sampler_two_ranks_cover_the_single_rank_batches():
    one = list(ShardedSampler(22, 0, 1, seed=3, shuffle=True, local_batch=4))
    r0 = list(ShardedSampler(22, 0, 2, seed=3, shuffle=True, local_batch=2))
    r1 = list(ShardedSampler(22, 1, 2, seed=3, shuffle=True, local_batch=2))
    assert len(one) == 20 and len(r0) == len(r1) == 10  # the 2-sample tail is dropped everywhere
    for i in range(5):
        assert sorted(one[4 * i: 4 * i + 4]) == sorted(r0[2 * i: 2 * i + 2] + r1[2 * i: 2 * i + 2])
    resumed = ShardedSampler(22, 0, 1, seed=3, shuffle=True, local_batch=4)
    resumed.set_epoch(0, start_batch=3)
    assert list(resumed) == one[12:] and len(resumed) == 8
    other_epoch = ShardedSampler(22, 0, 1, seed=3, shuffle=True, local_batch=4)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != one


def test_sharded_sampler_validation_keeps_everything_once():
    shards = [list(ShardedSampler(7, r, 3, seed=0, shuffle=False, local_batch=2, drop_tail=False)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))


def test_default_collate_stacks_dicts():
    batch = default_collate([{"x": torch.ones(3), "n": 1, "name": "a"}, {"x": torch.zeros(3), "n": 2, "name": "b"}])
    assert batch["x"].shape == (2, 3) and batch["n"].tolist() == [1, 2] and batch["name"] == ["a", "b"]
    with pytest.raises(ValueError, match="collate_fn"):
        default_collate([{"x": torch.ones(3)}, {"x": torch.ones(4)}])


# ---------------------------------------------------------------- weight-decay schedule


def _closed_form_wd(start: float, end: float, step: int, total: int) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * step / total)) / 2


def test_weight_decay_cosine_by_hand_and_per_group():
    from pc3d.engine.schedule import WeightDecayCosine

    method = _Groups()
    optim = OptimConfig(weight_decay=0.04, weight_decay_end=0.2)
    opt = torch.optim.AdamW(method.param_groups(optim.weight_decay), lr=0.1)
    schedule = WeightDecayCosine.from_groups(optim, opt.param_groups, total_steps=40)
    assert schedule.scales == (1.0, 0.0)  # decay group, no-decay group
    assert schedule(0) == pytest.approx(0.04)
    assert schedule(20) == pytest.approx(0.12)  # half way: the mean of the two ends
    assert schedule(10) == pytest.approx(0.2 - 0.16 * (1 + math.cos(math.pi / 4)) / 2)
    assert schedule(40) == pytest.approx(0.2) and schedule(55) == pytest.approx(0.2)
    for step in (0, 7, 20, 33, 39):
        schedule.apply(opt, step)
        assert opt.param_groups[0]["weight_decay"] == pytest.approx(_closed_form_wd(0.04, 0.2, step, 40))
        assert opt.param_groups[1]["weight_decay"] == 0.0  # biases, norms and tokens never decay
    assert WeightDecayCosine.from_groups(OptimConfig(weight_decay=0.04), opt.param_groups, 40) is None
    with pytest.raises(ValueError, match="weight_decay_end"):
        OptimConfig(weight_decay=0.0, weight_decay_end=0.2)


def _final_weights(result: dict) -> dict[str, torch.Tensor]:
    from pc3d.engine.checkpoint import read_checkpoint

    return read_checkpoint(result["checkpoints"]["last"]).model_state


def test_trainer_follows_the_weight_decay_schedule_and_resumes_bit_exactly(tmp_path):
    """3 epochs x 8 steps of the toy method: the last step's decay group sits at wd(23) and the no-decay group
    at 0; a run stopped at step 12 and resumed ends bit-identical; a constant run ends elsewhere."""
    import engine_toy

    from pc3d.engine.checkpoint import read_checkpoint
    from pc3d.engine.trainer import fit
    from pc3d.runs import RunRequest

    optim = {"weight_decay": 0.05, "weight_decay_end": 0.5, "lr": 0.05}
    full = fit(RunRequest(config=engine_toy.preset(tmp_path, "full", optim=optim), preset_name="toy"),
               engine_toy.build)
    assert full["steps"] == 24
    groups = read_checkpoint(full["checkpoints"]["last"]).meta["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == pytest.approx([_closed_form_wd(0.05, 0.5, 23, 24), 0.0])
    lines = (tmp_path / "full").glob("*/metrics.jsonl")
    logged = [json.loads(line) for path in lines for line in path.read_text().splitlines()]
    assert any("weight_decay" in record for record in logged)

    part = engine_toy.preset(tmp_path, "part", optim=optim, train={"max_steps": 12})
    assert fit(RunRequest(config=part, preset_name="toy"), engine_toy.build)["steps"] == 12
    rest = engine_toy.preset(tmp_path, "part", optim=optim)
    resumed = fit(RunRequest(config=rest, preset_name="toy", resume=True), engine_toy.build)
    assert resumed["steps"] == 24
    want, got = _final_weights(full), _final_weights(resumed)
    assert all(torch.equal(want[k], got[k]) for k in want)

    constant = fit(RunRequest(config=engine_toy.preset(tmp_path, "constant", optim={**optim, "weight_decay_end":
                                                                                    None}), preset_name="toy"),
                   engine_toy.build)
    groups = read_checkpoint(constant["checkpoints"]["last"]).meta["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]  # constant: exactly today's behaviour
    assert not torch.equal(_final_weights(constant)["net.0.weight"], want["net.0.weight"])
