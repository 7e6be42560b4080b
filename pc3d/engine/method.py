"""The contract between a paper's training step and the engine.

A method says what one training step computes (batch -> named losses); the engine does the
optimiser, schedule, precision, distribution, checkpoints and logging around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pc3d.errors import InputError


@dataclass
class StepState:
    """Where training stands when a step runs."""

    step: int  # global optimiser step (0 before the first update)
    epoch: int  # 0-based epoch
    total_steps: int  # optimiser steps of the whole schedule (epochs x steps per epoch)
    progress: float  # step / total_steps, in [0, 1]
    lr: float  # base learning rate of this step (groups may scale it with "lr_scale")


class Method(nn.Module):
    """A paper's training step. Subclasses own their sub-models (student, teacher, heads).

    The engine calls the module itself (`forward` -> `training_step`) so that DistributedDataParallel
    sees the call and synchronises gradients; subclasses override `training_step`, never `forward`.
    """

    # set True when some parameters get no gradient in a step (conditional heads); DDP then searches for them
    find_unused_parameters: bool = False

    def forward(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        return self.training_step(batch, state)

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        """Named loss terms; the engine optimises their sum and logs each one.

        Keys starting with "metric/" are logged but not optimised (accuracy, norms, ...)."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def validation_step(self, batch: dict[str, Tensor]) -> dict[str, float | Tensor]:
        """Per-batch validation values; a method without validation leaves this unimplemented."""
        raise NotImplementedError

    def validation_epoch_end(self, outputs: list[dict]) -> dict[str, float]:
        """Aggregate the per-batch outputs of all workers; default: the mean of each key."""
        totals: dict[str, list[float]] = {}
        for output in outputs:
            for key, value in output.items():
                totals.setdefault(key, []).append(float(value))
        return {key: sum(values) / len(values) for key, values in totals.items()}

    def after_optimizer_step(self, state: StepState) -> None:
        """Hook after each optimiser step (EMA teachers, momentum updates); default no-op."""

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on >=2-D weights; none on biases, norms, 1-D params and "token" names."""
        decay, no_decay = [], []
        decay_names, no_decay_names = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue  # EMA teachers and frozen backbones are not optimised
            if param.ndim < 2 or name.endswith(".bias") or "token" in name:
                no_decay.append(param)
                no_decay_names.append(name)
            else:
                decay.append(param)
                decay_names.append(name)
        groups = [
            {"params": decay, "param_names": decay_names, "weight_decay": weight_decay},
            {"params": no_decay, "param_names": no_decay_names, "weight_decay": 0.0},
        ]
        return [group for group in groups if group["params"]]

    def load_pretrained(self, weights: dict[str, Tensor], source: str = "weights") -> dict[str, Any]:
        """Copy the tensors of `weights` whose names and shapes match this method (`--from`).

        Methods override this to select or rename keys first (official layouts, one expert of a
        mixture) and then call `load_matching`; the default matches names exactly."""
        return self.load_matching(weights, source)

    def load_matching(self, weights: dict[str, Tensor], source: str, expected: str = "") -> dict[str, Any]:
        """Load the tensors whose names and shapes match this method; refuse weights sharing nothing.

        Returns the report --from prints: how many loaded, which were skipped, which stayed missing."""
        own = self.state_dict()
        matched = {k: v for k, v in weights.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        if not matched:
            hint = f" ({expected})" if expected else ""
            raise InputError(f"{source}: none of its {len(weights)} tensors match the model's names and shapes{hint}")
        self.load_state_dict(matched, strict=False)
        skipped = sorted(set(weights) - set(matched))
        return {"loaded": len(matched), "skipped": skipped, "missing": sorted(set(own) - set(matched))}


def has_validation(method: Method) -> bool:
    """Whether a subclass implements validation_step (the base one only raises)."""
    return type(method).validation_step is not Method.validation_step


def total_loss(terms: dict[str, Tensor]) -> Tensor:
    """The sum the optimiser minimises: every term except the "metric/" ones."""
    losses = [value for key, value in terms.items() if not key.startswith("metric/")]
    if not losses:
        raise ValueError("training_step returned no loss terms (only 'metric/' keys or nothing)")
    return torch.stack([loss.float() for loss in losses]).sum() if len(losses) > 1 else losses[0]
