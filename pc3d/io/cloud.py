"""The point-cloud data model: `PointCloud`, its validation (`make_cloud`) and column conventions.

Every reader ends in `make_cloud`, which is where a file's content is validated at the edge
(shapes, finite coordinates, non-empty, per-point arrays of matching length), so each format
module only has to turn bytes into named columns. The format modules import this module and
`pointcloud` imports the format modules, so the dependency runs one way.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from pc3d.errors import InputError
from pc3d.io._common import input_error

# The column names a caller set for the commands of this context (the CLI's --columns), so that
# methods reading a cloud by path honour it without each growing a parameter.
_COLUMNS: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("pc3d_columns", default=None)

# Column names used by the common formats for the same quantity (PLY, PCD, CloudCompare, Blender).
COLOR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
NORMAL_NAMES = (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z"))


@dataclass
class PointCloud:
    """N points with optional colours, normals and extra per-point scalars.

    points  (N,3) float32 (float64 with keep_float64=True); colors (N,3) uint8 0..255; normals (N,3) float32;
    fields  name -> (N,) array, kept in the dtype the file stored (e.g. "label", "instance", "intensity").
    """

    points: np.ndarray
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    # float32 is what every model consumes; georeferenced scans (UTM metres ~ 5e6) need float64 to keep
    # millimetres, so readers keep doubles only when asked to
    keep_float64: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        # Programming errors (not user files) surface as ValueError; files are checked in make_cloud.
        self.points = np.ascontiguousarray(self.points, dtype=np.float64 if self.keep_float64 else np.float32)
        if self.points.ndim != 2 or self.points.shape[1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {self.points.shape}")
        n = len(self.points)
        if self.colors is not None:
            colors = np.asarray(self.colors)
            if colors.shape != (n, 3):
                raise ValueError(f"colors must have shape ({n}, 3), got {colors.shape}")
            if colors.dtype != np.uint8:
                if not np.issubdtype(colors.dtype, np.integer) or (n and (colors.min() < 0 or colors.max() > 255)):
                    raise ValueError("colors must be integers in 0..255 (use colors_to_uint8 for floats)")
            self.colors = np.ascontiguousarray(colors, dtype=np.uint8)
        if self.normals is not None:
            self.normals = np.ascontiguousarray(self.normals, dtype=np.float32)
            if self.normals.shape != (n, 3):
                raise ValueError(f"normals must have shape ({n}, 3), got {self.normals.shape}")
        fields = {}
        for name, values in self.fields.items():
            values = np.asarray(values)
            if values.shape != (n,):
                raise ValueError(f"field {name!r} must have shape ({n},), got {values.shape}")
            fields[str(name)] = values
        self.fields = fields

    def __len__(self) -> int:
        return len(self.points)

    @property
    def num_points(self) -> int:
        return len(self.points)

    def select(self, index: np.ndarray | slice) -> PointCloud:
        """A new cloud holding the points picked by a boolean mask, an index array or a slice."""
        return PointCloud(
            points=self.points[index],
            colors=None if self.colors is None else self.colors[index],
            normals=None if self.normals is None else self.normals[index],
            fields={name: values[index] for name, values in self.fields.items()},
            keep_float64=self.keep_float64,
        )


def colors_to_uint8(path: str | os.PathLike, values: np.ndarray) -> np.ndarray:
    """Colours from any file convention to uint8: integers must be 0..255 (16-bit unsigned ones are
    0..65535, as LAS-derived PLY/PCD files store them); floats are 0..1 unless some value exceeds 1,
    in which case they are read as 0..255 (text files store 0..255 as floats)."""
    values = np.asarray(values)
    if len(values) == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    if values.dtype == np.uint16 and values.max() > 255:
        # 65535 / 257 = 255 exactly, so full scale maps to full scale
        return np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(values.dtype, np.integer):
        if values.min() < 0 or values.max() > 255:
            raise input_error(path, f"colour values span {values.min()}..{values.max()}, expected 0..255")
        return values.astype(np.uint8)
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise input_error(path, "colour values contain NaN or inf")
    low, high = values.min(), values.max()
    if low < 0 or high > 255:
        raise input_error(path, f"colour values span {low:g}..{high:g}, expected 0..1 or 0..255")
    scale = 255.0 if high <= 1.0 else 1.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def make_cloud(
    path: str | os.PathLike,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    fields: dict[str, np.ndarray] | None = None,
    *,
    allow_empty: bool = False,
    keep_float64: bool = False,
) -> PointCloud:
    """Validate what a reader found in `path` and build the cloud; every problem is an InputError.

    keep_float64: keep the coordinates in float64 when the file stored them so (else float32)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise input_error(path, f"expected (N, 3) coordinates, got shape {points.shape}")
    n = len(points)
    if n == 0 and not allow_empty:
        raise input_error(path, "the point cloud is empty (0 points)")
    bad = int(n - np.isfinite(points).all(axis=1).sum())
    if bad:
        raise input_error(path, f"{bad} of {n} points have NaN or inf coordinates")
    if colors is not None:
        colors = colors_to_uint8(path, colors)
    fields = dict(fields or {})
    for name, values in [("colors", colors), ("normals", normals), *fields.items()]:
        if values is not None and len(values) != n:
            raise input_error(path, f"{name} has {len(values)} entries but there are {n} points")
    keep = keep_float64 and points.dtype == np.float64
    return PointCloud(points.astype(np.float64 if keep else np.float32), colors, normals, fields, keep_float64=keep)


def _native(values: np.ndarray) -> np.ndarray:
    """A contiguous copy in native byte order (file data may be big-endian or a strided view)."""
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))


def cloud_from_columns(
    path: str | os.PathLike, columns: dict[str, np.ndarray], *, allow_empty: bool = False,
    keep_float64: bool = False,
) -> PointCloud:
    """Build a cloud from named per-point columns (PLY vertex properties, PCD fields, text headers).

    x/y/z are required; red/green/blue (or r/g/b, diffuse_*) become colours, nx/ny/nz (or normal_*)
    normals; a PCD-style packed `rgb`/`rgba` is unpacked; every other column becomes a field.
    """
    lowered = {name.lower(): name for name in columns}
    if not all(axis in lowered for axis in "xyz"):
        raise input_error(path, f"no x, y, z coordinates among the columns {list(columns)}")
    used = {lowered[axis] for axis in "xyz"}
    points = np.stack([np.asarray(columns[lowered[axis]], dtype=np.float64) for axis in "xyz"], axis=1)
    # only coordinates the file stored as doubles stay doubles; float32 ones gain nothing from widening
    stored_double = any(np.asarray(columns[lowered[axis]]).dtype == np.float64 for axis in "xyz")

    colors = None
    for names in COLOR_NAMES:
        if all(name in lowered for name in names):
            colors = np.stack([columns[lowered[name]] for name in names], axis=1)
            used.update(lowered[name] for name in names)
            break
    if colors is None:
        for packed in ("rgb", "rgba"):
            if packed in lowered:
                colors = unpack_rgb(columns[lowered[packed]])
                used.add(lowered[packed])
                break

    normals = None
    for names in NORMAL_NAMES:
        if all(name in lowered for name in names):
            normals = np.stack([np.asarray(columns[lowered[name]], dtype=np.float32) for name in names], axis=1)
            used.update(lowered[name] for name in names)
            break

    fields = {name: _native(np.asarray(values)) for name, values in columns.items() if name not in used}
    return make_cloud(path, points, colors, normals, fields, allow_empty=allow_empty,
                      keep_float64=keep_float64 and stored_double)


def cloud_to_columns(cloud: PointCloud) -> dict[str, np.ndarray]:
    """The inverse of cloud_from_columns with the PLY names: x y z red green blue nx ny nz, then fields."""
    columns = {axis: cloud.points[:, i] for i, axis in enumerate("xyz")}
    if cloud.colors is not None:
        columns.update({name: cloud.colors[:, i] for i, name in enumerate(COLOR_NAMES[0])})
    if cloud.normals is not None:
        columns.update({name: cloud.normals[:, i] for i, name in enumerate(NORMAL_NAMES[0])})
    for name, values in cloud.fields.items():
        if name.lower() in {key.lower() for key in columns}:
            raise ValueError(f"field name {name!r} collides with a coordinate/colour/normal column")
        columns[name] = values
    return columns


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """PCL packs colour as 0x00RRGGBB in the bits of a float32 or uint32; return (N,3) uint8."""
    packed = np.ascontiguousarray(packed)
    if packed.dtype.itemsize != 4:
        raise ValueError(f"packed rgb must be 4 bytes per point, got {packed.dtype}")
    bits = packed.view(np.uint32).astype(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N,3) uint8 -> float32 whose bits are 0x00RRGGBB (the PCL convention)."""
    colors = colors.astype(np.uint32)
    bits = (colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]
    return bits.astype(np.uint32).view(np.float32)


KNOWN_COLUMNS = ("x", "y", "z", "nx", "ny", "nz", "r", "g", "b", "red", "green", "blue")


def parse_columns(text: str) -> tuple[str, ...]:
    """`x,y,z,nx,ny,nz,r,g,b,label` -> names; `_` skips a column. InputError when unusable."""
    names = tuple(word.strip() for word in text.split(",") if word.strip())
    where = f"--columns {text!r}"
    for name in names:
        if not name.replace("_", "a").isidentifier():
            raise InputError(f"{where}: {name!r} is not a column name (letters, digits, _)")
    lowered = [n.lower() for n in names if n != "_"]
    if not all(axis in lowered for axis in "xyz"):
        raise InputError(f"{where}: needs x, y and z (e.g. x,y,z,nx,ny,nz or x,y,z,r,g,b)")
    repeated = sorted({n for n in lowered if lowered.count(n) > 1})
    if repeated:
        raise InputError(f"{where}: repeats {', '.join(repeated)}")
    for group in (("nx", "ny", "nz"), ("r", "g", "b"), ("red", "green", "blue")):
        present = [n for n in group if n in lowered]
        if present and len(present) != 3:
            raise InputError(f"{where}: {'/'.join(group)} go together, found only {', '.join(present)}")
    return names


@contextlib.contextmanager
def column_names(names: Sequence[str] | None) -> Iterator[None]:
    """Within the block, headerless tables read by `read_point_cloud` take these column names."""
    token = _COLUMNS.set(tuple(names) if names else None)
    try:
        yield
    finally:
        _COLUMNS.reset(token)
