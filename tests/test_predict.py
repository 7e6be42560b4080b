"""`pc3d predict`: each task's labels equal what its own evaluation code computes for the checkpoint on the same
input; outputs land in the run folder, never next to the inputs; bad inputs and checkpoints fail in one line."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pc3d.cli import main
from pc3d.io.pointcloud import PointCloud, read_point_cloud, write_point_cloud


def train(out: Path, *args: str) -> dict:
    """`pc3d finetune ARGS --json` in-process (module fixtures cannot use capsys)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["finetune", *args, "--out", str(out), "--device", "cpu", "--json"])
    assert code == 0, stderr.getvalue()
    return json.loads(stdout.getvalue())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def loaded(run_dir: str, build) -> tuple:
    """(config, method) rebuilt by the task's own code from the run's config.yaml and loaded with its checkpoint."""
    import yaml

    from pc3d.config import validate_preset
    from pc3d.engine.checkpoint import load_weights
    from pc3d.models.convert import load_state

    config = validate_preset(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()), "run")
    method = build(config)
    checkpoints = Path(run_dir) / "checkpoints"
    best = checkpoints / "best.json"
    report = load_state(method, load_weights(str(best if best.is_file() else checkpoints / "last.json")))
    assert not report.missing
    return config, method.eval()


def predicted(cli, checkpoint: str, *inputs: Path | str, out: Path, extra: tuple[str, ...] = ()) -> dict:
    result = cli("predict", checkpoint, *inputs, "--out", out, "--device", "cpu", "--json", *extra)
    assert result.code == 0, result.err
    assert result.out.count("\n") == 1  # --json: exactly one object on stdout
    return json.loads(result.out)


# ------------------------------------------------------------------------------------------ semseg


@pytest.fixture(scope="module")
def semseg_run(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("semseg")
    return train(out, "semseg-s3dis", "--preset", "quickstart", "--set", "train.epochs=1", "--set",
                 "data.synthetic_count=2", "--set", "data.synthetic_val_count=1", "--set", "data.num_points=512",
                 "--set", "data.synthetic_points=1024", "--set", "train.batch_size=2")["run_dir"]


def test_semseg_labels_equal_the_evaluation_forward(cli, semseg_run, tmp_path) -> None:
    from pc3d.methods.scene_semseg import RoomPoints, SceneSemseg, SyntheticRooms

    inputs = tmp_path / "rooms"
    inputs.mkdir()
    for i, room in enumerate(SyntheticRooms(2, seed=5, points=900)):
        write_point_cloud(inputs / f"room{i}.ply", PointCloud(points=room["coord"],
                                                              colors=room["color"].astype(np.uint8)))
    before = snapshot(inputs)
    result = predicted(cli, semseg_run, inputs, out=tmp_path / "out")
    assert snapshot(inputs) == before  # nothing written next to the inputs
    assert Path(result["run_dir"]).parent == tmp_path / "out" / "predict"
    assert (Path(result["run_dir"]) / "config.yaml").is_file() and result["task"] == "semseg"
    config, method = loaded(semseg_run, lambda c: SceneSemseg(c, 13))
    assert len(result["inputs"]) == 2
    for record in result["inputs"]:
        cloud = read_point_cloud(record["input"])
        labels = np.load(record["outputs"]["labels"])
        assert labels.shape == (len(cloud),) and Path(record["outputs"]["ply"]).is_file()
        room = {"coord": cloud.points, "color": cloud.colors.astype(np.float32), "segment": np.zeros(len(cloud))}
        sample = RoomPoints([room], config.data.num_points, train=False)[0]  # the evaluation's draw
        with torch.no_grad():
            expected = method.model(sample["points"][None], sample["colors"][None]).argmax(-1)[0].numpy()
        pick = np.random.default_rng(0).permutation(len(cloud))[: config.data.num_points]
        np.testing.assert_array_equal(labels[pick], expected)
        assert sum(record["counts"].values()) == len(cloud)
        ply = read_point_cloud(record["outputs"]["ply"])
        np.testing.assert_array_equal(ply.fields["label"], labels)


# ------------------------------------------------------------------------------------------ classification


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("cls")
    return train(out, "cls-synthetic", "--preset", "quickstart", "--set", "train.epochs=1", "--set",
                 "data.synthetic_count=13", "--set", "data.synthetic_test_count=13", "--set", "votes=2", "--set",
                 "model.depth=1")["run_dir"]


def test_classification_equals_the_reader_and_validation_step(cli, cls_run, tmp_path) -> None:
    from pc3d.data.readers.modelnet40 import ModelNet40
    from pc3d.data.synthetic.objects import CATEGORIES
    from pc3d.methods.object_finetune import ObjectClassification
    from pc3d.metrics.classification import aggregate_votes

    config, method = loaded(cls_run, lambda c: ObjectClassification(c, len(CATEGORIES)))
    rng = np.random.default_rng(3)
    inputs, modelnet = tmp_path / "shapes", tmp_path / "modelnet"
    inputs.mkdir()
    (modelnet / "thing").mkdir(parents=True)
    ids = []
    for i, count in enumerate((300, 256, 200)):  # more (FPS), as many, and fewer points than the model reads
        points = (rng.normal(size=(count, 3)) * [1.0, 0.5, 0.2] + 0.3).astype(np.float32)
        np.save(inputs / f"thing_{i:04d}.npy", points)
        np.savetxt(modelnet / "thing" / f"thing_{i:04d}.txt", points, fmt="%.9g", delimiter=",")
        ids.append(f"thing_{i:04d}")
    (modelnet / "modelnet40_shape_names.txt").write_text("thing\n")
    (modelnet / "modelnet40_test.txt").write_text("".join(f"{i}\n" for i in ids))
    before = snapshot(inputs)
    result = predicted(cli, cls_run, inputs, out=tmp_path / "out")
    assert snapshot(inputs) == before
    rows = json.loads(Path(result["outputs"]["predictions"]).read_text())
    assert len(rows) == 3 and Path(result["outputs"]["predictions_csv"]).read_text().count("\n") == 4
    reader = ModelNet40(modelnet, "test", config.data.num_points)  # the task's own reader
    names = [c.name for c in CATEGORIES]
    for i, row in enumerate(rows):
        points = torch.from_numpy(reader.points(i))[None]
        with torch.no_grad():
            single = int(method.validation_step({"points": points, "label": torch.zeros(1)})["pred"][0])
            votes = method.vote_logits(points, config.votes, torch.Generator().manual_seed(config.run.seed))
        assert row["single_class_index"] == single
        assert row["class_index"] == int(aggregate_votes(votes.numpy(), "mean_logits")[0])
        assert row["class"] == names[row["class_index"]] and 0 < row["score"] <= 1
    # a glob picks the same shapes
    globbed = predicted(cli, cls_run, str(inputs / "*.npy"), out=tmp_path / "out")
    assert [r["class_index"] for r in globbed["inputs"]] == [r["class_index"] for r in rows]


def test_bad_inputs_and_checkpoints_fail_in_one_line(cli, cls_run, tmp_path) -> None:
    shape = tmp_path / "a.npy"
    np.save(shape, np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32))
    missing = cli("predict", cls_run, tmp_path / "nowhere.ply", "--out", tmp_path / "out")
    assert missing.code == 2 and missing.err.count("\n") == 1 and "nowhere.ply" in missing.err
    assert missing.err.startswith("pc3d: error:") and missing.out == ""
    no_match = cli("predict", cls_run, str(tmp_path / "*.ply"), "--out", tmp_path / "out")
    assert no_match.code == 2 and no_match.err.count("\n") == 1
    # a pretraining checkpoint: the same pair with the config of a Point-MAE run
    fake = tmp_path / "pretrain"
    fake.mkdir()
    best = Path(cls_run) / "checkpoints" / "best"
    shutil.copy(best.with_suffix(".safetensors"), fake / "last.safetensors")
    meta = json.loads(best.with_suffix(".json").read_text())
    meta["config"].update({"command": "pretrain", "method": "point-mae"})
    (fake / "last.json").write_text(json.dumps(meta))
    wrong = cli("predict", fake / "last.json", shape, "--out", tmp_path / "out")
    assert wrong.code == 2 and wrong.err.count("\n") == 1
    assert "point-mae" in wrong.err and "object-cls" in wrong.err and "point-mode-semseg" in wrong.err
    (tmp_path / "plain").mkdir()
    empty = cli("predict", tmp_path / "plain", shape)  # a folder that is not a run
    assert empty.code == 2 and "best.json" in empty.err
    assert not (tmp_path / "out").exists()  # every failure came before a run folder was made


# ------------------------------------------------------------------------------------------ part segmentation


@pytest.mark.slow
def test_partseg_labels_equal_validation_step(cli, tmp_path) -> None:
    from pc3d.data.readers._common import unit_sphere
    from pc3d.data.readers.objects import SyntheticObjects, synthetic_partseg_categories
    from pc3d.methods.object_finetune import ObjectPartSegmentation

    run = train(tmp_path / "runs", "partseg-shapenetpart", "--preset", "quickstart", "--set", "train.epochs=1",
                "--set", "data.synthetic_count=6", "--set", "data.synthetic_test_count=2", "--set",
                "model.depth=1")["run_dir"]
    config, method = loaded(run, ObjectPartSegmentation)
    names = synthetic_partseg_categories()
    objects = SyntheticObjects(2, 9, config.data.num_points, names, with_parts=True)
    inputs = tmp_path / "shapes"
    inputs.mkdir()
    from pc3d.data.readers.shapenetpart import CATEGORY_IDS

    by_id = {v: k for k, v in CATEGORY_IDS.items()}
    for i, sample in enumerate(objects):
        np.save(inputs / f"{by_id[int(sample['category'])]}_{i}.npy", sample["points"].numpy())
    result = predicted(cli, run, inputs, out=tmp_path / "out")
    for record, sample in zip(result["inputs"], objects, strict=True):
        labels = np.load(record["outputs"]["labels"])
        points = torch.from_numpy(unit_sphere(sample["points"].numpy()).astype(np.float32))[None]
        batch = {"points": points, "category": sample["category"][None], "part_label": sample["part_label"][None]}
        np.testing.assert_array_equal(labels, method.validation_step(batch)["pred"][0].numpy())
    unknown = cli("predict", run, inputs / "nothing_0.npy", "--out", tmp_path / "out")
    assert unknown.code == 2
    np.save(tmp_path / "blob.npy", objects[0]["points"].numpy())
    no_category = cli("predict", run, tmp_path / "blob.npy", "--out", tmp_path / "out")
    assert no_category.code == 2 and "--category" in no_category.err
    assert cli("predict", run, tmp_path / "blob.npy", "--category", "chair", "--out", tmp_path / "out").code == 0


# ------------------------------------------------------------------------------------------ probe instances


@pytest.mark.slow
def test_probe_instances_equal_validation_step(cli, tmp_path) -> None:
    from pc3d.data.readers.scannet import SyntheticScanNet
    from pc3d.methods.scene_probe import InputRules, ProbeScenes, SceneProbe, collate_scenes, scene_labels

    run = train(tmp_path / "runs", "probe-scannet", "--preset", "quickstart", "--set", "train.epochs=1", "--set",
                "data.synthetic_count=2", "--set", "data.synthetic_val_count=1", "--set", "data.num_points=1500",
                "--set", "train.batch_size=2")["run_dir"]
    config, method = loaded(run, lambda c: SceneProbe(c, scene_labels(c.data.dataset)))
    inputs = tmp_path / "scenes"
    inputs.mkdir()
    rooms = SyntheticScanNet(1, 11, 1500, index_offset=7)
    for i, room in enumerate(rooms):
        write_point_cloud(inputs / f"scene{i}.ply", PointCloud(points=room["coord"], colors=room["color"].astype(
            np.uint8), normals=room["normal"]))
    result = predicted(cli, run, inputs, out=tmp_path / "out")
    assert result["task"] == "insseg"
    for record in result["inputs"]:
        cloud = read_point_cloud(record["input"])
        none = np.full(len(cloud), -1)
        scene = {"coord": cloud.points, "color": cloud.colors.astype(np.float32), "normal": cloud.normals,
                 "segment": none, "instance": none}
        dataset = ProbeScenes([scene], method.labels, config.model.grid_size, train=False, augment=False,
                              rules=InputRules.of(config.model))
        expected = method.validation_step(collate_scenes([dataset[0]]))["scenes"][0]
        np.testing.assert_array_equal(np.load(record["outputs"]["labels"]), expected["pred"])
        np.testing.assert_array_equal(np.load(record["outputs"]["instances"]), expected["pred_instance"])
        assert len(json.loads(Path(record["outputs"]["instances_json"]).read_text())) == record["instances"]


# ------------------------------------------------------------------------------------------ zero-shot semseg


@pytest.mark.slow
def test_zero_shot_kitti_labels_equal_the_evaluation(cli, tmp_path) -> None:
    import os
    import subprocess
    import sys

    from pc3d.data.readers.semantickitti import NUM_CLASSES, SemanticKITTI, map_labels
    from pc3d.io.kitti import read_kitti_label
    from pc3d.methods.zeroshot_seg import SegFrames, ZeroShotSeg, collate_frames

    # a subprocess: the tiny random CLIP goes to a private Hugging Face cache, read when huggingface_hub loads
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "pc3d", "finetune", "affinity3d-semantickitti", "--preset",
                           "quickstart", "--set", "train.epochs=1", "--set", "data.synthetic_rays=2000", "--out",
                           str(tmp_path / "runs"), "--device", "cpu", "--json"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["run_dir"]

    def build(config):
        from pc3d.engine.checkpoint import load_weights

        text = load_weights(str(Path(run) / "checkpoints" / "last.json"))["text"]
        return ZeroShotSeg(config, text, np.ones(NUM_CLASSES, np.float32))

    config, method = loaded(run, build)
    root = next((tmp_path / "runs").rglob("semantic_kitti"))
    velodyne = root / "sequences" / "01" / "velodyne"
    before = snapshot(root)
    result = predicted(cli, run, str(velodyne / "00000[0-1].bin"), out=tmp_path / "out")
    assert snapshot(root) == before and len(result["inputs"]) == 2
    frames = SegFrames(SemanticKITTI(root, ["01"], "full", with_image=True, max_frames=2), None, False, False, None)
    for i, record in enumerate(result["inputs"]):
        assert record["outputs"]["labels"].endswith(".label")
        semantic, _ = read_kitti_label(record["outputs"]["labels"], num_points=record["points"])
        with torch.no_grad():
            expected = method.predict(collate_frames([frames[i]]), config.tta).numpy()
        np.testing.assert_array_equal(map_labels(semantic), expected)
