"""`pc3d pseudolabel`, `pc3d segment`, `pc3d detect`: run a method on inputs and write outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pc3d.cli.common import (
    DeviceOpt,
    JsonOpt,
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
    set_opt,
    setup_output,
)
from pc3d.errors import InputError

# pseudo-labelling and segmentation presets have no optimiser: their --set example names their own keys
PseudoSetOpt = set_opt("data.synthetic_count=3")
SegmentSetOpt = set_opt("superpoints.method=region-growing")

ColumnsOpt = Annotated[
    str | None,
    typer.Option("--columns", metavar="NAMES",
                 help="Columns of a headerless .txt/.xyz/.npy, e.g. x,y,z,nx,ny,nz or x,y,z,r,g,b,label "
                      "(_ skips one; default: .xyz 6 = normals, .txt 6 = colours)."),
]

CheckpointOpt = Annotated[
    str | None,
    typer.Option("--checkpoint", "-c", metavar="CKPT",
                 help="Weights: a checkpoint file, a run folder runs/NAME/TIME or runs/NAME/latest (its "
                      "checkpoints/best.json, else last.json), or hf://owner/repo[@rev][/file]."),
]


def _run(command: str, default_preset: str, preset, sets, out, seed, device, json_out, inputs: dict,
         show_config: bool, also_accept: tuple[str, ...] = (), columns: str | None = None) -> None:
    from pc3d.io.pointcloud import column_names, parse_columns

    names = parse_columns(columns) if columns else None
    flags = {"out": str(out) if out else None, "seed": seed, "device": device}
    # the command's own preset is the base name; --preset picks a variant of it (or a file)
    config = resolve_config(command, default_preset, preset, sets, flags, also_accept)
    if show_config:
        print_config(config, json_out)
        return
    if inputs.get("checkpoint"):
        from pc3d.engine.checkpoint import resolve_checkpoint_path

        inputs = {**inputs, "checkpoint": resolve_checkpoint_path(inputs["checkpoint"])}
    # the methods read the cloud by path; the names reach their reader through this context
    with column_names(names):
        result = dispatch(config, default_preset, inputs=inputs, init_from=inputs.get("checkpoint"))
    finish_run(result, json_out, command, config)


def pseudolabel(
    name: Annotated[str, typer.Argument(help="Pseudo-labelling preset.", metavar="PRESET")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset folder (default: embedded synthetic LiDAR).")
    ] = None,
    preset: PresetOpt = None,
    set_: PseudoSetOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    print_config_: PrintConfigOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_output(json_out, quiet, verbose)
    sets = [*data_overrides(data), *(set_ or [])]
    flags = {"out": str(out) if out else None, "seed": seed, "device": device}
    config = resolve_config("pseudolabel", name, preset, sets, flags)
    if print_config_:
        print_config(config, json_out)
        return
    finish_run(dispatch(config, name), json_out, f"pseudolabel {name}", config)


pseudolabel.__doc__ = f"""Zero-shot pseudo-labels for unlabelled scans (Affinity3D).

Labels go to <out>/<name>/<time>/sequences/XX/labels/ (default --out runs; <out>/<name>/latest is the newest)
beside config.yaml, versions.json and summary.json (the --json result). With resume: true (the default) the
latest run of the same config continues, skipping its finished frames; a changed config starts a new run.

{preset_help("pseudolabel")}

Examples:


  pc3d pseudolabel affinity3d-kitti --data /data/SemanticKITTI/dataset
  pc3d pseudolabel affinity3d --preset oracle --set data.synthetic_count=3
"""


def segment(
    cloud: Annotated[
        list[str], typer.Argument(help="Point clouds or meshes (.ply .pcd .npy .npz .txt .xyz .xyzn .xyzrgb .bin .off "
                                       ".obj .stl): files, folders (not recursive) or globs.", metavar="INPUT...")
    ],
    parts: Annotated[str, typer.Option("--parts", help="Comma-separated part names, e.g. \"arm,seat,leg\".")],
    category: Annotated[
        str | None, typer.Option("--category", help="Object category of every input (default: from each file name).")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", "--checkpoint", "-c", metavar="CKPT",
                     help="Trained PartSTAD weight network (a checkpoint file, a partstad-fewshot run folder "
                          "such as runs/partstad-fewshot/latest, or hf://...); without it: PartSLIP voting."),
    ] = None,
    instances: Annotated[bool, typer.Option("--instances", help="Also merge part instances (PartSLIP).")] = False,
    detector: Annotated[
        str | None,
        typer.Option("--detector", metavar="RUN", help="Detector adapted by `pc3d finetune partstad-detector`: its "
                     "run folder, e.g. runs/partstad-detector/latest (the same as --set detector.weights=RUN)."),
    ] = None,
    columns: ColumnsOpt = None,
    preset: PresetOpt = None,
    set_: SegmentSetOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    print_config_: PrintConfigOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_output(json_out, quiet, verbose)
    names = [p.strip() for p in parts.split(",") if p.strip()]
    if not names:
        raise InputError("--parts needs at least one part name, e.g. --parts \"arm,seat,leg\"")
    sets = [*(set_ or []), *(["instances=true"] if instances else []),
            *([f"detector.weights={detector}"] if detector else [])]
    inputs = {"clouds": list(cloud), "parts": names, "category": category, "checkpoint": weights}
    _run("segment", "partstad", preset, sets, out, seed, device, json_out, inputs, print_config_, columns=columns)


segment.__doc__ = f"""Text-prompted part segmentation of objects (PartSTAD); the 2-D models load once per call.

Outputs go to <out>/partstad/<time>/ (default --out runs; <out>/partstad/latest is the newest) beside its
config.yaml, versions.json and summary.json (the --json result), never next to the inputs.

{preset_help("segment")}

Examples:


  pc3d segment chair.ply --parts "arm,seat,leg"
  pc3d segment shapes/ "more/chair_*.ply" --parts "arm,seat,leg" --json
  pc3d segment chair.ply --parts "arm,seat,leg" --preset oracle --set instances=true
  pc3d segment chair.ply --parts "arm,back,leg,seat" --detector runs/partstad-detector/latest
"""


def detect(
    cloud: Annotated[
        list[str], typer.Argument(help="Scene point clouds or meshes (.ply .pcd .npy .npz .txt .xyz .xyzn .xyzrgb .bin "
                                       ".off .obj .stl): files, folders (not recursive) or globs.", metavar="INPUT...")
    ],
    checkpoint: CheckpointOpt = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", min=0.0, max=1.0, help="Keep boxes scoring at least this.")
    ] = None,
    columns: ColumnsOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    print_config_: PrintConfigOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_output(json_out, quiet, verbose)
    sets = [*(set_ or []), *([f"detect.threshold={threshold}"] if threshold is not None else [])]
    inputs = {"clouds": list(cloud), "checkpoint": checkpoint}
    _run("detect", "det-scannet", preset, sets, out, seed, device, json_out, inputs, print_config_,
         also_accept=("finetune",), columns=columns)


detect.__doc__ = f"""3D object detection in indoor scenes (Point-MoDE detector); the checkpoint loads once per call.

Outputs (<scene>.boxes.json .ply .npz .png) go to <out>/detect/<time>/ (default --out runs; <out>/detect/latest
is the newest) beside its config.yaml, versions.json and summary.json (the --json result), never next to the
inputs.

{preset_help("detect")}

Examples:


  pc3d detect scene0000_00.ply --checkpoint runs/det-scannet/latest
  pc3d detect scans/ "more/*.ply" --checkpoint runs/det-scannet/<time>/checkpoints/best.json --json
  pc3d detect scene.ply --preset quickstart --checkpoint runs/det-scannet/latest/checkpoints/last.json --threshold 0.3
"""
