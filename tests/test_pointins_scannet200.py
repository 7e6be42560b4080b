"""ScanNet200: the Pointcept-layout reader's segment200 labels, the probe's label facts, and the presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pc3d.config.loading import load_preset
from pc3d.config.pointins import ScenePreset
from pc3d.data.readers.scannet import SCANNET200_INSTANCE_CLASSES, ScanNetPointcept
from pc3d.errors import InputError
from pc3d.methods.scene_probe import ProbeScenes, scene_labels
from pc3d.methods.sonata import load_scenes


def write_scene(folder: Path, rng: np.random.Generator, with_200: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    n = 300
    arrays = {"coord": (rng.random((n, 3)) * 3).astype(np.float32), "color": rng.integers(0, 256, (n, 3)).astype(
        np.uint8), "normal": np.tile(np.float32([0, 0, 1]), (n, 1)), "segment20": rng.integers(-1, 20, n),
        "instance": rng.integers(-1, 6, n)}
    if with_200:
        arrays["segment200"] = rng.choice([-1, 0, 1, 2, 3, 150, 199], size=n)
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", value)
    return arrays


def test_reader_takes_segment200_and_the_probe_parses_its_instances(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scenes = {name: write_scene(tmp_path / "val" / name, rng) for name in ("scene0000_00", "scene0001_00")}
    data = {k: v for k, v in load_preset("probe-scannet200").items() if k not in ("extends", "description")}
    config = ScenePreset.model_validate({**data, "data": {**data["data"], "root": str(tmp_path)}})
    reader = load_scenes(config.data, 0, "val")
    sample = reader[0]
    np.testing.assert_array_equal(sample["segment"], scenes["scene0000_00"]["segment200"])
    twenty = ScanNetPointcept(tmp_path, "val")[0]  # the same folder read as ScanNet-20
    np.testing.assert_array_equal(twenty["segment"], scenes["scene0000_00"]["segment20"])
    labels = scene_labels(config.data.dataset)
    assert labels.num_classes == 200 and labels.stuff_classes == (0, 2)
    assert len(SCANNET200_INSTANCE_CLASSES) == 198 and {1, 3, 199} <= set(SCANNET200_INSTANCE_CLASSES)
    item = ProbeScenes(reader, labels, 0.02, train=False, augment=False)[0]
    segment, instance = sample["segment"], sample["instance"]
    # Pointcept InstanceParser with segment_ignore_index (-1, 0, 2): wall, floor and unlabelled points carry none
    keep = ~np.isin(segment, (-1, 0, 2)) & (instance >= 0)
    full = item["full_instance"].numpy()
    assert (full[~keep] == -1).all() and (full[keep] >= 0).all()
    np.testing.assert_array_equal(np.unique(full[keep]), np.arange(len(np.unique(instance[keep]))))


def test_a_folder_without_segment200_is_refused(tmp_path: Path) -> None:
    write_scene(tmp_path / "train" / "scene0002_00", np.random.default_rng(1), with_200=False)
    with pytest.raises(InputError, match="segment200"):
        ScanNetPointcept(tmp_path, "train", labels="segment200")[0]
    with pytest.raises(InputError, match="labels"):
        ScanNetPointcept(tmp_path, "train", labels="segment40")
