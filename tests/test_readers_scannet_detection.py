"""Scene readers: ScanNet 3DETR layout, ScanNet Pointcept layout (boxes from instances), SUN RGB-D VoteNet layout."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.data.labels import SCANNET_DET_NYU40_IDS
from pc3d.data.readers.scannet_detection import (
    ScanNetDetection,
    ScanNetPointceptDetection,
    boxes_from_instances,
    nyu40_to_det,
)
from pc3d.data.readers.sunrgbd import SunRGBD, enclosing_axis_aligned
from pc3d.errors import InputError


@pytest.fixture(scope="module")
def scenes():
    from pc3d.data.synthetic.scenes import generate_scene, scene_rng

    return [generate_scene(scene_rng(0, i), 600, name=f"scene{i:04d}_00") for i in range(3)]


def test_scannet_detection_layout_roundtrip(scenes, tmp_path):
    from pc3d.data.layouts import held_out, write_scannet_detection

    root = write_scannet_detection(tmp_path, scenes)
    val = held_out(len(scenes))
    for split, wanted in (("train", [s for i, s in enumerate(scenes) if i not in val]),
                          ("val", [s for i, s in enumerate(scenes) if i in val])):
        reader = ScanNetDetection(root, split)
        assert [r.name for r in reader] == [s.name for s in wanted]
        for record, scene in zip(reader, wanted, strict=True):
            assert np.array_equal(record.points, scene.points)
            assert np.array_equal(record.colors, scene.colors)
            keep = [i for i, b in enumerate(scene.boxes) if int(b[6]) in SCANNET_DET_NYU40_IDS]
            assert np.allclose(record.boxes, scene.boxes[keep, :6])
            assert record.labels.tolist() == [SCANNET_DET_NYU40_IDS.index(int(scene.boxes[i, 6])) for i in keep]


def test_nyu40_mapping_drops_wall_and_floor():
    assert nyu40_to_det(np.array([1, 2, 3, 39, 40])).tolist() == [-1, -1, 0, 17, -1]


def test_scannet_detection_errors_name_the_file(scenes, tmp_path):
    from pc3d.data.layouts import write_scannet_detection

    root = write_scannet_detection(tmp_path, scenes)
    data = root / "scannet_train_detection_data"
    (data / "scene0001_00_ins_label.npy").write_bytes(np.zeros(3, np.uint32).tobytes())  # not an npy
    with pytest.raises(InputError, match="scene0001_00_ins_label.npy"):
        ScanNetDetection(root, "train")[1]
    np.save(data / "scene0000_00_ins_label.npy", np.zeros(5, np.uint32))
    with pytest.raises(InputError, match="5 entries"):
        ScanNetDetection(root, "train")[0]
    (data / "scene0000_00_vert.npy").unlink()
    with pytest.raises(InputError, match="scene0000_00_vert.npy"):
        ScanNetDetection(root, "train")
    with pytest.raises(InputError, match="scannetv2_test.txt"):
        ScanNetDetection(root, "test")


def test_pointcept_boxes_are_tight_instance_boxes(scenes, tmp_path):
    from pc3d.data.labels import scannet20_index
    from pc3d.data.layouts import write_scannet_pointcept

    root = write_scannet_pointcept(tmp_path, scenes)
    reader = ScanNetPointceptDetection(root, "train")
    record = reader[0]
    scene = scenes[0]
    seg = np.array([scannet20_index(int(c)) for c in scene.semantic])
    expected = {}
    for inst in np.unique(scene.instance):  # numpy loop: min/max per instance of a detection class
        pts = scene.points[scene.instance == inst].astype(np.float64)
        values, counts = np.unique(seg[scene.instance == inst], return_counts=True)
        label = values[np.argmax(counts)] - 2
        if label >= 0:
            expected[inst] = (np.concatenate([(pts.min(0) + pts.max(0)) / 2, pts.max(0) - pts.min(0)]), label)
    assert len(record.boxes) == len(expected)
    for box, label, (ref_box, ref_label) in zip(record.boxes, record.labels, expected.values(), strict=True):
        assert np.allclose(box, ref_box, atol=1e-6) and label == ref_label
    boxes, labels = boxes_from_instances(scene.points, seg, -np.ones(len(seg), np.int64))
    assert boxes.shape == (0, 6) and labels.shape == (0,)


def test_sunrgbd_votenet_layout(tmp_path):
    folder = tmp_path / "sunrgbd_pc_bbox_votes_50k_v1_train"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pc = np.column_stack([rng.random((100, 3)), rng.random((100, 3))]).astype(np.float32)
    np.savez_compressed(folder / "000001_pc.npz", pc=pc)
    rows = np.array([[1, 2, 0.5, 0.4, 0.2, 0.3, 0.0, 3], [0, 0, 1, 0.4, 0.2, 0.3, np.pi / 2, 1],
                     [0, 0, 1, 0.4, 0.2, 0.3, 0.3, 0]])
    np.save(folder / "000001_bbox.npy", rows)
    record = SunRGBD(tmp_path, "train")[0]
    assert np.allclose(record.points, pc[:, :3])
    assert np.array_equal(record.colors, np.rint(pc[:, 3:] * 255).astype(np.uint8))
    assert record.labels.tolist() == [3, 1, 0]
    assert np.allclose(record.boxes[0], [1, 2, 0.5, 0.8, 0.4, 0.6])
    assert np.allclose(record.boxes[1], [0, 0, 1, 0.4, 0.8, 0.6])
    # the rotated box's corners, enclosed by hand
    c, s = np.cos(0.3), np.sin(0.3)
    corners = np.array([[sx * 0.4, sy * 0.2] for sx in (-1, 1) for sy in (-1, 1)]) @ np.array([[c, s], [-s, c]])
    assert np.allclose(record.boxes[2, 3:5], corners.max(0) - corners.min(0))
    assert np.allclose(enclosing_axis_aligned(rows[:1]), record.boxes[:1])
    np.savez(folder / "000002_pc.npz", points=pc)
    with pytest.raises(InputError, match="no 'pc' array"):
        SunRGBD(tmp_path, "train")[1]
    with pytest.raises(InputError, match="sunrgbd_pc_bbox_votes_50k_v1_val"):
        SunRGBD(tmp_path, "val")
