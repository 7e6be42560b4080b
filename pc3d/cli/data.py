"""`pc3d data synth KIND OUT`: write the embedded synthetic data in the public dataset layouts."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pc3d.cli.common import JsonOpt, QuietOpt, VerboseOpt, emit, setup_output

app = typer.Typer(help="Embedded synthetic data: generate it in the real public layouts.", no_args_is_help=True)


class Kind(str, Enum):
    objects = "objects"
    scenes = "scenes"
    lidar = "lidar"


@app.command("synth")
def synth(
    kind: Annotated[Kind, typer.Argument(help="objects, scenes or lidar.")],
    out: Annotated[Path, typer.Argument(help="Folder to write (created; existing files are replaced).")],
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="How many shapes/scenes/frames.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed (same seed, same data).")] = 0,
    points: Annotated[int | None, typer.Option("--points", min=16, help="Points per shape/scene.")] = None,
    preview: Annotated[bool, typer.Option("--preview/--no-preview", help="Write preview.png.")] = True,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Generate seeded synthetic data and write it in the public layouts.

    objects: one .ply per shape (file name starts with its category) plus ModelNet40,
    ShapeNetPart and PartNet-Ensembled layouts. scenes: one .ply per scene plus ScanNet layouts
    (Pointcept .npy and 3DETR detection). lidar: SemanticKITTI layout (velodyne, labels,
    image_2, calib).

    Examples:

      pc3d data synth objects data/objects --count 40

      pc3d data synth lidar data/kitti --count 4 --seed 1
    """
    setup_output(json_out, quiet, verbose)
    from pc3d.data.synthetic import write_synthetic

    summary = write_synthetic(kind.value, out, count=count, seed=seed, points=points, preview=preview)
    emit(summary, json_out, title=f"synthetic {kind.value} -> {out}")
