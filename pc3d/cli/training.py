"""`pc3d pretrain` and `pc3d finetune`: train a method from a preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pc3d.cli.common import (
    DeviceOpt,
    GpusOpt,
    JsonOpt,
    NprocOpt,
    OutOpt,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    VerboseOpt,
    data_overrides,
    dispatch,
    emit,
    preset_help,
    resolve_config,
    setup_output,
)

ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the latest run of this name from its last checkpoint.")
]
PushOpt = Annotated[str | None, typer.Option("--push-to-hub", help="Upload the final checkpoint to owner/repo.",
                                             metavar="OWNER/REPO")]
FromOpt = Annotated[str | None, typer.Option("--from", help="Start from these weights: a file or hf://owner/repo[@rev][/file].",
                                             metavar="CKPT")]


DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Dataset folder in its public layout (default: embedded synthetic data).")
]
CategoryOpt = Annotated[str | None, typer.Option("--category", help="Object category, for per-category tasks.")]


def _train(command: str, name: str, preset: str | None, sets: list[str] | None, out, seed, device, gpus, nproc,
           resume: bool, init_from: str | None, push: str | None, json_out: bool) -> None:
    flags = {"out": str(out) if out else None, "seed": seed, "device": device, "gpus": gpus, "nproc": nproc}
    config = resolve_config(command, name, preset, sets, flags)
    result = dispatch(config, name, resume=resume, init_from=init_from, push_to_hub=push)
    emit(result, json_out, title=f"{command} {name}")


def pretrain(
    method: Annotated[str, typer.Argument(help="Method preset to pretrain.", metavar="METHOD")],
    data: DataOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    gpus: GpusOpt = None,
    nproc: NprocOpt = None,
    resume: ResumeOpt = False,
    init_from: FromOpt = None,
    push_to_hub: PushOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_output(json_out, quiet, verbose)
    sets = [*data_overrides(data), *(set_ or [])]
    _train("pretrain", method, preset, sets, out, seed, device, gpus, nproc, resume, init_from, push_to_hub, json_out)


pretrain.__doc__ = f"""Self-supervised pretraining of a backbone.

{preset_help("pretrain")}

Examples:

  pc3d pretrain point-mae --set train.epochs=1

  pc3d pretrain point-mode --gpus 8

  torchrun --nnodes 2 --nproc-per-node 8 -m pc3d pretrain pointins
"""


def finetune(
    task: Annotated[str, typer.Argument(help="Task preset (dataset x task).", metavar="TASK")],
    init_from: FromOpt = None,
    data: DataOpt = None,
    category: CategoryOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    gpus: GpusOpt = None,
    nproc: NprocOpt = None,
    resume: ResumeOpt = False,
    push_to_hub: PushOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_output(json_out, quiet, verbose)
    sets = [*data_overrides(data, category), *(set_ or [])]
    _train("finetune", task, preset, sets, out, seed, device, gpus, nproc, resume, init_from, push_to_hub, json_out)


finetune.__doc__ = f"""Finetune or probe a pretrained backbone on a downstream task, then evaluate it.

{preset_help("finetune")}

Examples:

  pc3d finetune cls-modelnet40 --from runs/point-mae/latest/checkpoints/last.safetensors

  pc3d finetune det-scannet --from hf://owner/point-mode --gpus 4
"""
