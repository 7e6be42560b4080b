"""Triangle meshes (.off .obj .stl .ply) and area-weighted uniform surface sampling.

Polygons are fan-triangulated on reading, so every reader returns (vertices (V,3) float64,
faces (F,3) int64 with 0-based indices).
"""

from __future__ import annotations

import os
import re

import numpy as np

from pc3d.io._common import decode_text, existing_file, input_error, read_bytes, read_text, suffix_of
from pc3d.io.cloud import PointCloud

MESH_READ_SUFFIXES = (".off", ".obj", ".stl", ".ply")


def fan_triangulate(counts: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Polygons in CSR form (counts, concatenated indices) -> (F,3) triangles (v0, vk, vk+1).

    Polygons with fewer than three corners (points, edges) contribute nothing."""
    counts = np.asarray(counts, dtype=np.int64)
    flat = np.asarray(flat, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    per_polygon = np.maximum(counts - 2, 0)
    polygon = np.repeat(np.arange(len(counts)), per_polygon)
    # k = 0 .. per_polygon-1 within each polygon
    k = np.arange(per_polygon.sum()) - np.repeat(np.cumsum(per_polygon) - per_polygon, per_polygon)
    first = starts[polygon]
    return np.stack([flat[first], flat[first + k + 1], flat[first + k + 2]], axis=1)


def _check_faces(path, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(vertices) == 0:
        raise input_error(path, "the mesh has no vertices")
    if len(faces) == 0:
        raise input_error(path, "the mesh has no faces")
    if not np.isfinite(vertices).all():
        bad = int(len(vertices) - np.isfinite(vertices).all(axis=1).sum())
        raise input_error(path, f"{bad} of {len(vertices)} vertices have NaN or inf coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise input_error(path, f"face index out of range: indices span {faces.min()}..{faces.max()} "
                                f"but there are {len(vertices)} vertices")
    return vertices.astype(np.float64), faces.astype(np.int64)


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V,3) float64, faces (F,3) int64) from .off, .obj, .stl or a .ply with faces."""
    suffix = suffix_of(path)
    if suffix not in MESH_READ_SUFFIXES:
        supported = " ".join(MESH_READ_SUFFIXES)
        raise input_error(path, f"unknown mesh suffix {suffix or '(none)'!r}; supported: {supported}")
    existing_file(path)
    reader = {".off": _read_off, ".obj": _read_obj, ".stl": _read_stl, ".ply": _read_ply_mesh}[suffix]
    vertices, faces = reader(path)
    return _check_faces(path, vertices, faces)


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _read_off(path) -> tuple[np.ndarray, np.ndarray]:
    lines = [line for line in (_strip_comment(raw) for raw in read_text(path).splitlines()) if line]
    if not lines or not re.match(r"^[A-Z]*OFF", lines[0]):
        raise input_error(path, "malformed OFF header: the first line must start with 'OFF'")
    # ModelNet40 quirk: the counts are glued to the keyword ("OFF490 518 0")
    keyword = re.match(r"^[A-Z]*OFF", lines[0]).group(0)
    rest = lines[0][len(keyword):].split()
    cursor = 1
    if not rest:
        if len(lines) < 2:
            raise input_error(path, "malformed OFF header: no vertex/face count line")
        rest, cursor = lines[1].split(), 2
    try:
        num_vertices, num_faces = int(rest[0]), int(rest[1])
    except (IndexError, ValueError) as exc:
        raise input_error(path, f"malformed OFF header: bad count line {' '.join(rest)!r}") from exc
    vertex_lines = lines[cursor:cursor + num_vertices]
    face_lines = lines[cursor + num_vertices:cursor + num_vertices + num_faces]
    if len(vertex_lines) < num_vertices or len(face_lines) < num_faces:
        raise input_error(path, f"truncated OFF: header says {num_vertices} vertices and {num_faces} faces, "
                                f"the file holds {len(vertex_lines)} and {len(face_lines)}")
    # COFF / NOFF / CNOFF / STOFF vertices carry colours (int 0..255 or float 0..1), normals or texture
    # coordinates after x y z, and faces may end in a colour (an index, ints or floats): only x y z and
    # the corner indices define the mesh, so everything after them is skipped, whatever its type
    for number, line in enumerate(vertex_lines):
        if len(line.split()) < 3:
            raise input_error(path, f"wrong column count: OFF vertex {number} is {line!r}, it needs x y z")
    try:
        vertices = np.array([[float(word) for word in line.split()[:3]] for line in vertex_lines], np.float64)
    except ValueError as exc:
        raise input_error(path, f"malformed OFF vertex data: {exc}") from exc
    counts, flat = [], []
    for number, line in enumerate(face_lines):
        words = line.split()
        try:
            count = int(words[0])
            corners = [int(word) for word in words[1:1 + count]]
        except (IndexError, ValueError) as exc:
            raise input_error(path, f"malformed OFF face {number}: {line!r}") from exc
        if count < 0 or len(corners) < count:
            raise input_error(path, f"malformed OFF face {number}: {line!r}")
        counts.append(count)
        flat.extend(corners)
    return vertices.reshape(-1, 3), fan_triangulate(np.array(counts, dtype=np.int64), np.array(flat, dtype=np.int64))


def _read_obj(path) -> tuple[np.ndarray, np.ndarray]:
    vertices: list[list[float]] = []
    counts: list[int] = []
    flat: list[int] = []
    for number, raw in enumerate(read_text(path).splitlines(), start=1):
        words = _strip_comment(raw).split()
        if not words:
            continue
        try:
            if words[0] == "v":
                vertices.append([float(word) for word in words[1:4]])
                if len(vertices[-1]) != 3:
                    raise ValueError("a vertex needs x y z")
            elif words[0] == "f":
                corners = []
                for word in words[1:]:
                    index = int(word.split("/", 1)[0])  # v, v/vt, v/vt/vn, v//vn all start with v
                    # OBJ indices are 1-based; negative ones count back from the latest vertex
                    corners.append(len(vertices) + index if index < 0 else index - 1)
                counts.append(len(corners))
                flat.extend(corners)
        except ValueError as exc:
            raise input_error(path, f"malformed OBJ line {number}: {raw.strip()[:60]!r}") from exc
    faces = fan_triangulate(np.array(counts, dtype=np.int64), np.array(flat, dtype=np.int64))
    return np.array(vertices, dtype=np.float64).reshape(-1, 3), faces


def _read_stl(path) -> tuple[np.ndarray, np.ndarray]:
    data = read_bytes(path)
    binary_size = 84 + 50 * int(np.frombuffer(data, "<u4", 1, 80)[0]) if len(data) >= 84 else -1
    if len(data) == binary_size:
        # 80-byte header, uint32 count, then per triangle: normal (3 f4), 3 corners (9 f4), 2 spare bytes
        record = np.dtype([("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("spare", "<u2")])
        corners = np.frombuffer(data, record, offset=84)["corners"].reshape(-1, 3).astype(np.float64)
    elif data.lstrip()[:5].lower() == b"solid" and b"facet" in data:  # binary headers may start with "solid"
        text = decode_text(path, data)
        number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
        found = re.findall(rf"vertex\s+({number})\s+({number})\s+({number})", text)
        if len(found) % 3 or not found:
            raise input_error(path, f"malformed ascii STL: {len(found)} vertices is not a positive multiple of 3")
        corners = np.array(found, dtype=np.float64)
    elif binary_size > 0:
        raise input_error(path, f"truncated binary STL: header says {(binary_size - 84) // 50} triangles, "
                                f"file size {len(data)} bytes does not match")
    else:
        raise input_error(path, "not an STL file: too short for a binary header and no ascii 'solid'")
    # STL repeats shared corners per triangle; merge identical ones into an indexed mesh
    vertices, inverse = np.unique(corners, axis=0, return_inverse=True)
    return vertices, inverse.reshape(-1, 3)


def _read_ply_mesh(path) -> tuple[np.ndarray, np.ndarray]:
    from pc3d.io.ply import PlyList, read_ply

    _, elements = read_ply(path)
    vertex = elements.get("vertex", {})
    if not all(axis in vertex for axis in "xyz"):
        raise input_error(path, "PLY has no vertex element with x, y, z")
    vertices = np.stack([vertex[axis] for axis in "xyz"], axis=1).astype(np.float64)
    face = elements.get("face", {})
    lists = [face[name] for name in ("vertex_indices", "vertex_index") if isinstance(face.get(name), PlyList)]
    if not lists:
        raise input_error(path, "PLY has no face element with vertex_indices (it is a point cloud, not a mesh)")
    return vertices, fan_triangulate(lists[0].counts, lists[0].values)


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    corners = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    return 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)


def sample_surface_points(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` points uniform on the surface -> (points (n,3), unit face normals (n,3), face index (n,)).

    Faces are drawn with probability proportional to area, then a uniform point in the triangle from
    barycentrics (1 - sqrt(r1), sqrt(r1)(1 - r2), sqrt(r1) r2). The face index lets callers carry
    per-face labels (parts, instances) over to the points."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    areas = triangle_areas(vertices, faces)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("the mesh has zero surface area; nothing to sample")
    face_index = rng.choice(len(faces), size=n, p=areas / total)
    r1, r2 = rng.random(n), rng.random(n)
    root = np.sqrt(r1)
    weights = np.stack([1.0 - root, root * (1.0 - r2), root * r2], axis=1)
    corners = vertices[faces[face_index]]  # (n, 3 corners, 3 coords)
    points = np.einsum("nk,nkc->nc", weights, corners)
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-30)
    return points, normals, face_index


def sample_mesh(
    vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0, with_normals: bool = True
) -> PointCloud:
    """`n` points uniform on the surface of a triangle mesh (see `sample_surface_points`), seeded."""
    points, normals, _ = sample_surface_points(vertices, faces, n, np.random.default_rng(seed))
    return PointCloud(points, normals=normals if with_normals else None)


def read_mesh_as_cloud(path: str | os.PathLike, *, num_points: int = 8192, seed: int = 0) -> PointCloud:
    """What read_point_cloud does with a mesh file: read it and sample `num_points` surface points."""
    if num_points < 1:
        raise ValueError(f"num_points must be positive, got {num_points}")
    vertices, faces = read_mesh(path)
    if triangle_areas(vertices, faces).sum() <= 0:
        raise input_error(path, "the mesh has zero surface area; nothing to sample")
    return sample_mesh(vertices, faces, num_points, seed)
