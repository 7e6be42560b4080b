"""Array and text point clouds: .npy, .npz, .txt / .xyz (S3DIS-style columns).

Plain (N, k) tables have no column names, so their meaning comes from the column count
(COLUMN_LAYOUTS). Text files may name their columns in a header line, e.g. `# x y z red green blue
label` (pc3d writes one), or a CSV-style first line `x,y,z,r,g,b`; then any columns are allowed.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np

from pc3d.io._common import input_error, read_text, write_text_rows
from pc3d.io.atomic import atomic_write
from pc3d.io.pointcloud import PointCloud, cloud_from_columns, cloud_to_columns, make_cloud

COLUMN_LAYOUTS: dict[int, tuple[str, ...]] = {
    3: ("x", "y", "z"),
    4: ("x", "y", "z", "intensity"),
    6: ("x", "y", "z", "red", "green", "blue"),
    7: ("x", "y", "z", "red", "green", "blue", "label"),
    9: ("x", "y", "z", "red", "green", "blue", "nx", "ny", "nz"),
    10: ("x", "y", "z", "red", "green", "blue", "nx", "ny", "nz", "label"),
}
LAYOUT_TEXT = "3 (x y z), 4 (+intensity), 6 (+r g b), 7 (+r g b label), 9 (+r g b nx ny nz) or 10 (+label)"
NPZ_KEYS = {"points": ("points", "xyz", "coord", "coords"), "colors": ("colors", "color", "rgb"),
            "normals": ("normals", "normal")}
INTEGER_COLUMNS = ("label", "instance", "part", "segment", "class")
# npz keys that can only be per-point data: a length mismatch there is an error, not metadata
PER_POINT_KEYS = INTEGER_COLUMNS + ("labels", "instances", "semantic", "semantic_label", "instance_label",
                                    "segments", "intensity", "superpoint")


def _table_to_cloud(path, table: np.ndarray, names: tuple[str, ...], *, allow_empty: bool) -> PointCloud:
    columns = {}
    for i, name in enumerate(names):
        values = table[:, i]
        if name.lower() in INTEGER_COLUMNS:
            if not np.all(values == np.round(values)):
                raise input_error(path, f"column {name!r} must hold integers")
            values = values.astype(np.int64)
        elif name.lower() in ("red", "green", "blue", "r", "g", "b"):
            # integral colours are 0..255 even if all happen to be <= 1; only fractions mean 0..1
            if np.all(values == np.round(values)):
                values = values.astype(np.int64)
        else:
            values = values.astype(np.float32)
        columns[name] = values
    return cloud_from_columns(path, columns, allow_empty=allow_empty)


def _layout_for(path, width: int) -> tuple[str, ...]:
    if width not in COLUMN_LAYOUTS:
        raise input_error(path, f"wrong column count {width}: expected {LAYOUT_TEXT}")
    return COLUMN_LAYOUTS[width]


def read_npy(path: str | os.PathLike, *, allow_empty: bool = False) -> PointCloud:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise input_error(path, f"not a readable .npy array ({exc})") from exc
    if array.dtype.names:  # a structured array names its own columns
        if array.ndim != 1:
            raise input_error(path, f"structured .npy must be 1-D, got shape {array.shape}")
        return cloud_from_columns(path, {name: array[name] for name in array.dtype.names}, allow_empty=allow_empty)
    if array.ndim != 2:
        raise input_error(path, f"expected an (N, k) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise input_error(path, f"expected a numeric array, got dtype {array.dtype}")
    return _table_to_cloud(path, array, _layout_for(path, array.shape[1]), allow_empty=allow_empty)


def read_npz(path: str | os.PathLike, *, allow_empty: bool = False) -> PointCloud:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise input_error(path, f"not a readable .npz archive ({exc})") from exc
    found = {role: next((key for key in keys if key in arrays), None) for role, keys in NPZ_KEYS.items()}
    if found["points"] is None:
        raise input_error(path, f"no point array; expected one of the keys {', '.join(NPZ_KEYS['points'])}, "
                                f"found {', '.join(arrays) or 'none'}")
    points = np.asarray(arrays[found["points"]])
    if points.ndim != 2 or points.shape[1] < 3:
        raise input_error(path, f"{found['points']!r} must have shape (N, 3), got {points.shape}")
    n = len(points)
    colors = arrays[found["colors"]] if found["colors"] else None
    normals = arrays[found["normals"]] if found["normals"] else None
    for role in ("colors", "normals"):
        value = arrays[found[role]] if found[role] else None
        if value is not None and value.shape != (n, 3):
            raise input_error(path, f"{found[role]!r} must have shape ({n}, 3), got {value.shape}")
    fields = {}
    for key, value in arrays.items():
        if key in found.values():
            continue
        # per-point arrays become fields; anything else (scene ids, metadata) is not per point
        if value.ndim == 2 and value.shape == (n, 1):
            value = value[:, 0]
        if key.lower() in PER_POINT_KEYS and value.shape != (n,):
            raise input_error(path, f"{key!r} holds {len(value) if value.ndim else 'a scalar'} values "
                                    f"(shape {value.shape}) but there are {n} points")
        if value.ndim == 1 and len(value) == n and value.dtype.kind in "biuf":
            fields[key] = value
        elif value.ndim == 2 and len(value) == n and value.dtype.kind in "biuf":
            fields.update({f"{key}_{i}": value[:, i] for i in range(value.shape[1])})
    return make_cloud(path, points[:, :3], colors, normals, fields, allow_empty=allow_empty)


def _parse_text_header(path, lines: list[str]) -> tuple[int, str | None, tuple[str, ...] | None]:
    """(index of the first data line, delimiter, column names from a header line if any)."""
    names = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(("#", "//")):
            words = re.split(r"[\s,;]+", stripped.lstrip("#/").strip())
            if len(words) >= 3 and [w.lower() for w in words[:3]] == ["x", "y", "z"]:
                names = tuple(words)
            continue
        delimiter = "," if "," in stripped else (";" if ";" in stripped else None)
        words = [w.strip() for w in (stripped.split(delimiter) if delimiter else stripped.split())]
        if words and re.match(r"^[A-Za-z_]", words[0]):  # a CSV-style header line of column names
            return index + 1, delimiter, tuple(words)
        return index, delimiter, names
    return len(lines), None, names


def read_txt(path: str | os.PathLike, *, allow_empty: bool = False) -> PointCloud:
    lines = read_text(path).splitlines()
    start, delimiter, names = _parse_text_header(path, lines)
    body = [line for line in lines[start:] if line.strip() and not line.lstrip().startswith(("#", "//"))]
    if not body:
        if allow_empty:
            return make_cloud(path, np.zeros((0, 3), np.float32), allow_empty=True)
        raise input_error(path, "the point cloud is empty (no data lines)")
    try:
        table = np.loadtxt(body, dtype=np.float64, delimiter=delimiter, ndmin=2, comments=None)
    except ValueError as exc:
        raise input_error(path, f"wrong column count or bad number ({exc})") from exc
    if names is not None and len(names) != table.shape[1]:
        raise input_error(path, f"wrong column count: header names {len(names)} columns, data has {table.shape[1]}")
    names = names or _layout_for(path, table.shape[1])
    return _table_to_cloud(path, table, names, allow_empty=allow_empty)


def write_npy(path: str | os.PathLike, cloud: PointCloud) -> None:
    """(N, k) float32 in one of COLUMN_LAYOUTS; a cloud that fits no layout needs .npz/.ply/.pcd."""
    columns = cloud_to_columns(cloud)
    names = tuple(columns)
    if names not in COLUMN_LAYOUTS.values():
        raise input_error(path, f"a plain .npy holds only the column layouts {LAYOUT_TEXT}; this cloud has "
                                f"{' '.join(names)} (write .npz, .ply or .pcd instead)")
    table = np.stack([np.asarray(values, dtype=np.float32) for values in columns.values()], axis=1)
    with atomic_write(path, "wb") as handle:
        np.save(handle, table)


def write_npz(path: str | os.PathLike, cloud: PointCloud) -> None:
    arrays = {"points": cloud.points}
    if cloud.colors is not None:
        arrays["colors"] = cloud.colors
    if cloud.normals is not None:
        arrays["normals"] = cloud.normals
    for name, values in cloud.fields.items():
        if name in arrays or any(name in keys for keys in NPZ_KEYS.values()):
            raise ValueError(f"field name {name!r} collides with an .npz key pc3d reserves")
        arrays[name] = values
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)


def write_txt(path: str | os.PathLike, cloud: PointCloud) -> None:
    """Space-separated text with a `# x y z ...` header naming every column."""
    columns = cloud_to_columns(cloud)
    formats = []
    for values in columns.values():
        kind = np.asarray(values).dtype
        formats.append("%d" if kind.kind in "biu" else ("%.17g" if kind.itemsize > 4 else "%.9g"))
    with atomic_write(path, "wb") as handle:
        handle.write(("# " + " ".join(columns) + "\n").encode("ascii"))
        write_text_rows(handle, [np.asarray(values) for values in columns.values()], formats)
