"""Object dataset readers on fixtures written in the public layouts (synthetic layout writers + h5/npy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pc3d.data.layouts import MODELNET_DIR, SHAPENETPART_DIR
from pc3d.data.readers import ModelNet40, ScanObjectNN, ShapeNet55, ShapeNetPart
from pc3d.data.readers.scanobjectnn import scanobjectnn_file
from pc3d.data.synthetic.objects import CATEGORIES, generate_object, object_rng
from pc3d.errors import InputError
from pc3d.metrics.partseg import SHAPENETPART_CATEGORIES, SHAPENETPART_PARTS


def unit_sphere(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return centred / np.sqrt((centred**2).sum(axis=1)).max()


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from pc3d.data.synthetic.writer import write_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic("objects", root, count=26, seed=0, points=300, preview=False)
    return root


def test_modelnet40_reads_the_written_layout(synthetic_root):
    base = synthetic_root / MODELNET_DIR
    names = (base / "modelnet40_shape_names.txt").read_text().split()
    train_ids = (base / "modelnet40_train.txt").read_text().split()
    train = ModelNet40(base, "train", num_points=300)
    test = ModelNet40(base, "test", num_points=300)
    assert len(train) == len(train_ids) and len(train) + len(test) == 26
    assert train.classes == names
    for index in (0, len(train) - 1):
        sample = train[index]
        cls = names[int(sample["label"])]
        assert cls == train_ids[index].rsplit("_", 1)[0]
        raw = np.loadtxt(base / cls / f"{train_ids[index]}.txt", delimiter=",")
        assert raw.shape == (300, 6)
        # all 300 file points, centred and scaled to the unit sphere
        np.testing.assert_allclose(np.sort(sample["points"].numpy(), axis=0),
                                   np.sort(unit_sphere(raw[:, :3]), axis=0), atol=1e-5)


def test_modelnet40_keeps_the_first_points_of_an_fps_ordering(synthetic_root):
    from pc3d.ops.sampling import farthest_point_sample

    base = synthetic_root / MODELNET_DIR
    data = ModelNet40(base, "test", num_points=64)
    shape_id = (base / "modelnet40_test.txt").read_text().split()[0]
    raw = np.loadtxt(base / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt", delimiter=",")[:, :3]
    keep = farthest_point_sample(torch.from_numpy(raw.astype(np.float32)), 64).numpy()
    assert keep[0] == 0 and len(set(keep.tolist())) == 64
    np.testing.assert_allclose(data[0]["points"].numpy(), unit_sphere(raw[keep]), atol=1e-5)


def test_shapenetpart_reads_the_written_layout(synthetic_root):
    base = synthetic_root / SHAPENETPART_DIR
    splits = {s: json.loads((base / "train_test_split" / f"shuffled_{s}_file_list.json").read_text())
              for s in ("train", "val", "test")}
    sets = {s: ShapeNetPart(base, s, num_points=300, random_subset=False) for s in splits}
    eligible = sum(1 for c in CATEGORIES for i in range(26) if CATEGORIES[i % 13] is c and c.shapenetpart)
    assert sum(len(d) for d in sets.values()) == eligible
    for split, data in sets.items():
        assert len(data) == len(splits[split])
        sample = data[0]
        synset, model_id = splits[split][0].split("/")[-2:]
        raw = np.loadtxt(base / synset / f"{model_id}.txt")
        category = SHAPENETPART_CATEGORIES[int(sample["category"])]
        assert set(sample["part_label"].tolist()) <= set(SHAPENETPART_PARTS[category])
        np.testing.assert_array_equal(sample["part_label"].numpy(), raw[:, 6].astype(np.int64))
        np.testing.assert_allclose(sample["points"].numpy(), unit_sphere(raw[:, :3]), atol=1e-5)
        assert data.parts_of(int(sample["category"])) == list(SHAPENETPART_PARTS[category])


def test_shapenet55_npy_and_split_files(tmp_path):
    (tmp_path / "ShapeNet-55").mkdir()
    (tmp_path / "shapenet_pc").mkdir()
    names = []
    for i in range(3):
        obj = generate_object(CATEGORIES[i].name, object_rng(0, i), 512)
        name = f"0269115{i}-model{i}.npy"
        np.save(tmp_path / "shapenet_pc" / name, obj.points * 3 + 1)  # stored clouds need not be normalised
        names.append(name)
    (tmp_path / "ShapeNet-55" / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (tmp_path / "ShapeNet-55" / "test.txt").write_text(names[2] + "\n")
    train = ShapeNet55(tmp_path, "train", num_points=128)
    assert len(train) == 2 and len(ShapeNet55(tmp_path, "test", num_points=128)) == 1
    sample = train[1]
    assert sample["points"].shape == (128, 3)
    assert np.linalg.norm(sample["points"].numpy(), axis=1).max() == pytest.approx(1.0, abs=1e-5)
    assert int(sample["label"]) == 1  # synset index in sorted order
    # the test list holds only the third synset: its label is still index 2 of all synsets, not 0 of its own list
    assert int(ShapeNet55(tmp_path, "test", num_points=128)[0]["label"]) == 2
    full = ShapeNet55(tmp_path, "train", num_points=512, random_subset=False)[0]["points"].numpy()
    np.testing.assert_allclose(full, unit_sphere(np.load(tmp_path / "shapenet_pc" / names[0])), atol=1e-5)


@pytest.mark.parametrize("variant", ["obj_bg", "obj_only", "pb_t50_rs"])
def test_scanobjectnn_h5(tmp_path, variant):
    import h5py

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        path = scanobjectnn_file(tmp_path, variant, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as handle:
            handle["data"] = rng.normal(size=(5, 2048, 3)).astype(np.float32)
            handle["label"] = np.arange(5, dtype=np.int64) % 3
    test = ScanObjectNN(tmp_path, variant, "test", num_points=2048)
    with h5py.File(scanobjectnn_file(tmp_path, variant, "test"), "r") as handle:
        expected = handle["data"][3]
    assert len(test) == 5 and int(test[3]["label"]) == 0
    np.testing.assert_array_equal(test[3]["points"].numpy(), expected)  # test: no shuffling
    shuffled = ScanObjectNN(tmp_path, variant, "train", num_points=1024)[2]["points"].numpy()
    assert shuffled.shape == (1024, 3)


def test_missing_files_are_named(tmp_path, synthetic_root):
    with pytest.raises(InputError, match="modelnet40_shape_names.txt"):
        ModelNet40(tmp_path, "train")
    with pytest.raises(InputError, match="synsetoffset2category.txt"):
        ShapeNetPart(tmp_path, "train")
    with pytest.raises(InputError, match="shapenet_pc"):
        ShapeNet55(tmp_path, "train")
    with pytest.raises(InputError, match="training_objectdataset_augmentedrot_scale75.h5"):
        ScanObjectNN(tmp_path, "pb_t50_rs", "train")
    (tmp_path / "shapenet_pc").mkdir()
    with pytest.raises(InputError, match="train.txt"):
        ShapeNet55(tmp_path, "train")
    # a shape listed in the split file whose point file is gone
    import shutil

    base = tmp_path / "mn"
    shutil.copytree(synthetic_root / MODELNET_DIR, base)
    first = (base / "modelnet40_train.txt").read_text().split()[0]
    (base / first.rsplit("_", 1)[0] / f"{first}.txt").unlink()
    with pytest.raises(InputError, match=f"{first}.txt"):
        ModelNet40(base, "train")


def test_classification_sets_from_a_folder(synthetic_root):
    from pc3d.config import validate_preset
    from pc3d.data.readers.objects import classification_sets

    config = validate_preset({"command": "finetune", "method": "object-cls",
                              "data": {"source": "folder", "dataset": "modelnet40", "num_points": 128,
                                       "root": str(synthetic_root / MODELNET_DIR)}})
    train, test, num_classes = classification_sets(config.data, 0)
    assert num_classes == 13 and len(train) + len(test) == 26
