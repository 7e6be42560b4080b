"""A tiny method for the engine tests: an MLP regressing a fixed linear target on synthetic tensors.

Imported by the tests and by the subprocesses they start (`python -c "import engine_toy; engine_toy.main()"`
with tests/ on PYTHONPATH), so launched DDP workers can import `build` by name.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from pc3d.config.base import OptimConfig, PresetBase, StrictModel, TrainConfig
from pc3d.engine.method import Method, StepState
from pc3d.engine.trainer import TrainingSetup, fit
from pc3d.errors import Pc3dError
from pc3d.runs import RunRequest


class ToySection(StrictModel):
    dim: int = 8
    hidden: int = 16
    samples: int = 64
    dropout: float = 0.0
    noise: float = 0.0  # augmentation drawn from the global torch RNG (exercises RNG checkpointing)
    step_delay: float = 0.0  # seconds slept per step, so a subprocess can be signalled mid-epoch
    hang_at_step: int | None = None  # after this optimiser step: write `marker`, then sleep until killed
    marker: str | None = None


class ToyPreset(PresetBase):
    command: Literal["pretrain"] = "pretrain"
    method: Literal["engine-toy"] = "engine-toy"
    optim: OptimConfig = OptimConfig(lr=1e-2, warmup_epochs=1, weight_decay=0.01, min_lr=1e-4)
    train: TrainConfig = TrainConfig(epochs=3, batch_size=8, log_every=2)
    toy: ToySection = ToySection()


class ToyData(Dataset):
    def __init__(self, section: ToySection, seed: int = 123) -> None:
        weight = torch.randn(section.dim, 1, generator=torch.Generator().manual_seed(0))  # one target for all
        self.x = torch.randn(section.samples, section.dim, generator=torch.Generator().manual_seed(seed))
        self.y = (self.x @ weight).squeeze(1)
        self.noise = section.noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = self.x[index]
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        return {"x": x, "y": self.y[index]}


class ToyMethod(Method):
    def __init__(self, section: ToySection) -> None:
        super().__init__()
        self.section = section
        self.net = nn.Sequential(nn.Linear(section.dim, section.hidden), nn.LayerNorm(section.hidden), nn.GELU(),
                                 nn.Dropout(section.dropout), nn.Linear(section.hidden, 1))

    def training_step(self, batch: dict[str, torch.Tensor], state: StepState) -> dict[str, torch.Tensor]:
        if self.section.step_delay:
            time.sleep(self.section.step_delay)
        error = self.net(batch["x"]).squeeze(1) - batch["y"]
        return {"mse": error.pow(2).mean(), "metric/mae": error.abs().mean().detach()}

    def validation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        error = self.net(batch["x"]).squeeze(1) - batch["y"]
        return {"mse": float(error.pow(2).mean())}

    def after_optimizer_step(self, state: StepState) -> None:
        if self.section.hang_at_step is not None and state.step == self.section.hang_at_step:
            Path(self.section.marker).write_text(str(state.step))
            time.sleep(600)  # the test kills this process with SIGKILL here


def build(config: ToyPreset, rank: int) -> TrainingSetup:
    val = ToySection(**{**config.toy.model_dump(), "samples": 16, "noise": 0.0})
    return TrainingSetup(ToyMethod(config.toy), ToyData(config.toy), ToyData(val, seed=7))


def preset(out: str | Path, name: str = "toy", **sections: dict) -> ToyPreset:
    """A validated toy preset; `sections` override fields per section, e.g. train={"epochs": 2}."""
    base = ToyPreset().model_dump()
    for key, values in sections.items():
        base[key] = {**base[key], **values}
    base["run"] = {**base["run"], "out": str(out), "name": name}
    return ToyPreset.model_validate(base)


def main() -> None:
    """Subprocess entry: `engine_toy.main()` with argv [preset JSON file, optional --resume]."""
    torch.set_num_threads(1)
    config = ToyPreset.model_validate(json.loads(Path(sys.argv[1]).read_text()))
    request = RunRequest(config=config, preset_name="toy", resume="--resume" in sys.argv)
    try:
        result = fit(request, build)
    except Pc3dError as exc:
        sys.stderr.write(f"pc3d: error: {exc}\n")
        sys.exit(exc.exit_code)
    print(json.dumps(result))
