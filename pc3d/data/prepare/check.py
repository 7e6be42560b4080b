"""`pc3d data check DATASET ROOT`: is a prepared dataset what pc3d's readers and presets need?

Per split: which items are present and which missing, point / label / instance counts, label ranges
against the dataset's classes, coordinate extents and colour ranges. The first concrete problem (a
missing split, a truncated or unreadable file, arrays of different lengths, a label outside the classes,
NaN coordinates, colours outside 0..255) raises InputError: one line naming the file.

Every file is read in full, because a truncated file is only found by reading it. With `sample=k` (the
start-up check every dataset-reading preset runs, see preflight.py) only k items per split are read,
spread over the split (first, last, between), so the check costs about a second whatever the dataset's size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.prepare.check_common import (
    Stats,
    _fail,
    _splits_report,
    check_colors,
    check_coord,
    check_range,
    check_rows,
    load,
    load_shape,
    pick,
    split_list,
)
from pc3d.data.prepare.check_released import check_nuscenes, check_partnete, check_shapenet55
from pc3d.errors import InputError

# --------------------------------------------------------------------------- Pointcept layouts


def check_pointcept_folder(folder: Path, stats: Stats, labels: dict[str, int], required: tuple[str, ...]) -> None:
    """One scene/room folder: coord, color, normal and the label files in `labels` (name -> classes)."""
    coord = load(folder / "coord.npy")
    check_coord(folder / "coord.npy", coord)
    n = len(coord)
    color = load(folder / "color.npy")
    check_rows(folder / "color.npy", color, n, "(N,3)")
    check_colors(folder / "color.npy", color)
    check_rows(folder / "normal.npy", load_shape(folder / "normal.npy"), n, "(N,3)")  # values are not checked
    stats.cloud(coord, color)
    for name, classes in labels.items():
        path = folder / f"{name}.npy"
        if not path.is_file() and name not in required:
            continue
        values = load(path)
        values = values.reshape(-1) if values.ndim == 2 and values.shape[1] == 1 else values
        check_rows(path, values, n)
        check_range(path, values, -1, classes, "label")
        if name in ("segment20", "segment"):
            stats.label(values, ignore=-1)
    instance_path = folder / "instance.npy"
    if instance_path.is_file() or "instance" in required:
        instance = load(instance_path)
        check_rows(instance_path, instance, n)
        check_range(instance_path, instance, -1, 2**31 - 1, "instance id")
        stats.instances += int(len(np.unique(instance[instance >= 0])))


def check_scannet(root: Path, sample: int | None = None) -> dict[str, Any]:
    base = root if (root / "train").is_dir() or not (root / "scannet").is_dir() else root / "scannet"
    stats: dict[str, Stats] = {}
    missing = [split for split in ("train", "val") if not (base / split).is_dir()]
    if missing:
        raise _fail(f"ScanNet (Pointcept layout): split '{missing[0]}' missing: no folder {base / missing[0]}")
    for split in ("train", "val", "test"):
        folder = base / split
        if not folder.is_dir():
            continue
        scenes = sorted(p for p in folder.iterdir() if p.is_dir())
        if not scenes:
            raise _fail(f"ScanNet (Pointcept layout): split '{split}' is empty: no scene folders in {folder}")
        stats[split] = Stats()
        required = ("segment20", "instance") if split != "test" else ()
        for scene in pick(scenes, sample):
            check_pointcept_folder(scene, stats[split], {"segment20": 20, "segment200": 200}, required)
    return {"dataset": "scannet", "root": str(base), "classes": 20, "splits": _splits_report(stats),
            "missing_splits": [s for s in ("test",) if s not in stats]}


def check_s3dis(root: Path, sample: int | None = None) -> dict[str, Any]:
    from pc3d.data.readers.s3dis import S3DIS_CLASSES

    base = root if any(root.glob("Area_*")) or not (root / "s3dis").is_dir() else root / "s3dis"
    stats: dict[str, Stats] = {}
    for k in range(1, 7):
        area = base / f"Area_{k}"
        if not area.is_dir():
            raise _fail(f"S3DIS (Pointcept layout): split 'Area_{k}' missing: no folder {area}")
        rooms = sorted(p for p in area.iterdir() if p.is_dir())
        if not rooms:
            raise _fail(f"S3DIS (Pointcept layout): split 'Area_{k}' is empty: no room folders in {area}")
        stats[area.name] = Stats()
        # six areas are six splits: one room each keeps the sampled start-up check near a second
        for room in pick(rooms, None if sample is None else 1):
            check_pointcept_folder(room, stats[area.name], {"segment": len(S3DIS_CLASSES)}, ("segment", "instance"))
    return {"dataset": "s3dis", "root": str(base), "classes": len(S3DIS_CLASSES), "splits": _splits_report(stats)}


def check_scannet_detection(root: Path, sample: int | None = None) -> dict[str, Any]:
    from pc3d.data.labels import SCANNET_DET_NYU40_IDS

    base = root if (root / "meta_data").is_dir() or not (root / "scannet_detection").is_dir() \
        else root / "scannet_detection"
    data = base / "scannet_train_detection_data"
    stats: dict[str, Stats] = {}
    boxes: dict[str, int] = {}
    for split in ("train", "val"):
        listing = base / "meta_data" / f"scannetv2_{split}.txt"
        names = split_list(listing, "ScanNet detection", split, "scene")
        stats[split], boxes[split] = Stats(), 0
        for name in pick(names, sample):
            vert_path = data / f"{name}_vert.npy"
            vert = load(vert_path)
            check_coord(vert_path, vert)
            if vert.shape[1] < 6:
                raise _fail(f"{vert_path}: shape {vert.shape}, expected (N, 6) xyz rgb")
            check_colors(vert_path, vert[:, 3:6])
            stats[split].cloud(vert[:, :3], vert[:, 3:6])
            sem_path, ins_path = data / f"{name}_sem_label.npy", data / f"{name}_ins_label.npy"
            sem, ins = load(sem_path), load(ins_path)
            check_rows(sem_path, sem, len(vert))
            check_rows(ins_path, ins, len(vert))
            check_range(sem_path, sem.astype(np.int64), 0, 41, "NYU40 label")
            stats[split].label(sem.astype(np.int64), ignore=0)
            stats[split].instances += int(len(np.unique(ins[ins > 0])))
            bbox_path = data / f"{name}_bbox.npy"
            bbox = load(bbox_path)
            bbox = bbox.reshape(-1, 7) if bbox.size == 0 else bbox
            if bbox.ndim != 2 or bbox.shape[1] != 7 or not np.isfinite(bbox).all():
                raise _fail(f"{bbox_path}: shape {bbox.shape}, expected finite (K, 7) centre size class")
            bad = ~np.isin(bbox[:, 6], SCANNET_DET_NYU40_IDS)
            if bad.any():
                raise _fail(f"{bbox_path}: box class {bbox[bad][0, 6]:g} is not one of the 18 detection classes")
            if (bbox[:, 3:6] < 0).any():
                raise _fail(f"{bbox_path}: a box has a negative size")
            boxes[split] += len(bbox)
    return {"dataset": "scannet_detection", "root": str(base), "classes": len(SCANNET_DET_NYU40_IDS),
            "splits": _splits_report(stats, {s: {"boxes": b} for s, b in boxes.items()})}


# --------------------------------------------------------------------------- object datasets


def _read_text_table(path: Path, width: int, delimiter: str | None) -> np.ndarray:
    if not path.is_file():
        raise _fail(f"{path}: missing")
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    rows = [line.split(delimiter) for line in lines]
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise _fail(f"{path}: line {number} has {len(row)} values, expected {width} (truncated or malformed)")
    try:
        table = np.array(rows, dtype=np.float64).reshape(-1, width)
    except ValueError as exc:
        raise _fail(f"{path}: not numbers ({exc})") from None
    if not len(table):
        raise _fail(f"{path}: no points")
    if not np.isfinite(table).all():
        raise _fail(f"{path}: NaN or inf values")
    return table


def check_modelnet40(root: Path, sample: int | None = None) -> dict[str, Any]:
    nested = root / "modelnet40_normal_resampled"
    base = nested if not (root / "modelnet40_shape_names.txt").is_file() and nested.is_dir() else root
    names_path = base / "modelnet40_shape_names.txt"
    if not names_path.is_file():
        raise _fail(f"ModelNet40: missing {names_path}")
    classes = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    stats: dict[str, Stats] = {}
    for split in ("train", "test"):
        listing = base / f"modelnet40_{split}.txt"
        ids = split_list(listing, "ModelNet40", split, "shape")
        stats[split] = Stats()
        for shape_id in ids:
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in classes:
                raise _fail(f"{listing}: {shape_id}: class '{cls}' is not in {names_path.name}")
        for shape_id in pick(ids, sample):
            cls = shape_id.rsplit("_", 1)[0]
            table = _read_text_table(base / cls / f"{shape_id}.txt", 6, ",")
            stats[split].cloud(table[:, :3])
            stats[split].label(np.array([classes.index(cls)]))
    caches = {split: _fps_caches(base, split, sample) for split in ("train", "test")}
    return {"dataset": "modelnet40", "root": str(base), "classes": len(classes), "splits": _splits_report(stats),
            "fps_caches": caches}


def _fps_caches(base: Path, split: str, sample: int | None) -> list[dict[str, Any]]:
    """The FPS caches beside a split (pc3d's .npz, Point-MAE's .dat) and whether they match its list.

    The full check opens them (a .dat through the restricted unpickler: a pickle naming anything but
    numpy arrays is refused); the sampled start-up check only lists them, as the reader opens them anyway."""
    from pc3d.data.readers.modelnet40 import fps_cache_files

    listing = base / f"modelnet40_{split}.txt"
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    found = []
    for count, path in fps_cache_files(base, split):
        entry: dict[str, Any] = {"file": path.name, "points": count}
        if sample is None:
            entry["shapes"], entry["current"] = _cache_shapes(path, ids)
        found.append(entry)
    return found


def _cache_shapes(path: Path, ids: list[str]) -> tuple[int, bool]:
    if path.suffix == ".dat":
        from pc3d.io.safe_pickle import safe_load

        content = safe_load(path)
        if not (isinstance(content, (list, tuple)) and len(content) == 2 and len(content[0]) == len(content[1])):
            raise _fail(f"{path}: expected a pickle of [list of points, list of labels] of equal lengths")
        return len(content[0]), len(content[0]) == len(ids)
    try:
        with np.load(path, allow_pickle=False) as cache:
            cached = cache["ids"].tolist()
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise _fail(f"{path}: unreadable or truncated ({exc})") from None
    return len(cached), cached == ids


def check_modelnet40_fewshot(root: Path, sample: int | None = None) -> dict[str, Any]:
    """Point-BERT's ModelNetFewshot folder: <way>way_<shot>shot/<fold>.pkl, each a {train, test} fold."""
    from pc3d.data.readers.modelnet40_fewshot import read_fold

    settings = sorted(p for p in root.iterdir() if p.is_dir() and "way" in p.name and p.name.endswith("shot"))
    if not settings:
        raise _fail(f"ModelNet40 few-shot: no <way>way_<shot>shot folder under {root}")
    report: dict[str, Any] = {}
    for folder in settings:
        way, shot = (int("".join(c for c in part if c.isdigit())) for part in folder.name.split("way"))
        folds = sorted(folder.glob("*.pkl"), key=lambda p: (len(p.stem), p.stem))
        if not folds:
            raise _fail(f"ModelNet40 few-shot: {folder} holds no <fold>.pkl")
        sizes = {}
        for path in pick(folds, sample):
            splits = read_fold(path, way, shot)
            sizes[path.stem] = {split: len(labels) for split, (_, labels) in splits.items()}
        report[folder.name] = {"way": way, "shot": shot, "folds": [p.stem for p in folds], "read": sizes}
    return {"dataset": "modelnet40_fewshot", "root": str(root), "settings": report}


def check_shapenetpart(root: Path, sample: int | None = None) -> dict[str, Any]:
    from pc3d.data.labels import SHAPENETPART_PART_IDS, SHAPENETPART_SYNSETS
    from pc3d.data.readers.shapenetpart import read_categories

    by_synset = {synset: name for name, synset in read_categories(root)}
    stats: dict[str, Stats] = {}
    for split in ("train", "val", "test"):
        listing = root / "train_test_split" / f"shuffled_{split}_file_list.json"
        if not listing.is_file():
            raise _fail(f"ShapeNetPart: split '{split}' missing: no {listing}")
        try:
            entries = json.loads(listing.read_text())
        except json.JSONDecodeError as exc:
            raise _fail(f"{listing}: not valid JSON ({exc})") from None
        stats[split] = Stats()
        for entry in pick(entries, sample):
            _, synset, model = entry.split("/")[-3:]
            name = by_synset.get(synset)
            if name is None or name not in SHAPENETPART_SYNSETS:
                raise _fail(f"{listing}: {entry}: synset {synset} is not in synsetoffset2category.txt")
            path = root / synset / f"{model}.txt"
            table = _read_text_table(path, 7, None)
            parts = table[:, 6].astype(np.int64)
            bad = ~np.isin(parts, SHAPENETPART_PART_IDS[name])
            if bad.any():
                raise _fail(f"{path}: part label {int(parts[bad][0])} is not a part of {name} "
                            f"({', '.join(map(str, SHAPENETPART_PART_IDS[name]))})")
            stats[split].cloud(table[:, :3])
            stats[split].label(parts)
    return {"dataset": "shapenetpart", "root": str(root), "classes": 50, "splits": _splits_report(stats)}


def check_scanobjectnn(root: Path, sample: int | None = None) -> dict[str, Any]:
    import h5py

    from pc3d.data.readers.scanobjectnn import SCAN_VARIANTS, scanobjectnn_file

    stats: dict[str, Stats] = {}
    for variant in SCAN_VARIANTS:
        paths = {split: scanobjectnn_file(root, variant, split) for split in ("train", "test")}
        if not any(p.is_file() for p in paths.values()):
            continue
        for split, path in paths.items():
            if not path.is_file():
                raise _fail(f"ScanObjectNN {variant}: split '{split}' missing: no {path}")
            try:
                with h5py.File(path, "r") as handle:
                    label = np.asarray(handle["label"]).reshape(-1)
                    if sample is None:
                        data = np.asarray(handle["data"])
                    else:  # shapes from the header; the first and last clouds read
                        if handle["data"].ndim != 3 or len(handle["data"]) != len(label) or not len(label):
                            raise _fail(f"{path}: data {handle['data'].shape} / label {label.shape}, "
                                        "expected (M, P, 3) and (M,)")
                        data = np.asarray(handle["data"][[0, len(label) - 1] if len(label) > 1 else [0]])
                        label = label[[0, len(label) - 1] if len(label) > 1 else [0]]
            except (OSError, KeyError) as exc:
                raise _fail(f"{path}: unreadable, truncated or without data/label ({exc})") from None
            if data.ndim != 3 or data.shape[2] < 3 or len(label) != len(data):
                raise _fail(f"{path}: data {data.shape} / label {label.shape}, expected (M, P, 3) and (M,)")
            if not np.isfinite(data).all():
                raise _fail(f"{path}: NaN or inf coordinates")
            check_range(path, label.astype(np.int64), 0, 15, "class")
            key = f"{variant}/{split}"
            stats[key] = Stats()
            for cloud in data:
                stats[key].cloud(cloud[:, :3])
            stats[key].label(label.astype(np.int64))
    if not stats:
        raise _fail(f"ScanObjectNN: no variant under {root} (expected main_split/ or main_split_nobg/ h5 files)")
    return {"dataset": "scanobjectnn", "root": str(root), "classes": 15, "splits": _splits_report(stats)}


def check_semantickitti(root: Path, sample: int | None = None,
                        sequences: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """The official train / val / test sequences, or `sequences` (split -> sequence names: what a preset
    reads, so a run on a subset of the sequences is not refused for the others)."""
    from pc3d.data.readers.semantickitti import LEARNING_MAP, TRAIN_SEQUENCES, VAL_SEQUENCES, find_sequences_root

    base = find_sequences_root(root)
    known = np.array(sorted(LEARNING_MAP))
    stats: dict[str, Stats] = {}
    splits = sequences or {"train": TRAIN_SEQUENCES, "val": VAL_SEQUENCES,
                           "test": tuple(f"{s:02d}" for s in range(11, 22))}
    for split, sequences in splits.items():
        present = [s for s in sequences if (base / "sequences" / s / "velodyne").is_dir()]
        if split != "test" and len(present) != len(sequences):
            absent = next(s for s in sequences if s not in present)
            raise _fail(f"SemanticKITTI: split '{split}' incomplete: sequence {absent} missing "
                        f"({base / 'sequences' / absent / 'velodyne'})")
        if not present:
            continue
        stats[split] = Stats()
        for seq in present:
            for scan in pick(sorted((base / "sequences" / seq / "velodyne").glob("*.bin")), sample):
                size = scan.stat().st_size
                if size % 16:
                    raise _fail(f"{scan}: {size} bytes is not a whole number of 16-byte points (truncated)")
                points = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)
                check_coord(scan, points)
                stats[split].cloud(points[:, :3])
                label_path = base / "sequences" / seq / "labels" / f"{scan.stem}.label"
                if split == "test":
                    continue
                if not label_path.is_file():
                    raise _fail(f"{label_path}: missing")
                labels = np.fromfile(label_path, dtype=np.uint32)
                if len(labels) != len(points):
                    raise _fail(f"{label_path}: {len(labels)} labels for {len(points)} points (truncated?)")
                semantic = (labels & 0xFFFF).astype(np.int64)
                unknown = ~np.isin(semantic, known)
                if unknown.any():
                    raise _fail(f"{label_path}: raw label {int(semantic[unknown][0])} is not in SemanticKITTI's map")
                stats[split].label(semantic, ignore=0)
                stats[split].instances += int(len(np.unique(labels[(labels >> 16) > 0])))
    return {"dataset": "semantickitti", "root": str(base), "classes": 20, "splits": _splits_report(stats),
            "missing_splits": [s for s in splits if s not in stats]}


CHECKS: dict[str, Callable[..., dict[str, Any]]] = {
    "scannet": check_scannet, "scannet_detection": check_scannet_detection, "s3dis": check_s3dis,
    "modelnet40": check_modelnet40, "modelnet40_fewshot": check_modelnet40_fewshot,
    "shapenetpart": check_shapenetpart, "scanobjectnn": check_scanobjectnn, "semantickitti": check_semantickitti,
    "shapenet55": check_shapenet55, "partnete": check_partnete, "nuscenes": check_nuscenes,
}


def check_dataset(dataset: str, root: str | Path, sample: int | None = None, **options: Any) -> dict[str, Any]:
    """Check `root` as `dataset`; `sample` = items read per split (None: all); `options` go to the
    dataset's check (semantickitti: `sequences`; nuscenes: `version`, `splits`)."""
    if dataset not in CHECKS:
        raise InputError(f"unknown dataset '{dataset}' (one of: {', '.join(CHECKS)})")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    report = CHECKS[dataset](root, sample, **options)
    report["ok"] = True
    report["sampled"] = sample
    return report
