"""The start-up check: every preset that reads a dataset folder runs `pc3d data check` on it, sampled,
before anything is built, so a missing split or a truncated file stops the run at once (exit 2, one line)
rather than in epoch 3.

`startup_check` is called once, where every preset is dispatched to its method (pc3d/cli/common.py
`dispatch`). It reads `SAMPLE` items per split (first, last, between; one room per S3DIS area), which
costs about a second; SemanticKITTI presets are checked on the sequences they read, nuScenes on the version
and splits they read, PartNet-E on the category a few-shot run reads. The folders of `data.also` (outdoor
pretraining: SemanticKITTI + nuScenes) are checked too. Synthetic data, inference on given inputs, and datasets
without a check (SUN RGB-D) are not checked here.
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
    "shapenetpart": "shapenetpart", "semantickitti": "semantickitti", "shapenet55": "shapenet55",
    "nuscenes": "nuscenes",
}
# methods whose reader is fixed whatever data.dataset says
METHOD_CHECKS = {"point-mode-semseg": "s3dis", "affinity3d": "semantickitti", "affinity3d-seg": "semantickitti",
                 "partstad-fewshot": "partnete", "partstad-detector": "partnete"}


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


def also_to_check(config: Any) -> list[tuple[str, Path]]:
    """(check name, folder) of each further dataset in `data.also` (pretrained on together, train split only)."""
    data = getattr(config, "data", None)
    if data is None or getattr(data, "source", None) != "folder":
        return []
    return [(DATASET_CHECKS[s.dataset], Path(s.root)) for s in getattr(data, "also", ()) or ()
            if s.dataset in DATASET_CHECKS]


def check_options(config: Any, name: str, also: bool = False) -> dict[str, Any]:
    """SemanticKITTI presets read chosen sequences: check those, not the whole official split. nuScenes
    presets read one tables version; a `data.also` dataset is read for its training split only."""
    data = config.data
    if name == "partnete" and getattr(data, "category", None):  # a few-shot run reads one category
        return {"categories": (data.category,)}
    if name == "nuscenes":
        version = getattr(data, "nuscenes_version", None) or "v1.0-trainval"
        prefix = "mini_" if version.endswith("mini") else ""
        splits = (f"{prefix}train",) if also else (f"{prefix}train", f"{prefix}val")
        return {"version": version, "splits": splits}
    if name != "semantickitti":
        return {}
    train = getattr(data, "train_sequences", None) or getattr(data, "sequences", None)
    # `pc3d pseudolabel affinity3d` labels `data.sequences` only; its val_sequences belong to the training preset
    labels_only = getattr(config, "method", None) == "affinity3d"
    val = None if also or labels_only else getattr(data, "val_sequences", None)
    splits = {split: tuple(seqs) for split, seqs in (("train", train), ("val", val)) if seqs}
    return {"sequences": splits} if splits else {}


def startup_check(config: Any, inference: bool = False) -> dict[str, Any] | None:
    """Sampled `pc3d data check` of the preset's dataset folder; raises InputError (one line) on the first
    problem. Returns the check's report (None when nothing was checked)."""
    if inference:
        return None
    target = dataset_to_check(config)
    targets = ([(target, False)] if target else []) + [(t, True) for t in also_to_check(config)]
    if not targets:
        return None
    from pc3d.console import debug
    from pc3d.data.prepare.check import check_dataset
    from pc3d.errors import InputError

    reports = []
    for (name, root), also in targets:
        start = time.perf_counter()
        try:
            reports.append(check_dataset(name, root, sample=SAMPLE, **check_options(config, name, also)))
        except InputError as exc:
            raise InputError(f"data check ({name}, run `pc3d data check {name} {root}` for the full report): "
                             f"{exc}") from None
        debug(f"start-up data check of {root} as {name}: ok in {time.perf_counter() - start:.2f} s")
    if len(reports) == 1:
        return reports[0]
    # the main dataset's report, with the `data.also` datasets' reports beside it
    return {**reports[0], "also": reports[1:]}
