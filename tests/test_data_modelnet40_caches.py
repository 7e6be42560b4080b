"""ModelNet40 FPS caches (pc3d's .npz, Point-MAE's pickled .dat) and Point-BERT's released few-shot folds,
read through the restricted unpickler."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from pc3d.errors import InputError


@pytest.fixture(scope="module")
def modelnet_root(tmp_path_factory):
    from pc3d.data.layouts import MODELNET_DIR
    from pc3d.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("mn")
    write_synthetic("objects", out, count=13, seed=1, points=400, preview=False)
    return out / MODELNET_DIR


def fps_tables(root, split: str, count: int) -> tuple[list[str], np.ndarray]:
    """(ids, (M, count, 6) FPS-ordered tables) computed here with the reader's own FPS of each file."""
    from pc3d.data.readers.modelnet40 import read_modelnet_txt
    from pc3d.ops.sampling import farthest_point_sample

    ids = (root / f"modelnet40_{split}.txt").read_text().split()
    tables = []
    for shape_id in ids:
        table = read_modelnet_txt(root / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt")
        tables.append(table[farthest_point_sample(torch.from_numpy(np.ascontiguousarray(table[:, :3])), count)])
    return ids, np.stack(tables).astype(np.float32)


def labels_of(root, ids: list[str]) -> np.ndarray:
    names = (root / "modelnet40_shape_names.txt").read_text().split()
    return np.array([names.index(i.rsplit("_", 1)[0]) for i in ids], np.int64)


def copy_layout(root, target):
    import shutil

    shutil.copytree(root, target)
    return target


def test_npz_cache_hit_returns_the_cached_points_without_fps(modelnet_root, tmp_path, monkeypatch):
    from pc3d.data.readers._common import unit_sphere
    from pc3d.data.readers.modelnet40 import ModelNet40

    plain = ModelNet40(modelnet_root, "train", num_points=128)
    expected = [plain.points(i) for i in range(len(plain))]  # FPS at load, no cache
    root = copy_layout(modelnet_root, tmp_path / "mn")
    ids, tables = fps_tables(root, "train", 200)
    np.savez(root / "modelnet40_train_200pts_fps.npz", points=tables, labels=labels_of(root, ids), ids=np.array(ids))

    import pc3d.ops.sampling

    def no_fps(*args, **kwargs):
        raise AssertionError("FPS ran although the cache holds the points")

    monkeypatch.setattr(pc3d.ops.sampling, "farthest_point_sample", no_fps)
    cached = ModelNet40(root, "train", num_points=128)
    assert cached.fps_cache_path == root / "modelnet40_train_200pts_fps.npz"
    for i in range(len(cached)):
        np.testing.assert_array_equal(cached.points(i), unit_sphere(tables[i, :128, :3]).astype(np.float32))
        # the first 128 of a 200-point FPS ordering are FPS to 128: the same clouds as without the cache
        np.testing.assert_array_equal(cached.points(i), expected[i])
    assert ModelNet40(root, "train", num_points=256).fps_cache is None  # fewer cached points than asked


def test_stale_npz_cache_is_ignored_with_a_warning(modelnet_root, tmp_path):
    from pc3d.data.readers.modelnet40 import ModelNet40

    root = copy_layout(modelnet_root, tmp_path / "mn")
    ids, tables = fps_tables(root, "train", 150)
    stale = ids[::-1]  # the split list changed since the cache was written
    np.savez(root / "modelnet40_train_150pts_fps.npz", points=tables, labels=labels_of(root, stale),
             ids=np.array(stale))
    with pytest.warns(UserWarning, match="stale FPS cache ignored"):
        reader = ModelNet40(root, "train", num_points=100)
    assert reader.fps_cache is None
    np.testing.assert_array_equal(reader.points(0), ModelNet40(modelnet_root, "train", num_points=100).points(0))


def test_point_mae_dat_cache_is_read_with_the_restricted_unpickler(modelnet_root, tmp_path, cli):
    from pc3d.data.readers._common import unit_sphere
    from pc3d.data.readers.modelnet40 import ModelNet40

    root = copy_layout(modelnet_root, tmp_path / "mn")
    ids, tables = fps_tables(root, "test", 300)
    labels = [np.array([k], np.int32) for k in labels_of(root, ids)]  # Point-MAE stores (1,) int32 labels
    (root / "modelnet40_test_8192pts_fps.dat").write_bytes(pickle.dumps([list(tables), labels], protocol=2))
    reader = ModelNet40(root, "test", num_points=64)
    assert reader.fps_cache_path.suffix == ".dat"
    np.testing.assert_array_equal(reader.points(1), unit_sphere(tables[1, :64, :3]).astype(np.float32))
    report = json.loads(cli("data", "check", "modelnet40", root, "--json").out)
    assert report["fps_caches"]["test"] == [{"file": "modelnet40_test_8192pts_fps.dat", "points": 8192,
                                             "shapes": len(ids), "current": True}]
    # the released folder is the read layout: prepare checks it and writes nothing
    result = cli("data", "prepare", "modelnet40", root, tmp_path / "out", "--json")
    assert result.code == 0 and json.loads(result.out)["written"] == 0 and not (tmp_path / "out").exists()

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {tmp_path / 'ran'}",)

    (root / "modelnet40_test_8192pts_fps.dat").write_bytes(pickle.dumps([[Evil()], [1]], protocol=2))
    with pytest.raises(InputError, match="refused global"):
        ModelNet40(root, "test", num_points=64)
    bad = cli("data", "check", "modelnet40", root)
    assert bad.code == 2 and "refused global" in bad.err and len(bad.err.strip().splitlines()) == 1
    assert not (tmp_path / "ran").exists()


def write_folds(root, way: int, shot: int, folds: int, query: int = 3, columns: int = 6) -> None:
    """Point-BERT's fold files: {'train': [(points, label, _)], 'test': [...]}, labels 0..way-1."""
    rng = np.random.default_rng(0)
    folder = root / f"{way}way_{shot}shot"
    folder.mkdir(parents=True)
    for fold in range(folds):
        content = {split: [(rng.normal(size=(300, columns)).astype(np.float32) * (1 + label), label, 7 * label)
                           for label in range(way) for _ in range(n)]
                   for split, n in (("train", shot), ("test", query))}
        (folder / f"{fold}.pkl").write_bytes(pickle.dumps(content, protocol=2))


def test_released_folds_are_read_and_checked(tmp_path, cli):
    from types import SimpleNamespace

    from pc3d.data.readers._common import unit_sphere
    from pc3d.data.readers.modelnet40_fewshot import read_fold, released_fold_sets

    write_folds(tmp_path / "ModelNetFewshot", way=3, shot=2, folds=2)
    data = SimpleNamespace(folds=str(tmp_path / "ModelNetFewshot"), num_points=128)
    train, test, way = released_fold_sets(data, 3, 2, 1)
    assert (len(train), len(test), way) == (6, 9, 3)
    assert [int(train[i]["label"]) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    raw = pickle.loads((tmp_path / "ModelNetFewshot" / "3way_2shot" / "1.pkl").read_bytes())
    first = train[0]["points"].numpy()
    assert first.shape == (128, 3)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1).max(), 1, atol=1e-6)
    from pc3d.ops.sampling import farthest_point_sample

    cloud = raw["train"][0][0][:, :3]  # xyz of the (300, 6) xyz+normals entry
    expected = unit_sphere(cloud[farthest_point_sample(torch.from_numpy(cloud), 128).numpy()])
    np.testing.assert_array_equal(first, expected.astype(np.float32))
    fold0 = tmp_path / "ModelNetFewshot" / "3way_2shot" / "0.pkl"
    with pytest.raises(InputError, match=r"\[2, 2, 2\] shapes per class, expected 3 each"):
        read_fold(fold0, 3, 3)  # a 3-shot preset pointed at 2-shot files
    with pytest.raises(InputError, match="label 2 outside 0..1"):
        read_fold(fold0, 2, 2)
    with pytest.raises(InputError, match="missing .*5.pkl"):
        released_fold_sets(data, 3, 2, 5)
    report = json.loads(cli("data", "check", "modelnet40_fewshot", tmp_path / "ModelNetFewshot", "--json").out)
    assert report["settings"]["3way_2shot"]["folds"] == ["0", "1"]
    assert report["settings"]["3way_2shot"]["read"]["0"] == {"train": 6, "test": 9}


@pytest.mark.slow
def test_fewshot_preset_runs_the_released_folds_and_reports_each(modelnet_root, tmp_path, cli):
    write_folds(tmp_path / "ModelNetFewshot", way=3, shot=2, folds=2)
    result = cli("finetune", "fewshot-modelnet40-quickstart", "--set", "data.source=folder", "--set",
                 f"data.root={modelnet_root}", "--set", f"data.folds={tmp_path / 'ModelNetFewshot'}",
                 "--set", "data.num_points=128", "--set", "way=3", "--set", "shot=2", "--set", "folds=2",
                 "--set", "train.max_steps=2", "--set", "train.batch_size=3", "--out", tmp_path / "runs", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["folds"] == 2 and len(summary["fold_oa"]) == 2
    assert summary["oa_mean"] == pytest.approx(np.mean(summary["fold_oa"]))
    assert summary["oa_std"] == pytest.approx(np.std(summary["fold_oa"]))
    for oa in summary["fold_oa"]:  # 9 query shapes per fold: an OA is a multiple of 1/9
        assert round(oa * 9 / 100, 6) == round(oa * 9 / 100)


def test_prepare_checks_released_folds_and_refuses_a_pickle_with_code(tmp_path, cli):
    write_folds(tmp_path / "ModelNetFewshot", way=2, shot=1, folds=1)
    result = cli("data", "prepare", "modelnet40_fewshot", tmp_path / "ModelNetFewshot", tmp_path / "out", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["written"] == 0 and not (tmp_path / "out").exists()

    class Evil:
        def __reduce__(self):
            return eval, ("1",)

    (tmp_path / "ModelNetFewshot" / "2way_1shot" / "0.pkl").write_bytes(
        pickle.dumps({"train": [(Evil(), 0, 0)], "test": []}, protocol=4))
    bad = cli("data", "check", "modelnet40_fewshot", tmp_path / "ModelNetFewshot")
    assert bad.code == 2 and "refused global builtins.eval" in bad.err and len(bad.err.strip().splitlines()) == 1
