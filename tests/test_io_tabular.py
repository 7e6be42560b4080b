"""Array and text clouds: .npy (column layouts), .npz (key aliases), .txt / .xyz (S3DIS-style)."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.io import PointCloud, read_point_cloud, write_point_cloud


def cloud_with(n=30, colors=True, normals=True, fields=None, seed=0) -> PointCloud:
    rng = np.random.default_rng(seed)
    return PointCloud(
        rng.normal(size=(n, 3)),
        rng.integers(0, 256, (n, 3)) if colors else None,
        rng.normal(size=(n, 3)) if normals else None,
        fields if fields is not None else {},
    )


@pytest.mark.parametrize("suffix", [".npz", ".txt", ".xyz"])
def test_round_trip_with_fields(tmp_path, suffix):
    n = 25
    cloud = cloud_with(n, fields={"label": np.arange(n) % 7, "instance": np.arange(n, dtype=np.int64) // 3,
                                  "intensity": np.linspace(0, 1, n, dtype=np.float32)})
    path = tmp_path / f"c{suffix}"
    write_point_cloud(path, cloud)
    back = read_point_cloud(path)
    np.testing.assert_array_equal(back.points, cloud.points)
    np.testing.assert_array_equal(back.colors, cloud.colors)
    np.testing.assert_array_equal(back.normals, cloud.normals)
    for name in ("label", "instance", "intensity"):
        np.testing.assert_array_equal(back.fields[name], cloud.fields[name])


@pytest.mark.parametrize("colors, normals, fields, width", [
    (False, False, {}, 3),
    (False, False, {"intensity": np.arange(30, dtype=np.float32)}, 4),
    (True, False, {}, 6),
    (True, False, {"label": np.arange(30) % 4}, 7),
    (True, True, {}, 9),
    (True, True, {"label": np.arange(30) % 4}, 10),
])
def test_npy_column_layouts(tmp_path, colors, normals, fields, width):
    cloud = cloud_with(colors=colors, normals=normals, fields=fields)
    write_point_cloud(tmp_path / "c.npy", cloud)
    table = np.load(tmp_path / "c.npy")
    assert table.shape == (30, width) and table.dtype == np.float32
    np.testing.assert_array_equal(table[:, :3], cloud.points)
    back = read_point_cloud(tmp_path / "c.npy")
    np.testing.assert_array_equal(back.points, cloud.points)
    if colors:
        np.testing.assert_array_equal(back.colors, cloud.colors)
    if normals:
        np.testing.assert_array_equal(back.normals, cloud.normals)
    for name, values in fields.items():
        np.testing.assert_array_equal(back.fields[name], values)


def test_npy_refuses_unrepresentable_cloud_and_writes_nothing(tmp_path):
    cloud = cloud_with(colors=False, normals=True)  # 6 columns would be read back as colours
    with pytest.raises(InputError, match=r"c\.npy: a plain \.npy holds only"):
        write_point_cloud(tmp_path / "c.npy", cloud)
    assert list(tmp_path.iterdir()) == []


def test_npz_key_aliases_and_float_colours(tmp_path):
    xyz = np.arange(12, dtype=np.float64).reshape(4, 3)
    color = np.array([[0, 0.5, 1], [1, 1, 1], [0, 0, 0], [0.2, 0.4, 0.6]])
    np.savez(tmp_path / "a.npz", coord=xyz, color=color, normal=np.eye(4, 3), segment=np.arange(4),
             scene_id=np.array(17), feats=np.ones((4, 2)))
    cloud = read_point_cloud(tmp_path / "a.npz")
    np.testing.assert_array_equal(cloud.points, xyz)
    np.testing.assert_array_equal(cloud.colors, [[0, 128, 255], [255, 255, 255], [0, 0, 0], [51, 102, 153]])
    np.testing.assert_array_equal(cloud.normals, np.eye(4, 3))
    np.testing.assert_array_equal(cloud.fields["segment"], np.arange(4))
    np.testing.assert_array_equal(cloud.fields["feats_1"], np.ones(4))
    assert "scene_id" not in cloud.fields  # not per point


def test_s3dis_style_text_with_comments_and_commas(tmp_path):
    (tmp_path / "room.txt").write_text(
        "# S3DIS Area_1 office_1 (x y z r g b)\n// exported\n"
        "1.0 2.0 3.0 255 0 17\n-1.5 0.25 2 1 1 0\n\n4 5 6 0 0 1\n"
    )
    cloud = read_point_cloud(tmp_path / "room.txt")
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [-1.5, 0.25, 2], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.colors, [[255, 0, 17], [1, 1, 0], [0, 0, 1]])  # integers: 0..255
    (tmp_path / "pts.xyz").write_text("x,y,z,intensity\n1,2,3,0.5\n4,5,6,0.25\n")
    cloud = read_point_cloud(tmp_path / "pts.xyz")
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.fields["intensity"], [0.5, 0.25])
    (tmp_path / "frac.txt").write_text("0 0 0 0.5 0.25 1.0\n")
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "frac.txt").colors, [[128, 64, 255]])


def test_text_errors(tmp_path):
    (tmp_path / "five.txt").write_text("1 2 3 4 5\n")
    with pytest.raises(InputError, match=r"five\.txt: wrong column count 5"):
        read_point_cloud(tmp_path / "five.txt")
    (tmp_path / "ragged.txt").write_text("1 2 3\n4 5 6 7\n")
    with pytest.raises(InputError, match=r"ragged\.txt: wrong column count"):
        read_point_cloud(tmp_path / "ragged.txt")
    (tmp_path / "words.txt").write_text("1 2 3\n4 five 6\n")
    with pytest.raises(InputError, match=r"words\.txt"):
        read_point_cloud(tmp_path / "words.txt")
    (tmp_path / "comments.txt").write_text("# nothing here\n")
    with pytest.raises(InputError, match=r"comments\.txt: the point cloud is empty"):
        read_point_cloud(tmp_path / "comments.txt")
    assert len(read_point_cloud(tmp_path / "comments.txt", allow_empty=True)) == 0
    (tmp_path / "nan.txt").write_text("1 2 3\nnan 1 1\n1 inf 1\n0 0 0\n")
    with pytest.raises(InputError, match=r"nan\.txt: 2 of 4 points have NaN or inf"):
        read_point_cloud(tmp_path / "nan.txt")
    (tmp_path / "col.txt").write_text("0 0 0 300 0 0\n")
    with pytest.raises(InputError, match=r"col\.txt: colour values span"):
        read_point_cloud(tmp_path / "col.txt")


def test_array_errors(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(9))
    with pytest.raises(InputError, match=r"flat\.npy: expected an \(N, k\) array"):
        read_point_cloud(tmp_path / "flat.npy")
    np.save(tmp_path / "five.npy", np.zeros((4, 5)))
    with pytest.raises(InputError, match=r"five\.npy: wrong column count 5"):
        read_point_cloud(tmp_path / "five.npy")
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object))
    with pytest.raises(InputError, match=r"obj\.npy: not a readable"):  # pickles are never loaded
        read_point_cloud(tmp_path / "obj.npy")
    np.savez(tmp_path / "nokey.npz", data=np.zeros((3, 3)))
    with pytest.raises(InputError, match=r"nokey\.npz: no point array.*found data"):
        read_point_cloud(tmp_path / "nokey.npz")
    np.savez(tmp_path / "mismatch.npz", points=np.zeros((3, 3)), colors=np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"mismatch\.npz: 'colors' must have shape \(3, 3\)"):
        read_point_cloud(tmp_path / "mismatch.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"junk\.npz: not a readable \.npz"):
        read_point_cloud(tmp_path / "junk.npz")
