"""PLY: round trips through pc3d's writer, and hand-built files (struct / text) read independently."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.io import PointCloud, read_point_cloud, write_point_cloud
from pc3d.io.ply import PlyList, read_ply, write_ply


def random_cloud(n: int = 50, seed: int = 0) -> PointCloud:
    rng = np.random.default_rng(seed)
    return PointCloud(
        points=rng.normal(size=(n, 3)).astype(np.float32),
        colors=rng.integers(0, 256, (n, 3)).astype(np.uint8),
        normals=rng.normal(size=(n, 3)).astype(np.float32),
        fields={
            "label": rng.integers(0, 20, n).astype(np.int32),
            "instance": rng.integers(0, 1000, n).astype(np.uint16),
            "intensity": rng.random(n).astype(np.float32),
            "scalar_density": rng.random(n),  # float64
        },
    )


def assert_same_cloud(a: PointCloud, b: PointCloud) -> None:
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.colors, b.colors)
    np.testing.assert_array_equal(a.normals, b.normals)
    assert a.fields.keys() == b.fields.keys()
    for name in a.fields:
        np.testing.assert_array_equal(a.fields[name], b.fields[name])


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_keeps_everything(tmp_path, binary):
    cloud = random_cloud()
    path = tmp_path / "cloud.ply"
    write_point_cloud(path, cloud, binary=binary)
    header = path.read_bytes()[:40]
    assert (b"binary_little_endian" in header) == binary and (b"ascii" in header) != binary
    back = read_point_cloud(path)
    assert_same_cloud(cloud, back)
    assert back.fields["instance"].dtype == np.uint16 and back.fields["scalar_density"].dtype == np.float64


def test_int64_fields_are_narrowed_losslessly(tmp_path):
    cloud = PointCloud(np.zeros((3, 3)), fields={"label": np.array([0, 5, 2**31 - 1], dtype=np.int64)})
    write_point_cloud(tmp_path / "a.ply", cloud)
    assert b"property int label" in (tmp_path / "a.ply").read_bytes()
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "a.ply").fields["label"], [0, 5, 2**31 - 1])


def _binary_ply(order: str, rows: list[tuple], faces: list[list[int]] | None = None) -> bytes:
    """A PLY assembled with struct (no pc3d code): x y z float, uchar rgb, int label, then faces."""
    fmt = {"<": "binary_little_endian", ">": "binary_big_endian"}[order]
    header = [f"ply\nformat {fmt} 1.0\ncomment made by hand\nelement vertex {len(rows)}\n",
              "property float x\nproperty float y\nproperty float z\n",
              "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty int label\n"]
    if faces is not None:
        header.append(f"element face {len(faces)}\nproperty list uchar int vertex_indices\n")
    body = b"".join(struct.pack(order + "fffBBBi", *row) for row in rows)
    for face in faces or []:
        body += struct.pack(order + "B" + "i" * len(face), len(face), *face)
    return ("".join(header) + "end_header\n").encode() + body


@pytest.mark.parametrize("order", ["<", ">"])
def test_hand_built_binary_both_endians(tmp_path, order):
    rows = [(1.5, -2.0, 3.25, 255, 0, 10, 7), (0.0, 0.5, -1.0, 1, 2, 3, -4), (9.0, 8.0, 7.0, 4, 5, 6, 100)]
    path = tmp_path / "hand.ply"
    path.write_bytes(_binary_ply(order, rows, faces=[[0, 1, 2], [2, 1, 0, 1]]))  # ragged faces after vertices
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[1.5, -2.0, 3.25], [0.0, 0.5, -1.0], [9.0, 8.0, 7.0]])
    np.testing.assert_array_equal(cloud.colors, [[255, 0, 10], [1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.fields["label"], [7, -4, 100])
    assert cloud.normals is None
    _, elements = read_ply(path)  # the full parse reads the ragged faces too
    faces = elements["face"]["vertex_indices"]
    np.testing.assert_array_equal(faces.counts, [3, 4])
    np.testing.assert_array_equal(faces.values, [0, 1, 2, 2, 1, 0, 1])


def test_hand_written_ascii_with_float_colours_and_comments(tmp_path):
    text = """ply
format ascii 1.0
comment float colours in 0..1, as some tools write them
obj_info generated for a test
element vertex 2
property double x
property double y
property double z
property float red
property float green
property float blue
property float nx
property float ny
property float nz
property ushort part
element face 1
property list uchar uint vertex_indices
end_header
1 2 3 1.0 0.0 0.5 0 0 1 3
-1 -2 -3 0.2 0.4 0.6 1 0 0 65535
3 0 1 1
"""
    path = tmp_path / "ascii.ply"
    path.write_text(text)
    cloud = read_point_cloud(path)
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [-1, -2, -3]])
    np.testing.assert_array_equal(cloud.colors, [[255, 0, 128], [51, 102, 153]])  # round(v * 255)
    np.testing.assert_array_equal(cloud.normals, [[0, 0, 1], [1, 0, 0]])
    assert cloud.fields["part"].dtype == np.uint16
    np.testing.assert_array_equal(cloud.fields["part"], [3, 65535])


def test_faces_before_vertices_are_skipped_correctly(tmp_path):
    # the face element comes first, so the reader must parse its lists to find the vertices
    write_ply(tmp_path / "m.ply", {
        "face": {"vertex_indices": PlyList(np.array([3, 3]), np.array([0, 1, 2, 0, 2, 3]))},
        "vertex": {"x": np.arange(4, dtype=np.float32), "y": np.zeros(4, np.float32), "z": np.ones(4, np.float32)},
    })
    cloud = read_point_cloud(tmp_path / "m.ply")
    np.testing.assert_array_equal(cloud.points[:, 0], [0, 1, 2, 3])


def test_large_cloud_is_fast(tmp_path):
    n = 300_000
    cloud = PointCloud(np.random.default_rng(1).random((n, 3)), fields={"label": np.arange(n, dtype=np.int32)})
    write_point_cloud(tmp_path / "big.ply", cloud)
    back = read_point_cloud(tmp_path / "big.ply")
    np.testing.assert_array_equal(back.fields["label"], np.arange(n))
    assert (tmp_path / "big.ply").stat().st_size == _header_len(tmp_path / "big.ply") + n * 16


def _header_len(path) -> int:
    data = path.read_bytes()
    return data.index(b"end_header\n") + len(b"end_header\n")


@pytest.mark.parametrize("body, problem", [
    (b"plx\nformat ascii 1.0\nend_header\n", "missing 'ply' magic"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "no 'end_header'"),
    (b"ply\nformat weird 1.0\nend_header\n", "unknown format"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n1\n", "bad property"),
    (b"ply\nformat ascii 1.0\nelement vertex two\nend_header\n", "malformed PLY header"),
])
def test_malformed_headers(tmp_path, body, problem):
    path = tmp_path / "bad.ply"
    path.write_bytes(body)
    with pytest.raises(InputError, match=problem) as info:
        read_point_cloud(path)
    assert "bad.ply" in str(info.value) and "\n" not in str(info.value)


def test_truncated_binary_reports_counts(tmp_path):
    rows = [(float(i), 0.0, 0.0, 0, 0, 0, i) for i in range(10)]
    data = _binary_ply("<", rows)
    path = tmp_path / "cut.ply"
    path.write_bytes(data[:-20])  # 19 bytes per record: 10 declared, 8 complete
    with pytest.raises(InputError, match=r"cut\.ply.*10 vertex records but the data holds 8"):
        read_point_cloud(path)


def test_truncated_ascii_and_wrong_column_count(tmp_path):
    head = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "short.ply").write_text(head + "0 0 0\n1 1 1\n")
    with pytest.raises(InputError, match="3 vertex records but the data holds 2"):
        read_point_cloud(tmp_path / "short.ply")
    (tmp_path / "wide.ply").write_text(head + "0 0 0 5\n1 1 1 5\n2 2 2 5\n")
    with pytest.raises(InputError, match="wrong column count"):
        read_point_cloud(tmp_path / "wide.ply")


def test_empty_and_nan_vertices(tmp_path):
    write_point_cloud(tmp_path / "empty.ply", PointCloud(np.zeros((0, 3))))
    with pytest.raises(InputError, match=r"empty\.ply.*empty"):
        read_point_cloud(tmp_path / "empty.ply")
    assert len(read_point_cloud(tmp_path / "empty.ply", allow_empty=True)) == 0
    points = np.zeros((5, 3))
    points[1, 0], points[3, 2] = np.nan, np.inf
    write_point_cloud(tmp_path / "nan.ply", PointCloud(points))
    with pytest.raises(InputError, match=r"nan\.ply: 2 of 5 points have NaN or inf"):
        read_point_cloud(tmp_path / "nan.ply")
