"""`pc3d eval TASK --pred P --gt G`: score prediction files with the official metric conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pc3d.cli.common import JsonOpt, QuietOpt, VerboseOpt, setup_output
from pc3d.errors import NotBuiltError


def eval_command(
    task: Annotated[str, typer.Argument(help="cls, semseg, zeroshot, insseg, panoptic, detection, partseg, partnet")],
    pred: Annotated[Path, typer.Option("--pred", help="Prediction file or folder of per-sample files.")],
    gt: Annotated[Path, typer.Option("--gt", help="Ground-truth file or folder of per-sample files.")],
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate predictions against ground truth."""
    setup_output(json_out, quiet, verbose)
    raise NotBuiltError("pc3d eval is not built yet (issue 5)")
