"""Raw download layouts written by the synthetic generator -> `pc3d data prepare` -> `pc3d data check`
-> the readers -> a few training steps of the presets: the prepared labels, instance ids, boxes and axis
alignment equal the generator's ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pc3d.data.synthetic.raw import AXIS_ALIGNMENT, S3DIS_CLASS_OF_NYU40, _generate_scenes, write_raw

SEED, POINTS = 3, 2500


@pytest.fixture(scope="module")
def scannet(tmp_path_factory):
    from pc3d.data.prepare import prepare

    base = tmp_path_factory.mktemp("scannet")
    write_raw("scannet", base / "raw", count=3, seed=SEED, points=POINTS)
    summary = prepare("scannet", base / "raw", base / "out")
    return base, summary, _generate_scenes(3, SEED, POINTS)


def test_scannet_raw_layout_is_the_download(scannet):
    base, summary, scenes = scannet
    raw = base / "raw"
    assert summary["splits"] == {"train": 2, "val": 1} and summary["labels_not_in_tsv"] == []
    assert (raw / "scannetv2_val.txt").read_text() == "scene0002_00\n"  # held out: the last of three
    groups = json.loads((raw / "scans" / "scene0000_00" / "scene0000_00.aggregation.json").read_text())["segGroups"]
    assert len(groups) == len(np.unique(scenes[0].instance))
    # an object is two over-segments (one when it has a single point), as segGroups gather several in the release
    sizes = [len(g["segments"]) for g in groups]
    assert set(sizes) <= {1, 2} and sizes.count(2) > len(sizes) / 2


def test_scannet_pointcept_layout_equals_the_generator(scannet):
    from pc3d.data.labels import scannet20_index
    from pc3d.data.prepare.labels200 import SCANNET200_TSV_IDS
    from pc3d.data.synthetic.raw import SCANNET_RAW_CATEGORY

    base, _, scenes = scannet
    for split, scene in (("train", scenes[0]), ("train", scenes[1]), ("val", scenes[2])):
        folder = base / "out" / "scannet" / split / scene.name
        coord = np.load(folder / "coord.npy")
        # the raw mesh is the generator's room moved by A^-1; Pointcept keeps it unaligned
        unaligned = (np.hstack([scene.points, np.ones((len(scene.points), 1))]) @ np.linalg.inv(AXIS_ALIGNMENT).T)
        np.testing.assert_allclose(coord, unaligned[:, :3], atol=1e-5)
        np.testing.assert_array_equal(np.load(folder / "color.npy"), scene.colors)
        np.testing.assert_array_equal(np.load(folder / "segment20.npy"), [scannet20_index(c) for c in scene.semantic])
        tsv_of = {nyu: tsv for nyu, (_, tsv) in SCANNET_RAW_CATEGORY.items()}
        np.testing.assert_array_equal(np.load(folder / "segment200.npy"),
                                      [SCANNET200_TSV_IDS.index(tsv_of[int(c)]) for c in scene.semantic])
        np.testing.assert_array_equal(np.load(folder / "instance.npy"), scene.instance)
        # vertex normals of the neighbour triangles follow the generator's surface normals (rotated by A^-1)
        normals = np.load(folder / "normal.npy")
        truth = scene.normals @ np.linalg.inv(AXIS_ALIGNMENT)[:3, :3].T
        # (a point whose neighbourhood holds no two in-plane points starts no triangle: 9 % at this sparse
        # density; such a vertex gets a normal only from its neighbours' triangles, or none)
        has = np.linalg.norm(normals, axis=1) > 0.5
        assert has.mean() > 0.85 and np.mean((normals[has] * truth[has]).sum(axis=1) > 0.9) > 0.98


def test_scannet_detection_layout_is_aligned_with_the_generator_boxes(scannet):
    from pc3d.data.labels import SCANNET_DET_NYU40_IDS

    base, _, scenes = scannet
    data = base / "out" / "scannet_detection" / "scannet_train_detection_data"
    for scene in scenes:
        vert = np.load(data / f"{scene.name}_vert.npy")
        np.testing.assert_allclose(vert[:, :3], scene.points, atol=1e-4)  # axis alignment applied
        np.testing.assert_array_equal(np.load(data / f"{scene.name}_sem_label.npy"), scene.semantic)
        ins = np.load(data / f"{scene.name}_ins_label.npy").astype(np.int64)
        np.testing.assert_array_equal(ins, scene.instance + 1)
        boxes = np.load(data / f"{scene.name}_bbox.npy")
        keep = np.isin(scene.boxes[:, 6], SCANNET_DET_NYU40_IDS)
        truth, truth_ids = scene.boxes[keep], scene.box_instance[keep]
        assert len(boxes) == len(truth) > 0
        for box, gt, instance in zip(boxes, truth, truth_ids, strict=True):  # both ordered by instance id
            assert box[6] == gt[6]
            inside = vert[ins == instance + 1, :3]
            low, high = box[:3] - box[3:6] / 2, box[:3] + box[3:6] / 2
            assert (inside >= low - 1e-5).all() and (inside <= high + 1e-5).all()
            # tight around the sampled points, so inside the generator's box (built from the mesh vertices)
            g_low, g_high = gt[:3] - gt[3:6] / 2, gt[:3] + gt[3:6] / 2
            assert (low >= g_low - 1e-4).all() and (high <= g_high + 1e-4).all()
            # and exactly the extent of the generator's points of that instance
            own = scene.points[scene.instance == instance]
            np.testing.assert_allclose(box[:6], [*(own.min(0) + own.max(0)) / 2, *(own.max(0) - own.min(0))],
                                       atol=1e-4)


@pytest.mark.slow
def test_scannet_prepared_folder_checks_reads_and_trains(scannet, cli, tmp_path):
    from pc3d.data.readers.scannet_detection import ScanNetDetection

    base, _, scenes = scannet
    det = base / "out" / "scannet_detection"
    for name, root in (("scannet", base / "out" / "scannet"), ("scannet_detection", det)):
        result = cli("data", "check", name, root, "--json")
        assert result.code == 0, result.err
    val = ScanNetDetection(det, "val")
    assert val.names == ["scene0002_00"] and len(val[0].boxes) > 0
    result = cli("finetune", "det-scannet-quickstart", "--set", "data.source=folder", "--set",
                 "data.dataset=scannet_detection", "--set", f"data.root={det}", "--set", "data.num_points=1024",
                 "--set", "train.max_steps=2", "--set", "train.batch_size=2", "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["steps"] == 2


@pytest.fixture(scope="module")
def s3dis(tmp_path_factory):
    from pc3d.data.prepare import prepare

    base = tmp_path_factory.mktemp("s3dis")
    write_raw("s3dis", base / "raw", count=6, seed=SEED, points=1500)
    summary = prepare("s3dis", base / "raw", base / "out")
    return base, summary, _generate_scenes(6, SEED, 1500)


def test_s3dis_prepared_labels_and_instances_equal_the_generator(s3dis):
    from pc3d.data.readers.s3dis import S3DIS_CLASSES

    base, summary, scenes = s3dis
    assert summary["rooms"] == 6 and summary["dropped_lines"] == 0 and summary["repaired_lines"] == 0
    for i, scene in enumerate(scenes):
        folder = base / "out" / "s3dis" / f"Area_{i + 1}" / "office_1"
        coord = np.load(folder / "coord.npy")
        segment, instance = np.load(folder / "segment.npy"), np.load(folder / "instance.npy")
        assert len(coord) == len(scene.points)
        # match prepared points to the generator's by their coordinates (written with 6 decimals)
        from scipy.spatial import cKDTree

        distance, order = cKDTree(scene.points).query(coord)
        assert distance.max() < 1e-5 and len(set(order.tolist())) == len(order)
        expected = [S3DIS_CLASSES.index(S3DIS_CLASS_OF_NYU40[int(c)]) for c in scene.semantic[order]]
        np.testing.assert_array_equal(segment, expected)
        np.testing.assert_array_equal(np.load(folder / "color.npy"), scene.colors[order])
        # instances: one prepared id per generator instance and back (a bijection)
        pairs = set(zip(instance.tolist(), scene.instance[order].tolist(), strict=True))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(np.unique(scene.instance))


@pytest.mark.slow
def test_s3dis_prepared_folder_checks_reads_and_trains(s3dis, cli, tmp_path):
    from pc3d.data.readers.s3dis import S3DISPointcept

    base, _, _ = s3dis
    root = base / "out" / "s3dis"
    assert cli("data", "check", "s3dis", root).code == 0
    val = S3DISPointcept(root, "val", 5)
    assert len(val) == 1
    result = cli("finetune", "semseg-s3dis-quickstart", "--set", "data.source=folder", "--set", f"data.root={root}",
                 "--set", "data.num_points=1024", "--set", "train.max_steps=2", "--set", "train.batch_size=2",
                 "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["steps"] == 2


@pytest.fixture(scope="module")
def modelnet(tmp_path_factory):
    from pc3d.data.prepare import prepare

    base = tmp_path_factory.mktemp("modelnet")
    write_raw("modelnet40", base / "raw", count=13, seed=SEED)
    return base, prepare("modelnet40", base / "raw", base / "out")


def test_modelnet40_raw_meshes_prepare_to_the_generator_objects(modelnet, cli):
    from pc3d.data.readers.modelnet40 import ModelNet40, read_modelnet_txt
    from pc3d.data.synthetic.objects import CATEGORIES, CATEGORY_BY_NAME, Z_UP_TO_Y_UP, generate_object, object_rng

    base, summary = modelnet
    root = base / "out" / "modelnet40_normal_resampled"
    assert summary["shapes"] == {"train": 11, "test": 2}
    names = sorted(CATEGORY_BY_NAME[c.name].modelnet for c in CATEGORIES)
    assert (root / "modelnet40_shape_names.txt").read_text().split() == names
    assert cli("data", "check", "modelnet40", root).code == 0
    train = ModelNet40(root, "train", num_points=512)
    assert train.fps_cache_path is not None and train.fps_cache_path.suffix == ".npz"
    # shape i of the generator is <modelnet class>_0001 (one per category); its prepared cloud is the same surface
    from scipy.spatial import cKDTree

    def surface(i: int) -> np.ndarray:  # object i of the generator, densely, in the mesh's z-up frame, unit sphere
        obj = generate_object(CATEGORIES[i].name, object_rng(SEED, i), 8192)
        points = obj.points.astype(np.float64) @ Z_UP_TO_Y_UP
        points -= points.mean(axis=0)
        return points / np.linalg.norm(points, axis=1).max()

    for i in (0, 3, 6):  # train shapes (4 and 9 are held out); category i, <modelnet class>_0001
        category = CATEGORIES[i].name
        k = train.ids.index(f"{CATEGORY_BY_NAME[category].modelnet}_0001")
        assert train.labels[k] == names.index(CATEGORY_BY_NAME[category].modelnet)
        # the resampled file (centred on its 10 000 points; the reader re-centres its FPS subset)
        prepared = read_modelnet_txt(root / train.ids[k].rsplit("_", 1)[0] / f"{train.ids[k]}.txt")[::5, :3]
        own = cKDTree(surface(i)).query(prepared)[0].mean()
        other = cKDTree(surface(i + 1)).query(prepared)[0].mean()  # the next category's object: a control
        assert own < 0.03 and other > 3 * own, (category, own, other)


@pytest.mark.slow
def test_modelnet40_prepared_folder_trains(modelnet, tmp_path, cli):
    root = modelnet[0] / "out" / "modelnet40_normal_resampled"
    result = cli("finetune", "cls-modelnet40-quickstart", "--set", "data.source=folder", "--set",
                 "data.dataset=modelnet40", "--set", f"data.root={root}", "--set", "train.max_steps=2",
                 "--set", "train.batch_size=4", "--set", "votes=0", "--out", tmp_path / "runs", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["selection"]["test_samples"] == 2


def test_synth_raw_command(cli, tmp_path):
    result = cli("data", "synth-raw", "modelnet40", tmp_path / "raw", "--count", "3", "--json")
    assert result.code == 0, result.err
    from pc3d.data.synthetic.objects import CATEGORIES

    assert sorted(p.name for p in (tmp_path / "raw" / "ModelNet40").glob("*/*/*.off")) == \
        sorted(f"{c.modelnet}_0001.off" for c in CATEGORIES[:3])
    bad = cli("data", "synth-raw", "s3dis", tmp_path / "s3", "--count", "2")
    assert bad.code == 2 and "at least 6" in bad.err and len(bad.err.strip().splitlines()) == 1
