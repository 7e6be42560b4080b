"""Raw ScanNet v2 -> Pointcept's npy layout and the VoteNet/3DETR detection layout.

Raw layout (as the official download script writes it): `<raw>/scans/<id>/` (and `scans_test/<id>/`) with
`<id>_vh_clean_2.ply` (binary mesh: x y z float, red green blue alpha uchar, faces), `<id>_vh_clean_2.0.010000
.segs.json` (`segIndices`: one over-segment id per vertex), `<id>.aggregation.json` (`segGroups`: id, objectId,
label = raw category, segments), `<id>.txt` (`axisAlignment = 16 floats`, row-major 4x4); beside them
`scannetv2-labels.combined.tsv` (raw_category -> id, nyu40id) and the split lists `scannetv2_{train,val,test}.txt`
(found in <raw>, <raw>/meta_data or <raw>/Tasks/Benchmark).

Pointcept (pointcept/datasets/preprocessing/scannet/preprocess_scannet.py): `<out>/scannet/{train,val,test}/<id>/`
coord (N,3) float32 as in the mesh (no axis alignment), color (N,3) uint8, normal (N,3) float32 = unit sum of the
area-weighted normals of the faces around each vertex, and for train/val segment20 (index into the 20 benchmark
NYU40 ids), segment200 (index of the tsv `id` among ScanNet200's), instance (the segGroup's `id`), all int64
with -1 = ignore / no instance; groups are applied in file order, a later one overwriting an earlier one.
A scene in neither the train nor the val list goes to test, as there.

3DETR (scannet/batch_load_scannet_data.py + load_scannet_data.py): `<out>/scannet_detection/
scannet_train_detection_data/<id>_{vert,sem_label,ins_label,bbox}.npy` for train/val scenes and
`meta_data/scannetv2_{train,val}.txt`. Vertices are axis-aligned (x' = A [x 1]); _vert (N,6) float32 xyz rgb,
_sem_label uint32 NYU40 (0 = none), _ins_label uint32 objectId + 1 (0 = none), _bbox (K,7) float64
centre, size, NYU40 class of the axis-aligned points of each instance, ordered by objectId, only the 18
detection classes. Scenes above 50 000 vertices keep a random 50 000 (MAX_NUM_POINT), boxes are computed
before that, from all vertices.

Deviations: the 50 000-point subset is seeded by the scene name (the original draws from numpy's global
state), so a rerun reproduces it; a raw category missing from the tsv gets NYU40 0 / no ScanNet200 class
(Pointcept does the same; VoteNet would stop with a KeyError), and the summary counts such labels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.labels import SCANNET20_NYU40_IDS, SCANNET_DET_NYU40_IDS
from pc3d.data.prepare._common import complete, count_by, run_jobs, save_npy, stable_seed
from pc3d.data.prepare.labels200 import SCANNET200_TSV_IDS
from pc3d.errors import InputError
from pc3d.io.atomic import write_text_atomic

MESH = "_vh_clean_2.ply"
SEGS = "_vh_clean_2.0.010000.segs.json"
AGGREGATION = ".aggregation.json"
TSV = "scannetv2-labels.combined.tsv"
MAX_NUM_POINT = 50_000
POINTCEPT_DIR = "scannet"
DETECTION_DIR = "scannet_detection"
POINTCEPT_KEYS = ("coord", "color", "normal")
LABEL_KEYS = ("segment20", "segment200", "instance")
DETECTION_SUFFIXES = ("vert", "sem_label", "ins_label", "bbox")


def find_meta(raw: Path, name: str) -> Path | None:
    for folder in (raw, raw / "meta_data", raw / "Tasks" / "Benchmark"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_label_table(path: Path) -> dict[str, tuple[int, int]]:
    """raw_category -> (tsv id, nyu40id) from scannetv2-labels.combined.tsv."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the label table ({exc})") from None
    if not rows or not {"id", "raw_category", "nyu40id"} <= set(rows[0]):
        raise InputError(f"{path}: expected the tab-separated columns id, raw_category, nyu40id")
    table = {}
    for number, row in enumerate(rows, start=2):
        try:
            table[row["raw_category"]] = (int(row["id"]), int(row["nyu40id"]))
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {number}: id / nyu40id are not integers") from None
    return table


def read_split(raw: Path, split: str) -> list[str] | None:
    path = find_meta(raw, f"scannetv2_{split}.txt")
    if path is None:
        return None
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_axis_alignment(path: Path) -> np.ndarray:
    """The 4x4 `axisAlignment` of `<id>.txt`; identity when the file has none (test scenes)."""
    if not path.is_file():
        return np.eye(4)
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "axisAlignment":
            try:
                values = [float(word) for word in value.split()]
            except ValueError:
                raise InputError(f"{path}: axisAlignment is not 16 numbers: {value.strip()[:60]!r}") from None
            if len(values) != 16:
                raise InputError(f"{path}: axisAlignment has {len(values)} numbers, expected 16")
            return np.array(values, dtype=np.float64).reshape(4, 4)
    return np.eye(4)


def read_scene_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (N,3) float64, colours (N,3) uint8, triangles (F,3) int64) of a `_vh_clean_2.ply`."""
    from pc3d.io.mesh import fan_triangulate
    from pc3d.io.ply import PlyList, read_ply

    if not path.is_file():
        raise InputError(f"ScanNet: missing file {path}")
    _, elements = read_ply(path)
    vertex = elements.get("vertex", {})
    missing = [name for name in ("x", "y", "z", "red", "green", "blue") if name not in vertex]
    if missing:
        raise InputError(f"{path}: the vertex element lacks {', '.join(missing)}")
    vertices = np.stack([vertex[a] for a in "xyz"], axis=1).astype(np.float64)
    colors = np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1)
    if not np.isfinite(vertices).all():
        raise InputError(f"{path}: vertices with NaN or inf coordinates")
    face = elements.get("face", {})
    lists = [face[n] for n in ("vertex_indices", "vertex_index") if isinstance(face.get(n), PlyList)]
    if not lists:
        raise InputError(f"{path}: no face element with vertex_indices (normals need the mesh)")
    faces = fan_triangulate(lists[0].counts, lists[0].values)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InputError(f"{path}: face index out of range for {len(vertices)} vertices")
    return vertices, np.clip(colors, 0, 255).astype(np.uint8), faces


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals: the sum of the incident faces' unit normals weighted by their areas
    (the cross product is exactly normal * 2 area), as Pointcept's preprocessing computes them."""
    corners = vertices[faces]
    weighted = 0.5 * np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], weighted)
    return normals / (np.linalg.norm(normals, axis=1, keepdims=True) + 1e-8)


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"ScanNet: missing file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def read_groups(folder: Path, name: str, count: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(segIndices (N,), segGroups) of a labelled scene, checked against the vertex count."""
    segs_path = folder / f"{name}{SEGS}"
    seg_indices = np.asarray(_load_json(segs_path).get("segIndices", []), dtype=np.int64)
    if len(seg_indices) != count:
        raise InputError(f"{segs_path}: {len(seg_indices)} segIndices for {count} mesh vertices")
    agg_path = folder / f"{name}{AGGREGATION}"
    groups = _load_json(agg_path).get("segGroups")
    if not isinstance(groups, list):
        raise InputError(f"{agg_path}: no segGroups list")
    for group in groups:
        if not {"id", "objectId", "label", "segments"} <= set(group):
            raise InputError(f"{agg_path}: a segGroup lacks id, objectId, label or segments")
    return seg_indices, groups


def scene_outputs(out: Path, split: str, name: str) -> list[Path]:
    folder = out / POINTCEPT_DIR / split / name
    keys = POINTCEPT_KEYS + (LABEL_KEYS if split != "test" else ())
    paths = [folder / f"{key}.npy" for key in keys]
    if split != "test":
        data = out / DETECTION_DIR / "scannet_train_detection_data"
        paths += [data / f"{name}_{suffix}.npy" for suffix in DETECTION_SUFFIXES]
    return paths


def instance_boxes(points: np.ndarray, instance: np.ndarray, nyu40: dict[int, int]) -> np.ndarray:
    """(K,7) centre, size, NYU40 class of each instance id > 0 (ascending) that has points."""
    boxes = []
    for object_id in sorted(nyu40):
        inside = points[instance == object_id]
        if not len(inside):
            continue  # an annotated object whose segments hold no vertex: no box (3DETR leaves a zero row)
        low, high = inside.min(axis=0), inside.max(axis=0)
        boxes.append([*((low + high) / 2), *(high - low), nyu40[object_id]])
    return np.array(boxes, dtype=np.float64).reshape(-1, 7)


def prepare_scene(folder: Path, split: str, out: Path, table: dict[str, tuple[int, int]]) -> dict[str, Any]:
    name = folder.name
    outputs = scene_outputs(out, split, name)
    result: dict[str, Any] = {"scene": name, "split": split, "skipped": False, "unknown_labels": []}
    per_point = [outputs[:len(POINTCEPT_KEYS) + (len(LABEL_KEYS) if split != "test" else 0)], outputs[-4:-1]]
    if complete(outputs, per_point if split != "test" else per_point[:1]):
        result["skipped"] = True
        return result
    vertices, colors, faces = read_scene_mesh(folder / f"{name}{MESH}")
    n = len(vertices)
    target = out / POINTCEPT_DIR / split / name
    save_npy(target / "coord.npy", vertices.astype(np.float32))
    save_npy(target / "color.npy", colors)
    save_npy(target / "normal.npy", vertex_normals(vertices, faces).astype(np.float32))
    result["points"] = n
    if split == "test":
        return result

    seg_indices, groups = read_groups(folder, name, n)
    segment20 = np.full(n, -1, np.int64)
    segment200 = np.full(n, -1, np.int64)
    instance = np.full(n, -1, np.int64)
    nyu40 = np.zeros(n, np.uint32)
    object_ids = np.zeros(n, np.uint32)
    object_class: dict[int, int] = {}
    to20 = {nyu: i for i, nyu in enumerate(SCANNET20_NYU40_IDS)}
    to200 = {tsv: i for i, tsv in enumerate(SCANNET200_TSV_IDS)}
    for group in groups:
        tsv_id, nyu = table.get(group["label"], (0, 0))
        if group["label"] not in table:
            result["unknown_labels"].append(group["label"])
        points = np.isin(seg_indices, np.asarray(group["segments"], dtype=np.int64))
        segment20[points] = to20.get(nyu, -1)
        segment200[points] = to200.get(tsv_id, -1)
        instance[points] = int(group["id"])
        nyu40[points] = nyu
        object_ids[points] = int(group["objectId"]) + 1  # 3DETR: instance ids are 1-based, 0 = none
        object_class[int(group["objectId"]) + 1] = nyu
    save_npy(target / "segment20.npy", segment20)
    save_npy(target / "segment200.npy", segment200)
    save_npy(target / "instance.npy", instance)

    alignment = read_axis_alignment(folder / f"{name}.txt")
    aligned = (np.hstack([vertices, np.ones((n, 1))]) @ alignment.T)[:, :3]
    boxes = instance_boxes(aligned, object_ids, object_class)
    boxes = boxes[np.isin(boxes[:, 6], SCANNET_DET_NYU40_IDS)]
    keep = np.arange(n)
    if n > MAX_NUM_POINT:
        rng = np.random.default_rng(stable_seed("scannet", name))
        keep = np.sort(rng.choice(n, MAX_NUM_POINT, replace=False))
    data = out / DETECTION_DIR / "scannet_train_detection_data"
    save_npy(data / f"{name}_vert.npy", np.hstack([aligned[keep], colors[keep]]).astype(np.float32))
    save_npy(data / f"{name}_sem_label.npy", nyu40[keep])
    save_npy(data / f"{name}_ins_label.npy", object_ids[keep])
    save_npy(data / f"{name}_bbox.npy", boxes)
    result.update(instances=len(object_class), boxes=len(boxes))
    return result


def prepare_scannet(raw: Path, out: Path, workers: int = 1) -> dict[str, Any]:
    tsv = find_meta(raw, TSV)
    if tsv is None:
        raise InputError(f"ScanNet: {TSV} not found in {raw} (nor in meta_data/ or Tasks/Benchmark/)")
    table = read_label_table(tsv)
    lists = {split: read_split(raw, split) for split in ("train", "val", "test")}
    if lists["train"] is None or lists["val"] is None:
        raise InputError(f"ScanNet: split lists scannetv2_train.txt and scannetv2_val.txt not found in {raw} "
                         f"(nor in meta_data/ or Tasks/Benchmark/)")
    folders = {p.name: p for sub in ("scans", "scans_test") if (raw / sub).is_dir()
               for p in sorted((raw / sub).iterdir()) if p.is_dir()}
    if not folders:
        raise InputError(f"ScanNet: no scene folders in {raw / 'scans'} or {raw / 'scans_test'}")
    train, val = set(lists["train"] or ()), set(lists["val"] or ())
    jobs = [(folder, "train" if name in train else "val" if name in val else "test", out, table)
            for name, folder in sorted(folders.items())]
    results = run_jobs(prepare_scene, jobs, workers, "ScanNet scenes")
    for split in ("train", "val"):
        names = [r["scene"] for r in results if r["split"] == split]
        write_text_atomic(out / DETECTION_DIR / "meta_data" / f"scannetv2_{split}.txt",
                          "".join(f"{n}\n" for n in names))
    listed = set().union(*(set(v or ()) for v in lists.values()))
    unknown = sorted({label for r in results for label in r["unknown_labels"]})
    return {
        "dataset": "scannet", "raw": str(raw), "out": str(out),
        "scenes": len(results), "written": sum(not r["skipped"] for r in results),
        "skipped_complete": sum(r["skipped"] for r in results),
        "splits": count_by(results, "split"),
        "listed_but_missing": sorted(listed - set(folders))[:20],
        "listed_but_missing_count": len(listed - set(folders)),
        "labels_not_in_tsv": unknown,
        "outputs": {"pointcept": str(out / POINTCEPT_DIR), "detection": str(out / DETECTION_DIR)},
    }
