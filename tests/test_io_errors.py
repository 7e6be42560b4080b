"""Validation at the edge across formats, and writers that never leave a partial file behind."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.io import PointCloud, read_point_cloud, write_image, write_point_cloud
from pc3d.io.pointcloud import POINT_SUFFIXES

ALL_SUFFIXES = POINT_SUFFIXES + (".off", ".obj", ".stl")


def small_cloud(n: int = 10) -> PointCloud:
    rng = np.random.default_rng(0)
    return PointCloud(rng.random((n, 3)), rng.integers(0, 256, (n, 3)), None, {"intensity": rng.random(n)})


@pytest.mark.parametrize("suffix", ALL_SUFFIXES)
def test_missing_file_names_the_file(tmp_path, suffix):
    with pytest.raises(InputError) as info:
        read_point_cloud(tmp_path / f"nothing{suffix}")
    message = str(info.value)
    assert f"nothing{suffix}: file not found" in message and "\n" not in message


def test_unknown_suffix_lists_supported(tmp_path):
    (tmp_path / "scan.las").write_bytes(b"LASF")
    with pytest.raises(InputError, match=r"scan\.las: unknown point-cloud suffix '\.las'; supported: \.ply .*\.bin"):
        read_point_cloud(tmp_path / "scan.las")
    with pytest.raises(InputError, match=r"out\.las: cannot write suffix"):
        write_point_cloud(tmp_path / "out.las", small_cloud())
    assert [p.name for p in tmp_path.iterdir()] == ["scan.las"]


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "dir.ply").mkdir()
    with pytest.raises(InputError, match=r"dir\.ply: is not a regular file"):
        read_point_cloud(tmp_path / "dir.ply")


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".npz", ".txt", ".bin"])
def test_empty_cloud_needs_allow_empty(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    write_point_cloud(path, PointCloud(np.zeros((0, 3)), fields={"intensity": np.zeros(0, np.float32)}))
    with pytest.raises(InputError, match=rf"empty\{suffix}: the point cloud is empty"):
        read_point_cloud(path)
    assert len(read_point_cloud(path, allow_empty=True)) == 0


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".npz", ".txt", ".bin", ".npy"])
def test_nan_coordinates_are_counted(tmp_path, suffix):
    points = np.arange(30, dtype=np.float32).reshape(10, 3)
    points[[2, 5, 9], [0, 1, 2]] = [np.nan, np.inf, -np.inf]
    path = tmp_path / f"nan{suffix}"
    write_point_cloud(path, PointCloud(points))
    with pytest.raises(InputError, match=rf"nan\{suffix}: 3 of 10 points have NaN or inf coordinates"):
        read_point_cloud(path)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".npy", ".npz", ".txt", ".xyz", ".bin"])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, suffix):
    # fail at the very end (fsync), after every byte went to the temporary file
    def fail(fd):
        raise Boom("disk full")

    monkeypatch.setattr("pc3d.io.atomic.os.fsync", fail)
    cloud = small_cloud() if suffix != ".npy" else PointCloud(np.zeros((4, 3)))
    with pytest.raises(Boom):
        write_point_cloud(tmp_path / f"out{suffix}", cloud)
    assert list(tmp_path.iterdir()) == []


def test_failed_label_and_calib_writes_leave_nothing(tmp_path, monkeypatch):
    from pc3d.io.kitti import write_kitti_calib, write_kitti_label

    def fail(fd):
        raise Boom("disk full")

    monkeypatch.setattr("pc3d.io.atomic.os.fsync", fail)
    with pytest.raises(Boom):
        write_kitti_label(tmp_path / "a.label", np.arange(5), np.arange(5))
    with pytest.raises(Boom):
        write_kitti_calib(tmp_path / "calib.txt", {"P0": np.zeros((3, 4))})
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.ply"
    write_point_cloud(path, small_cloud(3))
    before = path.read_bytes()

    def fail(handle, table):
        handle.write(b"garbage")
        raise Boom("crash")

    monkeypatch.setattr("pc3d.io.ply._write_binary_table", fail)
    with pytest.raises(Boom):
        write_point_cloud(path, small_cloud(50))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.ply"]


def test_failed_image_write_leaves_nothing(tmp_path, monkeypatch):
    from PIL import Image

    def fail(self, handle, *args, **kwargs):
        handle.write(b"\x89PNG partial")
        raise Boom("crash")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(Boom):
        write_image(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_field_length_mismatch_in_file(tmp_path):
    np.savez(tmp_path / "m.npz", points=np.zeros((4, 3)), label=np.zeros(4), other=np.zeros(3))
    assert set(read_point_cloud(tmp_path / "m.npz").fields) == {"label"}  # (3,) is not per point
    np.savez(tmp_path / "l.npz", points=np.zeros((4, 3)), label=np.zeros(5, np.int64))
    with pytest.raises(InputError, match=r"l\.npz: 'label' holds 5 values \(shape \(5,\)\) but there are 4 points"):
        read_point_cloud(tmp_path / "l.npz")
    (tmp_path / "h.txt").write_text("# x y z label\n0 0 0 1\n1 1 1 2.5\n")
    with pytest.raises(InputError, match=r"h\.txt: column 'label' must hold integers"):
        read_point_cloud(tmp_path / "h.txt")


def test_point_cloud_model_checks_shapes():
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\)"):
        PointCloud(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="colors must have shape"):
        PointCloud(np.zeros((4, 3)), colors=np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        PointCloud(np.zeros((1, 3)), colors=np.array([[256, 0, 0]]))
    with pytest.raises(ValueError, match="field 'label'"):
        PointCloud(np.zeros((4, 3)), fields={"label": np.zeros(5)})
    cloud = PointCloud(np.arange(12).reshape(4, 3), np.zeros((4, 3), np.int64), fields={"label": np.arange(4)})
    assert cloud.points.dtype == np.float32 and cloud.colors.dtype == np.uint8
    part = cloud.select(np.array([True, False, True, False]))
    np.testing.assert_array_equal(part.fields["label"], [0, 2])
    np.testing.assert_array_equal(part.points, [[0, 1, 2], [6, 7, 8]])
