"""Array and text point clouds: .npy, .npz, .txt (S3DIS-style columns), .xyz / .xyzn / .xyzrgb.

Plain (N, k) tables have no column names, so their meaning comes from the suffix and the column
count. `.txt` and `.npy` follow COLUMN_LAYOUTS (S3DIS: 6 = x y z r g b). `.xyz`, `.xyzn` and
`.xyzrgb` follow Open3D and the common tools (CloudCompare, MeshLab exports): `.xyz` with 6 columns
is x y z nx ny nz, `.xyzn` is x y z nx ny nz, `.xyzrgb` is x y z r g b with colours in 0..1.
A caller (the CLI's `--columns`) may name the columns instead; text files may also name them in a
header line, e.g. `# x y z red green blue label` (pc3d writes one), or a CSV-style first line
`x,y,z,r,g,b`; then any columns are allowed. A column named `_` is skipped.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np

from pc3d.io._common import input_error, read_text, suffix_of, write_text_rows
from pc3d.io.atomic import atomic_write
from pc3d.io.cloud import PointCloud, cloud_from_columns, cloud_to_columns, make_cloud

COLUMN_LAYOUTS: dict[int, tuple[str, ...]] = {
    3: ("x", "y", "z"),
    4: ("x", "y", "z", "intensity"),
    6: ("x", "y", "z", "red", "green", "blue"),
    7: ("x", "y", "z", "red", "green", "blue", "label"),
    9: ("x", "y", "z", "red", "green", "blue", "nx", "ny", "nz"),
    10: ("x", "y", "z", "red", "green", "blue", "nx", "ny", "nz", "label"),
}
LAYOUT_TEXT = "3 (x y z), 4 (+intensity), 6 (+r g b), 7 (+r g b label), 9 (+r g b nx ny nz) or 10 (+label)"
NORMAL_LAYOUT = ("x", "y", "z", "nx", "ny", "nz")
# Open3D (ReadPointCloudFromXYZN/XYZRGB) and CloudCompare: a 6-column .xyz carries normals, not colours
SUFFIX_LAYOUTS: dict[str, dict[int, tuple[str, ...]]] = {
    ".txt": COLUMN_LAYOUTS,
    ".npy": COLUMN_LAYOUTS,
    ".xyz": {**COLUMN_LAYOUTS, 6: NORMAL_LAYOUT},
    ".xyzn": {6: NORMAL_LAYOUT},
    ".xyzrgb": {6: ("x", "y", "z", "red", "green", "blue")},
}
COLOR_COLUMNS = ("red", "green", "blue", "r", "g", "b")
NPZ_KEYS = {"points": ("points", "xyz", "coord", "coords"), "colors": ("colors", "color", "rgb"),
            "normals": ("normals", "normal")}
INTEGER_COLUMNS = ("label", "instance", "part", "segment", "class")
# npz keys that can only be per-point data: a length mismatch there is an error, not metadata
PER_POINT_KEYS = INTEGER_COLUMNS + ("labels", "instances", "semantic", "semantic_label", "instance_label",
                                    "segments", "intensity", "superpoint")


def _table_to_cloud(path, table: np.ndarray, names: tuple[str, ...], *, allow_empty: bool,
                    keep_float64: bool = False, inferred: bool = False) -> PointCloud:
    """Named columns of a plain table -> cloud. `inferred`: the names came from the column count, not
    from the file or the caller, so implausible colours get a hint to name the columns."""
    unit_colors = suffix_of(path) == ".xyzrgb"
    columns = {}
    for i, name in enumerate(names):
        if name == "_":
            continue
        values = table[:, i]
        if name.lower() in INTEGER_COLUMNS:
            if not np.all(values == np.round(values)):
                raise input_error(path, f"column {name!r} must hold integers")
            values = values.astype(np.int64)
        elif name.lower() in COLOR_COLUMNS:
            if inferred and len(values) and values.min() < 0:
                raise input_error(path, f"column {i + 1} ({name}) holds {values.min():g}..{values.max():g}, not a "
                                        f"colour: a {len(names)}-column {suffix_of(path)} file is read as "
                                        f"{' '.join(names)}; name the columns, e.g. --columns x,y,z,nx,ny,nz")
            # integral colours are 0..255 even if all happen to be <= 1; only fractions mean 0..1 -- except in
            # Open3D's .xyzrgb, whose colours are 0..1 floats by definition ("1 0 0" is red)
            if not unit_colors and np.all(values == np.round(values)):
                values = values.astype(np.int64)
        elif name.lower() in ("x", "y", "z") and keep_float64:
            values = values.astype(np.float64)
        else:
            values = values.astype(np.float32)
        columns[name] = values
    return cloud_from_columns(path, columns, allow_empty=allow_empty, keep_float64=keep_float64)


def _layout_for(path, width: int) -> tuple[str, ...]:
    suffix = suffix_of(path)
    layouts = SUFFIX_LAYOUTS.get(suffix, COLUMN_LAYOUTS)
    if width not in layouts:
        expected = LAYOUT_TEXT if layouts is COLUMN_LAYOUTS else " or ".join(
            f"{w} ({' '.join(n)})" for w, n in sorted(layouts.items()) if w in (3, 6))
        raise input_error(path, f"wrong column count {width} for a {suffix} file: expected {expected}; "
                                f"or name the columns, e.g. --columns x,y,z,nx,ny,nz,r,g,b")
    return layouts[width]


def _named(path, names: tuple[str, ...], width: int) -> tuple[str, ...]:
    if len(names) != width:
        raise input_error(path, f"wrong column count: the file has {width} columns but --columns names "
                                f"{len(names)} ({','.join(names)})")
    return names


def read_npy(path: str | os.PathLike, *, allow_empty: bool = False, columns: tuple[str, ...] | None = None,
             keep_float64: bool = False) -> PointCloud:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise input_error(path, f"not a readable .npy array ({exc})") from exc
    if array.dtype.names:  # a structured array names its own columns
        if array.ndim != 1:
            raise input_error(path, f"structured .npy must be 1-D, got shape {array.shape}")
        return cloud_from_columns(path, {name: array[name] for name in array.dtype.names}, allow_empty=allow_empty,
                                  keep_float64=keep_float64)
    if array.ndim != 2:
        raise input_error(path, f"expected an (N, k) array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise input_error(path, f"expected a numeric array, got dtype {array.dtype}")
    if columns:
        return _table_to_cloud(path, array, _named(path, columns, array.shape[1]), allow_empty=allow_empty,
                               keep_float64=keep_float64 and array.dtype == np.float64)
    return _table_to_cloud(path, array, _layout_for(path, array.shape[1]), allow_empty=allow_empty,
                           keep_float64=keep_float64 and array.dtype == np.float64, inferred=True)


def read_npz(path: str | os.PathLike, *, allow_empty: bool = False, keep_float64: bool = False) -> PointCloud:
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
    return make_cloud(path, points[:, :3], colors, normals, fields, allow_empty=allow_empty, keep_float64=keep_float64)


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


def read_txt(path: str | os.PathLike, *, allow_empty: bool = False, columns: tuple[str, ...] | None = None,
             keep_float64: bool = False) -> PointCloud:
    """.txt / .xyz / .xyzn / .xyzrgb; `columns` names the columns (overriding a header and the convention)."""
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
    if columns:
        return _table_to_cloud(path, table, _named(path, columns, table.shape[1]), allow_empty=allow_empty,
                               keep_float64=keep_float64)
    if names is not None and len(names) != table.shape[1]:
        raise input_error(path, f"wrong column count: header names {len(names)} columns, data has {table.shape[1]}")
    inferred = names is None
    names = names or _layout_for(path, table.shape[1])
    return _table_to_cloud(path, table, names, allow_empty=allow_empty, keep_float64=keep_float64, inferred=inferred)


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


def write_xyzn(path: str | os.PathLike, cloud: PointCloud) -> None:
    """Open3D's .xyzn: `x y z nx ny nz` per line, no header (other tools read no header)."""
    if cloud.normals is None:
        raise input_error(path, "a .xyzn file holds normals and this cloud has none (write .xyz or .ply)")
    _write_plain(path, [cloud.points[:, i] for i in range(3)] + [cloud.normals[:, i] for i in range(3)])


def write_xyzrgb(path: str | os.PathLike, cloud: PointCloud) -> None:
    """Open3D's .xyzrgb: `x y z r g b` per line with colours in 0..1, no header."""
    if cloud.colors is None:
        raise input_error(path, "a .xyzrgb file holds colours and this cloud has none (write .xyz or .ply)")
    unit = cloud.colors.astype(np.float64) / 255.0
    _write_plain(path, [cloud.points[:, i] for i in range(3)] + [unit[:, i] for i in range(3)])


def _write_plain(path: str | os.PathLike, columns: list[np.ndarray]) -> None:
    formats = ["%.17g" if np.asarray(c).dtype.itemsize > 4 else "%.9g" for c in columns]
    with atomic_write(path, "wb") as handle:
        write_text_rows(handle, [np.asarray(c) for c in columns], formats)
