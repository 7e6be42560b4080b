"""Sections shared by every preset: the run, the optimiser and schedule, the training loop, the data."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Command = Literal["pretrain", "finetune", "pseudolabel", "segment", "detect"]


def check_heads_divide_dim(dim: int, heads: int, path: str = "") -> None:
    """Attention splits `dim` into `heads` equal parts; `path` prefixes the key names in the message."""
    if dim % heads:
        raise ValueError(f"{path}dim {dim} is not divisible by {path}heads {heads}")


class StrictModel(BaseModel):
    """Unknown keys are errors, never silently ignored (a typo must not change an experiment)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class RunConfig(StrictModel):
    """Where and how a run happens; most fields are also CLI flags."""

    name: str = Field("", description="run name; defaults to the preset name")
    out: str = Field("runs", description="parent folder of run folders: <out>/<name>/<time>/")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpus: int = Field(0, ge=0, description="CUDA worker processes (0 = one process on `device`)")
    nproc: int = Field(1, ge=1, description="worker processes on CPU (gloo); for tests and debugging")
    deterministic: bool = Field(False, description="deterministic kernels (slower; CPU runs are already repeatable)")
    tensorboard: bool | None = Field(None, description="also log to TensorBoard: null = when it is installed, "
                                     "true = asked for (one line when it cannot be imported), false = never")


class OptimConfig(StrictModel):
    """AdamW with linear warm-up (in epochs, or as a share of all iterations) then cosine decay, stepped per
    iteration.

    `weight_decay_end` (null = constant): the decayed groups' weight decay follows a cosine from `weight_decay`
    at the first optimiser iteration to `weight_decay_end` at the last (Sonata / DINOv2: 0.04 -> 0.2), set
    each iteration next to the learning rate; groups without decay (biases, norms, tokens) stay at 0."""

    name: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    weight_decay_end: float | None = Field(None, ge=0, description="cosine weight-decay schedule: the value at "
                                           "the last iteration (null = constant weight_decay)")
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float | None = Field(10, ge=0, description="linear lr warm-up in epochs (fractional allowed); "
                                        "null = none, or optim.warmup_ratio gives it")
    warmup_ratio: float | None = Field(None, ge=0, le=1, description="linear lr warm-up as a share of all "
                                       "iterations (instead of warmup_epochs; e.g. 0.05 = PointINS Table 9)")
    warmup_start_lr: float = Field(1e-6, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    clip_grad: float | None = Field(None, gt=0, description="max global grad norm; null = no clipping")

    @model_validator(mode="before")
    @classmethod
    def _one_warmup(cls, data: Any) -> Any:
        # a ratio keeps the warm-up's share of training whatever the epoch count; an epoch count next to it
        # would be silently ignored, so both set is an error and a ratio clears the (default) epoch count
        if not isinstance(data, dict) or data.get("warmup_ratio") is None:
            return data
        if data.get("warmup_epochs") is not None:
            raise ValueError("optim.warmup_ratio and optim.warmup_epochs are both set: keep one, set the other "
                             "to null")
        return {**data, "warmup_epochs": None}

    @model_validator(mode="after")
    def _decay_schedule_needs_a_start(self) -> OptimConfig:
        # groups are scaled relative to weight_decay, so a zero start would leave every group at 0
        if self.weight_decay_end is not None and self.weight_decay == 0:
            raise ValueError("optim.weight_decay_end needs optim.weight_decay > 0 (the schedule scales the "
                             "decayed groups from it)")
        return self


class TrainConfig(StrictModel):
    epochs: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=1, description="samples per optimiser step over all workers; each worker "
                            "takes batch_size / (workers x accumulate) per micro-batch")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimiser step (gradient accumulation)")
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    log_every: int = Field(10, ge=1, description="iterations between metrics.jsonl lines")
    eval_every: int = Field(1, ge=0, description="epochs between validations (0 = never)")
    save_every: int = Field(1, ge=1, description="epochs between checkpoints")
    save_every_steps: int | None = Field(None, ge=1, description="also checkpoint every N optimiser steps "
                                         "(mid-epoch, so a killed run resumes where it was)")
    keep_last: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    best_metric: str | None = Field(None, description="metric that selects checkpoints/best: a validation "
                                       "metric (e.g. acc for val/acc) or a training term (loss)")
    best_mode: Literal["max", "min"] = "max"
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps (smoke runs)")
    ema_momentum: float = Field(0.996, ge=0, le=1, description="EMA teacher momentum at the start")
    ema_momentum_final: float = Field(1.0, ge=0, le=1, description="EMA teacher momentum at the end (cosine)")


class DataConfig(StrictModel):
    """Where the data comes from: `synthetic` (embedded generator, the default) or a dataset folder."""

    source: Literal["synthetic", "folder"] = "synthetic"
    root: str | None = Field(None, description="dataset folder in its public layout (source=folder)")
    num_points: int = Field(1024, ge=16)
    synthetic_count: int = Field(64, ge=1, description="samples generated when source=synthetic")

    @model_validator(mode="after")
    def _root_when_folder(self) -> DataConfig:
        if self.source == "folder" and not self.root:
            raise ValueError("data.root is required when data.source is 'folder'")
        return self


class PresetBase(StrictModel):
    """Every preset: which command runs it, which method, and the run section.

    Subclasses fix `command`/`method` with Literal types and set `entry` to the
    "module:function" that runs a validated preset (imported only when the command runs).
    """

    entry: ClassVar[str] = ""
    command: Command
    method: str
    description: str = ""
    run: RunConfig = Field(default_factory=RunConfig)
