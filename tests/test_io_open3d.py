"""Independent check against Open3D: files it writes are read by pc3d, and files pc3d writes are read by it."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.io import PointCloud, read_mesh, read_point_cloud, write_point_cloud
from pc3d.io.pcd import write_pcd

o3d = pytest.importorskip("open3d")


def open3d_cloud(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    points, colors, normals = rng.normal(size=(n, 3)), rng.random((n, 3)), rng.normal(size=(n, 3))
    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(points)
    cloud.colors = o3d.utility.Vector3dVector(colors)
    cloud.normals = o3d.utility.Vector3dVector(normals)
    return cloud, points, colors, normals


@pytest.mark.parametrize("name, options, tolerance", [
    ("a.ply", {}, 1e-6),  # float32 in pc3d
    ("b.ply", {"write_ascii": True}, 1e-5),  # Open3D prints ascii with about 6 significant digits
    ("c.pcd", {}, 1e-6),
    ("d.pcd", {"write_ascii": True}, 1e-5),
    ("e.pcd", {"compressed": True}, 1e-6),
])
def test_read_files_written_by_open3d(tmp_path, name, options, tolerance):
    cloud, points, colors, normals = open3d_cloud()
    assert o3d.io.write_point_cloud(str(tmp_path / name), cloud, **options)
    ours = read_point_cloud(tmp_path / name)
    np.testing.assert_allclose(ours.points, points, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(ours.normals, normals, rtol=tolerance, atol=tolerance)
    # Open3D stores colours as round(c * 255) in uchar/packed form
    assert np.abs(ours.colors.astype(int) - colors * 255).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("name, write", [
    ("a.ply", lambda p, c: write_point_cloud(p, c)),
    ("b.ply", lambda p, c: write_point_cloud(p, c, binary=False)),
    ("c.pcd", lambda p, c: write_pcd(p, c, data="binary")),
    ("d.pcd", lambda p, c: write_pcd(p, c, data="ascii")),
    ("e.pcd", lambda p, c: write_pcd(p, c, data="binary_compressed")),
])
def test_open3d_reads_files_written_by_pc3d(tmp_path, name, write):
    rng = np.random.default_rng(1)
    n = 64
    cloud = PointCloud(rng.normal(size=(n, 3)), rng.integers(0, 256, (n, 3)), rng.normal(size=(n, 3)),
                       {"label": rng.integers(0, 9, n).astype(np.int32)})
    write(tmp_path / name, cloud)
    theirs = o3d.io.read_point_cloud(str(tmp_path / name))
    np.testing.assert_allclose(np.asarray(theirs.points), cloud.points, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(theirs.normals), cloud.normals, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(theirs.colors) * 255, cloud.colors, atol=1e-4)


def test_mesh_written_by_open3d(tmp_path):
    mesh = o3d.geometry.TriangleMesh.create_box(1.0, 2.0, 3.0)
    vertices, triangles = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    for name in ("box.ply", "box.obj", "box.off", "box.stl"):
        if name.endswith(".stl"):
            mesh.compute_triangle_normals()
        assert o3d.io.write_triangle_mesh(str(tmp_path / name), mesh)
        ours_vertices, ours_faces = read_mesh(tmp_path / name)
        expected = {frozenset(map(tuple, vertices[t])) for t in triangles}
        assert {frozenset(map(tuple, ours_vertices[f])) for f in ours_faces} == expected, name
    # area weighting on a 1x2x3 box: the two 2x3 faces (x = 0 and x = 1) hold 12 of the 22 area units
    points = read_point_cloud(tmp_path / "box.off", num_points=4400).points
    on_x_faces = (np.isclose(points[:, 0], 0) | np.isclose(points[:, 0], 1)).mean()
    assert abs(on_x_faces - 12 / 22) < 5 * np.sqrt((12 / 22) * (10 / 22) / 4400)
