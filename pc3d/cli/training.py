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
    PrintConfigOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    VerboseOpt,
    data_overrides,
    dispatch,
    finish_run,
    preset_help,
    print_config,
    resolve_config,
    setup_output,
)
from pc3d.errors import InputError

ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the latest run of this name from its last checkpoint. "
                       "--resume auto: continue it if there is one, else start it (for jobs that are requeued "
                       "with the same command line). --resume PATH: continue a run folder runs/NAME/TIME or a "
                       "checkpoint runs/NAME/TIME/checkpoints/step-N.json. The run's config.yaml decides: "
                       "--preset/--set may be left out, and a command line that changes the config is "
                       "refused (see --allow-change); --device, --gpus, --nproc may differ.")
]
ResumeFromOpt = Annotated[
    str | None, typer.Option("--resume-from", metavar="auto|PATH", help="The same as --resume auto|PATH.")
]
AllowChangeOpt = Annotated[
    bool, typer.Option("--allow-change", help="With --resume: accept a command line that changes the run's "
                       "config; config.yaml is rewritten and metrics.jsonl gets a 'resume' line with the change.")
]
PushOpt = Annotated[str | None, typer.Option("--push-to-hub", help="Upload the final checkpoint to owner/repo.",
                                             metavar="OWNER/REPO")]
FromOpt = Annotated[str | None, typer.Option("--from", help="Start from these weights: a checkpoint file, a run folder "
                                             "runs/NAME/TIME or runs/NAME/latest (its checkpoints/best.json, else "
                                             "last.json), or hf://owner/repo[@rev][/file].", metavar="CKPT")]


DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Dataset folder in its public layout (default: embedded synthetic data).")
]
CategoryOpt = Annotated[str | None, typer.Option("--category", help="Object category, for per-category tasks.")]


def _train(command: str, name: str, preset: str | None, sets: list[str] | None, out, seed, device, gpus, nproc,
           resume: bool, resume_from: str | None, allow_change: bool, init_from: str | None, push: str | None,
           json_out: bool, show_config: bool) -> None:
    flags = {"out": str(out) if out else None, "seed": seed, "device": device, "gpus": gpus, "nproc": nproc}
    target = resume_from or ("latest" if resume else None)
    if init_from:
        from pc3d.engine.checkpoint import resolve_checkpoint_path

        init_from = resolve_checkpoint_path(init_from)
    if target is None:
        if allow_change:
            raise InputError("--allow-change only applies with --resume")
        config = resolve_config(command, name, preset, sets, flags)
        if show_config:
            print_config(config, json_out)
            return
        result = dispatch(config, name, init_from=init_from, push_to_hub=push)
    else:
        from pc3d.cli.resume import plan_resume

        plan = plan_resume(command, name, target, preset, sets or [], flags, allow_change)
        if show_config:  # what the resume would continue with (after the drift check)
            print_config(plan.config, json_out)
            return
        result = dispatch(plan.config, name, resume=target != "auto", resume_auto=target == "auto",
                          resume_checkpoint=str(plan.checkpoint) if plan.checkpoint else None,
                          resume_run=str(plan.run_path) if plan.run_path else None,
                          resume_changes=plan.changes or None, init_from=init_from, push_to_hub=push)
        config = plan.config
    finish_run(result, json_out, f"{command} {name}", config)


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
    resume_from: ResumeFromOpt = None,
    allow_change: AllowChangeOpt = False,
    init_from: FromOpt = None,
    push_to_hub: PushOpt = None,
    print_config_: PrintConfigOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_output(json_out, quiet, verbose)
    sets = [*data_overrides(data), *(set_ or [])]
    _train("pretrain", method, preset, sets, out, seed, device, gpus, nproc, resume, resume_from, allow_change,
           init_from, push_to_hub, json_out, print_config_)


pretrain.__doc__ = f"""Self-supervised pretraining of a backbone.

{preset_help("pretrain")}

Examples:


  pc3d pretrain point-mae --preset quickstart --set train.epochs=1
  pc3d pretrain point-mae --preset quickstart --print-config
  pc3d pretrain point-mode --gpus 8 --set object.weights=pretrain.pth
  pc3d pretrain point-mae --preset quickstart --resume auto
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
    resume_from: ResumeFromOpt = None,
    allow_change: AllowChangeOpt = False,
    push_to_hub: PushOpt = None,
    print_config_: PrintConfigOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_output(json_out, quiet, verbose)
    sets = [*data_overrides(data, category), *(set_ or [])]
    _train("finetune", task, preset, sets, out, seed, device, gpus, nproc, resume, resume_from, allow_change,
           init_from, push_to_hub, json_out, print_config_)


finetune.__doc__ = f"""Finetune or probe a pretrained backbone on a downstream task, then evaluate it.

{preset_help("finetune")}

Examples:


  pc3d finetune cls-modelnet40 --from runs/point-mae/latest
  pc3d finetune cls-synthetic --preset quickstart --set optim.lr=5e-4 --from runs/geomask3d/latest/checkpoints/last.json
  pc3d finetune det-scannet --from hf://owner/point-mode --gpus 4
  pc3d finetune cls-synthetic --preset quickstart --resume runs/cls-synthetic/latest
"""
