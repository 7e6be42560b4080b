"""The one read/write entry point for point-cloud files, dispatched by file suffix.

The data model lives in `pc3d.io.cloud`; `PointCloud` and the column helpers are re-exported here
because this is the module callers know.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pc3d.io._common import existing_file, input_error, suffix_of
from pc3d.io.cloud import (  # noqa: F401  (re-exported: the public names of pc3d.io.pointcloud)
    _COLUMNS,
    PointCloud,
    column_names,
    make_cloud,
    parse_columns,
)

POINT_SUFFIXES = (".ply", ".pcd", ".npy", ".npz", ".txt", ".xyz", ".xyzn", ".xyzrgb", ".bin")
MESH_SUFFIXES = (".off", ".obj", ".stl")
WRITE_SUFFIXES = (".ply", ".pcd", ".npy", ".npz", ".txt", ".xyz", ".xyzn", ".xyzrgb", ".bin")
# formats whose columns have no names in the file, so `columns=` (the CLI's --columns) may name them
HEADERLESS_SUFFIXES = (".txt", ".xyz", ".xyzn", ".xyzrgb", ".npy")


def read_point_cloud(
    path: str | os.PathLike, *, allow_empty: bool = False, num_points: int = 8192, seed: int = 0,
    columns: Sequence[str] | None = None, keep_float64: bool = False,
) -> PointCloud:
    """Read any supported point-cloud file; mesh files (.off .obj .stl) are sampled to `num_points`.

    columns: names of the columns of a headerless table (.txt .xyz .xyzn .xyzrgb .npy), overriding the
    suffix's convention (default: the names set by `column_names`, else the convention).
    keep_float64: coordinates stored as doubles (PLY double, PCD F 8, float64 .npy/.npz, text) stay float64.
    """
    suffix = suffix_of(path)
    if suffix not in POINT_SUFFIXES + MESH_SUFFIXES:
        supported = " ".join(POINT_SUFFIXES + MESH_SUFFIXES)
        raise input_error(path, f"unknown point-cloud suffix {suffix or '(none)'!r}; supported: {supported}")
    names = tuple(columns) if columns else _COLUMNS.get()
    if names and suffix not in HEADERLESS_SUFFIXES:
        raise input_error(path, f"--columns names the columns of {' '.join(HEADERLESS_SUFFIXES)} files; "
                                f"a {suffix} file names its own")
    path = existing_file(path)
    if suffix == ".ply":
        from pc3d.io.ply import read_ply_cloud

        return read_ply_cloud(path, allow_empty=allow_empty, keep_float64=keep_float64)
    if suffix == ".pcd":
        from pc3d.io.pcd import read_pcd

        return read_pcd(path, allow_empty=allow_empty, keep_float64=keep_float64)
    if suffix == ".bin":
        from pc3d.io.kitti import read_kitti_bin

        return read_kitti_bin(path, allow_empty=allow_empty)
    if suffix in MESH_SUFFIXES:
        from pc3d.io.mesh import read_mesh_as_cloud

        return read_mesh_as_cloud(path, num_points=num_points, seed=seed)
    from pc3d.io import tabular

    if suffix == ".npz":
        return tabular.read_npz(path, allow_empty=allow_empty, keep_float64=keep_float64)
    if suffix == ".npy":
        return tabular.read_npy(path, allow_empty=allow_empty, columns=names, keep_float64=keep_float64)
    return tabular.read_txt(path, allow_empty=allow_empty, columns=names, keep_float64=keep_float64)


def write_point_cloud(path: str | os.PathLike, cloud: PointCloud, *, binary: bool = True) -> None:
    """Write `cloud` atomically in the format named by the suffix (binary where the format has a choice)."""
    suffix = suffix_of(path)
    if suffix not in WRITE_SUFFIXES:
        raise input_error(path, f"cannot write suffix {suffix or '(none)'!r}; supported: {' '.join(WRITE_SUFFIXES)}")
    path = Path(path)
    if suffix == ".ply":
        from pc3d.io.ply import write_ply_cloud

        write_ply_cloud(path, cloud, binary=binary)
    elif suffix == ".pcd":
        from pc3d.io.pcd import write_pcd

        write_pcd(path, cloud, data="binary" if binary else "ascii")
    elif suffix == ".bin":
        from pc3d.io.kitti import write_kitti_bin

        write_kitti_bin(path, cloud)
    else:
        from pc3d.io import tabular

        writers = {".npy": tabular.write_npy, ".npz": tabular.write_npz, ".txt": tabular.write_txt,
                   ".xyz": tabular.write_txt, ".xyzn": tabular.write_xyzn, ".xyzrgb": tabular.write_xyzrgb}
        writers[suffix](path, cloud)
