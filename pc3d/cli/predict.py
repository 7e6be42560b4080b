"""`pc3d predict CHECKPOINT INPUT...`: apply a trained checkpoint to new scenes or shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pc3d.cli.common import DeviceOpt, JsonOpt, QuietOpt, VerboseOpt, emit, setup_output

PredictOutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Output folder; predictions go to <out>/predict/<time>/ (default: runs)."),
]


def predict_command(
    checkpoint: Annotated[
        str, typer.Argument(metavar="CHECKPOINT",
                            help="A run folder runs/NAME/TIME or runs/NAME/latest (its checkpoints/best.json, "
                                 "else last.json), a checkpoint file, or hf://owner/repo[@rev][/file].")
    ],
    inputs: Annotated[
        list[str], typer.Argument(metavar="INPUT...",
                                  help="Point clouds or meshes (.ply .pcd .npy .npz .txt .xyz .xyzn .xyzrgb .bin "
                                       ".off .obj .stl), folders of them, or quoted globs (\"scans/*.bin\").")
    ],
    out: PredictOutOpt = None,
    category: Annotated[
        str | None,
        typer.Option("--category", help="Part segmentation: the shapes' ShapeNetPart category (default: the file "
                                        "name's first word, e.g. chair_01.ply)."),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option("--columns", metavar="NAMES",
                     help="Columns of headerless .txt/.xyz/.npy inputs, e.g. x,y,z,r,g,b (_ skips one)."),
    ] = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    setup_output(json_out, quiet, verbose)
    from pc3d.io.pointcloud import parse_columns
    from pc3d.methods.predict import predict

    result = predict(checkpoint, inputs, out=out if out is not None else "runs",
                     device=device.value if device is not None else "auto", category=category,
                     columns=parse_columns(columns) if columns else None)
    if json_out:  # the same object predict() wrote to the run folder's summary.json
        emit(result, True)
        return
    _show(result)


def _show(result: dict[str, Any]) -> None:
    """A table of the inputs on stderr (stdout stays for --json)."""
    from rich.table import Table

    from pc3d import console as con

    if con.is_quiet():
        return
    shapes = result["task"] == "classification"
    table = Table(title=f"pc3d predict: {result['method']} ({result['task']}) -> {result['run_dir']}")
    for column in ("input", "points", "class (score)" if shapes else "most frequent classes"):
        table.add_column(column)
    for record in result["inputs"]:
        if shapes:
            summary = f"{record['class']} ({record['score']:.3f})"
        else:
            top = sorted(record["counts"].items(), key=lambda kv: -kv[1])[:3]
            summary = ", ".join(f"{name} {count}" for name, count in top)
            if "instances" in record:
                summary += f"; {record['instances']} instances"
        table.add_row(Path(record["input"]).name, str(record["points"]), summary)
    con.console.print(table)


predict_command.__doc__ = """Apply a trained checkpoint to new point clouds: per-point labels or shape classes.

Tasks: scene semantic segmentation (semseg-s3dis), scene probes (probe-*: semantic, instance, panoptic), zero-shot
LiDAR segmentation (affinity3d-semantickitti), classification (cls-*), part segmentation (partseg-*). The model
loads once; its preprocessing comes from the checkpoint's own config. Per input: <name>.labels.npy (a .bin scan of
a SemanticKITTI model: <name>.label), <name>.pred.ply coloured by class, and for instance / panoptic probes
<name>.instances.npy / .instances.json; classification writes predictions.json and predictions.csv. A few-shot
run (fewshot-modelnet40) has one classifier per fold: pass a fold, runs/NAME/TIME/foldK/latest; its classes are
the fold's own. Outputs go to <out>/predict/<time>/ (<out>/predict/latest is the newest) beside config.yaml,
versions.json and summary.json (the --json result).

Examples:

\b
  pc3d predict runs/semseg-s3dis/latest room1.ply room2.ply
  pc3d predict runs/cls-modelnet40/<time>/checkpoints/best.json shapes/ --json
  pc3d predict runs/affinity3d-semantickitti/latest "sequences/08/velodyne/*.bin" --out preds
  pc3d predict runs/partseg-shapenetpart/latest mug.ply --category Mug
  pc3d predict runs/fewshot-modelnet40/latest/fold0/latest shapes/
"""
