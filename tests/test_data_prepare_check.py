"""`pc3d data check`: a prepared folder passes with its counts; a missing split, an out-of-range label and a
truncated file each end in one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_data_prepare import make_modelnet_raw, make_s3dis_raw, make_scannet_raw

from pc3d.data.prepare import prepare


@pytest.fixture()
def scannet_out(tmp_path):
    make_scannet_raw(tmp_path / "raw")
    prepare("scannet", tmp_path / "raw", tmp_path / "out")
    return tmp_path / "out"


def one_line_failure(result, *needles: str) -> None:
    assert result.code == 2, result.err
    assert result.err.startswith("pc3d: error: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err and result.out == ""
    for needle in needles:
        assert needle in result.err, result.err


def test_check_reports_counts_ranges_and_extents(cli, scannet_out):
    result = cli("data", "check", "scannet", scannet_out, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert len(result.out.strip().splitlines()) == 1 and report["ok"]
    train = report["splits"]["train"]
    points = len(np.load(scannet_out / "scannet" / "train" / "scene0000_00" / "coord.npy"))
    assert train["items"] == 1 and train["points"] == points
    assert train["instances"] == 8  # every segGroup is an instance in Pointcept's layout
    assert 0 <= train["label_range"][0] <= train["label_range"][1] < 20
    assert train["extent"]["min"] == [0, 0, 0] and train["extent"]["max"] == [4, 3, 2.5]
    assert 0 <= train["color_range"][0] <= train["color_range"][1] <= 255
    assert report["splits"]["test"]["labelled_points"] == 0
    detection = json.loads(cli("data", "check", "scannet_detection", scannet_out, "--json").out)
    assert detection["splits"]["train"]["boxes"] == 3 and detection["ok"]


def test_missing_split(cli, scannet_out):
    for path in sorted((scannet_out / "scannet" / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (scannet_out / "scannet" / "val").rmdir()
    one_line_failure(cli("data", "check", "scannet", scannet_out), "split 'val' missing")


def test_out_of_range_label(cli, scannet_out):
    path = scannet_out / "scannet" / "train" / "scene0000_00" / "segment20.npy"
    labels = np.load(path)
    labels[5] = 25
    np.save(path, labels)
    one_line_failure(cli("data", "check", "scannet", scannet_out), "segment20.npy", "label 25 outside -1..19")


def test_truncated_file(cli, scannet_out):
    path = scannet_out / "scannet" / "val" / "scene0001_00" / "coord.npy"
    path.write_bytes(path.read_bytes()[:-20])
    one_line_failure(cli("data", "check", "scannet", scannet_out), "coord.npy", "truncated")


def test_rows_disagree(cli, scannet_out):
    path = scannet_out / "scannet" / "train" / "scene0000_00" / "instance.npy"
    np.save(path, np.load(path)[:-1])
    one_line_failure(cli("data", "check", "scannet", scannet_out), "instance.npy", "expected (N,)")


def test_modelnet40_truncated_text_file(cli, tmp_path):
    make_modelnet_raw(tmp_path / "raw")
    prepare("modelnet40", tmp_path / "raw", tmp_path / "out")
    assert cli("data", "check", "modelnet40", tmp_path / "out").code == 0
    path = tmp_path / "out" / "modelnet40_normal_resampled" / "chair" / "chair_0002.txt"
    path.write_text(path.read_text()[:-30])  # cut inside the last line
    one_line_failure(cli("data", "check", "modelnet40", tmp_path / "out"), "chair_0002.txt", "line 10000")


def test_s3dis_missing_area_and_bad_label(cli, tmp_path):
    make_s3dis_raw(tmp_path / "raw")
    prepare("s3dis", tmp_path / "raw", tmp_path / "out")
    one_line_failure(cli("data", "check", "s3dis", tmp_path / "out"), "split 'Area_2' missing")
    for k in (2, 3, 4, 6):  # complete the six areas with copies of a prepared room
        target = tmp_path / "out" / "s3dis" / f"Area_{k}" / "office_1"
        target.mkdir(parents=True)
        for src in (tmp_path / "out" / "s3dis" / "Area_1" / "office_1").iterdir():
            (target / src.name).write_bytes(src.read_bytes())
    report = json.loads(cli("data", "check", "s3dis", tmp_path / "out", "--json").out)
    assert report["splits"]["Area_5"]["points"] == 131 and report["splits"]["Area_1"]["label_range"] == [0, 12]
    path = tmp_path / "out" / "s3dis" / "Area_6" / "office_1" / "segment.npy"
    np.save(path, np.full(len(np.load(path)), 13, np.int16))
    one_line_failure(cli("data", "check", "s3dis", tmp_path / "out"), "label 13 outside -1..12")


def test_semantickitti_sequences_and_label_sizes(cli, tmp_path):
    import shutil

    from pc3d.data.synthetic import write_synthetic

    write_synthetic("lidar", tmp_path / "syn", count=1, seed=0, points=None, preview=False)
    root = tmp_path / "syn" / "semantic_kitti"
    one_line_failure(cli("data", "check", "semantickitti", root), "split 'train' incomplete", "sequence 01")
    for seq in ("01", "02", "03", "04", "05", "06", "07", "08", "09", "10"):
        shutil.copytree(root / "sequences" / "00", root / "sequences" / seq)
    report = json.loads(cli("data", "check", "semantickitti", root, "--json").out)
    assert report["splits"]["val"]["items"] == 1 and report["missing_splits"] == ["test"]
    label = next((root / "sequences" / "08" / "labels").glob("*.label"))
    label.write_bytes(label.read_bytes()[:-8])
    one_line_failure(cli("data", "check", "semantickitti", root), label.name, "truncated")
