"""optim.warmup_ratio: the warm-up as a share of all iterations (PointINS Table 9 "warm-up ratio 0.05").

An epoch warm-up is a different share of training for every epoch count (40 epochs = 1.3 % of a 3000-epoch S3DIS
run, 80 % of a 50-epoch outdoor one); the ratio keeps the paper's 5 %. Checked here: a ratio schedule is the epoch
schedule at the equivalent count, the warm-up ends at round(ratio x total) iterations, both set is refused, and a
resumed run recomputes the same schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import engine_toy
import pytest
from pydantic import ValidationError

from pc3d.config import apply_overrides, load_preset, validate_preset
from pc3d.config.base import OptimConfig
from pc3d.engine.schedule import WarmupCosine
from pc3d.engine.trainer import fit
from pc3d.errors import ConfigError
from pc3d.runs import RunRequest


def test_ratio_schedule_equals_the_epoch_one_at_the_equivalent_count() -> None:
    # 20 epochs x 7 iterations: 5 % of 140 = 7 iterations = 1 epoch
    by_ratio = WarmupCosine.from_config(OptimConfig(lr=4e-3, warmup_ratio=0.05), epochs=20, steps_per_epoch=7)
    by_epochs = WarmupCosine.from_config(OptimConfig(lr=4e-3, warmup_epochs=1), epochs=20, steps_per_epoch=7)
    assert by_ratio == by_epochs and by_ratio.warmup_steps == 7
    assert [by_ratio(s) for s in range(141)] == [by_epochs(s) for s in range(141)]


@pytest.mark.parametrize("epochs,steps_per_epoch", [(3000, 3), (800, 13), (50, 7), (5, 4), (2, 1)])
def test_warmup_ends_at_the_rounded_share_of_all_iterations(epochs: int, steps_per_epoch: int) -> None:
    optim = OptimConfig(lr=1.0, warmup_start_lr=0.0, min_lr=0.0, warmup_ratio=0.05)
    schedule = WarmupCosine.from_config(optim, epochs, steps_per_epoch)
    total = epochs * steps_per_epoch
    end = round(0.05 * total)
    assert schedule.total_steps == total and schedule.warmup_steps == end
    if end:
        assert schedule(end - 1) < 1.0  # still rising one iteration before
        assert schedule(end - 1) == pytest.approx((end - 1) / end)  # linear, per iteration
    assert schedule(end) == 1.0 and schedule(total) == pytest.approx(0.0, abs=1e-12)


def test_both_set_is_refused_in_one_line() -> None:
    with pytest.raises(ValidationError, match="warmup_ratio and optim.warmup_epochs are both set"):
        OptimConfig(warmup_ratio=0.05, warmup_epochs=2)
    data = apply_overrides(load_preset("sonata"), ["optim.warmup_epochs=40"])
    with pytest.raises(ConfigError) as caught:
        validate_preset(data, "sonata")
    assert "\n" not in str(caught.value) and "both set" in str(caught.value)
    # switching a ratio preset back to epochs: clear the ratio
    data = apply_overrides(load_preset("sonata"), ["optim.warmup_epochs=40", "optim.warmup_ratio=null"])
    optim = validate_preset(data, "sonata").optim
    assert optim.warmup_epochs == 40 and optim.warmup_ratio is None


def test_saved_config_round_trips() -> None:
    # a run's config.yaml / checkpoint holds the dumped config; reading it back must not count as "both set"
    config = validate_preset(load_preset("pointins"), "pointins")
    again = type(config).model_validate(config.model_dump(mode="json"))
    assert again.optim.warmup_ratio == 0.05 and again.optim.warmup_epochs is None


def test_resume_recomputes_the_ratio_warmup(tmp_path: Path) -> None:
    # 4 epochs x 8 iterations, 25 % warm-up = 8 iterations; resume from step 4, inside the warm-up
    sections = {"optim": {"warmup_ratio": 0.25, "warmup_epochs": None},
                "train": {"epochs": 4, "log_every": 1, "save_every_steps": 4, "keep_last": 10}}
    first = fit(RunRequest(config=engine_toy.preset(tmp_path, **sections), preset_name="toy"), engine_toy.build)
    sidecar = sorted(Path(first["run_dir"], "checkpoints").glob("step-00000004.json"))
    assert sidecar
    resumed = fit(RunRequest(config=engine_toy.preset(tmp_path, **sections), preset_name="toy",
                             resume_checkpoint=str(sidecar[0])), engine_toy.build)
    schedule = WarmupCosine.from_config(engine_toy.preset(tmp_path, **sections).optim, 4, 8)
    assert schedule.warmup_steps == 8
    lines = [json.loads(line) for line in Path(resumed["run_dir"], "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in lines if "split" not in r}
    assert sorted(lrs) == list(range(1, 33))
    for step, lr in lrs.items():  # the line of step s carries the lr of its update (iteration s - 1)
        assert lr == pytest.approx(schedule(step - 1)), step
