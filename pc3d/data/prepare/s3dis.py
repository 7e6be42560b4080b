"""Raw S3DIS (Stanford3dDataset_v1.2[_Aligned_Version]) -> Pointcept's npy layout.

Raw: `<raw>/Area_<k>/<room>/Annotations/<class>_<n>.txt`, one `x y z r g b` row per point.
Output: `<out>/s3dis/Area_<k>/<room>/{coord,color,normal,segment,instance}.npy` as Pointcept's
pointcept/datasets/preprocessing/s3dis/preprocess_s3dis.py writes them: the objects in sorted file order,
coord float32 (no angle alignment, Pointcept's default), color uint8, segment int16 = index of the class in
S3DIS_CLASSES with every other class (e.g. `stairs`) counted as clutter, instance int16 = the object's
position in that order.

Defects of the release: a few lines hold a stray non-numeric byte (the known one is in
Area_5/hallway_6/Annotations/ceiling_1.txt; another is reported in Area_5/office_19). Such a line is repaired
by deleting the stray characters when the result is six numbers, else by turning them into spaces; a line that
still is not six numbers is dropped. Both are counted and located in the summary, never silent.

Deviation: Pointcept takes normals from the raw Stanford2d3d meshes (a second download); pc3d's reader needs
normal.npy, so here they are estimated from the points (PCA of the 16 nearest neighbours, oriented towards
the room's centre, which the scanner stood inside of).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.prepare._common import complete, count_by, run_jobs, save_npy
from pc3d.data.readers.s3dis import S3DIS_CLASSES
from pc3d.errors import InputError

OUT_DIR = "s3dis"
KEYS = ("coord", "color", "normal", "segment", "instance")
NEIGHBOURS = 16
_STRAY = re.compile(r"[^0-9eE+\-.\s]")


def parse_annotation(path: Path) -> tuple[np.ndarray, list[int], list[int]]:
    """(rows (M,6) float64, repaired line numbers, dropped line numbers) of one object file."""
    try:
        text = path.read_bytes().decode("latin-1")  # stray bytes must not stop decoding
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = text.splitlines()
    try:
        table = np.loadtxt(lines, dtype=np.float64, ndmin=2, comments=None)
        if table.shape[1] == 6 or len(table) == 0:
            return table.reshape(-1, 6), [], []
    except ValueError:  # a defective line somewhere: fall through to the line-by-line repair below
        pass
    rows: list[list[float]] = []
    repaired: list[int] = []
    dropped: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _six_numbers(line)
        if row is not None:
            rows.append(row)
            continue
        for candidate in (_STRAY.sub("", line), _STRAY.sub(" ", line)):
            row = _six_numbers(candidate)
            if row is not None:
                rows.append(row)
                repaired.append(number)
                break
        else:
            dropped.append(number)
    return np.array(rows, dtype=np.float64).reshape(-1, 6), repaired, dropped


def _six_numbers(line: str) -> list[float] | None:
    words = line.split()
    if len(words) != 6:
        return None
    try:
        return [float(word) for word in words]
    except ValueError:
        return None


def estimate_normals(points: np.ndarray, k: int = NEIGHBOURS, chunk: int = 100_000) -> np.ndarray:
    """Unit normals: the least-variance direction of each point's k nearest neighbours, flipped to face the
    centre of the room."""
    from scipy.spatial import cKDTree

    n = len(points)
    if n < 3:
        return np.tile(np.array([0.0, 0.0, 1.0], np.float32), (n, 1))
    tree = cKDTree(points)
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    normals = np.empty((n, 3), np.float64)
    for start in range(0, n, chunk):
        block = points[start:start + chunk]
        _, index = tree.query(block, k=min(k, n))
        near = points[index] - points[index].mean(axis=1, keepdims=True)
        _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", near, near))
        normal = vectors[:, :, 0]  # eigh sorts eigenvalues ascending
        flip = np.einsum("ni,ni->n", normal, centre - block) < 0
        normal[flip] *= -1
        normals[start:start + chunk] = normal
    return normals.astype(np.float32)


def prepare_room(room: Path, out: Path) -> dict[str, Any]:
    name = f"{room.parent.name}/{room.name}"
    target = out / OUT_DIR / room.parent.name / room.name
    result: dict[str, Any] = {"room": name, "area": room.parent.name, "skipped": False, "repaired": [],
                              "dropped": []}
    outputs = [target / f"{key}.npy" for key in KEYS]
    if complete(outputs, [outputs]):
        result["skipped"] = True
        return result
    files = sorted((room / "Annotations").glob("*.txt"))
    if not files:
        raise InputError(f"S3DIS: {room / 'Annotations'} holds no <class>_<n>.txt files")
    tables, segments, instances = [], [], []
    for object_id, path in enumerate(files):
        table, repaired, dropped = parse_annotation(path)
        relative = f"{name}/Annotations/{path.name}"
        result["repaired"] += [f"{relative}:{line}" for line in repaired]
        result["dropped"] += [f"{relative}:{line}" for line in dropped]
        label = path.name.split("_")[0]
        cls = S3DIS_CLASSES.index(label) if label in S3DIS_CLASSES else S3DIS_CLASSES.index("clutter")
        tables.append(table)
        segments.append(np.full(len(table), cls, np.int16))
        instances.append(np.full(len(table), object_id, np.int16))
    table = np.concatenate(tables)
    if not len(table):
        raise InputError(f"S3DIS: {room} has no readable points")
    colors = table[:, 3:6]
    if colors.min() < 0 or colors.max() > 255:
        raise InputError(f"S3DIS: {room}: colours span {colors.min():g}..{colors.max():g}, expected 0..255")
    coord = table[:, :3]
    save_npy(target / "coord.npy", coord.astype(np.float32))
    save_npy(target / "color.npy", colors.astype(np.uint8))
    save_npy(target / "normal.npy", estimate_normals(coord))
    save_npy(target / "segment.npy", np.concatenate(segments))
    save_npy(target / "instance.npy", np.concatenate(instances))
    result["points"] = len(table)
    return result


def find_areas(raw: Path) -> list[Path]:
    for base in (raw, *sorted(p for p in raw.glob("Stanford3dDataset*") if p.is_dir())):
        areas = sorted(p for p in base.glob("Area_*") if p.is_dir())
        if areas:
            return areas
    raise InputError(f"S3DIS: no Area_<k> folders in {raw} (nor in a Stanford3dDataset_v1.2* folder there)")


def prepare_s3dis(raw: Path, out: Path, workers: int = 1) -> dict[str, Any]:
    rooms = [room for area in find_areas(raw) for room in sorted(area.iterdir())
             if room.is_dir() and (room / "Annotations").is_dir()]
    if not rooms:
        raise InputError(f"S3DIS: no <room>/Annotations folders under the areas of {raw}")
    results = run_jobs(prepare_room, [(room, out) for room in rooms], workers, "S3DIS rooms")
    repaired = [where for r in results for where in r["repaired"]]
    dropped = [where for r in results for where in r["dropped"]]
    return {
        "dataset": "s3dis", "raw": str(raw), "out": str(out),
        "rooms": len(results), "written": sum(not r["skipped"] for r in results),
        "skipped_complete": sum(r["skipped"] for r in results),
        "areas": count_by(results, "area"),
        "repaired_lines": len(repaired), "repaired_at": repaired[:20],
        "dropped_lines": len(dropped), "dropped_at": dropped[:20],
        "outputs": {"pointcept": str(out / OUT_DIR)},
    }
