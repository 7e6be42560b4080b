"""Per-iteration schedules: learning rate (linear warm-up, cosine decay) and weight decay (cosine).

The warm-up is given in epochs or as a share of all iterations (`optim.warmup_ratio`); either way it is counted
in iterations."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from torch.optim import Optimizer


def cosine(start: float, end: float, progress: float) -> float:
    """Half-cosine from `start` (progress 0) to `end` (progress 1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps(optim: Any, total_steps: int, steps_per_epoch: int) -> int:
    """Iterations of linear warm-up: round(warmup_ratio x total_steps) when a ratio is set (papers that state
    the warm-up as a share of training, e.g. PointINS Table 9 "warm-up ratio 0.05", keep that share whatever
    the epoch count), else round(warmup_epochs x steps_per_epoch); neither set = no warm-up."""
    ratio = getattr(optim, "warmup_ratio", None)
    if ratio is not None:
        return int(round(ratio * total_steps))
    if optim.warmup_epochs is None:
        return 0
    return int(round(optim.warmup_epochs * steps_per_epoch))


@dataclass(frozen=True)
class WarmupCosine:
    """lr(step): `warmup_start_lr` -> `lr` linearly over `warmup_steps`, then cosine to `min_lr` at `total_steps`.

    A pure function of the step, so resuming needs only the step number."""

    lr: float
    min_lr: float
    warmup_start_lr: float
    warmup_steps: int
    total_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * step / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / decay_steps, 1.0)
        return cosine(self.lr, self.min_lr, progress)

    @classmethod
    def from_config(cls, optim: Any, epochs: int, steps_per_epoch: int) -> WarmupCosine:
        """Warm-up counted in iterations, given either as a share of all iterations (`optim.warmup_ratio`) or
        in epochs, possibly fractional (`optim.warmup_epochs`; the config allows only one of them).

        Built from the config and the run's length each time a run starts or resumes, so a resumed run
        recomputes the same warm-up instead of trusting a stored one."""
        total = epochs * steps_per_epoch
        warmup = min(warmup_steps(optim, total, steps_per_epoch), total)
        return cls(lr=optim.lr, min_lr=optim.min_lr, warmup_start_lr=optim.warmup_start_lr,
                   warmup_steps=warmup, total_steps=total)

    def apply(self, optimizer: Optimizer, step: int) -> float:
        """Set every group's lr for `step` (groups may carry an "lr_scale", e.g. layer-wise decay)."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WeightDecayCosine:
    """Weight decay per optimiser iteration: cosine from `start` (step 0) to `end` (step `total_steps`).

    Each group gets wd(step) x its scale (its weight decay at construction / `start`: 1 for decayed groups,
    0 for the no-decay ones). A pure function of the step and the groups' construction, so resuming
    recomputes it instead of trusting the weight decay stored in the optimiser state."""

    start: float
    end: float
    total_steps: int
    scales: tuple[float, ...]

    def __call__(self, step: int) -> float:
        return cosine(self.start, self.end, min(step / max(self.total_steps, 1), 1.0))

    @classmethod
    def from_groups(cls, optim: Any, groups: list[dict], total_steps: int) -> WeightDecayCosine | None:
        """The schedule of `optim.weight_decay_end` over these parameter groups; None when it is constant."""
        if optim.weight_decay_end is None:
            return None
        scales = tuple(float(g.get("weight_decay", optim.weight_decay)) / optim.weight_decay for g in groups)
        return cls(optim.weight_decay, optim.weight_decay_end, total_steps, scales)

    def apply(self, optimizer: Optimizer, step: int) -> float:
        wd = self(step)
        for group, scale in zip(optimizer.param_groups, self.scales, strict=True):
            group["weight_decay"] = wd * scale
        return wd
