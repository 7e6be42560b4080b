"""ScanNet (Pointcept npy) reader: reads what the layout writer wrote; bad folders fail with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pc3d.data.labels import scannet20_index
from pc3d.data.layouts import write_scannet_pointcept
from pc3d.data.readers.scannet import ScanNetPointcept, SyntheticScanNet
from pc3d.data.synthetic.scenes import generate_scene, scene_rng
from pc3d.errors import InputError


def test_reads_the_pointcept_layout(tmp_path: Path) -> None:
    scenes = [generate_scene(scene_rng(0, i), 500, name=f"scene{i:04d}_00") for i in range(2)]
    root = write_scannet_pointcept(tmp_path, scenes)
    train, val = ScanNetPointcept(root, "train"), ScanNetPointcept(tmp_path, "val")  # parent folder works too
    assert len(train) == 1 and len(val) == 1
    sample = val[0]
    scene = scenes[1]
    assert sample["name"] == scene.name
    np.testing.assert_array_equal(sample["coord"], scene.points)
    np.testing.assert_array_equal(sample["color"], scene.colors.astype(np.float32))
    np.testing.assert_array_equal(sample["segment"], [scannet20_index(int(s)) for s in scene.semantic])
    np.testing.assert_array_equal(sample["instance"], scene.instance)
    memory = SyntheticScanNet(2, 0, 500)[1]
    np.testing.assert_array_equal(memory["segment"], sample["segment"])
    np.testing.assert_array_equal(memory["coord"], sample["coord"])


def test_bad_folders_raise_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing folder"):
        ScanNetPointcept(tmp_path, "train")
    with pytest.raises(InputError, match="split"):
        ScanNetPointcept(tmp_path, "dev")
    folder = tmp_path / "train" / "scene0000_00"
    folder.mkdir(parents=True)
    np.save(folder / "coord.npy", np.zeros((5, 3), np.float32))
    np.save(folder / "color.npy", np.zeros((5, 3), np.uint8))
    np.save(folder / "normal.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(InputError, match="normal.npy has 4 rows"):
        ScanNetPointcept(tmp_path, "train")[0]
    (folder / "normal.npy").unlink()
    with pytest.raises(InputError, match="missing file"):
        ScanNetPointcept(tmp_path, "train")[0]
