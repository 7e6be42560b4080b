"""The start-up data check: a dataset-reading preset stops before building anything, with exit 2 and one
line, when its folder misses a split or holds a truncated file; synthetic data is not checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def scannet_layouts(tmp_path_factory):
    from pc3d.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("syn")
    write_synthetic("scenes", out, count=7, seed=0, points=2000, preview=False)
    return out


def one_line(result, *needles: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error: data check"), result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


DET = ("finetune", "det-scannet-quickstart", "--set", "data.source=folder", "--set", "data.dataset=scannet_detection",
       "--set", "data.num_points=1024", "--set", "train.max_steps=1")


def test_truncated_file_fails_at_start_up(scannet_layouts, tmp_path, cli):
    root = shutil.copytree(scannet_layouts / "scannet_detection", tmp_path / "det")
    val = (root / "meta_data" / "scannetv2_val.txt").read_text().split()[0]
    vert = root / "scannet_train_detection_data" / f"{val}_vert.npy"
    vert.write_bytes(vert.read_bytes()[:1000])  # an interrupted copy
    result = cli(*DET, "--set", f"data.root={root}", "--out", tmp_path / "runs")
    one_line(result, f"{val}_vert.npy", "truncated", "pc3d data check scannet_detection")
    assert not (tmp_path / "runs").exists()  # nothing was built or written


def test_missing_split_fails_at_start_up(scannet_layouts, tmp_path, cli):
    root = shutil.copytree(scannet_layouts / "scannet", tmp_path / "scannet")
    shutil.rmtree(root / "val")
    result = cli("finetune", "probe-scannet-quickstart", "--set", "data.source=folder", "--set",
                 "data.dataset=scannet", "--set", f"data.root={root}", "--out", tmp_path / "runs")
    one_line(result, "split 'val' missing")


def test_which_folder_each_preset_checks(tmp_path):
    from pc3d.cli.common import resolve_config
    from pc3d.data.prepare.preflight import dataset_to_check, startup_check

    def target(preset: str, *sets: str):
        return dataset_to_check(resolve_config("finetune", preset, None, list(sets), {}))

    assert target("semseg-s3dis-quickstart") is None  # synthetic rooms: nothing to check
    assert target("semseg-s3dis-quickstart", "data.source=folder", f"data.root={tmp_path}") == ("s3dis", tmp_path)
    assert target("det-scannet") == ("scannet_detection", Path("data/scannet_detection"))
    assert target("fewshot-modelnet40", f"data.folds={tmp_path}") == ("modelnet40_fewshot", tmp_path)
    assert target("fewshot-modelnet40")[0] == "modelnet40"
    config = resolve_config("finetune", "cls-modelnet40-quickstart", None, [], {})
    assert startup_check(config) is None
    folder = resolve_config("finetune", "cls-modelnet40", None, [f"data.root={tmp_path}"], {})
    assert startup_check(folder, inference=True) is None  # `pc3d segment FILE`: the folder is not read


def test_sampled_check_reads_a_few_items_per_split(scannet_layouts, tmp_path, monkeypatch):
    import pc3d.data.prepare.check as check

    root = shutil.copytree(scannet_layouts / "scannet", tmp_path / "scannet")
    assert len(list((root / "train").iterdir())) >= 5
    read = []
    original = check.load
    monkeypatch.setattr(check, "load", lambda path: read.append(path) or original(path))
    report = check.check_dataset("scannet", root, sample=2)
    scenes = {p.parent.name for p in read}
    train = sorted(p.name for p in (root / "train").iterdir())
    assert {s for s in scenes if s in train} == {train[0], train[-1]}  # first and last of the split
    assert report["sampled"] == 2 and report["splits"]["train"]["items"] == 2
    # the full check reads every scene: a defect in a scene the sample skips is found only there
    middle = root / "train" / train[2] / "segment20.npy"
    np.save(middle, np.full(len(np.load(middle)), 25, np.int64))
    check.check_dataset("scannet", root, sample=2)
    with pytest.raises(check.InputError, match="label 25 outside -1..19"):
        check.check_dataset("scannet", root)


def test_pick_spreads_the_sample():
    from pc3d.data.prepare.check import pick

    items = list(range(10))
    assert pick(items, None) == items and pick(items, 20) == items
    assert pick(items, 3) == [0, 4, 9]  # round(4.5) = 4
    assert pick(items, 1) == [0] and pick(items, 2) == [0, 9]


def test_semantickitti_presets_are_checked_on_their_own_sequences(tmp_path):
    from pc3d.cli.common import resolve_config
    from pc3d.data.prepare.check import InputError, check_dataset
    from pc3d.data.prepare.preflight import startup_check
    from pc3d.data.synthetic import write_synthetic

    write_synthetic("lidar", tmp_path, count=3, seed=0, points=2000, preview=False)  # sequence 00 only
    root = tmp_path / "semantic_kitti"
    with pytest.raises(InputError, match="sequence 01 missing"):
        check_dataset("semantickitti", root, sample=3)  # the official split needs 00-07, 09, 10
    config = resolve_config("finetune", "affinity3d-semantickitti", None,
                            ["data.source=folder", f"data.root={root}", "data.sequences=[\"00\"]",
                             "data.val_sequences=[\"00\"]"], {})
    report = startup_check(config)
    assert report["splits"]["train"]["items"] == 3 and report["sampled"] == 3
    bad = resolve_config("finetune", "affinity3d-semantickitti", None,
                         ["data.source=folder", f"data.root={root}", "data.sequences=[\"00\", \"04\"]"], {})
    with pytest.raises(InputError, match="sequence 04 missing"):
        startup_check(bad)
    # pseudo-labelling reads data.sequences only: the default val sequence 08 is not needed (the demo's command)
    labels = resolve_config("pseudolabel", "affinity3d", "oracle", ["data.source=folder", f"data.root={root}",
                                                                   "data.sequences=[\"00\"]"],
                            {})
    assert labels.data.val_sequences == ["08"]
    assert set(startup_check(labels)["splits"]) == {"train"}


def test_sampled_scanobjectnn_reads_headers_and_end_clouds(tmp_path):
    import h5py

    from pc3d.data.prepare.check import InputError, check_dataset

    folder = tmp_path / "main_split_nobg"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, labels in (("training", [0, 3, 14, 2]), ("test", [1, 15, 4])):  # 15 is outside 0..14
        with h5py.File(folder / f"{prefix}_objectdataset.h5", "w") as handle:
            handle["data"] = rng.normal(size=(len(labels), 32, 3)).astype(np.float32)
            handle["label"] = np.array(labels, np.uint8)
    report = check_dataset("scanobjectnn", tmp_path, sample=3)  # the test split's middle item is not read
    train = report["splits"]["obj_only/train"]
    assert train["items"] == 2 and train["label_range"] == [0, 2]  # the first and the last cloud
    with pytest.raises(InputError, match="class 15 outside 0..14"):
        check_dataset("scanobjectnn", tmp_path)
