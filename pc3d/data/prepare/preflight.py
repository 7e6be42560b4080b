"""The start-up check: every preset that reads a dataset folder runs `pc3d data check` on it, sampled,
before anything is built, so a missing split or a truncated file stops the run at once (exit 2, one line)
rather than in epoch 3.

`startup_check` is called once, where every preset is dispatched to its method (pc3d/cli/common.py
`dispatch`). It reads `SAMPLE` items per split (first, last, between; one room per S3DIS area), which
costs about a second; SemanticKITTI presets are checked on the sequences they read. Synthetic data,
inference on given inputs, and datasets without a check (ShapeNet-55, SUN RGB-D, PartNet-E) are not
checked here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

SAMPLE = 3

# data.dataset -> the `pc3d data check` dataset that validates its folder
DATASET_CHECKS = {
    "scannet": "scannet", "scannet_pointcept": "scannet", "scannet_detection": "scannet_detection",
    "s3dis": "s3dis", "modelnet40": "modelnet40", "scanobjectnn": "scanobjectnn",
    "shapenetpart": "shapenetpart", "semantickitti": "semantickitti",
}
# methods whose reader is fixed whatever data.dataset says
METHOD_CHECKS = {"point-mode-semseg": "s3dis", "affinity3d": "semantickitti", "affinity3d-seg": "semantickitti"}


def dataset_to_check(config: Any) -> tuple[str, Path] | None:
    """(check name, folder) a preset reads, or None when it reads no dataset folder pc3d can check."""
    data = getattr(config, "data", None)
    if data is None or getattr(data, "source", None) != "folder" or not getattr(data, "root", None):
        return None
    method = getattr(config, "method", "")
    if method == "object-fewshot" and getattr(data, "folds", None):
        return "modelnet40_fewshot", Path(data.folds)
    name = METHOD_CHECKS.get(method) or DATASET_CHECKS.get(str(getattr(data, "dataset", "")))
    return (name, Path(data.root)) if name else None


def check_options(config: Any, name: str) -> dict[str, Any]:
    """SemanticKITTI presets read chosen sequences: check those, not the whole official split."""
    if name != "semantickitti":
        return {}
    data = config.data
    train = getattr(data, "train_sequences", None) or getattr(data, "sequences", None)
    val = getattr(data, "val_sequences", None)
    splits = {split: tuple(seqs) for split, seqs in (("train", train), ("val", val)) if seqs}
    return {"sequences": splits} if splits else {}


def startup_check(config: Any, inference: bool = False) -> dict[str, Any] | None:
    """Sampled `pc3d data check` of the preset's dataset folder; raises InputError (one line) on the first
    problem. Returns the check's report (None when nothing was checked)."""
    target = None if inference else dataset_to_check(config)
    if target is None:
        return None
    from pc3d.console import debug
    from pc3d.data.prepare.check import check_dataset
    from pc3d.errors import InputError

    name, root = target
    start = time.perf_counter()
    try:
        report = check_dataset(name, root, sample=SAMPLE, **check_options(config, name))
    except InputError as exc:
        raise InputError(f"data check ({name}, run `pc3d data check {name} {root}` for the full report): "
                         f"{exc}") from None
    debug(f"start-up data check of {root} as {name}: ok in {time.perf_counter() - start:.2f} s")
    return report
