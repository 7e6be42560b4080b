"""Conventions of real files: .xyz column meanings (Open3D), --columns, OFF colours, PLY variants,
float64 coordinates, and `-1` as an ignore label in panoptic evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.io.mesh import read_mesh
from pc3d.io.ply import read_ply
from pc3d.io.pointcloud import PointCloud, column_names, parse_columns, read_point_cloud, write_point_cloud

NORMALS_TEXT = "0 0 0 0 0 1\n1 0 0 0 -1 0\n0 1 0 1 0 0\n0 0 1 -0.6 0.8 0\n"


def test_six_column_xyz_is_xyz_plus_normals(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_text(NORMALS_TEXT)
    cloud = read_point_cloud(path)
    assert cloud.colors is None
    np.testing.assert_allclose(cloud.normals[3], [-0.6, 0.8, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(cloud.points[1], [1, 0, 0])


def test_three_column_xyz_and_xyzn(tmp_path):
    (tmp_path / "a.xyz").write_text("1 2 3\n4 5 6\n")
    assert read_point_cloud(tmp_path / "a.xyz").points.tolist() == [[1, 2, 3], [4, 5, 6]]
    (tmp_path / "a.xyzn").write_text(NORMALS_TEXT)
    assert read_point_cloud(tmp_path / "a.xyzn").normals.shape == (4, 3)
    (tmp_path / "bad.xyzn").write_text("1 2 3\n")
    with pytest.raises(InputError, match="wrong column count 3 for a .xyzn"):
        read_point_cloud(tmp_path / "bad.xyzn")


def test_xyzrgb_colours_are_unit_floats_as_open3d(tmp_path):
    path = tmp_path / "c.xyzrgb"
    path.write_text("0 0 0 1 0 0\n1 0 0 0 1 0\n0 1 0 0.5 0.5 0.5\n")
    cloud = read_point_cloud(path)
    # "1 0 0" is red in Open3D's .xyzrgb, not (1, 0, 0) out of 255
    assert cloud.colors.tolist() == [[255, 0, 0], [0, 255, 0], [128, 128, 128]]


@pytest.mark.parametrize("suffix", [".xyzn", ".xyzrgb"])
def test_open3d_suffixes_round_trip_without_header(tmp_path, suffix):
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(20, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    cloud = PointCloud(rng.normal(size=(20, 3)), rng.integers(0, 256, (20, 3)), normals)
    path = tmp_path / f"c{suffix}"
    write_point_cloud(path, cloud)
    assert not path.read_text().startswith("#")  # Open3D's readers take no header
    back = read_point_cloud(path)
    np.testing.assert_array_equal(back.points, cloud.points)
    if suffix == ".xyzn":
        np.testing.assert_array_equal(back.normals, cloud.normals)
    else:
        np.testing.assert_array_equal(back.colors, cloud.colors)


def test_txt_keeps_s3dis_colours_and_hints_at_columns(tmp_path):
    (tmp_path / "room.txt").write_text("0 0 0 255 128 0\n1 1 1 10 20 30\n")
    assert read_point_cloud(tmp_path / "room.txt").colors.tolist() == [[255, 128, 0], [10, 20, 30]]
    (tmp_path / "normals.txt").write_text(NORMALS_TEXT)
    with pytest.raises(InputError, match="--columns x,y,z,nx,ny,nz") as err:
        read_point_cloud(tmp_path / "normals.txt")
    assert "\n" not in str(err.value)
    cloud = read_point_cloud(tmp_path / "normals.txt", columns=parse_columns("x,y,z,nx,ny,nz"))
    assert cloud.normals[1].tolist() == [0, -1, 0] and cloud.colors is None


def test_columns_name_skip_and_label(tmp_path):
    path = tmp_path / "t.xyz"
    path.write_text("1 2 3 9 200 100 50 4\n4 5 6 9 0 0 0 7\n")
    with column_names(parse_columns("x,y,z,_,r,g,b,label")):  # what the CLI's --columns sets
        cloud = read_point_cloud(path)
    assert cloud.colors.tolist() == [[200, 100, 50], [0, 0, 0]]
    assert cloud.fields["label"].tolist() == [4, 7] and cloud.fields["label"].dtype == np.int64
    assert "_" not in cloud.fields
    with pytest.raises(InputError, match="the file has 8 columns but --columns names 6"):
        read_point_cloud(path, columns=parse_columns("x,y,z,nx,ny,nz"))
    # outside the block the suffix's convention applies again (8 columns fits no layout)
    with pytest.raises(InputError, match="wrong column count 8"):
        read_point_cloud(path)


def test_columns_on_npy_and_refused_on_self_describing_formats(tmp_path):
    table = np.array([[0, 0, 0, 0, 0, 1.0], [1, 1, 1, 0, -1, 0]])
    np.save(tmp_path / "t.npy", table)
    assert read_point_cloud(tmp_path / "t.npy", columns=("x", "y", "z", "nx", "ny", "nz")).normals[1, 1] == -1
    write_point_cloud(tmp_path / "c.ply", PointCloud(table[:, :3]))
    with pytest.raises(InputError, match="a .ply file names its own"):
        read_point_cloud(tmp_path / "c.ply", columns=("x", "y", "z"))


@pytest.mark.parametrize("text, problem", [
    ("x,y,nx,ny,nz", "needs x, y and z"),
    ("x,y,z,x", "repeats x"),
    ("x,y,z,nx,ny", "go together"),
    ("x,y,z,a-b", "not a column name"),
])
def test_parse_columns_refuses_unusable_names(text, problem):
    with pytest.raises(InputError, match=problem):
        parse_columns(text)


def test_detect_passes_columns_to_the_reader(cli, tmp_path):
    path = tmp_path / "scan.txt"
    path.write_text(NORMALS_TEXT * 8)
    plain = cli("detect", path, "--checkpoint", tmp_path / "missing.json")
    assert plain.code == 2 and "not a colour" in plain.err and len(plain.err.strip().splitlines()) == 1
    named = cli("detect", path, "--columns", "x,y,z,nx,ny,nz", "--checkpoint", tmp_path / "missing.json")
    # the cloud now reads; what fails is the (missing) detector, in one line
    assert named.code == 2 and "not a colour" not in named.err and "missing.json" in named.err
    assert len(named.err.strip().splitlines()) == 1 and "Traceback" not in named.err
    bad = cli("detect", path, "--columns", "x,y,nx,ny,nz", "--checkpoint", tmp_path / "missing.json")
    assert bad.code == 2 and bad.err.startswith("pc3d: error: --columns") and bad.out == ""


# --------------------------------------------------------------------------- OFF


@pytest.mark.parametrize("header, vertex_tail, face_tail", [
    ("COFF", " 0.9 0.1 0.1 1.0", ""),  # float vertex colours
    ("COFF", " 230 25 25 255", ""),  # int vertex colours
    ("OFF", "", " 0.9 0.1 0.1"),  # float face colours
    ("OFF", "", " 255 0 0 255"),  # int face colours
    ("NOFF", " 0 0 1", ""),
    ("CNOFF", " 0 0 1 0.2 0.4 0.6 1", " 0.5 0.5 0.5 1"),
])
def test_off_with_colours_and_normals_reads(tmp_path, header, vertex_tail, face_tail):
    corners = ["0 0 0", "1 0 0", "1 1 0", "0 1 0"]
    text = f"{header}\n4 2 0\n" + "".join(f"{c}{vertex_tail}\n" for c in corners)
    text += f"3 0 1 2{face_tail}\n3 0 2 3{face_tail}\n"
    (tmp_path / "m.off").write_text(text)
    vertices, faces = read_mesh(tmp_path / "m.off")
    assert vertices.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert read_point_cloud(tmp_path / "m.off", num_points=50).points.shape == (50, 3)


def test_off_short_vertex_line_is_one_line_error(tmp_path):
    (tmp_path / "m.off").write_text("OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n")
    with pytest.raises(InputError, match="OFF vertex 1"):
        read_mesh(tmp_path / "m.off")


# --------------------------------------------------------------------------- PLY


def _ascii_ply(coord: str, colour: str, rows: list[str], face_name: str = "vertex_indices") -> str:
    header = ["ply", "format ascii 1.0", "comment exported by a scanner", "obj_info scanner v1",
              f"element vertex {len(rows)}", f"property {coord} x", "comment between properties",
              f"property {coord} y", f"property {coord} z", f"property {colour} red",
              f"property {colour} green", f"property {colour} blue", "element face 1",
              f"property list uchar int {face_name}", "end_header"]
    return "\n".join(header + rows + ["3 0 1 2"]) + "\n"


@pytest.mark.parametrize("colour, values, expected", [
    ("uchar", ("255 0 0", "0 255 0", "0 0 255"), [[255, 0, 0], [0, 255, 0], [0, 0, 255]]),
    ("int", ("255 0 0", "0 255 0", "0 0 255"), [[255, 0, 0], [0, 255, 0], [0, 0, 255]]),
    ("float", ("1 0 0", "0 1 0", "0 0 0.5"), [[255, 0, 0], [0, 255, 0], [0, 0, 128]]),
    ("ushort", ("65535 0 0", "0 65535 0", "0 0 32896"), [[255, 0, 0], [0, 255, 0], [0, 0, 128]]),
])
@pytest.mark.parametrize("face_name", ["vertex_indices", "vertex_index"])
def test_ply_colour_types_comments_and_face_names(tmp_path, colour, values, expected, face_name):
    rows = [f"{xyz} {rgb}" for xyz, rgb in zip(("0 0 0", "1 0 0", "0 1 0"), values, strict=True)]
    path = tmp_path / "c.ply"
    path.write_text(_ascii_ply("float", colour, rows, face_name))
    assert read_point_cloud(path).colors.tolist() == expected
    assert read_mesh(path)[1].tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("binary", [True, False])
def test_ply_double_coordinates_kept_in_float64(tmp_path, binary):
    # UTM-like coordinates: float32 would round 5000000.654321 to 5000000.5
    points = np.array([[500000.123456, 5000000.654321, 12.5], [500001.1, 5000000.5, 0.0],
                       [500000.5, 5000001.25, 3.0]])
    path = tmp_path / "utm.ply"
    write_point_cloud(path, PointCloud(points, keep_float64=True), binary=binary)
    header, elements = read_ply(path)
    assert elements["vertex"]["x"].dtype == np.float64
    precise = read_point_cloud(path, keep_float64=True)
    assert precise.points.dtype == np.float64 and precise.keep_float64
    np.testing.assert_array_equal(precise.points, points)
    assert precise.select(np.array([0, 2])).points.dtype == np.float64
    # the default stays float32, what the models consume
    assert read_point_cloud(path).points.dtype == np.float32


def test_float32_ply_is_not_widened(tmp_path):
    path = tmp_path / "f.ply"
    write_point_cloud(path, PointCloud(np.zeros((3, 3), np.float32)))
    assert read_point_cloud(path, keep_float64=True).points.dtype == np.float32


def test_text_keep_float64(tmp_path):
    (tmp_path / "p.xyz").write_text("500000.123456 5000000.654321 1\n")
    assert read_point_cloud(tmp_path / "p.xyz", keep_float64=True).points[0, 1] == 5000000.654321


# --------------------------------------------------------------------------- panoptic ignore -1


def _panoptic_files(tmp_path, gt_sem, gt_inst, pred_sem, pred_inst):
    tmp_path.mkdir(exist_ok=True)
    np.savez(tmp_path / "gt.npz", semantic=np.array(gt_sem), instance=np.array(gt_inst))
    np.savez(tmp_path / "pred.npz", semantic=np.array(pred_sem), instance=np.array(pred_inst))
    return tmp_path / "pred.npz", tmp_path / "gt.npz"


def test_panoptic_accepts_minus_one_when_it_is_the_ignore_class(cli, tmp_path):
    sem = [0] * 60 + [1] * 60
    inst = [0] * 60 + [1] * 30 + [2] * 30
    pred_sem = [0] * 60 + [1] * 60
    pred_inst = [0] * 60 + [1] * 30 + [2] * 25 + [3] * 5
    # 40 unlabelled points (-1) whose prediction is anything: they must not count at all
    pred, gt = _panoptic_files(tmp_path / "a", sem + [-1] * 40, inst + [-1] * 40,
                               pred_sem + [1] * 40, pred_inst + [7] * 40)
    ref_pred, ref_gt = _panoptic_files(tmp_path / "b", sem, inst, pred_sem, pred_inst)
    refused = cli("eval", "panoptic", "--pred", pred, "--gt", gt, "--num-classes", "2", "--json")
    assert refused.code == 2 and "semantic label -1 out of range" in refused.err
    result = cli("eval", "panoptic", "--pred", pred, "--gt", gt, "--num-classes", "2",
                 "--ignore-classes", "-1", "--min-points", "1", "--json")
    assert result.code == 0, result.err
    reference = cli("eval", "panoptic", "--pred", ref_pred, "--gt", ref_gt, "--num-classes", "2",
                    "--min-points", "1", "--json")
    got, want = json.loads(result.out)["summary"], json.loads(reference.out)["summary"]
    assert got == want and 0 < got["pq"] < 1
    assert json.loads(result.out)["settings"]["ignore_classes"] == [-1]


def test_panoptic_prediction_of_minus_one_is_a_miss():
    from pc3d.metrics.panoptic import panoptic_metrics

    gt_sem, gt_inst = np.array([1] * 10), np.array([1] * 10)
    pred_sem, pred_inst = np.array([-1] * 10), np.array([-1] * 10)
    metrics = panoptic_metrics([(pred_sem, pred_inst, gt_sem, gt_inst)], 2, ignore_classes=(-1,),
                               thing_classes=(1,), min_points=1)
    assert metrics["fn"] == [0, 1] and metrics["fp"] == [0, 0] and metrics["per_class_iou"][1] == 0.0
    with pytest.raises(ValueError, match="-1 is outside"):
        panoptic_metrics([(pred_sem, pred_inst, gt_sem, gt_inst)], 2, ignore_classes=(), min_points=1)
