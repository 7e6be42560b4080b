"""KITTI scans, SemanticKITTI labels (bit layout), calibration in both flavours, poses, generic labels."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.io import PointCloud, read_point_cloud, write_point_cloud
from pc3d.io.kitti import (
    read_kitti_bin,
    read_kitti_calib,
    read_kitti_label,
    read_kitti_poses,
    velo_to_image,
    write_kitti_bin,
    write_kitti_calib,
    write_kitti_label,
    write_kitti_poses,
)
from pc3d.io.labels import read_labels, write_labels


def test_scan_round_trip_and_raw_layout(tmp_path):
    rng = np.random.default_rng(0)
    scan = rng.normal(size=(20, 4)).astype(np.float32)
    scan.tofile(tmp_path / "000000.bin")  # the layout the KITTI devkit writes
    cloud = read_point_cloud(tmp_path / "000000.bin")
    np.testing.assert_array_equal(cloud.points, scan[:, :3])
    np.testing.assert_array_equal(cloud.fields["intensity"], scan[:, 3])
    write_point_cloud(tmp_path / "copy.bin", cloud)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "copy.bin", dtype=np.float32).reshape(-1, 4), scan)
    write_kitti_bin(tmp_path / "noint.bin", PointCloud(scan[:, :3]))
    np.testing.assert_array_equal(read_kitti_bin(tmp_path / "noint.bin").fields["intensity"], np.zeros(20))


def test_truncated_scan(tmp_path):
    (tmp_path / "cut.bin").write_bytes(np.zeros(4 * 5 + 3, np.float32).tobytes())
    with pytest.raises(InputError, match=r"cut\.bin: truncated KITTI scan: 92 bytes is not a multiple"):
        read_point_cloud(tmp_path / "cut.bin")


def test_label_bit_layout_by_hand(tmp_path):
    # semantic 10 (car) in the low 16 bits, instance 3 in the high 16 bits: 3 * 65536 + 10 = 196618
    write_kitti_label(tmp_path / "a.label", np.array([10, 0, 65535]), np.array([3, 0, 65535]))
    raw = np.fromfile(tmp_path / "a.label", dtype="<u4")
    np.testing.assert_array_equal(raw, [196618, 0, 0xFFFFFFFF])
    np.array([196618, 252 + (7 << 16)], dtype="<u4").tofile(tmp_path / "b.label")
    semantic, instance = read_kitti_label(tmp_path / "b.label")
    np.testing.assert_array_equal(semantic, [10, 252])
    np.testing.assert_array_equal(instance, [3, 7])
    assert semantic.dtype == np.int64 and instance.dtype == np.int64


def test_label_errors(tmp_path):
    np.zeros(5, "<u4").tofile(tmp_path / "five.label")
    with pytest.raises(InputError, match=r"five\.label: label count 5 does not match the point count 6"):
        read_kitti_label(tmp_path / "five.label", num_points=6)
    (tmp_path / "odd.label").write_bytes(b"\x00" * 7)
    with pytest.raises(InputError, match=r"odd\.label: truncated"):
        read_kitti_label(tmp_path / "odd.label")
    with pytest.raises(ValueError, match="0..65535"):
        write_kitti_label(tmp_path / "big.label", np.array([70000]), np.array([0]))
    assert not (tmp_path / "big.label").exists()


@pytest.mark.parametrize("suffix", [".label", ".labels", ".txt", ".npy"])
def test_generic_label_files(tmp_path, suffix):
    labels = np.array([0, 3, 19, 7])
    write_labels(tmp_path / f"l{suffix}", labels)
    np.testing.assert_array_equal(read_labels(tmp_path / f"l{suffix}", num_points=4), labels)
    with pytest.raises(InputError, match=rf"l\{suffix}: label count 4 does not match the point count 3"):
        read_labels(tmp_path / f"l{suffix}", num_points=3)


SEMANTIC_KITTI_CALIB = """P0: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 0.000000000000e+00 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.861448000000e+02 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 4.538225000000e+01 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 -1.130887000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 3.779761000000e-03
P3: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.372877000000e+02 0.000000000000e+00 7.188560000000e+02 1.852157000000e+02 2.369057000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 4.915215000000e-03
Tr: 4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 -7.210626507497e-03 8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 9.999738645903e-01 4.859485810390e-04 -7.206933692422e-03 -2.921968648686e-01
"""  # noqa: E501

KITTI_OBJECT_CALIB = """P0: 721.5377 0 609.5593 0 0 721.5377 172.854 0 0 0 1 0
P1: 721.5377 0 609.5593 -387.5744 0 721.5377 172.854 0 0 0 1 0
P2: 721.5377 0 609.5593 44.85728 0 721.5377 172.854 0.2163791 0 0 1 0.002745884
P3: 721.5377 0 609.5593 -339.5242 0 721.5377 172.854 2.199936 0 0 1 0.002729905
R0_rect: 0.9999239 0.00983776 -0.007445048 -0.009869795 0.9999421 -0.004278459 0.007402527 0.004351614 0.9999631
Tr_velo_to_cam: 0.007533745 -0.9999714 -0.000616602 -0.004069766 0.01480249 0.0007280733 -0.9998902 -0.07631618 0.9998621 0.007523790 0.01480755 -0.2717806
Tr_imu_to_velo: 0.9999976 0.0007553071 -0.002035826 -0.8086759 -0.0007854027 0.9998898 -0.01482298 0.3195559 0.002024406 0.01482454 0.9998881 -0.7997231

"""  # noqa: E501


def test_semantic_kitti_calib(tmp_path):
    (tmp_path / "calib.txt").write_text(SEMANTIC_KITTI_CALIB)
    calib = read_kitti_calib(tmp_path / "calib.txt")
    assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"}
    assert calib["P2"].shape == (3, 4) and calib["P2"][0, 3] == pytest.approx(45.38225)
    assert calib["Tr"].shape == (4, 4)
    np.testing.assert_array_equal(calib["Tr"][3], [0, 0, 0, 1])
    assert calib["Tr"][2, 3] == pytest.approx(-0.2921968648686)
    rotation = calib["Tr"][:3, :3]
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)  # a rigid transform
    write_kitti_calib(tmp_path / "copy.txt", calib)
    again = read_kitti_calib(tmp_path / "copy.txt")
    for key in calib:
        np.testing.assert_allclose(again[key], calib[key], rtol=1e-12)


def test_kitti_object_calib_and_projection(tmp_path):
    (tmp_path / "000008.txt").write_text(KITTI_OBJECT_CALIB)
    calib = read_kitti_calib(tmp_path / "000008.txt")
    assert calib["R0_rect"].shape == (4, 4) and calib["R0_rect"][0, 1] == pytest.approx(0.00983776)
    assert calib["Tr_velo_to_cam"][1, 3] == pytest.approx(-0.07631618)
    np.testing.assert_array_equal(calib["Tr"], calib["Tr_velo_to_cam"])
    # projection of a point 10 m ahead of the lidar, composed by hand as P2 @ R0 @ [Tr; 0 0 0 1] @ x
    point = np.array([10.0, 0.5, -1.0, 1.0])
    tr = np.vstack([np.array(KITTI_OBJECT_CALIB.splitlines()[5].split()[1:], float).reshape(3, 4), [0, 0, 0, 1]])
    rect = np.array(KITTI_OBJECT_CALIB.splitlines()[4].split()[1:], float).reshape(3, 3)
    p2 = np.array(KITTI_OBJECT_CALIB.splitlines()[2].split()[1:], float).reshape(3, 4)
    expected = p2 @ np.append(rect @ (tr @ point)[:3], 1.0)
    np.testing.assert_allclose(velo_to_image(calib) @ point, expected, rtol=1e-12)


def test_calib_errors(tmp_path):
    (tmp_path / "short.txt").write_text("P0: 1 2 3\n")
    with pytest.raises(InputError, match=r"short\.txt: calibration P0 has 3 numbers, expected 12"):
        read_kitti_calib(tmp_path / "short.txt")
    (tmp_path / "nocolon.txt").write_text("P0 1 2 3 4 5 6 7 8 9 10 11 12\n")
    with pytest.raises(InputError, match=r"nocolon\.txt: malformed calibration line 1"):
        read_kitti_calib(tmp_path / "nocolon.txt")
    (tmp_path / "word.txt").write_text("Tr: 1 2 x\n")
    with pytest.raises(InputError, match=r"word\.txt: line 1 \(Tr\) holds a non-number"):
        read_kitti_calib(tmp_path / "word.txt")
    with pytest.raises(InputError, match=r"missing\.txt: file not found"):
        read_kitti_calib(tmp_path / "missing.txt")


def test_poses_round_trip(tmp_path):
    (tmp_path / "poses.txt").write_text("1 0 0 0.5 0 1 0 -2 0 0 1 3\n0 -1 0 0 1 0 0 0 0 0 1 0\n")
    poses = read_kitti_poses(tmp_path / "poses.txt")
    assert poses.shape == (2, 4, 4)
    np.testing.assert_array_equal(poses[0, :3, 3], [0.5, -2, 3])
    np.testing.assert_array_equal(poses[1, :2, :2], [[0, -1], [1, 0]])
    np.testing.assert_array_equal(poses[:, 3], [[0, 0, 0, 1]] * 2)
    write_kitti_poses(tmp_path / "copy.txt", poses)
    np.testing.assert_array_equal(read_kitti_poses(tmp_path / "copy.txt"), poses)
    (tmp_path / "bad.txt").write_text("1 0 0 0 1 0\n")
    with pytest.raises(InputError, match=r"bad\.txt: wrong column count on pose line 1"):
        read_kitti_poses(tmp_path / "bad.txt")
