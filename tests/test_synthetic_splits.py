"""cls-synthetic: disjoint generated train / val / test splits, the best checkpoint chosen on val only, and
the test split scored once, after training, with that checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pc3d.config import validate_preset
from pc3d.config.loading import load_preset

TINY = {"dim": 48, "depth": 2, "heads": 4, "num_groups": 16, "group_size": 16, "drop_path": 0.0}


def _hashes(dataset) -> set[str]:
    return {hashlib.sha256(dataset[i]["points"].numpy().tobytes()).hexdigest() for i in range(len(dataset))}


def _preset(name: str):
    return validate_preset(load_preset(name))


@pytest.mark.parametrize("name", ["cls-synthetic", "cls-synthetic-quickstart"])
def test_cls_synthetic_presets_ask_for_a_val_split(name):
    data = _preset(name).data
    assert data.source == "synthetic" and data.synthetic_val_count > 0
    assert data.synthetic_val_count == data.synthetic_test_count  # as many val as test objects


def test_splits_are_disjoint_and_cover_every_class():
    from pc3d.data.readers.objects import classification_splits, dataset_labels

    data = _preset("cls-synthetic-quickstart").data.model_copy(update={"num_points": 64})
    train, val, test, num_classes = classification_splits(data, seed=3)
    assert (len(train), len(val), len(test)) == (130, 130, 130) and num_classes == 13
    hashes = [_hashes(split) for split in (train, val, test)]
    assert [len(h) for h in hashes] == [130, 130, 130]  # no duplicate inside a split either
    assert not hashes[0] & hashes[1] and not hashes[0] & hashes[2] and not hashes[1] & hashes[2]
    for split in (train, val, test):
        assert set(dataset_labels(split).tolist()) == set(range(13))


def test_without_a_val_count_validation_stays_on_test():
    """The public datasets ship no val split (Point-MAE's protocol); synthetic_val_count 0 keeps that."""
    from pc3d.data.readers.objects import classification_splits, classification_train_val

    data = _preset("cls-synthetic-quickstart").data.model_copy(
        update={"num_points": 32, "synthetic_val_count": 0, "synthetic_count": 13, "synthetic_test_count": 13})
    _, val, test, _ = classification_splits(data, seed=0)
    assert val is test
    _, val_only, _ = classification_train_val(data, seed=0)
    assert _hashes(val_only) == _hashes(test)


def test_selection_reads_val_only_and_test_is_scored_once_after_training(tmp_path, monkeypatch):
    import pc3d.data.readers.objects as objects
    import pc3d.engine.trainer as trainer
    from pc3d.methods import object_finetune
    from pc3d.runs import RunRequest

    config = validate_preset({
        "command": "finetune", "method": "object-cls", "model": TINY, "votes": 2,
        "data": {"source": "synthetic", "num_points": 64, "synthetic_count": 26, "synthetic_val_count": 13,
                 "synthetic_test_count": 26, "augment": False},
        "train": {"epochs": 3, "batch_size": 13, "best_metric": "oa"},
        "optim": {"lr": 1e-3, "warmup_epochs": 0},
        "run": {"out": str(tmp_path), "device": "cpu", "seed": 0}})

    reads = {"val": 0, "test": 0}
    test_reads_during_fit = []
    val_hashes, test_hashes, scored = set(), set(), []

    class Counting(objects.SyntheticObjects):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            split = {objects.SYNTHETIC_TEST_OFFSET: "test", objects.SYNTHETIC_VAL_OFFSET: "val"}.get(self.offset)
            if split:
                reads[split] += 1
                (val_hashes if split == "val" else test_hashes).add(
                    hashlib.sha256(sample["points"].numpy().tobytes()).hexdigest())
            return sample

        def __init__(self, count, seed, num_points, categories=None, index_offset=0, with_parts=False):
            super().__init__(count, seed, num_points, categories, index_offset, with_parts)
            self.offset = index_offset

    real_fit, real_evaluate = trainer.fit, object_finetune.evaluate_classifier

    def counting_fit(request, build):
        result = real_fit(request, build)
        test_reads_during_fit.append(reads["test"])
        return result

    def recording_evaluate(method, dataset, votes, *args, **kwargs):
        scored.append((type(dataset).__name__, getattr(dataset, "offset", None), votes))
        return real_evaluate(method, dataset, votes, *args, **kwargs)

    monkeypatch.setattr(objects, "SyntheticObjects", Counting)
    monkeypatch.setattr(trainer, "fit", counting_fit)
    monkeypatch.setattr(object_finetune, "evaluate_classifier", recording_evaluate)

    result = object_finetune.run_classification(RunRequest(config=config, preset_name="cls-synthetic"))

    assert test_reads_during_fit == [0]  # training and checkpoint selection never touched the test split
    assert reads["test"] == 26  # then the test split is read exactly once (the votes reuse those clouds)
    assert reads["val"] >= 3 * 13  # every epoch validated on the val split
    assert not val_hashes & test_hashes and len(val_hashes) == 13 and len(test_hashes) == 26
    assert scored == [("Counting", objects.SYNTHETIC_VAL_OFFSET, 0), ("Counting", objects.SYNTHETIC_TEST_OFFSET, 2)]

    # the selected checkpoint's val OA is the best val/oa the engine tracked; test is reported apart
    assert result["best"]["metric"] == "val/oa"
    assert result["val_oa"] == pytest.approx(result["best"]["value"])
    assert result["selection"] == {"metric": "val/oa", "split": "val", "checkpoint": "best",
                                   "epoch": result["best"]["epoch"], "val_samples": 13, "test_samples": 26}
    for key in ("val_oa", "val_macc", "test_oa", "test_macc", "test_oa_vote", "test_macc_vote"):
        assert 0 <= result[key] <= 1
    scores = json.loads((Path(result["run_dir"]) / "test_metrics.json").read_text())
    assert scores["single"]["num_samples"] == 26 and scores["val"]["num_samples"] == 13
    assert scores["selection"]["split"] == "val"
