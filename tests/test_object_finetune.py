"""Object finetuning: linear SVM, few-shot folds, voting, part segmentation, checkpoint hand-over, and the
end-to-end CLI path pretrain geomask3d -> finetune cls-synthetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from pc3d.config import validate_preset
from pc3d.models.linear_svm import LinearSVM

TINY = {"dim": 48, "depth": 2, "heads": 4, "num_groups": 16, "group_size": 16, "drop_path": 0.0}


def numpy_svm_objective(flat: np.ndarray, x: np.ndarray, y: np.ndarray, c: float) -> tuple[float, np.ndarray]:
    """LIBLINEAR's L2-loss primal for one binary problem, with its gradient (bias as a constant feature)."""
    xa = np.hstack([x, np.ones((len(x), 1))])
    margin = np.maximum(0.0, 1.0 - y * (xa @ flat))
    value = 0.5 * flat @ flat + c * (margin**2).sum()
    grad = flat - 2 * c * xa.T @ (y * margin)
    return value, grad


def test_linear_svm_matches_scipy_optimum():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 2
    labels = rng.integers(0, 3, 90)
    x = centres[labels] + rng.normal(size=(90, 5))
    svm = LinearSVM(c=0.5).fit(torch.from_numpy(x), torch.from_numpy(labels))
    for k in range(3):
        y = np.where(labels == k, 1.0, -1.0)
        ref = minimize(numpy_svm_objective, np.zeros(6), args=(x, y, 0.5), jac=True, method="L-BFGS-B",
                       options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000})
        np.testing.assert_allclose(svm.weights[:, k].numpy(), ref.x, atol=1e-5)
    scores = np.hstack([x, np.ones((90, 1))]) @ svm.weights.numpy()
    assert (svm.predict(torch.from_numpy(x)).numpy() == scores.argmax(1)).all()
    assert (svm.predict(torch.from_numpy(x)).numpy() == labels).mean() > 0.9


def test_linear_svm_binary_uses_one_hyperplane():
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    y = torch.tensor([4, 4, 9, 9])
    svm = LinearSVM(c=1.0).fit(x, y)
    assert svm.weights.shape == (2, 1)
    assert svm.predict(torch.tensor([[-3.0], [3.0]])).tolist() == [4, 9]


def test_fewshot_folds():
    from pc3d.methods.object_finetune import fewshot_indices

    train_labels = np.repeat(np.arange(8), 12)
    test_labels = np.repeat(np.arange(8), 6)
    folds = [fewshot_indices(train_labels, test_labels, way=5, shot=3, query=4, seed=0, fold=f) for f in range(4)]
    for train_idx, test_idx, relabel in folds:
        assert sorted(relabel.values()) == list(range(5))
        assert len(train_idx) == 15 and len(set(train_idx)) == 15 and len(test_idx) == 20
        assert set(train_labels[train_idx]) == set(relabel) == set(test_labels[test_idx])
        assert np.bincount(train_labels[train_idx], minlength=8)[sorted(relabel)].tolist() == [3] * 5
    assert fewshot_indices(train_labels, test_labels, 5, 3, 4, 0, 2) == folds[2]  # deterministic
    assert len({tuple(f[0]) for f in folds}) == 4  # folds differ
    from pc3d.errors import InputError

    with pytest.raises(InputError, match="needs"):
        fewshot_indices(train_labels, test_labels, way=5, shot=20, query=4, seed=0, fold=0)


def test_classifier_takes_the_student_encoder_of_a_geomask3d_state():
    from pc3d.methods.object_finetune import ObjectClassification

    config = validate_preset({"command": "finetune", "method": "object-cls", "model": TINY})
    source = ObjectClassification(config, 5)  # stands in for a pretrained GeoMask3D method's state
    encoder = {f"encoder.{k}": v for k, v in source.model.encoder.state_dict().items()}
    state = {**{f"student.{k}": v for k, v in encoder.items()},
             **{f"ema_teacher.{k}": torch.zeros_like(v) for k, v in encoder.items()},
             **{f"kd_teacher.{k}": torch.ones_like(v) for k, v in encoder.items()},
             "student.gc_mask_token": torch.zeros(1, 1, 48)}
    target = ObjectClassification(config, 7)
    report = target.load_pretrained(state)
    assert report["missing"] == [] and report["loaded"] == len(encoder)
    for key, value in source.model.encoder.state_dict().items():
        assert torch.equal(target.model.encoder.state_dict()[key], value)


def test_voting_and_part_segmentation_outputs():
    from pc3d.data.readers.objects import SyntheticObjects, synthetic_partseg_categories
    from pc3d.methods.object_finetune import ObjectClassification, ObjectPartSegmentation, evaluate_classifier
    from pc3d.metrics.partseg import SHAPENETPART_CATEGORIES, SHAPENETPART_PARTS

    torch.manual_seed(0)
    config = validate_preset({"command": "finetune", "method": "object-cls", "model": TINY})
    method = ObjectClassification(config, 13)
    test = SyntheticObjects(6, seed=0, num_points=128)
    scores = evaluate_classifier(method, test, votes=3, batch_size=4)
    assert scores["single"]["num_samples"] == 6 and scores["vote"]["num_samples"] == 6
    points = torch.stack([test[i]["points"] for i in range(6)])
    logits = method.vote_logits(points, 3, torch.Generator().manual_seed(0))
    assert logits.shape == (3, 6, 13) and not torch.allclose(logits[0], logits[1])

    seg_config = validate_preset({"command": "finetune", "method": "object-partseg", "model": TINY})
    seg = ObjectPartSegmentation(seg_config)
    parts = SyntheticObjects(4, seed=0, num_points=128, categories=synthetic_partseg_categories(), with_parts=True)
    batch = {k: torch.stack([parts[i][k] for i in range(4)]) for k in parts[0]}
    loss = seg.training_step(batch, None)["nll"]
    assert loss.item() == pytest.approx(np.log(50), rel=0.5)
    seg.eval()
    out = seg.validation_step(batch)
    for cat, pred in zip(out["category"], out["pred"], strict=True):
        assert set(pred.tolist()) <= set(SHAPENETPART_PARTS[SHAPENETPART_CATEGORIES[int(cat)]])
    metrics = seg.validation_epoch_end([out])
    assert 0 <= metrics["miou_instance"] <= 1 and 0 <= metrics["miou_category"] <= 1


@pytest.fixture(scope="module")
def geomask3d_run(tmp_path_factory):
    from pc3d.cli import main

    out = tmp_path_factory.mktemp("runs")
    code = main(["pretrain", "geomask3d", "--preset", "quickstart", "--out", str(out), "--device", "cpu",
                 "--quiet"])
    assert code == 0
    return out


@pytest.mark.slow
def test_cli_geomask3d_quickstart_writes_a_checkpoint(geomask3d_run):
    runs = sorted(p for p in (geomask3d_run / "geomask3d").iterdir() if p.name != "latest")
    assert len(runs) == 1
    last = runs[0] / "checkpoints" / "last.safetensors"
    assert last.is_file() and (runs[0] / "checkpoints" / "last.json").is_file()
    lines = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["metric/hard_share"] == pytest.approx(0.8)  # the curriculum reached its end


@pytest.mark.slow
def test_cli_finetune_cls_synthetic_from_geomask3d_reaches_high_accuracy(geomask3d_run, cli):
    checkpoint = next((geomask3d_run / "geomask3d").iterdir()) / "checkpoints" / "last.json"
    result = cli("finetune", "cls-synthetic", "--preset", "quickstart", "--from", str(checkpoint),
                 "--out", str(geomask3d_run), "--device", "cpu", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    # 13 synthetic categories, 130 test objects: ~0.9 OA after 8 epochs (chance is 0.077)
    assert summary["test_oa"] >= 0.75, summary
    assert "test_oa_vote" in summary
    scores = json.loads((Path(summary["run_dir"]) / "test_metrics.json").read_text())
    assert len(scores["vote"]["per_class_acc"]) == 13


@pytest.mark.slow
def test_cli_svm_probe_and_bad_weights(geomask3d_run, cli):
    checkpoint = next((geomask3d_run / "geomask3d").iterdir()) / "checkpoints" / "last.json"
    result = cli("finetune", "svm-modelnet40", "--preset", "quickstart", "--from", str(checkpoint),
                 "--out", str(geomask3d_run), "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["encoder_tensors_loaded"] > 0 and 1 / 13 < summary["svm_oa"] <= 1
    missing = cli("finetune", "svm-modelnet40", "--preset", "quickstart", "--from", "nowhere.pth")
    assert missing.code == 2 and "nowhere.pth" in missing.err


def test_svm_probe_is_scale_invariant_when_standardising():
    from pc3d.models.linear_svm import standardize, svm_probe_accuracy

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 120)
    x = torch.from_numpy(rng.normal(size=(4, 6))[labels] + rng.normal(size=(120, 6)) * 0.5)
    y = torch.from_numpy(labels)
    z, = standardize(x)
    np.testing.assert_allclose(z.mean(0).numpy(), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(0).numpy(), 1, atol=1e-12)
    wide = svm_probe_accuracy(x[:80], y[:80], x[80:], y[80:])
    tiny = svm_probe_accuracy(x[:80] * 1e-3, y[:80], x[80:] * 1e-3, y[80:])
    assert wide == pytest.approx(tiny) and wide > 0.8
    # unscaled, a small C cannot afford the large weights tiny features need
    assert svm_probe_accuracy(x[:80] * 1e-3, y[:80], x[80:] * 1e-3, y[80:], scale=False) < 0.5


@pytest.mark.slow
def test_cli_fewshot_folds_and_partseg_run(geomask3d_run, cli):
    checkpoint = str(next((geomask3d_run / "geomask3d").iterdir()) / "checkpoints" / "last.json")
    fewshot = cli("finetune", "fewshot-modelnet40", "--preset", "quickstart", "--from", checkpoint,
                  "--set", "train.epochs=2", "--out", str(geomask3d_run), "--device", "cpu", "--json")
    assert fewshot.code == 0, fewshot.err
    summary = json.loads(fewshot.out)
    assert len(summary["fold_oa"]) == 2 and summary["oa_mean"] == pytest.approx(np.mean(summary["fold_oa"]))
    assert summary["oa_std"] == pytest.approx(np.std(summary["fold_oa"]))
    assert json.loads((Path(summary["run_dir"]) / "summary.json").read_text())["fold_oa"] == summary["fold_oa"]
    partseg = cli("finetune", "partseg-shapenetpart", "--preset", "quickstart", "--from", checkpoint,
                  "--set", "train.epochs=1", "--out", str(geomask3d_run), "--device", "cpu", "--json")
    assert partseg.code == 0, partseg.err
    result = json.loads(partseg.out)
    metrics = result["metrics"]
    assert 0 < metrics["val/miou_instance"] <= 1 and 0 < metrics["val/miou_category"] <= 1
    # one epoch: the best checkpoint is the last one, so rescoring it on val gives the last validation; the
    # quickstart validates on objects of its own (data.synthetic_val_count), so test is scored apart
    assert result["val_miou_instance"] == pytest.approx(metrics["val/miou_instance"])
    assert result["selection"]["split"] == "val" and 0 < result["test_miou_instance"] <= 1
    scores = json.loads((Path(result["run_dir"]) / "test_metrics.json").read_text())
    assert set(scores["per_category_miou"]) <= {"Airplane", "Car", "Chair", "Guitar", "Lamp", "Laptop", "Mug",
                                                "Table"}
