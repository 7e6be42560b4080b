"""`pc3d plot`: training curves of one or more runs in one PNG (compare runs side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pc3d.cli.common import JsonOpt, QuietOpt, VerboseOpt, emit, setup_output
from pc3d.errors import InputError


def plot_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (runs/NAME/TIME) or their metrics.jsonl files.",
                                              metavar="RUN")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write (a folder: FOLDER/curves.png).")]
    = Path("curves.png"),
    metrics: Annotated[str | None, typer.Option("--metrics", "-m", metavar="A,B",
                                                help="Only these panels, e.g. loss,val/oa (default: every "
                                                "logged loss and metric).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Plot training curves from metrics.jsonl: losses by step, validation metrics by epoch, one colour per run.

    Every training run also writes its own curves.png next to metrics.jsonl.

    Examples:

    \b
      pc3d plot runs/point-mae/20250101-120000
      pc3d plot runs/point-mae/* --out mae-runs.png --metrics loss,val/svm_acc
    """
    setup_output(json_out, quiet, verbose)
    wanted = None
    if metrics is not None:
        wanted = [name.strip() for name in metrics.split(",") if name.strip()]
        if not wanted:
            raise InputError("--metrics: give at least one metric name, e.g. --metrics loss")
    if out.suffix.lower() != ".png" and not out.is_dir():
        raise InputError(f"--out {out}: pc3d plot writes PNG files (name it *.png)")
    from pc3d.console import info
    from pc3d.viz.curves import plot_runs

    result = plot_runs(_distinct_runs(runs), out, wanted)
    if json_out:
        emit(result, json_out)
    else:
        info(f"wrote {result['out']}: {len(result['panels'])} panels ({', '.join(result['panels'])}) "
             f"of {len(result['runs'])} run(s)")


def _distinct_runs(runs: list[Path]) -> list[Path]:
    """`latest` (link or text file) read as the run it names, and each run once: `runs/NAME/*` also matches
    `runs/NAME/latest`, which must not draw the newest run twice."""
    from pc3d.runs import resolve_latest

    seen: set[Path] = set()
    distinct = []
    for run in runs:
        path = resolve_latest(run)
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            distinct.append(path)
    return distinct
