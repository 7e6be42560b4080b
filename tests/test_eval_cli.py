"""`pc3d eval`: every task end to end on tiny files, --json output, and bad inputs (exit 2, one line)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pc3d.io.kitti import write_kitti_label
from pc3d.metrics import detection_ap, semantic_confusion, semseg_metrics


def one_json(result) -> dict:
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 1  # exactly one JSON object, nothing else on stdout
    return json.loads(lines[0])


@pytest.fixture
def semseg_dirs(tmp_path):
    rng = np.random.default_rng(0)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    data = []
    for i in range(3):
        gt = rng.integers(-1, 4, 50)
        pred = np.where(rng.random(50) < 0.7, np.maximum(gt, 0), rng.integers(0, 4, 50))
        np.save(gt_dir / f"scene{i}.npy", gt)
        np.save(pred_dir / f"scene{i}.npy", pred)
        data.append((pred, gt))
    return pred_dir, gt_dir, data


def test_semseg_folder_json_and_table(cli, semseg_dirs):
    pred_dir, gt_dir, data = semseg_dirs
    out = one_json(cli("eval", "semseg", "--pred", pred_dir, "--gt", gt_dir, "--json",
                       "--class-names", "a,b,c,d"))
    conf = sum(semantic_confusion(p, g, 4, -1) for p, g in data)
    expected = semseg_metrics(conf, convention="scannet")
    assert out["summary"]["miou"] == pytest.approx(expected["miou"])
    assert out["settings"]["convention"] == "scannet"
    assert set(out["per_class"]) == {"a", "b", "c", "d"}
    assert out["num_samples"] == 3
    kitti = one_json(cli("eval", "semseg", "--pred", pred_dir, "--gt", gt_dir, "--json",
                         "--convention", "semantickitti", "--num-classes", "5"))
    assert kitti["summary"]["miou"] == pytest.approx(
        semseg_metrics(sum(semantic_confusion(p, g, 5, -1) for p, g in data), convention="semantickitti")["miou"])
    table = cli("eval", "semseg", "--pred", pred_dir, "--gt", gt_dir)
    assert table.code == 0 and table.out == "" and "mean" in table.err


def test_semseg_and_panoptic_on_kitti_labels(cli, tmp_path):
    gt_sem = np.array([10, 10, 40, 40, 0, 252, 81])  # raw ids: car, car, road, road, unlabeled, car, sign
    pred_sem = np.array([10, 40, 40, 40, 10, 10, 81])
    inst = np.array([1, 1, 0, 0, 0, 2, 0])
    write_kitti_label(tmp_path / "gt.label", gt_sem, inst)
    write_kitti_label(tmp_path / "pred.label", pred_sem, inst)
    out = one_json(cli("eval", "semseg", "--pred", tmp_path / "pred.label", "--gt", tmp_path / "gt.label", "--json"))
    assert out["settings"]["convention"] == "semantickitti" and out["settings"]["num_classes"] == 20
    # car: tp 2, fn 1 -> 2/3; road: tp 2, fp 1 -> 2/3; sign 1; the 16 absent classes count as 0
    assert out["per_class"]["car"]["iou"] == pytest.approx(2 / 3)
    assert out["summary"]["miou"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 19)
    zs = one_json(cli("eval", "zeroshot", "--pred", tmp_path / "pred.label", "--gt", tmp_path / "gt.label", "--json"))
    assert zs["settings"]["unseen"] == [3, 4, 7, 19]
    assert zs["summary"]["unseen_miou"] == pytest.approx(1 / 4)
    pan = one_json(cli("eval", "panoptic", "--pred", tmp_path / "pred.label", "--gt", tmp_path / "gt.label",
                       "--json", "--min-points", "1"))
    assert pan["settings"]["thing_classes"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert pan["per_class"]["traffic-sign"]["pq"] == 1.0


def test_cls(cli, tmp_path):
    (tmp_path / "gt.json").write_text("[0, 1, 2, 2]")
    (tmp_path / "pred.txt").write_text("0 1 2 0\n")
    out = one_json(cli("eval", "cls", "--pred", tmp_path / "pred.txt", "--gt", tmp_path / "gt.json", "--json"))
    assert out["summary"]["oa"] == 0.75 and out["summary"]["macc"] == pytest.approx((1 + 1 + 0.5) / 3)
    votes = np.zeros((2, 4, 3))
    votes[:, np.arange(4), [0, 1, 2, 2]] = 1.0
    np.save(tmp_path / "votes.npy", votes)
    out = one_json(cli("eval", "cls", "--pred", tmp_path / "votes.npy", "--gt", tmp_path / "gt.json", "--json"))
    assert out["summary"]["oa"] == 1.0


def test_insseg(cli, tmp_path):
    sem = np.array([1] * 10 + [0] * 5)
    inst = np.array([0] * 10 + [-1] * 5)
    np.savez(tmp_path / "gt.npz", semantic=sem, instance=inst)
    masks = np.zeros((1, 15), bool)
    masks[0, :10] = True
    np.savez(tmp_path / "pred.npz", masks=masks, labels=np.array([1]), scores=np.array([0.9]))
    out = one_json(cli("eval", "insseg", "--pred", tmp_path / "pred.npz", "--gt", tmp_path / "gt.npz", "--json",
                       "--min-region-size", "1"))
    assert out["summary"] == {"ap": 1.0, "ap50": 1.0, "ap25": 1.0}
    assert out["settings"]["instance_classes"] == [1]


def test_panoptic_npz(cli, tmp_path):
    sem = np.array([1, 1, 1, 2, 2, 2])
    inst = np.array([0, 0, 0, 4, 4, 5])
    np.savez(tmp_path / "gt.npz", semantic=sem, instance=inst)
    np.savez(tmp_path / "pred.npz", semantic=sem, instance=np.array([0, 0, 0, 1, 1, 1]))
    out = one_json(cli("eval", "panoptic", "--pred", tmp_path / "pred.npz", "--gt", tmp_path / "gt.npz", "--json",
                       "--min-points", "1", "--ignore-classes", "0"))
    # class 2: pred segment {3,4,5} vs gt {3,4}: IoU 2/3 -> TP, gt {5} FN -> PQ 2/3 * 1/(1.5)
    assert out["per_class"]["2"]["pq"] == pytest.approx(2 / 3 / 1.5)
    assert out["settings"]["thing_classes"] == [2]


def test_detection(cli, tmp_path):
    gt_boxes = np.array([[0, 0, 0, 2, 2, 2], [5, 5, 5, 1, 1, 1]], float)
    np.savez(tmp_path / "gt.npz", boxes=gt_boxes, labels=np.array([0, 1]))
    pred_boxes = np.array([[0.2, 0, 0, 2, 2, 2], [9, 9, 9, 1, 1, 1]], float)
    np.savez(tmp_path / "pred.npz", boxes=pred_boxes, labels=np.array([0, 1]), scores=np.array([0.9, 0.8]))
    out = one_json(cli("eval", "detection", "--pred", tmp_path / "pred.npz", "--gt", tmp_path / "gt.npz", "--json"))
    expected = detection_ap([(pred_boxes, [0, 1], [0.9, 0.8], gt_boxes, [0, 1])])
    assert out["summary"]["map25"] == expected["ap25"] == 0.5


def test_partseg_combined_and_separate(cli, tmp_path):
    np.savez(tmp_path / "shape.npz", category=np.array(1), pred=np.array([4, 5, 4]), label=np.array([4, 4, 4]))
    out = one_json(cli("eval", "partseg", "--pred", tmp_path / "shape.npz", "--json"))
    # Bag: part 4 IoU 2/3, part 5 IoU 0 (predicted, not in gt)
    assert out["summary"]["miou_instance"] == pytest.approx(1 / 3)
    np.save(tmp_path / "p.npy", np.array([4, 4, 4]))
    np.savez(tmp_path / "g.npz", label=np.array([4, 4, 4]), category=np.array("Bag"))
    out = one_json(cli("eval", "partseg", "--pred", tmp_path / "p.npy", "--gt", tmp_path / "g.npz", "--json"))
    assert out["summary"]["miou_category"] == 1.0 and list(out["per_class"]) == ["Bag"]


def test_partnet(cli, tmp_path):
    sem = np.array([0, 0, 1, 1, -1])
    inst = np.array([0, 0, 1, 1, -1])
    np.savez(tmp_path / "gt.npz", semantic=sem, instance=inst)
    masks = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0]], bool)
    np.savez(tmp_path / "pred.npz", semantic=sem, masks=masks, labels=np.array([0, 1]), scores=np.array([0.9, 0.8]))
    out = one_json(cli("eval", "partnet", "--pred", tmp_path / "pred.npz", "--gt", tmp_path / "gt.npz", "--json",
                       "--category", "Bottle", "--num-parts", "2"))
    assert out["summary"]["miou"] == 1.0 and out["summary"]["map50_part_aware"] == 1.0
    out = one_json(cli("eval", "partnet", "--pred", tmp_path / "pred.npz", "--gt", tmp_path / "gt.npz", "--json",
                       "--category", "Chair"))
    assert list(out["per_class"])[:2] == ["arm", "back"] and out["settings"]["num_parts"] == 5


def bad_input(result, *fragments):
    assert result.code == 2, (result.code, result.err)
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_inputs(cli, tmp_path, semseg_dirs):
    pred_dir, gt_dir, _ = semseg_dirs
    (pred_dir / "scene2.npy").unlink()
    bad_input(cli("eval", "semseg", "--pred", pred_dir, "--gt", gt_dir, "--json"), "missing sample", "scene2")
    np.save(pred_dir / "scene2.npy", np.zeros(7, int))
    bad_input(cli("eval", "semseg", "--pred", pred_dir, "--gt", gt_dir), "scene2.npy", "7 predicted labels")
    np.save(pred_dir / "scene2.npy", np.zeros(50, np.float32))
    bad_input(cli("eval", "semseg", "--pred", pred_dir, "--gt", gt_dir), "scene2.npy", "dtype float32")
    np.save(pred_dir / "scene2.npy", np.full(50, 9))
    bad_input(cli("eval", "semseg", "--pred", pred_dir, "--gt", gt_dir, "--num-classes", "4"),
              "scene2.npy", "out of range")
    bad_input(cli("eval", "zeroshot", "--pred", pred_dir, "--gt", gt_dir), "--unseen")
    (pred_dir / "scene2.npy").write_bytes(b"not a numpy file")
    bad_input(cli("eval", "semseg", "--pred", pred_dir, "--gt", gt_dir), "scene2.npy", "unreadable", "not a .npy file")
    bad_input(cli("eval", "semseg", "--pred", tmp_path / "nope", "--gt", gt_dir), "not found")
    bad_input(cli("eval", "nosuchtask", "--pred", pred_dir, "--gt", gt_dir), "unknown eval task")
    np.savez(tmp_path / "gt.npz", boxes=np.zeros((1, 5)), labels=np.array([0]))
    np.savez(tmp_path / "pred.npz", boxes=np.zeros((1, 6)), labels=np.array([0]), scores=np.array([1.0]))
    bad_input(cli("eval", "detection", "--pred", tmp_path / "pred.npz", "--gt", tmp_path / "gt.npz"),
              "gt.npz", "'boxes' must have shape")
    np.savez(tmp_path / "gt.npz", semantic=np.zeros(3, int))
    bad_input(cli("eval", "insseg", "--pred", tmp_path / "pred.npz", "--gt", tmp_path / "gt.npz"),
              "gt.npz", "missing array 'instance'")


def test_help_documents_formats(cli):
    result = cli("eval", "--help")
    assert result.code == 0
    for fragment in ("semseg", ".label", "masks (K, N)", "boxes (K, 6", "--json"):
        assert fragment in result.out
