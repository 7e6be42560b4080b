"""Affinity3D pseudo-labelling: components against their definitions, and end-to-end CLI runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pc3d.methods import affinity3d as a3d


def test_affinity_rows_sum_to_one_and_equal_normalised_power():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 4))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    t = a3d.affinity_transition(torch.tensor(feats), scale=5.0, beta=2.0).numpy()
    w = np.zeros((6, 6))
    for i in range(6):  # row-softmax by hand
        e = np.exp(5.0 * feats[i] @ feats.T)
        w[i] = e / e.sum()
    a = w ** 2
    expected = np.diag(1 / a.sum(1)) @ a  # D^-1 W^beta
    assert np.allclose(t, expected) and np.allclose(t.sum(1), 1)


def test_noisy_instance_label_is_corrected_by_similar_neighbours():
    # five near-identical 'car' superpoints; one of them got a wrong initial label (noise), plus one 'sign'
    feats = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.98, 0.2], [0.99, -0.14], [0.97, 0.24], [0.0, 1.0]])
    feats = torch.nn.functional.normalize(feats, dim=1)
    scores = torch.tensor([[0.9, 0.1]] * 5 + [[0.1, 0.9]])
    scores[2] = torch.tensor([0.3, 0.7])  # noisy
    refined = a3d.refine_scores(feats[:3], scores[:3], feats[3:], scores[3:], scale=10.0, beta=2.0)
    assert scores[2].argmax() == 1 and refined[2].argmax() == 0  # corrected to car
    assert refined[0].argmax() == 0


def test_visibility_marks_occluded_points():
    superpixels = np.zeros((4, 4), dtype=np.int64)
    superpixels[:, 2:] = 1
    pixels = np.array([[0, 0], [1, 1], [2, 0], [0, 3], [3, 3]])  # (row, col)
    depth = np.array([5.0, 5.3, 9.0, 20.0, 20.4])  # point 2 lies behind the surface at 5 m in superpixel 0
    visible = a3d.superpixel_visibility(pixels, depth, superpixels, threshold=0.5)
    assert visible.tolist() == [True, True, False, True, True]


def test_crop_box_is_at_least_min_size_and_inside_the_image():
    top, left, bottom, right = a3d.crop_box(np.array([[3.2, 10.0], [5.0, 12.5]]), 30, (40, 100))
    assert (bottom - top, right - left) == (30, 30) and left == 0 and top >= 0
    box = a3d.crop_box(np.array([[10.0, 5.0], [80.0, 30.0]]), 30, (40, 100))
    assert box == (3, 10, 33, 81)  # v span 26 px grows by 2 px each side; u span 71 px stays


def test_dbscan_matches_brute_force():
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.normal(0, 0.2, (40, 3)), rng.normal(3, 0.2, (30, 3)), rng.uniform(-5, 8, (10, 3))])
    labels = a3d.dbscan(pts, eps=0.4, min_samples=5)
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    core = (dist <= 0.4).sum(1) >= 5
    for i in range(len(pts)):
        for j in range(len(pts)):
            if core[i] and core[j] and dist[i, j] <= 0.4:
                assert labels[i] == labels[j] >= 0
    noise = ~core & ~((dist <= 0.4) & core[None]).any(1)
    assert (labels[noise] == -1).all() and (labels[~noise] >= 0).all()
    assert len(set(labels[core].tolist())) == 2


def test_bpss_supervoxels_respect_planes():
    rng = np.random.default_rng(2)
    floor = np.c_[rng.uniform(0, 4, 400), rng.uniform(0, 4, 400), np.zeros(400)]
    wall = np.c_[np.full(300, 4.05), rng.uniform(0, 4, 300), rng.uniform(0.05, 3, 300)]
    labels = a3d.bpss_supervoxels(np.concatenate([floor, wall]), resolution=1.0, k=10)
    assert labels.min() == 0 and 4 <= labels.max() + 1 <= 700
    mixed = [s for s in np.unique(labels) if 0 < (labels[:400] == s).sum() and (labels[400:] == s).sum() > 0]
    impure = sum(min((labels[:400] == s).sum(), (labels[400:] == s).sum()) for s in mixed)
    assert impure < 0.05 * len(labels)


def _pc3d(*args: str, env_extra: dict | None = None) -> dict:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "pc3d", *args, "--json"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cli_tiny_random_clip_writes_valid_labels_and_resumes(tmp_path):
    from pc3d.io.kitti import read_kitti_bin, read_kitti_label

    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    args = ("pseudolabel", "affinity3d", "--preset", "tiny-random", "--out", str(tmp_path / "out"),
            "--set", "data.synthetic_count=3", "--set", "data.synthetic_rays=6400")
    summary = _pc3d(*args, env_extra=env)
    assert summary["frames"] == 3 and summary["labelled"] == 3
    assert (tmp_path / "hf" / "hub" / "models--pc3d--tiny-random-clip" / "refs" / "main").is_file()
    root = Path(summary["out"])
    for k in range(3):
        scan = read_kitti_bin(root / "synthetic/semantic_kitti/sequences/00/velodyne" / f"{k:06d}.bin")
        semantic, _ = read_kitti_label(root / "sequences/00/labels" / f"{k:06d}.label", num_points=len(scan))
        assert set(np.unique(semantic).tolist()) <= {0, 10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70,
                                                       71, 72, 80, 81}
        assert np.load(root / "sequences/00/visibility" / f"{k:06d}.npy").shape == (len(scan),)
    again = _pc3d(*args, env_extra=env)
    assert again["skipped"] == 3 and again["labelled"] == 0


@pytest.mark.slow
def test_oracle_accuracy_is_high_and_visibility_raises_it(tmp_path):
    sets = ("--set", "data.synthetic_count=2", "--set", "data.synthetic_rays=12800", "--set",
            "data.synthetic_image=[94,310]", "--set", "visibility.n_segments=200")
    out = str(tmp_path / "out")
    full = _pc3d("pseudolabel", "affinity3d", "--preset", "oracle", "--out", out, *sets)
    plain = _pc3d("pseudolabel", "affinity3d", "--preset", "oracle", "--out", out, "--set", "run.name=novis",
                  "--set", "visibility.enabled=false", *sets)
    assert full["pseudo_label"]["accuracy"] > 0.8
    assert full["pseudo_label"]["accuracy"] > plain["pseudo_label"]["accuracy"]


def _tiny_oracle_config(tmp_path, *sets: str):
    from pc3d.config import apply_overrides, load_preset, validate_preset

    base = [f"run.out={tmp_path}", "run.name=tiny", "data.synthetic_count=3", "data.synthetic_rays=12800",
            "data.synthetic_image=[94,310]", "visibility.n_segments=200", *sets]
    return validate_preset(apply_overrides(load_preset("affinity3d-oracle-noisy"), base), "affinity3d-oracle-noisy")


def test_affinity_corrects_noisy_oracle_labels(tmp_path):
    config = _tiny_oracle_config(tmp_path, "visibility.enabled=false")
    dataset = a3d.dataset_for(config, a3d.output_root(config))
    off = a3d.score_pseudo_labels(_tiny_oracle_config(tmp_path, "visibility.enabled=false",
                                                      "affinity.enabled=false"), dataset)
    on = a3d.score_pseudo_labels(config, dataset)
    assert off["pseudo_points"] == on["pseudo_points"] > 1000  # same points labelled, only the classes change
    # CLIP-like oracle (affinity3d_oracle): noisy crop features, confusions between similar classes, no label
    # histogram in any feature; the walk averages scores over crops that look alike
    assert 0.5 < off["accuracy"] < 0.8
    assert on["accuracy"] > off["accuracy"] + 0.05, (off["accuracy"], on["accuracy"])
