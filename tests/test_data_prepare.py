"""`pc3d data prepare` on tiny raw-layout fixtures built here (ScanNet meshes with segs/aggregation/axis
alignment/tsv, S3DIS rooms with a defective line, ModelNet40 .off meshes), read back with pc3d's readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pc3d.data.labels import SCANNET20_NYU40_IDS, SCANNET_DET_NYU40_IDS
from pc3d.data.prepare.labels200 import SCANNET200_TSV_IDS
from pc3d.io.ply import PlyList, write_ply

# ---------------------------------------------------------------------------------------------- ScanNet

# id raw_category nyu40id: a hand-made excerpt shaped like scannetv2-labels.combined.tsv
TSV_ROWS = [(1, "wall", 1), (2, "chair", 5), (3, "floor", 2), (4, "table", 7), (7, "kitchen cabinets", 3),
            (41, "ceiling", 22), (12, "odd thing", 40)]
ALIGN = np.array([[0.0, -1, 0, 2], [1, 0, 0, 3], [0, 0, 1, 0.5], [0, 0, 0, 1]])  # 90 deg about z + shift


def box_mesh(low, high) -> tuple[np.ndarray, np.ndarray]:
    (x0, y0, z0), (x1, y1, z1) = low, high
    vertices = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)], np.float64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))]
    return vertices, np.array(faces, np.int64)


def quad_mesh(corners) -> tuple[np.ndarray, np.ndarray]:
    return np.array(corners, np.float64), np.array([[0, 1, 2], [0, 2, 3]], np.int64)


# (label, mesh, number of over-segments the object is split into)
SCENE_OBJECTS = [
    ("floor", quad_mesh([[0, 0, 0], [4, 0, 0], [4, 3, 0], [0, 3, 0]]), 1),
    ("wall", quad_mesh([[0, 0, 0], [0, 3, 0], [0, 3, 2.5], [0, 0, 2.5]]), 1),
    ("chair", box_mesh([1, 1, 0], [1.5, 1.5, 0.9]), 1),
    ("table", box_mesh([2, 1, 0], [3.2, 1.8, 0.75]), 2),
    ("kitchen cabinets", box_mesh([3.5, 2, 0], [4, 3, 1]), 1),
    ("ceiling", quad_mesh([[0, 0, 2.5], [4, 0, 2.5], [4, 3, 2.5], [0, 3, 2.5]]), 1),
    ("odd thing", box_mesh([0.5, 2.5, 0], [0.7, 2.7, 0.2]), 1),
    ("mystery", box_mesh([3, 0.2, 0], [3.2, 0.4, 0.2]), 1),  # not in the tsv
]
UNLABELLED = box_mesh([1.2, 0.1, 0], [1.4, 0.3, 0.3])  # vertices in no segGroup


def write_scene(folder: Path, name: str, labelled: bool = True) -> dict:
    vertices, faces, seg_indices, groups = [], [], [], []
    offset, segment = 0, 0
    for object_id, (label, (v, f), pieces) in enumerate(SCENE_OBJECTS):
        vertices.append(v)
        faces.append(f + offset)
        segments = [segment + k for k in range(pieces)]
        seg_indices += [segments[i * pieces // len(v)] for i in range(len(v))]
        groups.append({"id": object_id, "objectId": object_id, "label": label, "segments": segments})
        offset, segment = offset + len(v), segment + pieces
    vertices.append(UNLABELLED[0])
    faces.append(UNLABELLED[1] + offset)
    seg_indices += [999] * len(UNLABELLED[0])
    vertices, faces = np.concatenate(vertices), np.concatenate(faces)
    rng = np.random.default_rng(len(name))
    colors = rng.integers(0, 256, (len(vertices), 3)).astype(np.uint8)
    folder.mkdir(parents=True)
    write_ply(folder / f"{name}_vh_clean_2.ply", {
        "vertex": {"x": vertices[:, 0].astype(np.float32), "y": vertices[:, 1].astype(np.float32),
                   "z": vertices[:, 2].astype(np.float32), "red": colors[:, 0], "green": colors[:, 1],
                   "blue": colors[:, 2], "alpha": np.full(len(vertices), 255, np.uint8)},
        "face": {"vertex_indices": PlyList(np.full(len(faces), 3, np.int64), faces.reshape(-1).astype(np.int32))},
    })
    if labelled:
        (folder / f"{name}_vh_clean_2.0.010000.segs.json").write_text(
            json.dumps({"sceneId": name, "segIndices": seg_indices}))
        (folder / f"{name}.aggregation.json").write_text(json.dumps({"sceneId": name, "segGroups": groups}))
        (folder / f"{name}.txt").write_text(
            "colorHeight = 968\naxisAlignment = " + " ".join(f"{v:g}" for v in ALIGN.reshape(-1)) + "\n")
    return {"vertices": vertices.astype(np.float32).astype(np.float64), "colors": colors,
            "seg_indices": np.array(seg_indices), "groups": groups}


def make_scannet_raw(raw: Path) -> dict:
    header = "id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyu40class\tmpcat40index\tmpcat40\n"
    rows = "".join(f"{i}\t{name}\t{name}\t10\t{nyu}\t1\tx\t1\tx\n" for i, name, nyu in TSV_ROWS)
    raw.mkdir(parents=True)
    (raw / "scannetv2-labels.combined.tsv").write_text(header + rows)
    (raw / "scannetv2_train.txt").write_text("scene0000_00\n")
    (raw / "scannetv2_val.txt").write_text("scene0001_00\n")
    (raw / "scannetv2_test.txt").write_text("scene0707_00\n")
    scenes = {name: write_scene(raw / "scans" / name, name) for name in ("scene0000_00", "scene0001_00")}
    scenes["scene0707_00"] = write_scene(raw / "scans_test" / "scene0707_00", "scene0707_00", labelled=False)
    return scenes


@pytest.fixture(scope="module")
def scannet(tmp_path_factory):
    base = tmp_path_factory.mktemp("scannet")
    scenes = make_scannet_raw(base / "raw")
    from pc3d.data.prepare import prepare

    summary = prepare("scannet", base / "raw", base / "out")
    return base, scenes, summary


def test_scannet_pointcept_layout_matches_the_raw_scene(scannet):
    from pc3d.data.readers.scannet import ScanNetPointcept

    base, scenes, summary = scannet
    assert summary["splits"] == {"test": 1, "train": 1, "val": 1} and summary["written"] == 3
    assert summary["labels_not_in_tsv"] == ["mystery"]
    sample = ScanNetPointcept(base / "out", "train")[0]
    raw = scenes["scene0000_00"]
    np.testing.assert_array_equal(sample["coord"], raw["vertices"].astype(np.float32))  # not axis-aligned
    np.testing.assert_array_equal(sample["color"], raw["colors"])
    folder = base / "out" / "scannet" / "train" / "scene0000_00"
    segment200 = np.load(folder / "segment200.npy")
    tsv = {name: (i, nyu) for i, name, nyu in TSV_ROWS}
    seg_indices = raw["seg_indices"]
    for group in raw["groups"]:
        points = np.isin(seg_indices, group["segments"])
        tsv_id, nyu = tsv.get(group["label"], (0, 0))
        want20 = SCANNET20_NYU40_IDS.index(nyu) if nyu in SCANNET20_NYU40_IDS else -1
        want200 = SCANNET200_TSV_IDS.index(tsv_id) if tsv_id in SCANNET200_TSV_IDS else -1
        assert (sample["segment"][points] == want20).all(), group["label"]
        assert (segment200[points] == want200).all(), group["label"]
        assert (sample["instance"][points] == group["id"]).all()
    assert sample["segment"][np.isin(seg_indices, [tsv["chair"][0]])].size  # the map was exercised
    assert (sample["segment"][seg_indices == 999] == -1).all() and (sample["instance"][seg_indices == 999] == -1).all()
    # ceiling (nyu40 22) and "odd thing" (otherprop) are outside the 20 classes; ceiling is one of the 200
    ceiling = np.isin(seg_indices, raw["groups"][5]["segments"])
    assert (sample["segment"][ceiling] == -1).all() and (segment200[ceiling] == SCANNET200_TSV_IDS.index(41)).all()
    # vertex normals: unit length; a floor corner touches only floor faces, whose normal is +-z
    np.testing.assert_allclose(np.linalg.norm(sample["normal"], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.abs(sample["normal"][0]), [0, 0, 1], atol=1e-6)
    for key in ("segment20", "segment200", "instance"):
        assert np.load(folder / f"{key}.npy").dtype == np.int64


def test_scannet_test_scene_has_geometry_only(scannet):
    base, scenes, _ = scannet
    folder = base / "out" / "scannet" / "test" / "scene0707_00"
    assert sorted(p.name for p in folder.iterdir()) == ["color.npy", "coord.npy", "normal.npy"]
    assert not (base / "out" / "scannet_detection" / "scannet_train_detection_data" / "scene0707_00_vert.npy").exists()


def test_scannet_detection_layout_is_axis_aligned_with_tight_boxes(scannet):
    from pc3d.data.readers.scannet_detection import ScanNetDetection

    base, scenes, _ = scannet
    root = base / "out" / "scannet_detection"
    record = ScanNetDetection(root, "val")[0]
    raw = scenes["scene0001_00"]
    aligned = (np.hstack([raw["vertices"], np.ones((len(raw["vertices"]), 1))]) @ ALIGN.T)[:, :3]
    np.testing.assert_allclose(record.points, aligned, atol=1e-5)
    data = root / "scannet_train_detection_data"
    bbox = np.load(data / "scene0001_00_bbox.npy")
    ins = np.load(data / "scene0001_00_ins_label.npy")
    sem = np.load(data / "scene0001_00_sem_label.npy")
    assert ins.dtype == np.uint32 and sem.dtype == np.uint32
    # chair, table, cabinet: the three detection classes in the scene, in objectId order
    assert bbox[:, 6].tolist() == [5, 7, 3] and np.isin(bbox[:, 6], SCANNET_DET_NYU40_IDS).all()
    detected = [i + 1 for i, (label, *_) in enumerate(SCENE_OBJECTS) if label in ("chair", "table", "kitchen cabinets")]
    for box, object_id in zip(bbox, detected, strict=True):
        inside = aligned[ins == object_id]
        assert len(inside) and (sem[ins == object_id] == box[6]).all()
        low, high = box[:3] - box[3:6] / 2, box[:3] + box[3:6] / 2
        assert (inside >= low - 1e-6).all() and (inside <= high + 1e-6).all()
        np.testing.assert_allclose(np.concatenate([inside.min(0), inside.max(0)]), np.concatenate([low, high]),
                                   atol=1e-5)  # tight
    # the chair's box after alignment: x' = 2 - y, y' = 3 + x
    np.testing.assert_allclose(bbox[0, :6], [2 - 1.25, 3 + 1.25, 0.5 + 0.45, 0.5, 0.5, 0.9], atol=1e-5)
    assert (ins[np.isin(np.arange(len(ins)), np.nonzero(raw["seg_indices"] == 999)[0])] == 0).all()
    assert (root / "meta_data" / "scannetv2_train.txt").read_text() == "scene0000_00\n"
    assert len(record.boxes) == 3


def test_scannet_subsamples_to_max_points_after_boxes(tmp_path, monkeypatch):
    import pc3d.data.prepare.scannet as module
    from pc3d.data.prepare import prepare

    make_scannet_raw(tmp_path / "raw")
    full = prepare("scannet", tmp_path / "raw", tmp_path / "full")
    monkeypatch.setattr(module, "MAX_NUM_POINT", 30)
    prepare("scannet", tmp_path / "raw", tmp_path / "small")
    data = "scannet_detection/scannet_train_detection_data/scene0000_00"
    assert np.load(tmp_path / "small" / f"{data}_vert.npy").shape == (30, 6)
    # boxes come from every vertex, not the subset
    np.testing.assert_array_equal(np.load(tmp_path / "small" / f"{data}_bbox.npy"),
                                  np.load(tmp_path / "full" / f"{data}_bbox.npy"))
    assert full["written"] == 3


def test_scannet_prepare_resumes_and_redoes_incomplete_scenes(tmp_path, cli):
    make_scannet_raw(tmp_path / "raw")
    first = cli("data", "prepare", "scannet", tmp_path / "raw", tmp_path / "out", "--json")
    assert first.code == 0, first.err
    assert json.loads(first.out)["written"] == 3 and len(first.out.strip().splitlines()) == 1
    again = json.loads(cli("data", "prepare", "scannet", tmp_path / "raw", tmp_path / "out", "--json").out)
    assert again["written"] == 0 and again["skipped_complete"] == 3
    (tmp_path / "out" / "scannet" / "val" / "scene0001_00" / "instance.npy").unlink()
    third = json.loads(cli("data", "prepare", "scannet", tmp_path / "raw", tmp_path / "out", "--json").out)
    assert third["written"] == 1 and (tmp_path / "out" / "scannet" / "val" / "scene0001_00" / "instance.npy").is_file()
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_scannet_bad_raw_input_is_one_line(tmp_path, cli):
    make_scannet_raw(tmp_path / "raw")
    (tmp_path / "raw" / "scans" / "scene0000_00" / "scene0000_00.txt").write_text("axisAlignment = 1 0 0\n")
    result = cli("data", "prepare", "scannet", tmp_path / "raw", tmp_path / "out")
    assert result.code == 2 and result.err.count("\n") == 1 and "axisAlignment has 3 numbers" in result.err
    (tmp_path / "raw" / "scannetv2-labels.combined.tsv").unlink()
    result = cli("data", "prepare", "scannet", tmp_path / "raw", tmp_path / "out2")
    assert result.code == 2 and "scannetv2-labels.combined.tsv not found" in result.err


def test_scannet_workers_give_the_same_files(tmp_path):
    from pc3d.data.prepare import prepare

    make_scannet_raw(tmp_path / "raw")
    prepare("scannet", tmp_path / "raw", tmp_path / "one")
    prepare("scannet", tmp_path / "raw", tmp_path / "two", workers=2)
    for path in sorted((tmp_path / "one").rglob("*.npy")):
        np.testing.assert_array_equal(np.load(path), np.load(tmp_path / "two" / path.relative_to(tmp_path / "one")))


# ---------------------------------------------------------------------------------------------- S3DIS


def write_object(path: Path, rows: np.ndarray, extra_lines: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(f"{v:.3f}" if i < 3 else f"{int(v)}" for i, v in enumerate(row)) for row in rows]
    path.write_bytes(("\n".join(lines[:2] + list(extra_lines) + lines[2:]) + "\n").encode("latin-1"))


def make_s3dis_raw(raw: Path) -> dict:
    rng = np.random.default_rng(0)

    def rows(n, z):
        return np.column_stack([rng.random((n, 2)) * 4, np.full(n, z) + rng.random(n) * 0.01,
                                rng.integers(0, 256, (n, 3))])

    objects = {
        "Area_1/office_1": {"chair_1.txt": rows(30, 0.5), "table_1.txt": rows(40, 0.7), "stairs_1.txt": rows(20, 0.1),
                            "ceiling_1.txt": rows(50, 3.0)},
        "Area_5/hallway_6": {"floor_1.txt": rows(60, 0.0), "ceiling_1.txt": rows(70, 3.0)},
    }
    for room, files in objects.items():
        for name, table in files.items():
            extra: tuple[str, ...] = ()
            if room.endswith("hallway_6") and name == "ceiling_1.txt":
                extra = ("1.500 2.500 3.0\x1000 10 20 30",)  # the release's stray byte inside a number
            if room.endswith("hallway_6") and name == "floor_1.txt":
                extra = ("1.0 2.0 0.0 5 5",)  # a row with a column missing: dropped, counted
            write_object(raw / room / "Annotations" / name, table, extra)
    return objects


def test_s3dis_prepare_repairs_drops_counts_and_reads_back(tmp_path, cli):
    from pc3d.data.readers.s3dis import S3DIS_CLASSES, S3DISPointcept

    objects = make_s3dis_raw(tmp_path / "raw")
    result = cli("data", "prepare", "s3dis", tmp_path / "raw", tmp_path / "out", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["repaired_lines"] == 1 and summary["dropped_lines"] == 1
    assert summary["repaired_at"] == ["Area_5/hallway_6/Annotations/ceiling_1.txt:3"]
    assert summary["dropped_at"] == ["Area_5/hallway_6/Annotations/floor_1.txt:3"]
    train = S3DISPointcept(tmp_path / "out", "train")[0]
    names = sorted(objects["Area_1/office_1"])  # instance = position in sorted file order
    sizes = [len(objects["Area_1/office_1"][n]) for n in names]
    assert train["instance"].tolist() == [i for i, s in enumerate(sizes) for _ in range(s)]
    want = [S3DIS_CLASSES.index(n.split("_")[0]) if n.split("_")[0] in S3DIS_CLASSES else 12 for n in names]
    assert train["segment"].tolist() == [c for c, s in zip(want, sizes, strict=True) for _ in range(s)]
    assert 12 in want  # stairs -> clutter
    np.testing.assert_allclose(train["coord"][: sizes[0]], np.round(objects["Area_1/office_1"][names[0]][:, :3], 3),
                               atol=1e-6)  # the files hold 3 decimals
    np.testing.assert_allclose(np.linalg.norm(train["normal"], axis=1), 1, atol=1e-5)
    test = S3DISPointcept(tmp_path / "out", "val")[0]
    assert test["name"] == "Area_5/hallway_6" and len(test["coord"]) == 60 + 70 + 1  # repaired kept, dropped not
    ceiling = test["coord"][test["segment"] == 0]
    assert np.isclose(ceiling, [1.5, 2.5, 3.0]).all(axis=1).any()
    # horizontal planes: estimated normals are vertical and face the room's middle
    assert (np.abs(train["normal"][train["segment"] == 0][:, 2]) > 0.99).all()
    assert (train["normal"][train["segment"] == 0][:, 2] < 0).all()  # the ceiling's normals point down


# ---------------------------------------------------------------------------------------------- ModelNet40


def off_text(vertices: np.ndarray, faces: np.ndarray, glued: bool = False) -> str:
    head = f"OFF{len(vertices)} {len(faces)} 0\n" if glued else f"OFF\n{len(vertices)} {len(faces)} 0\n"
    return head + "".join(f"{x} {y} {z}\n" for x, y, z in vertices) + "".join(f"3 {a} {b} {c}\n" for a, b, c in faces)


def make_modelnet_raw(raw: Path) -> None:
    long_box = box_mesh([0, 0, 0], [4, 2, 1])
    tetra = (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]),
             np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))
    for path, mesh, glued in [("airplane/train/airplane_0001.off", long_box, False),
                              ("chair/train/chair_0001.off", tetra, True),
                              ("chair/test/chair_0002.off", long_box, False)]:
        (raw / "ModelNet40" / path).parent.mkdir(parents=True, exist_ok=True)
        (raw / "ModelNet40" / path).write_text(off_text(*mesh, glued=glued))


def test_modelnet40_resampled_layout_and_fps_cache(tmp_path):
    from pc3d.data.prepare import prepare
    from pc3d.data.readers.modelnet40 import ModelNet40, read_modelnet_txt

    make_modelnet_raw(tmp_path / "raw")
    summary = prepare("modelnet40", tmp_path / "raw", tmp_path / "out")
    root = tmp_path / "out" / "modelnet40_normal_resampled"
    assert summary["shapes"] == {"train": 2, "test": 1}
    assert (root / "modelnet40_shape_names.txt").read_text() == "airplane\nchair\n"
    train = ModelNet40(root, "train", num_points=64)
    assert len(train) == 2 and train[0]["label"].item() == 0 and train[1]["label"].item() == 1
    table = read_modelnet_txt(root / "airplane" / "airplane_0001.txt")
    assert table.shape == (10000, 6)
    np.testing.assert_allclose(np.linalg.norm(table[:, :3], axis=1).max(), 1, atol=1e-5)  # unit sphere
    np.testing.assert_allclose(np.linalg.norm(table[:, 3:], axis=1), 1, atol=1e-5)
    # uniform by area: the 4x2 faces hold 16 of the box's 28 area units
    along_z = np.abs(table[:, 5]) > 0.99
    assert abs(along_z.mean() - 16 / 28) < 0.03
    # face normals: every point lies on the face its normal names (outward normal +x: on the box's max-x face)
    axis = np.argmax(np.abs(table[:, 3:]), axis=1)
    positive = table[np.arange(len(table)), 3 + axis] > 0
    coordinate = table[np.arange(len(table)), axis]
    face = np.where(positive, table[:, :3].max(axis=0)[axis], table[:, :3].min(axis=0)[axis])
    assert (np.abs(coordinate - face) < 2e-6).all()
    with np.load(root / "modelnet40_train_2048pts_fps.npz", allow_pickle=False) as cache:
        assert cache["points"].shape == (2, 2048, 6) and cache["labels"].tolist() == [0, 1]
        assert cache["ids"].tolist() == ["airplane_0001", "chair_0001"]
        rows = {tuple(r) for r in np.round(table, 6).astype(np.float32).tolist()}
        assert all(tuple(p) in rows for p in cache["points"][0].tolist())
        assert len({tuple(p) for p in cache["points"][0].tolist()}) == 2048  # distinct: FPS, not repeats
    again = prepare("modelnet40", tmp_path / "raw", tmp_path / "out")
    assert again["written"] == 0 and again["skipped_complete"] == 3


def test_released_datasets_are_checked_not_written(tmp_path, cli):
    from pc3d.data.synthetic import write_synthetic

    write_synthetic("objects", tmp_path / "syn", count=14, seed=0, points=64, preview=False)
    root = tmp_path / "syn" / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    result = cli("data", "prepare", "shapenetpart", root, tmp_path / "out", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["written"] == 0 and summary["check"]["ok"] and not (tmp_path / "out").exists()
