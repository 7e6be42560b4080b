"""End to end: `pc3d segment` with tiny random-weight Grounding DINO + SAM from the hub cache, the oracle preset,
and few-shot weight training on synthetic chairs with noisy oracle boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    from pc3d.data.synthetic.writer import write_synthetic

    out = tmp_path_factory.mktemp("objects")
    write_synthetic("objects", out, count=6, points=1024, preview=False)  # the 6th shape is a chair
    return out


def test_segment_tiny_random_writes_every_output(cli, objects, tmp_path, hub_cache):
    from pc3d.io.images import read_image
    from pc3d.io.pointcloud import read_point_cloud

    chair = tmp_path / "chair.ply"
    chair.write_bytes((objects / "shapes" / "chair_0001.ply").read_bytes())
    result = cli("segment", chair, "--parts", "arm,seat,leg", "--preset", "partstad-tiny-random",
                 "--set", "instances=true", "--out", tmp_path / "runs", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert (tmp_path / "hub" / "models--pc3d-tiny-random--grounding-dino").is_dir()
    assert (tmp_path / "hub" / "models--pc3d-tiny-random--sam").is_dir()
    labels = np.load(summary["outputs"]["labels"])
    assert labels.shape == (1024,) and labels.min() >= -1 and labels.max() < 3
    cloud = read_point_cloud(summary["outputs"]["ply"])
    assert np.array_equal(cloud.fields["label"], labels) and cloud.colors is not None
    assert np.load(summary["outputs"]["instances"]).shape == (1024,)
    sheet = read_image(summary["outputs"]["sheet"])
    assert sheet.ndim == 3 and sheet.shape[1] >= 5 * 64
    assert sum(summary["points_per_part"].values()) == 1024
    assert summary["boxes"] > 0 and summary["sam"] is True
    assert json.loads((Path(summary["out"]) / "summary.json").read_text())["points"] == 1024


def test_segment_oracle_boxes_give_high_miou(cli, objects, tmp_path):
    result = cli("segment", objects / "shapes" / "chair_0001.ply", "--parts", "arm,back,leg,seat",
                 "--preset", "partstad-oracle", "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["weighting"] == "none"  # no weights given: PartSLIP voting
    assert summary["box_weights"] == "partslip-voting" and summary["weights"] is None
    # re-measured 2026-12-04 with bbox2seg's edge rules (pc3d segment chair_0001.ply --parts arm,back,leg,seat
    # --preset partstad-oracle [--set superpoints.method=M]): region-growing superpoints (the default) 0.743 on
    # this 1024-point chair, cut-pursuit-py 0.738 (cut pursuit: 0.701;
    # at 1024 points it leaves 59% of the points in components of <= 10 points, which PartSLIP's small-component
    # merge hands to ~11 superpoints that straddle parts)
    assert summary["miou"] > 0.7


def test_segment_without_part_labels_rejects_the_oracle(cli, tmp_path):
    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    path = tmp_path / "plain.ply"
    write_point_cloud(path, PointCloud(np.random.default_rng(0).normal(size=(64, 3))))
    result = cli("segment", path, "--parts", "a,b", "--preset", "partstad-oracle", "--out", tmp_path)
    assert result.code == 2 and "oracle detector needs per-point part labels" in result.err


def test_fewshot_weights_learn_and_beat_voting_on_noisy_oracle_boxes(cli, tmp_path):
    # The oracle's box features are image statistics and geometry of the box, never its label or correctness, and
    # its confidences are one distribution for every box (pc3d.methods.partstad_oracle), so the weights can only
    # learn what a detector's box feature also shows. Measured (scripts/study_partstad.py, README), trained - voting
    # test mIoU with 48 chairs (8 few-shot, 8 val, 32 test), seeds 0-4: +0.016 +0.001 +0.026 +0.016 +0.034
    # (mean +0.018); with the quickstart's 24 chairs (8 test) the same networks give +0.028 -0.005 -0.000 -0.030
    # +0.026, too few test chairs to judge. Training takes the relaxed-mIoU loss on the few-shot chairs from
    # 0.94-0.95 to 0.40-0.46. The gain is the learned null weight (a learned vote threshold): the trained null with
    # one constant box weight scores higher still (0.760 vs 0.744 trained, 0.726 voting). What the test holds, on
    # seeds 0-1 with 32 test chairs each (measured +0.016, +0.001): the loss drops by at least 40 %, the trained
    # weights beat voting on average and lose at most 0.015 on a seed.
    gains, losses = [], []
    for seed in (0, 1):
        result = cli("finetune", "partstad-fewshot", "--preset", "quickstart", "--seed", str(seed),
                     "--set", "data.synthetic_count=48", "--out", tmp_path / f"runs{seed}", "--json")
        assert result.code == 0, result.err
        out_json = json.loads(result.out)
        test = out_json["test"]
        assert test["shapes"] == 32
        gains.append(test["partstad"]["miou"] - test["partslip_voting"]["miou"])
        losses.append(out_json["train_loss"])
        if seed == 0:
            out, summary = tmp_path / "runs0", out_json
    assert all(loss["partstad"] < 0.6 * loss["untrained"] for loss in losses), losses
    assert float(np.mean(gains)) > 0.0 and min(gains) > -0.015, gains
    assert summary["best"]["metric"] == "val/miou"
    assert any((out / "partstad-cache" / "Chair").glob("*.npz"))  # 2D outputs cached per shape
    # the trained weights drive `pc3d segment --checkpoint` on a labelled PartNetE test chair
    root = next(out.glob("partstad-cache/synthetic-chairs-*/partnete"))
    shape = sorted((root / "data" / "test" / "Chair").glob("*/pc.ply"))[-1]
    seg = cli("segment", shape, "--parts", "arm,back,leg,seat,wheel", "--preset", "partstad-oracle",
              "--set", "render.image_size=192", "--set", "detector.oracle_label_noise=0.3",
              "--checkpoint", summary["weights"], "--out", tmp_path / "seg", "--json")
    assert seg.code == 0, seg.err
    seg_summary = json.loads(seg.out)
    assert seg_summary["weighting"] == "network"
    assert seg_summary["box_weights"] == "partstad" and seg_summary["weights"] == summary["weights"]


def test_third_party_bars_and_warnings_follow_quiet_and_json(objects, tmp_path):
    """transformers' "Writing model shards" / "Loading weights" bars and library warnings reached stderr under
    --quiet and --json; a fresh process (the bars are tqdm's, drawn on the real stderr) shows they no longer do."""
    import os
    import subprocess
    import sys

    chair = tmp_path / "chair.ply"
    chair.write_bytes((objects / "shapes" / "chair_0001.ply").read_bytes())
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "default"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    env.pop("TRANSFORMERS_VERBOSITY", None)

    def segment(*flags: str) -> subprocess.CompletedProcess:
        # a fresh hub cache for each run, so the tiny models are written and loaded (both draw bars)
        env["HF_HUB_CACHE"] = str(tmp_path / f"hub-{len(flags)}-{flags[0]}")
        return subprocess.run([sys.executable, "-m", "pc3d", "segment", str(chair), "--parts", "arm,seat,leg",
                               "--preset", "partstad-tiny-random", "--out", str(tmp_path / "runs"), *flags],
                              capture_output=True, text=True, env=env, timeout=600)

    quiet = segment("--quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr == "" and quiet.stdout == ""
    as_json = segment("--json")
    assert as_json.returncode == 0, as_json.stderr[-2000:]
    assert as_json.stderr == ""
    assert as_json.stdout.count("\n") == 1 and isinstance(json.loads(as_json.stdout), dict)
