"""Honest quickstart numbers for the scene tasks (issue 18, item 6): det-scannet and semseg-s3dis train,
select and report on three disjoint synthetic splits; the checkpoint is chosen on val and test is scored
once, after training, with those weights."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json

import numpy as np
import pytest
import torch

from pc3d.config import apply_overrides, load_preset, validate_preset


def _config(name: str, kind: str, sets: list[str]):
    return validate_preset(apply_overrides(load_preset(name), sets), kind)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def test_detection_splits_are_disjoint_at_the_quickstart_counts():
    from pc3d.data.readers.detection_scenes import scene_records
    from pc3d.methods.scene_detection import synthetic_test_scenes

    # the quickstart's counts (48 / 12 / 24 scenes); fewer points per scene only to keep the test fast: a scene's
    # layout depends on (seed, generator index) alone
    config = _config("det-scannet-quickstart", "det", ["data.synthetic_points=256", "data.num_points=256"])
    assert (config.data.synthetic_count, config.data.synthetic_val_count, config.data.synthetic_test_count) == (
        48, 12, 24)
    train = scene_records(config.data, "train", 0)
    val = scene_records(config.data, "val", 0)
    test = synthetic_test_scenes(config)
    assert test is not None
    splits = [{_digest(r.points, r.boxes) for r in records} for records in (train, val, test.records)]
    assert [len(s) for s in splits] == [48, 12, 24]  # no scene twice inside a split either
    assert not splits[0] & splits[1] and not splits[0] & splits[2] and not splits[1] & splits[2]


def test_semseg_splits_are_disjoint_at_the_quickstart_counts():
    from pc3d.methods.scene_semseg import build, synthetic_test_rooms

    config = _config("semseg-s3dis-quickstart", "seg", ["data.synthetic_points=256", "data.num_points=256"])
    setup = build(config, 0)
    test = synthetic_test_rooms(config)
    assert test is not None
    splits = [{_digest(room["coord"], room["segment"]) for room in rooms.rooms}
              for rooms in (setup.train_set, setup.val_set, test)]
    assert [len(s) for s in splits] == [24, 8, 16]
    assert not splits[0] & splits[1] and not splits[0] & splits[2] and not splits[1] & splits[2]


def test_counts_that_could_overlap_the_next_split_are_refused():
    from pc3d.errors import ConfigError

    # splits start 100_000 generator indices apart: one more scene would be the first val scene
    with pytest.raises((ConfigError, ValueError)):
        _config("det-scannet-quickstart", "det", ["data.synthetic_count=100001"])


def test_public_datasets_report_val_and_build_no_synthetic_test():
    from pc3d.methods.scene_detection import synthetic_test_scenes
    from pc3d.methods.scene_semseg import synthetic_test_rooms

    # ScanNet / S3DIS keep their official protocol: val (S3DIS Area 5) is the reported split
    assert synthetic_test_scenes(_config("det-scannet", "det", [])) is None
    assert synthetic_test_rooms(_config("semseg-s3dis", "seg", [])) is None
    # a synthetic run may also switch the test split off
    assert synthetic_test_scenes(_config("det-scannet-quickstart", "det", ["data.synthetic_test_count=0"])) is None


def _fingerprint(module: torch.nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in module.parameters()))


@pytest.mark.slow
def test_detection_selects_on_val_and_scores_test_once_with_the_selected_weights(tmp_path, monkeypatch):
    """A fake val history (AP25 0.1, 0.5, 0.2 over three epochs) must select epoch 2: after training, val and
    test are scored once each with epoch 2's weights (not the last ones), and no test scene is seen before."""
    from pc3d.cli import main
    from pc3d.methods import scene_detection
    from pc3d.methods.scene_detection import DetectionScenes, SceneDetection

    sets = ["data.synthetic_count=8", "data.synthetic_val_count=3", "data.synthetic_test_count=4",
            "data.synthetic_points=2048", "data.num_points=1024", "train.epochs=3", "train.batch_size=4",
            "optim.lr=0.01"]
    config = _config("det-scannet-quickstart", "det", sets)
    from pc3d.data.readers.detection_scenes import scene_records

    def sample_hashes(records) -> set[str]:
        scenes = DetectionScenes(records, config.data.num_points, config.max_boxes, None)
        return {_digest(scenes[i]["points"].numpy()) for i in range(len(scenes))}

    val_hashes = sample_hashes(scene_records(config.data, "val", 0))
    test_set = scene_detection.synthetic_test_scenes(config)
    assert test_set is not None
    test_hashes = sample_hashes(test_set.records)

    fake = [0.1, 0.5, 0.2]
    calls: list[dict] = []  # one per validation_epoch_end: scenes seen, weights, real metrics
    seen: set[str] = set()
    real_step, real_end = SceneDetection.validation_step, SceneDetection.validation_epoch_end

    def step(self, batch):
        seen.update(_digest(p.cpu().numpy()) for p in batch["points"])
        return real_step(self, batch)

    def end(self, outputs):
        metrics = real_end(self, outputs)
        calls.append({"scenes": set(seen), "weights": _fingerprint(self), "real": dict(metrics)})
        seen.clear()
        if len(calls) <= len(fake):  # the trainer's validations: feed the fake history
            metrics = {**metrics, "ap25": fake[len(calls) - 1]}
        return metrics

    monkeypatch.setattr(SceneDetection, "validation_step", step)
    monkeypatch.setattr(SceneDetection, "validation_epoch_end", end)
    args = ["finetune", "det-scannet", "--preset", "quickstart", "--out", str(tmp_path), "--json", "--quiet"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    result = json.loads(buffer.getvalue().strip().splitlines()[-1])

    assert len(calls) == 5  # 3 epochs of validation, then val and test once each
    training, (val_call, test_call) = calls[:3], calls[3:]
    assert all(c["scenes"] == val_hashes for c in training)  # selection never saw a test scene
    assert val_call["scenes"] == val_hashes and test_call["scenes"] == test_hashes
    # the selected weights are epoch 2's (fake AP25 0.5), not the last epoch's
    assert training[1]["weights"] != training[2]["weights"]
    assert val_call["weights"] == test_call["weights"] == training[1]["weights"]
    assert result["selection"] == {
        "metric": "val/ap25", "mode": "max", "split": "val", "value": 0.5, "epoch": 2, "step": 4,
        "checkpoint": "best", "reported": "test", "val_samples": 3, "test_samples": 4}
    # reloaded epoch-2 weights reproduce epoch 2's real val metrics exactly; test is the one test scoring
    assert result["val"] == pytest.approx(training[1]["real"], abs=0)
    assert result["test"] == pytest.approx(test_call["real"], abs=0)
    assert set(result["test"]) >= {"ap25", "ap50", "ar25", "ar50"}


@pytest.mark.slow
def test_semseg_result_has_val_test_and_selection(tmp_path):
    from pc3d.cli import main

    sets = ["data.synthetic_count=8", "data.synthetic_val_count=2", "data.synthetic_test_count=3",
            "train.epochs=2"]
    args = ["finetune", "semseg-s3dis", "--preset", "quickstart", "--out", str(tmp_path), "--json", "--quiet"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    result = json.loads(buffer.getvalue().strip().splitlines()[-1])
    selection = result["selection"]
    assert selection["metric"] == "val/miou" and selection["split"] == "val" and selection["reported"] == "test"
    assert (selection["val_samples"], selection["test_samples"]) == (2, 3)
    # the selected checkpoint rescored on val gives back the value that selected it
    assert result["val"]["miou"] == pytest.approx(selection["value"], abs=1e-12)
    assert set(result["test"]) == {"miou", "macc", "oa"} and 0 <= result["test"]["miou"] <= 1


def test_synthetic_partseg_splits_are_disjoint_and_val_selects(tmp_path):
    """Part segmentation on the synthetic objects: train / val / test disjoint (hashes), the checkpoint is
    chosen on val, and the result reports val and test apart."""
    from pc3d.cli import main
    from pc3d.data.readers.objects import partseg_sets, partseg_val_set
    from pc3d.methods.object_finetune import build_partseg

    config = _config("partseg-shapenetpart-quickstart", "partseg", [])
    train, test = partseg_sets(config.data, 0)
    val = partseg_val_set(config.data, 0)
    assert val is not None and build_partseg(config, 0).val_set is not test
    splits = [{_digest(s["points"].numpy(), s["part_label"].numpy()) for s in (d[i] for i in range(len(d)))}
              for d in (train, val, test)]
    assert [len(s) for s in splits] == [48, 16, 16]
    assert not splits[0] & splits[1] and not splits[0] & splits[2] and not splits[1] & splits[2]

    args = ["finetune", "partseg-shapenetpart", "--preset", "quickstart", "--out", str(tmp_path), "--json",
            "--quiet", "--set", "train.epochs=1", "--set", "data.synthetic_count=12"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    result = json.loads(buffer.getvalue().strip().splitlines()[-1])
    assert result["selection"]["split"] == "val" and result["selection"]["metric"] == "val/miou_instance"
    assert (result["selection"]["val_samples"], result["selection"]["test_samples"]) == (16, 16)
    # the selected checkpoint rescored on val gives back the value that selected it; test is scored apart
    assert result["val_miou_instance"] == pytest.approx(result["best"]["value"], abs=1e-9)
    assert result["metrics"]["val/miou_instance"] == pytest.approx(result["val_miou_instance"], abs=1e-9)
    assert 0 <= result["test_miou_instance"] <= 1
