"""The public dataset layouts written by `pc3d data synth`, read back in their own formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pc3d.data.synthetic import write_synthetic

CHAIR_SYNSET, CHAIR_PARTS = "03001627", {12, 13, 14, 15}


@pytest.fixture(scope="module")
def objects_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("objects")
    summary = write_synthetic("objects", out, count=26, seed=3, points=64, preview=True)
    return out, summary


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return out, write_synthetic("scenes", out, count=3, seed=1, points=3000, preview=True)


@pytest.fixture(scope="module")
def lidar_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lidar")
    return out, write_synthetic("lidar", out, count=2, seed=2, points=64 * 200, preview=True)


def test_object_plys_carry_labels(objects_dir):
    from pc3d.io.pointcloud import read_point_cloud

    out, summary = objects_dir
    files = sorted((out / "shapes").glob("*.ply"))
    assert len(files) == 26 and summary["categories"]["airplane"] == 2
    chair = read_point_cloud(out / "shapes" / "chair_0001.ply")
    assert len(chair) == 64 and chair.normals is not None and chair.colors is not None
    assert set(np.unique(chair.fields["part"]).tolist()) <= CHAIR_PARTS
    assert {"label", "part", "instance"} <= set(chair.fields)
    assert (out / "preview.png").is_file() and summary["preview"].endswith("preview.png")


def test_modelnet40_layout(objects_dir):
    out, _ = objects_dir
    base = out / "modelnet40_normal_resampled"
    names = (base / "modelnet40_shape_names.txt").read_text().split()
    assert names == sorted(names) and {"chair", "cup", "bookshelf", "wardrobe"} <= set(names)
    train = (base / "modelnet40_train.txt").read_text().split()
    test = (base / "modelnet40_test.txt").read_text().split()
    assert len(train) + len(test) == 26 and not set(train) & set(test) and test
    for shape_id in train + test:
        folder = shape_id.rsplit("_", 1)[0]
        table = np.loadtxt(base / folder / f"{shape_id}.txt", delimiter=",")
        assert table.shape == (64, 6)
        np.testing.assert_allclose(np.linalg.norm(table[:, 3:], axis=1), 1.0, atol=1e-5)
        assert np.linalg.norm(table[:, :3], axis=1).max() <= 1.0 + 1e-5
    line = (base / "airplane" / "airplane_0001.txt").read_text().splitlines()[0]
    assert len(line.split(",")) == 6


def test_shapenetpart_layout(objects_dir):
    out, _ = objects_dir
    base = out / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    mapping = dict(line.split("\t") for line in (base / "synsetoffset2category.txt").read_text().splitlines())
    assert mapping["Chair"] == CHAIR_SYNSET and "Bed" not in mapping
    entries = []
    for split in ("train", "val", "test"):
        listed = json.loads((base / "train_test_split" / f"shuffled_{split}_file_list.json").read_text())
        entries += listed
    assert len(entries) == len(set(entries)) == 16  # two shapes of each of the 8 ShapeNetPart categories
    for entry in entries:
        prefix, synset, model_id = entry.split("/")
        assert prefix == "shape_data" and len(model_id) == 32
        table = np.loadtxt(base / synset / f"{model_id}.txt")
        assert table.shape == (64, 7)
        if synset == CHAIR_SYNSET:
            assert set(table[:, 6].astype(int).tolist()) <= CHAIR_PARTS


def test_partnete_layout(objects_dir):
    from pc3d.io.pointcloud import read_point_cloud

    out, _ = objects_dir
    base = out / "partnete"
    meta = json.loads((base / "PartNetE_meta.json").read_text())
    assert meta["Chair"] == ["arm", "back", "leg", "seat", "wheel"]
    shapes = sorted((base / "data").glob("*/*/*/label.npy"))
    assert {p.parts[-4] for p in shapes} == {"few_shot", "test"}
    for label_file in shapes:
        category = label_file.parts[-3]
        labels = np.load(label_file, allow_pickle=True).item()
        semantic, instance = labels["semantic_seg"], labels["instance_seg"]
        cloud = read_point_cloud(label_file.with_name("pc.ply"))
        assert len(cloud) == len(semantic) == len(instance) and cloud.colors is not None
        assert semantic.min() >= -1 and semantic.max() < len(meta[category])
        np.testing.assert_array_equal(semantic < 0, instance < 0)
        if category == "Chair":
            assert (semantic == meta["Chair"].index("leg")).any()
    val = json.loads((base / "val_list.json").read_text())
    for category, ids in val.items():
        assert all((base / "data" / "test" / category / i / "pc.ply").is_file() for i in ids)


def test_scannet_pointcept_layout(scenes_dir):
    out, summary = scenes_dir
    scenes = sorted((out / "scannet").glob("*/scene*"))
    assert {p.parent.name for p in scenes} == {"train", "val"} and len(scenes) == 3
    for folder in scenes:
        coord, color = np.load(folder / "coord.npy"), np.load(folder / "color.npy")
        normal, segment = np.load(folder / "normal.npy"), np.load(folder / "segment20.npy")
        instance = np.load(folder / "instance.npy")
        assert coord.dtype == np.float32 and coord.shape == (3000, 3)
        assert color.dtype == np.uint8 and color.shape == (3000, 3)
        assert normal.dtype == np.float32 and normal.shape == (3000, 3)
        assert segment.dtype == np.int64 and segment.shape == (3000,) and instance.dtype == np.int64
        assert segment.min() >= -1 and segment.max() <= 19
        # NYU40 wall 1 / floor 2 are ScanNet-20 classes 0 / 1; chairs (NYU40 5) are class 4
        detection = out / "scannet_detection" / "scannet_train_detection_data"
        sem = np.load(detection / f"{folder.name}_sem_label.npy")
        lookup = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 11: 10}
        np.testing.assert_array_equal(segment, [lookup[int(s)] for s in sem])


def test_scannet_detection_layout(scenes_dir):
    out, _ = scenes_dir
    base = out / "scannet_detection"
    train = (base / "meta_data" / "scannetv2_train.txt").read_text().split()
    val = (base / "meta_data" / "scannetv2_val.txt").read_text().split()
    assert len(train) == 2 and len(val) == 1
    for name in train + val:
        prefix = base / "scannet_train_detection_data" / name
        vert = np.load(f"{prefix}_vert.npy")
        sem, ins = np.load(f"{prefix}_sem_label.npy"), np.load(f"{prefix}_ins_label.npy")
        boxes = np.load(f"{prefix}_bbox.npy")
        assert vert.dtype == np.float32 and vert.shape == (3000, 6) and vert[:, 3:].max() <= 255
        assert sem.dtype == np.uint32 and ins.dtype == np.uint32 and ins.min() >= 1
        assert boxes.shape[1] == 7 and len(boxes) >= 5
        assert not np.isin(boxes[:, 6], [1, 2]).any()  # no wall/floor boxes, as in VoteNet/3DETR
        for box in boxes:  # each box holds all points of the one instance of its class inside it
            inside = np.all(np.abs(vert[:, :3] - box[:3]) <= box[3:6] / 2 + 1e-5, axis=1)
            candidates = [i for i in np.unique(ins[sem == box[6]])
                          if np.all(inside[ins == i])]
            assert candidates


def test_semantickitti_layout(lidar_dir):
    from pc3d.data.synthetic.lidar import generate_lidar_sequence, lidar_rng
    from pc3d.io.images import read_image

    out, summary = lidar_dir
    seq = out / "semantic_kitti" / "sequences" / "00"
    frames = generate_lidar_sequence(lidar_rng(2, 0), 2, rays_per_frame=64 * 200)
    for k, frame in enumerate(frames):
        scan = np.fromfile(seq / "velodyne" / f"{k:06d}.bin", dtype="<f4").reshape(-1, 4)
        np.testing.assert_array_equal(scan[:, :3], frame.points)
        np.testing.assert_array_equal(scan[:, 3], frame.intensity)
        raw = np.fromfile(seq / "labels" / f"{k:06d}.label", dtype="<u4")
        assert len(raw) == len(scan)
        expected = frame.semantic.astype(np.uint64) + frame.instance.astype(np.uint64) * 65536
        np.testing.assert_array_equal(raw.astype(np.uint64), expected)  # semantic | instance << 16
        np.testing.assert_array_equal(read_image(seq / "image_2" / f"{k:06d}.png"), frame.image)
    lines = dict(line.split(":", 1) for line in (seq / "calib.txt").read_text().splitlines())
    assert set(lines) == {"P0", "P1", "P2", "P3", "Tr"}
    p2 = np.array(lines["P2"].split(), dtype=float).reshape(3, 4)
    tr = np.array(lines["Tr"].split(), dtype=float).reshape(3, 4)
    np.testing.assert_allclose(p2, frames[0].calib["P2"])
    np.testing.assert_allclose(tr, frames[0].calib["Tr"][:3])
    poses = np.loadtxt(seq / "poses.txt").reshape(-1, 3, 4)
    assert poses.shape == (2, 3, 4)
    np.testing.assert_allclose(poses[0], np.eye(4)[:3], atol=1e-12)
    np.testing.assert_allclose(poses[1][:, 3], [0, 0, 1.5], atol=1e-9)  # 1.5 m forward = camera +z
    assert len((seq / "times.txt").read_text().split()) == 2
    assert summary["points_per_scan"] > 0 and (out / "preview.png").is_file()


def test_cli_synth_json(cli, tmp_path):
    result = cli("data", "synth", "objects", tmp_path / "o", "--count", "3", "--points", "32", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["count"] == 3 and set(summary["categories"]) == {"airplane", "bed", "bottle"}
    assert (tmp_path / "o" / "shapes" / "airplane_0001.ply").is_file()
    result = cli("data", "synth", "scenes", tmp_path / "s", "--count", "1", "--points", "500", "--json",
                 "--no-preview")
    assert result.code == 0, result.err
    assert "preview" not in json.loads(result.out) and not (tmp_path / "s" / "preview.png").exists()


def test_cli_synth_rejects_bad_input(cli, tmp_path):
    result = cli("data", "synth", "objects", tmp_path / "o", "--count", "0")
    assert result.code == 2 and "Traceback" not in result.err
    (tmp_path / "file").write_text("x")
    result = cli("data", "synth", "objects", tmp_path / "file", "--count", "1")
    assert result.code == 2 and "not a folder" in result.err and len(result.err.strip().splitlines()) == 1
