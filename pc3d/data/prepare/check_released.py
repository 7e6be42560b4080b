"""`pc3d data check` of three datasets read as released: ShapeNet-55 (Point-MAE), PartNet-Ensembled
(PartSLIP / PartSTAD) and nuScenes-lidarseg.

Same contract as check.py: per split what is present, counts, label ranges against the classes, coordinate
extents; the first concrete problem is one InputError line naming the file. `sample=k` reads k items per split
(first, last, between) for the start-up check; without it every item is read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.prepare.check_common import (
    Stats,
    _fail,
    _splits_report,
    check_coord,
    check_range,
    load,
    load_shape,
    pick,
    split_list,
)
from pc3d.errors import InputError

# --------------------------------------------------------------------------- ShapeNet-55

SHAPENET55_CLASSES = 55
# Point-MAE's list entries: `<8-digit synset>-<model id>.npy`; the reader's class is the synset
_SHAPENET55_NAME = re.compile(r"^(\d{8})-[^/\\]+\.npy$")


def shapenet55_base(root: Path) -> Path:
    """The folder holding ShapeNet-55/ and shapenet_pc/: ROOT or ROOT/ShapeNet55-34 (Point-MAE's download)."""
    nested = root / "ShapeNet55-34"
    return nested if not (root / "ShapeNet-55").is_dir() and nested.is_dir() else root


def check_shapenet55(root: Path, sample: int | None = None) -> dict[str, Any]:
    base = shapenet55_base(root)
    clouds = base / "shapenet_pc"
    if not clouds.is_dir():
        raise _fail(f"ShapeNet-55: missing folder {clouds} (the 8192-point .npy clouds)")
    stats: dict[str, Stats] = {}
    synsets: dict[str, set[str]] = {}
    for split in ("train", "test"):
        listing = base / "ShapeNet-55" / f"{split}.txt"
        names = split_list(listing, "ShapeNet-55", split, "cloud")
        for number, name in enumerate(names, start=1):
            if not _SHAPENET55_NAME.match(name):
                raise _fail(f"{listing}: line {number} '{name}' is not <synset>-<model>.npy")
        synsets[split] = {name[:8] for name in names}
        stats[split] = Stats()
        for name in pick(names, sample):
            path = clouds / name
            # sampled: the header and a memory map (a truncated file fails to map); full: every value
            cloud = load_shape(path) if sample is not None else load(path)
            check_coord(path, cloud)
            stats[split].cloud(np.asarray(cloud[:, :3], dtype=np.float64))
        stats[split].label(np.array(sorted(int(s) for s in synsets[split]), np.int64))
    found = synsets["train"] | synsets["test"]
    if len(found) > SHAPENET55_CLASSES:
        raise _fail(f"ShapeNet-55: the train and test lists name {len(found)} synsets, more than the "
                    f"{SHAPENET55_CLASSES} classes")
    extra = {split: {"synsets": len(s)} for split, s in synsets.items()}
    report = {"dataset": "shapenet55", "root": str(base), "classes": SHAPENET55_CLASSES,
              "splits": _splits_report(stats, extra)}
    if synsets["train"] != synsets["test"]:
        # not an error for pretraining (Point-MAE reads no labels), but the reader numbers the synsets of each
        # split on its own (sorted), so a class index would mean different synsets in train and test
        report["label_note"] = (f"train and test list different synsets ({len(synsets['train'])} / "
                                f"{len(synsets['test'])}): the reader's class indices differ between the splits")
    return report


# --------------------------------------------------------------------------- PartNet-Ensembled

PARTNETE_SPLITS = ("few_shot", "test")


def partnete_base(root: Path) -> Path:
    """The folder holding PartNetE_meta.json: ROOT or ROOT/partnete, as PartSTAD's reader looks for it."""
    for candidate in (root, root / "partnete"):
        if (candidate / "PartNetE_meta.json").is_file():
            return candidate
    raise _fail(f"PartNet-E: no PartNetE_meta.json in {root} (expected the PartNet-Ensembled layout)")


def read_partnete_label(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(semantic_seg, instance_seg) of a released label.npy, an .npy holding a pickled dict. The pickle goes
    through the restricted unpickler (numpy arrays and plain containers only): a check must not run code."""
    from pc3d.io.safe_pickle import safe_load_npy

    if not path.is_file():
        raise _fail(f"data check: missing file {path}")
    data = safe_load_npy(path)
    if not isinstance(data, dict) or not {"semantic_seg", "instance_seg"} <= set(data):
        raise _fail(f"{path}: expected a dict with semantic_seg and instance_seg")
    try:
        return (np.asarray(data["semantic_seg"]).astype(np.int64).reshape(-1),
                np.asarray(data["instance_seg"]).astype(np.int64).reshape(-1))
    except (TypeError, ValueError) as exc:
        raise _fail(f"{path}: labels are not integer arrays ({exc})") from None


def check_partnete(root: Path, sample: int | None = None, categories: tuple[str, ...] | None = None
                   ) -> dict[str, Any]:
    """All categories are listed and counted; `categories` (what a few-shot preset reads) narrows the shapes
    that are read, and each of them must have shapes in every split."""
    from pc3d.io.pointcloud import read_point_cloud

    base = partnete_base(root)
    meta_path = base / "PartNetE_meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise _fail(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not meta or not all(isinstance(v, list) and v for v in meta.values()):
        raise _fail(f"{meta_path}: expected {{category: [part names]}}")
    shapes: dict[str, list[tuple[str, Path]]] = {}
    counts = {c: {"parts": len(p), **dict.fromkeys(PARTNETE_SPLITS, 0)} for c, p in sorted(meta.items())}
    for split in PARTNETE_SPLITS:
        folder = base / "data" / split
        if not folder.is_dir():
            raise _fail(f"PartNet-E: split '{split}' missing: no folder {folder}")
        shapes[split] = []
        for category_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if category_dir.name not in meta:
                raise _fail(f"{category_dir}: category '{category_dir.name}' is not in {meta_path.name}")
            found = sorted(p for p in category_dir.iterdir() if p.is_dir())
            counts[category_dir.name][split] = len(found)
            shapes[split] += [(category_dir.name, p) for p in found]
        if not shapes[split]:
            raise _fail(f"PartNet-E: split '{split}' is empty: no <category>/<shape>/ folders in {folder}")
    for category in categories or ():
        if category not in meta:
            raise _fail(f"PartNet-E: category '{category}' is not in {meta_path.name} "
                        f"(it has {', '.join(sorted(meta))})")
        for split in PARTNETE_SPLITS:
            if not counts[category][split]:
                raise _fail(f"PartNet-E: no {category} shapes in split '{split}' ({base / 'data' / split / category})")
    if categories:
        shapes = {split: [s for s in found if s[0] in categories] for split, found in shapes.items()}
    val_path = base / "val_list.json"
    if val_path.is_file():
        val = json.loads(val_path.read_text())
        for category, ids in val.items():
            absent = [i for i in ids if not (base / "data" / "test" / category / str(i)).is_dir()]
            if absent:
                raise _fail(f"{val_path}: {category} shape {absent[0]} is not in data/test/{category}")
    stats: dict[str, Stats] = {}
    for split in PARTNETE_SPLITS:
        stats[split] = Stats()
        for category, shape in pick(shapes[split], sample):
            cloud_path = shape / "pc.ply"
            if not cloud_path.is_file():
                raise _fail(f"data check: missing file {cloud_path}")
            cloud = read_point_cloud(cloud_path)  # InputError (one line) on a truncated or damaged PLY
            check_coord(cloud_path, cloud.points)
            stats[split].cloud(cloud.points, cloud.colors)
            label_path = shape / "label.npy"
            semantic, instance = read_partnete_label(label_path)
            n = len(cloud.points)
            if len(semantic) != n or len(instance) != n:
                raise _fail(f"{label_path}: {len(semantic)} semantic / {len(instance)} instance labels for the "
                            f"{n} points of pc.ply (truncated?)")
            parts = meta[category]
            bad = (semantic < -1) | (semantic >= len(parts))
            if bad.any():
                raise _fail(f"{label_path}: part id {int(semantic[bad][0])} outside -1..{len(parts) - 1} "
                            f"({category} has {len(parts)} parts in {meta_path.name}: {', '.join(parts)})")
            check_range(label_path, instance, -1, 2**31 - 1, "instance id")
            stats[split].label(semantic, ignore=-1)
            stats[split].instances += int(len(np.unique(instance[instance >= 0])))
    return {"dataset": "partnete", "root": str(base), "classes": sum(len(p) for p in meta.values()),
            "categories": counts, "splits": _splits_report(stats),
            **({"read_categories": list(categories)} if categories else {})}


# --------------------------------------------------------------------------- nuScenes-lidarseg

NUSCENES_RAW_CATEGORIES = 32  # lidarseg's category index 0..31


def nuscenes_version(root: Path, version: str | None) -> str:
    """The tables' folder: the given one, else v1.0-trainval, else v1.0-mini (whichever is there)."""
    if version:
        return version
    for candidate in ("v1.0-trainval", "v1.0-mini"):
        if (root / candidate).is_dir():
            return candidate
    raise _fail(f"nuScenes: no v1.0-trainval/ or v1.0-mini/ tables folder in {root}")


def check_nuscenes(root: Path, sample: int | None = None, version: str | None = None,
                   splits: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The key frames of `splits` (default: the version's train and val) read through the reader itself, so
    the check and training agree on what is missing or truncated; `splits` = what a preset reads."""
    from pc3d.data.readers.nuscenes import NUSCENES_CATEGORY_CLASS, NUSCENES_CLASSES, NuScenesLidarSeg

    version = nuscenes_version(root, version)
    mini = version.endswith("mini")
    splits = splits or (("mini_train", "mini_val") if mini else ("train", "val"))
    stats: dict[str, Stats] = {}
    extra: dict[str, dict[str, Any]] = {}
    mapping: dict[str, str] = {}
    for split in splits:
        try:
            reader = NuScenesLidarSeg(root, split, version)  # tables parsed once per process
        except InputError as exc:
            if "no LIDAR_TOP key frames" in str(exc):
                raise _fail(f"nuScenes: split '{split}' missing: no LIDAR_TOP key frames of its scenes in "
                            f"{root / version}") from None
            raise
        if not mapping:
            mapping = _nuscenes_categories(reader.tables["category"], root / version / "category.json",
                                           NUSCENES_CATEGORY_CLASS)
        stats[split] = Stats()
        raw_range = [NUSCENES_RAW_CATEGORIES, -1]
        for index in pick(list(range(len(reader))), sample):
            item = reader[index]  # InputError on a missing file, a float count not 5 per point, a label count
            scene, token = reader.frames[index]
            path = root / reader.sample_data[token]["filename"]
            check_coord(path, item["points"])
            stats[split].cloud(item["points"].astype(np.float64))
            raw = item["raw_labels"]
            if token not in reader.labels_of:
                continue
            label_path = root / reader.labels_of[token]
            bad = ~np.isin(raw, [int(c["index"]) for c in reader.tables["category"]])
            if bad.any():
                raise _fail(f"{label_path}: lidarseg label {int(raw[bad][0])} is not a category index of "
                            f"{version}/category.json")
            raw_range = [min(raw_range[0], int(raw.min(initial=raw_range[0]))),
                         max(raw_range[1], int(raw.max(initial=raw_range[1])))]
            stats[split].label(item["labels"], ignore=-1)
        extra[split] = {"key_frames": len(reader), "scenes": len({s for s, _ in reader.frames}),
                        # key frames absent from lidarseg.json: read with every point ignored (-1)
                        "key_frames_without_lidarseg": sum(t not in reader.labels_of for _, t in reader.frames),
                        "raw_label_range": raw_range if raw_range[1] >= 0 else None}
    return {"dataset": "nuscenes", "root": str(root), "version": version, "classes": len(NUSCENES_CLASSES),
            "class_names": list(NUSCENES_CLASSES), "category_to_class": mapping,
            "splits": _splits_report(stats, extra)}


def _nuscenes_categories(categories: list[dict[str, Any]], path: Path,
                         fine_to_coarse: dict[str, str]) -> dict[str, str]:
    """Category indices must be unique and within 0..31; returns name -> class (or 'ignored') as the reader
    maps them (the lidarseg challenge's 16 classes)."""
    seen: dict[int, str] = {}
    for record in categories:
        if "index" not in record or "name" not in record:
            raise _fail(f"{path}: a category without index / name (lidarseg's category table has both)")
        index = int(record["index"])
        if not 0 <= index < NUSCENES_RAW_CATEGORIES:
            raise _fail(f"{path}: category {record['name']} has index {index}, outside "
                        f"0..{NUSCENES_RAW_CATEGORIES - 1}")
        if index in seen:
            raise _fail(f"{path}: index {index} is both {seen[index]} and {record['name']}")
        seen[index] = record["name"]
    return {name: fine_to_coarse.get(name, "ignored") for _, name in sorted(seen.items())}
