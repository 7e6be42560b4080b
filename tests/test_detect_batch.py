"""`pc3d detect INPUT...`: folders and globs, the checkpoint loaded once, outputs in <out>/detect/<time>/ (never
next to the inputs), one JSON object for the batch, a missing input refused before the model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_SETS = ["data.synthetic_count=2", "data.synthetic_val_count=1", "train.epochs=1", "train.batch_size=2",
             "data.num_points=512"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A barely trained quickstart detector: what is tested is the batch plumbing, not the boxes."""
    import contextlib
    import io

    from pc3d.cli import main

    out = tmp_path_factory.mktemp("det")
    args = ["finetune", "det-scannet", "--preset", "quickstart", "--out", str(out), "--json", "--quiet"]
    for s in TINY_SETS:
        args += ["--set", s]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    return json.loads(buffer.getvalue().strip().splitlines()[-1])["checkpoints"]["last"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from pc3d.data.readers.detection_scenes import SYNTHETIC_VAL_OFFSET
    from pc3d.data.synthetic.scenes import generate_scene, scene_rng
    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    folder = tmp_path_factory.mktemp("scenes")
    for i in range(3):
        scene = generate_scene(scene_rng(i, SYNTHETIC_VAL_OFFSET), 1024)
        write_point_cloud(folder / f"room{i}.ply", PointCloud(scene.points, scene.colors))
    return folder


def _listing(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.fixture
def load_count(monkeypatch) -> list[str]:
    from pc3d.methods import scene_detection

    calls: list[str] = []
    real = scene_detection.load_detector

    def counting(spec, config):
        calls.append(spec)
        return real(spec, config)

    monkeypatch.setattr(scene_detection, "load_detector", counting)
    return calls


@pytest.mark.slow
def test_detect_a_folder_loads_once_and_writes_in_the_run_folder(cli, checkpoint, scenes, tmp_path, load_count,
                                                                 monkeypatch):
    before = _listing(scenes)
    monkeypatch.chdir(tmp_path)  # default --out runs/ is relative to the working folder
    result = cli("detect", scenes, "--checkpoint", checkpoint, "--threshold", "0.0", "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)  # exactly one JSON object for the batch
    assert len(load_count) == 1
    run_dir = Path(out["run_dir"])
    assert run_dir.resolve().parent == (tmp_path / "runs" / "detect").resolve()
    assert [Path(r["input"]).name for r in out["inputs"]] == ["room0.ply", "room1.ply", "room2.ply"]
    for record in out["inputs"]:
        stem = Path(record["input"]).stem
        assert set(record["outputs"]) == {"json", "ply", "npz", "png"}
        for path in record["outputs"].values():
            assert Path(path).parent == run_dir and Path(path).name.startswith(f"{stem}.boxes.")
            assert Path(path).is_file()
        assert record["detections"] == len(record["boxes"]) == sum(record["per_class"].values())
    assert out["detections"] == sum(r["detections"] for r in out["inputs"])
    assert json.loads((run_dir / "summary.json").read_text())["inputs"] == out["inputs"]
    assert _listing(scenes) == before  # the inputs' folder is left alone


@pytest.mark.slow
def test_detect_a_glob_and_the_single_scene_keys(cli, checkpoint, scenes, tmp_path, load_count):
    before = _listing(scenes)
    result = cli("detect", str(scenes / "room[01].ply"), "--checkpoint", checkpoint, "--out", tmp_path / "o",
                 "--json")
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert [Path(r["input"]).name for r in out["inputs"]] == ["room0.ply", "room1.ply"] and len(load_count) == 1
    one = json.loads(cli("detect", scenes / "room2.ply", "--checkpoint", checkpoint, "--out", tmp_path / "o",
                         "--json").out)
    # one input: the keys of the single-scene JSON stay at the top
    assert one["input"].endswith("room2.ply") and one["detections"] == len(one["boxes"])
    assert Path(one["outputs"]["json"]).parent == Path(one["run_dir"]) != Path(out["run_dir"])
    assert _listing(scenes) == before


def test_detect_missing_input_fails_before_the_model_loads(cli, scenes, tmp_path, load_count):
    result = cli("detect", scenes / "room0.ply", tmp_path / "nope.ply", "--checkpoint", tmp_path / "x.json",
                 "--out", tmp_path / "o")
    assert result.code == 2 and result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error: ") and "nope.ply" in lines[0]
    assert load_count == [] and not (tmp_path / "o").exists()
    empty = cli("detect", str(tmp_path / "*.ply"), "--checkpoint", tmp_path / "x.json")
    assert empty.code == 2 and "matches no point-cloud file" in empty.err and load_count == []
