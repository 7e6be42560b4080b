"""`pc3d eval TASK --pred P --gt G`: score prediction files with the official metric conventions."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from pc3d.cli.common import JsonOpt, QuietOpt, VerboseOpt, emit, setup_output
from pc3d.errors import InputError


class Convention(str, Enum):
    auto = "auto"
    semantickitti = "semantickitti"
    scannet = "scannet"


def _ids(option: str, text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise InputError(f"{option} must be comma-separated integers, got '{text}'") from exc


def _class_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    path = Path(text)
    if path.is_file():  # one name per line
        try:
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read class names ({exc})") from exc
    return [name.strip() for name in text.split(",")]


def eval_command(
    task: Annotated[str, typer.Argument(help="cls, semseg, zeroshot, insseg, panoptic, detection, partseg, partnet")],
    pred: Annotated[Path, typer.Option("--pred", help="Prediction file or folder of per-sample files.")],
    gt: Annotated[Path | None, typer.Option("--gt", help="Ground-truth file or folder of per-sample files "
                                            "(partseg: may be left out when the .npz files hold both).")] = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes", min=1,
                                                    help="Number of classes (default: from the data).")] = None,
    ignore_index: Annotated[int | None, typer.Option("--ignore-index", help="Ground-truth label to ignore "
                                                     "(default -1; 0 for SemanticKITTI .label).")] = None,
    class_names: Annotated[str | None, typer.Option("--class-names", help="Comma-separated names, or a text "
                                                    "file with one name per line.")] = None,
    convention: Annotated[Convention, typer.Option("--convention", help="Classes absent from GT and prediction: "
                                                   "semantickitti counts them as IoU 0, scannet leaves them out; "
                                                   "auto = the dataset's own.")] = Convention.auto,
    unseen: Annotated[str | None, typer.Option("--unseen", help="zeroshot: unseen class ids, e.g. 3,4,7,19 "
                                               "(default for SemanticKITTI).")] = None,
    instance_classes: Annotated[str | None, typer.Option("--instance-classes", help="insseg: class ids with "
                                                         "instances (default: classes with GT instances).")] = None,
    min_region_size: Annotated[int, typer.Option("--min-region-size", min=1,
                                                 help="insseg: smallest counted mask, in points.")] = 100,
    thing_classes: Annotated[str | None, typer.Option("--thing-classes", help="panoptic: thing class ids "
                                                      "(default 1-8 for SemanticKITTI).")] = None,
    ignore_classes: Annotated[str | None, typer.Option("--ignore-classes", help="panoptic: ignored class ids "
                                                       "(default 0 for SemanticKITTI, none otherwise).")] = None,
    min_points: Annotated[int, typer.Option("--min-points", min=1, help="panoptic: smallest unmatched segment "
                                            "counted as FP/FN.")] = 50,
    category: Annotated[str | None, typer.Option("--category", help="partnet: PartNet-Ensembled category "
                                                 "(gives the part names).")] = None,
    num_parts: Annotated[int | None, typer.Option("--num-parts", min=1, help="partnet: number of parts "
                                                  "(default: from --category or the data).")] = None,
    kitti_remap: Annotated[bool, typer.Option("--kitti-remap/--no-kitti-remap", help="Map raw SemanticKITTI "
                                              "ids in .label files to the 20 train ids.")] = True,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate predictions against ground truth with the official metric conventions.

    P and G are one file each, or two folders whose files are paired by file stem (a ground-truth
    file without prediction, or the reverse, is an error). Formats per TASK:

    cls: .npy / .txt (whitespace-separated) / .json list of integer labels, one per sample; a float
    .npy of (N, C) scores or (V, N, C) votes is averaged over votes and arg-maxed.

    semseg, zeroshot: per sample .npy (int, one label per point) or SemanticKITTI .label (uint32,
    semantic = low 16 bits; raw ids mapped to train ids, ignore 0).

    insseg: GT .npz with semantic (N,) and instance (N,) int (-1 = no instance); prediction .npz
    with masks (K, N) bool, labels (K,) int, scores (K,) float. ScanNet protocol (AP 0.50:0.90,
    AP50, AP25).

    panoptic: GT and prediction .npz with semantic (N,) and instance (N,) (stuff: instance 0,
    -1 = no segment), or SemanticKITTI .label. PQ/SQ/RQ as semantic-kitti-api.

    detection: GT .npz with boxes (K, 6: cx, cy, cz, dx, dy, dz) and labels (K,); prediction .npz
    with boxes, labels and scores. AP25 / AP50 as VoteNet / 3DETR.

    partseg: per shape .npz with category (int or name), pred (N,) and label (N,) global part ids
    0..49 (one file, --gt optional), or separate prediction / GT .npz (pred / label) or .npy files.

    partnet: GT .npz with semantic (N,) and instance (N,) (-1 = none); prediction .npz with
    semantic (N,) and optional masks (K, N), labels (K,), scores (K,) for part mAP50.

    Prints a table (per class + mean) on stderr; --json prints one JSON object on stdout instead.
    """
    setup_output(json_out, quiet, verbose)
    from pc3d.metrics.tasks import EvalOptions, evaluate

    options = EvalOptions(
        num_classes=num_classes, ignore_index=ignore_index, class_names=_class_names(class_names),
        convention=convention.value, unseen=_ids("--unseen", unseen),
        instance_classes=_ids("--instance-classes", instance_classes), min_region_size=min_region_size,
        thing_classes=_ids("--thing-classes", thing_classes), ignore_classes=_ids("--ignore-classes", ignore_classes),
        min_points=min_points, category=category, num_parts=num_parts, kitti_remap=kitti_remap,
    )
    result = _json_safe(evaluate(task, pred, gt, options))
    if json_out:
        emit(result, json_out=True)
        return
    _show(result)


def _json_safe(value: Any) -> Any:
    """NaN / inf have no JSON spelling: undefined numbers become null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _show(result: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from pc3d.console import console, is_quiet

    if is_quiet():
        return
    per_class: dict[str, dict[str, Any]] = result["per_class"]
    columns = list(next(iter(per_class.values())).keys()) if per_class else list(result["mean"])
    table = Table(title=f"pc3d eval {result['task']} ({result['num_samples']} samples)")
    table.add_column("class")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in per_class.items():
        table.add_row(escape(name), *(_cell(row.get(c)) for c in columns))
    table.add_section()
    table.add_row("mean", *(_cell(result["mean"].get(c)) if c in result["mean"] else "" for c in columns))
    console.print(table)
    summary = "  ".join(f"{key} {_cell(value)}" for key, value in result["summary"].items())
    settings = "  ".join(f"{key}={value}" for key, value in result["settings"].items())
    console.print(escape(summary))
    console.print(f"[dim]{escape(settings)}[/dim]")
