"""Mesh readers (.off .obj .stl .ply) and area-weighted uniform surface sampling."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.io import read_mesh, read_point_cloud, sample_mesh
from pc3d.io.mesh import fan_triangulate
from pc3d.io.ply import PlyList, write_ply

SQUARE = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float)


def as_triangle_set(vertices: np.ndarray, faces: np.ndarray) -> set[tuple]:
    """Triangles as sets of corner coordinates, independent of vertex numbering and rotation."""
    return {frozenset(map(tuple, np.round(vertices[face], 9))) for face in faces}


def test_fan_triangulation_by_hand():
    faces = fan_triangulate(np.array([3, 4, 2, 5]), np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]))
    np.testing.assert_array_equal(faces, [[0, 1, 2], [3, 4, 5], [3, 5, 6], [9, 10, 11], [9, 11, 12], [9, 12, 13]])


def test_off_with_modelnet_quirk(tmp_path):
    body = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"
    (tmp_path / "glued.off").write_text("OFF4 1 0\n" + body)  # ModelNet40: counts glued to the keyword
    (tmp_path / "plain.off").write_text("OFF\n# a comment\n4 1 0\n" + body.replace("4 0 1 2 3", "4 0 1 2 3 255 0 0"))
    for name in ("glued.off", "plain.off"):
        vertices, faces = read_mesh(tmp_path / name)
        np.testing.assert_array_equal(vertices, SQUARE)
        np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3]])
        assert faces.dtype == np.int64


def test_obj_index_forms_and_negative_indices(tmp_path):
    (tmp_path / "m.obj").write_text(
        "# cube side\nmtllib x.mtl\no square\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\n"
        "usemtl a\nf 1/1/1 2/1/1 3/1/1 4/1/1\n"  # a quad, v/vt/vn
        "v 0 0 5\nv 1 0 5\nv 0 1 5\nf -3//1 -2//1 -1//1\n"  # negative indices count back from the latest vertex
        "f 5/1 6/1 7/1\n"
    )
    vertices, faces = read_mesh(tmp_path / "m.obj")
    assert vertices.shape == (7, 3)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 5, 6]])


def test_stl_ascii_and_binary_agree(tmp_path):
    triangles = [SQUARE[[0, 1, 2]], SQUARE[[0, 2, 3]]]
    lines = ["solid square"]
    for tri in triangles:
        lines += ["  facet normal 0 0 1", "    outer loop"]
        lines += [f"      vertex {x:e} {y:e} {z:e}" for x, y, z in tri]
        lines += ["    endloop", "  endfacet"]
    (tmp_path / "a.stl").write_text("\n".join(lines + ["endsolid square"]) + "\n")
    binary = b"solid-looking header".ljust(80, b" ") + struct.pack("<I", 2)  # binary files may start with "solid"
    for tri in triangles:
        binary += struct.pack("<3f", 0, 0, 1) + struct.pack("<9f", *tri.reshape(-1)) + struct.pack("<H", 0)
    (tmp_path / "b.stl").write_bytes(binary)
    for name in ("a.stl", "b.stl"):
        vertices, faces = read_mesh(tmp_path / name)
        assert len(vertices) == 4  # shared corners merged
        assert as_triangle_set(vertices, faces) == as_triangle_set(SQUARE, np.array([[0, 1, 2], [0, 2, 3]]))
    (tmp_path / "cut.stl").write_bytes(binary[:-10])
    with pytest.raises(InputError, match=r"cut\.stl: truncated binary STL: header says 2 triangles"):
        read_mesh(tmp_path / "cut.stl")


def test_ply_mesh_and_its_vertices_as_cloud(tmp_path):
    vertex = {"x": SQUARE[:, 0], "y": SQUARE[:, 1], "z": SQUARE[:, 2]}
    write_ply(tmp_path / "m.ply", {"vertex": vertex, "face": {"vertex_indices": PlyList(np.array([4]), np.arange(4))}})
    vertices, faces = read_mesh(tmp_path / "m.ply")
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3]])
    # read_point_cloud on a PLY mesh gives its vertices, not surface samples
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "m.ply").points, SQUARE)
    write_ply(tmp_path / "cloud.ply", {"vertex": vertex})
    with pytest.raises(InputError, match=r"cloud\.ply: PLY has no face element"):
        read_mesh(tmp_path / "cloud.ply")


def _barycentric(point: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares barycentrics of `point` w.r.t. `tri` and the distance to the triangle's plane."""
    basis = np.stack([tri[1] - tri[0], tri[2] - tri[0]], axis=1)
    coef, *_ = np.linalg.lstsq(basis, point - tri[0], rcond=None)
    residual = np.linalg.norm(basis @ coef - (point - tri[0]))
    return np.array([1 - coef.sum(), coef[0], coef[1]]), residual


def test_samples_lie_on_faces_with_face_normals():
    vertices = np.array([[0, 0, 0], [2, 0, 0], [0, 1.5, 0], [0.3, 0.4, 1.7]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    cloud = sample_mesh(vertices, faces, 300, seed=3)
    assert cloud.points.shape == (300, 3) and cloud.normals.shape == (300, 3)
    for point, normal in zip(cloud.points.astype(float), cloud.normals.astype(float), strict=True):
        on_faces = []
        for face in faces:
            weights, distance = _barycentric(point, vertices[face])
            if distance < 1e-5 and (weights > -1e-5).all():
                on_faces.append(face)
        assert on_faces, f"{point} is on no face"
        tri = vertices[on_faces[0]]
        expected = np.cross(tri[1] - tri[0], tri[2] - tri[0])
        np.testing.assert_allclose(normal, expected / np.linalg.norm(expected), atol=1e-6)


def test_area_weighting_three_to_one():
    # triangle A (area 3) at z = 0, triangle B (area 1) at z = 5
    vertices = np.array([[0, 0, 0], [3, 0, 0], [0, 2, 0], [0, 0, 5], [1, 0, 5], [0, 2, 5]], dtype=float)
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    n = 8000
    points = sample_mesh(vertices, faces, n, seed=0, with_normals=False).points
    on_a = int((np.abs(points[:, 2]) < 1e-6).sum())
    assert on_a + int((np.abs(points[:, 2] - 5) < 1e-6).sum()) == n
    sigma = np.sqrt(n * 0.75 * 0.25)  # binomial standard deviation
    assert abs(on_a - 0.75 * n) < 5 * sigma
    assert on_a / (n - on_a) == pytest.approx(3.0, rel=0.1)


def test_uniform_inside_a_triangle():
    # in the unit right triangle the region x + y < t has area fraction t^2; t = sqrt(1/2) holds half the points
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=float)
    n = 8000
    points = sample_mesh(vertices, np.array([[0, 1, 2]]), n, seed=1).points.astype(float)
    assert (points[:, 0] >= -1e-7).all() and (points[:, 1] >= -1e-7).all() and (points.sum(1) <= 1 + 1e-6).all()
    inner = (points[:, 0] + points[:, 1] < np.sqrt(0.5)).mean()
    assert abs(inner - 0.5) < 5 * np.sqrt(0.25 / n)
    np.testing.assert_allclose(points[:, :2].mean(0), [1 / 3, 1 / 3], atol=5 * np.sqrt(1 / 18 / n))


def test_sampling_is_seeded():
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    a = sample_mesh(SQUARE, faces, 50, seed=7).points
    np.testing.assert_array_equal(a, sample_mesh(SQUARE, faces, 50, seed=7).points)
    assert not np.array_equal(a, sample_mesh(SQUARE, faces, 50, seed=8).points)
    assert sample_mesh(SQUARE, faces, 5, seed=0, with_normals=False).normals is None


def test_read_point_cloud_samples_mesh_files(tmp_path):
    # a unit cube centred at the origin as six quads: every sample lies on a face, |coord| = 0.5 on one axis
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    text = "OFF\n8 6 0\n" + "".join(f"{x} {y} {z}\n" for x, y, z in corners)
    text += "".join("4 " + " ".join(map(str, quad)) + "\n" for quad in quads)
    (tmp_path / "cube.off").write_text(text)
    cloud = read_point_cloud(tmp_path / "cube.off", num_points=600)
    assert len(cloud) == 600
    on_surface = np.abs(np.abs(cloud.points) - 0.5) < 1e-6
    assert on_surface.any(axis=1).all()
    axis = np.argmax(on_surface, axis=1)
    np.testing.assert_allclose(np.abs(cloud.normals[np.arange(600), axis]), 1.0, atol=1e-6)
    per_face = np.bincount(axis * 2 + (cloud.points[np.arange(600), axis] > 0), minlength=6)
    assert per_face.min() > 60  # six equal faces get about 100 points each
    assert len(read_point_cloud(tmp_path / "cube.off")) == 8192  # the default


def test_bad_meshes(tmp_path):
    (tmp_path / "short.off").write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n")
    with pytest.raises(InputError, match=r"short\.off: truncated OFF: header says 4 vertices and 2 faces"):
        read_mesh(tmp_path / "short.off")
    (tmp_path / "range.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 9\n")
    with pytest.raises(InputError, match=r"range\.off: face index out of range"):
        read_mesh(tmp_path / "range.off")
    (tmp_path / "head.off").write_text("PLY\n3 1 0\n")
    with pytest.raises(InputError, match=r"head\.off: malformed OFF header"):
        read_mesh(tmp_path / "head.off")
    (tmp_path / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(InputError, match=r"flat\.obj: the mesh has zero surface area"):
        read_point_cloud(tmp_path / "flat.obj")
    (tmp_path / "nofaces.obj").write_text("v 0 0 0\n")
    with pytest.raises(InputError, match=r"nofaces\.obj: the mesh has no faces"):
        read_mesh(tmp_path / "nofaces.obj")
    (tmp_path / "word.obj").write_text("v 0 zero 0\n")
    with pytest.raises(InputError, match=r"word\.obj: malformed OBJ line 1"):
        read_mesh(tmp_path / "word.obj")
    with pytest.raises(InputError, match=r"m\.gltf: unknown mesh suffix"):
        read_mesh(tmp_path / "m.gltf")


def test_ascii_ply_with_mixed_polygons(tmp_path):
    (tmp_path / "mixed.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 2\nproperty list uchar int vertex_indices\nproperty uchar flag\nend_header\n"
        "0 0 0\n1 0 0\n1 1 0\n0 1 0\n2 2 0\n3 0 1 2 7\n4 0 2 3 4 9\n"
    )
    _, faces = read_mesh(tmp_path / "mixed.ply")
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [0, 3, 4]])
