"""The CLIP-like oracle of the Affinity3D studies: its class geometry, and that its crop features carry no more of
the ground truth than which class a crop shows."""

from __future__ import annotations

import numpy as np
import torch

from pc3d.methods.affinity3d_oracle import FAMILIES, OracleFeatures, class_similarity, clip_like_prototypes

CAR, BICYCLE, MOTORCYCLE, TRUCK, OTHER_VEHICLE, PERSON, BICYCLIST = 1, 2, 3, 4, 5, 6, 7
ROAD, PARKING, SIDEWALK, BUILDING, VEGETATION, POLE, SIGN = 9, 10, 11, 13, 15, 18, 19


def test_prototypes_have_clip_text_like_cosines():
    protos, gap = clip_like_prototypes(512, seed=3)
    cos = protos[1:] @ protos[1:].T
    assert np.allclose(cos, class_similarity(), atol=1e-9)  # exactly the table, unit norm
    off = cos[np.triu_indices(19, 1)]
    assert 0.7 <= off.mean() <= 0.8  # CLIP text embeddings of class names are far from orthogonal
    s = lambda a, b: cos[a - 1, b - 1]  # noqa: E731
    for a, b in ((CAR, TRUCK), (PERSON, BICYCLIST), (ROAD, PARKING), (ROAD, SIDEWALK), (POLE, SIGN)):
        assert s(a, b) > s(CAR, VEGETATION) + 0.1 and s(a, b) > s(ROAD, PERSON) + 0.1
    assert np.allclose(protos[1:] @ gap, 0) and np.isclose(np.linalg.norm(gap), 1)
    assert np.linalg.eigvalsh(class_similarity()).min() > 0.05  # a valid Gram matrix
    assert all(0.7 < v < 1 for v, _ in FAMILIES)


def _oracle(labels: np.ndarray, instances: np.ndarray | None = None, **kwargs) -> OracleFeatures:
    oracle = OracleFeatures(**kwargs)
    oracle._labels = labels
    oracle._instances = np.zeros_like(labels) if instances is None else instances
    oracle._frame_key, oracle._sequence = (1, 2), 1
    return oracle


def test_crop_feature_depends_on_the_class_shown_not_on_the_label_histogram():
    labels = np.full((40, 120), ROAD, dtype=np.int64)
    labels[:, 40:52] = CAR  # box 2: road with 40 % car
    labels[:, 80:] = 0  # box 3: nothing labelled in view
    boxes = [(0, 0, 30, 30), (0, 30, 30, 60), (0, 80, 30, 110)]
    feats = _oracle(labels).crop_features(np.zeros((40, 120, 3)), boxes).numpy()
    # noise-free: a crop is its class prototype (+ the modality gap), however much of another class it holds;
    # the old oracle's feature was that histogram, so affinity could read the truth off it
    assert np.allclose(feats[0], feats[1])
    expected = 1.5 * _oracle(labels).gap_dir + _oracle(labels).protos[ROAD]
    assert np.allclose(feats[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert not np.allclose(feats[2], feats[0])  # an empty crop shows no class
    # with noise the same holds in distribution: both crops draw from one stream, so swapping their content
    # swaps nothing but the per-crop draws
    noisy = _oracle(labels, noise=1.2, confusion=0.15, seed=5).crop_features(np.zeros((40, 120, 3)), boxes[:2])
    again = _oracle(labels, noise=1.2, confusion=0.15, seed=5).crop_features(np.zeros((40, 120, 3)), boxes[:2])
    assert torch.equal(noisy, again)  # deterministic per seed and frame
    other = _oracle(labels, noise=1.2, confusion=0.15, seed=6).crop_features(np.zeros((40, 120, 3)), boxes[:2])
    assert not torch.allclose(noisy, other)


def test_noisy_crops_are_confused_with_similar_classes():
    n = 3000
    labels = np.full((30, 30 * n), CAR, dtype=np.int64)
    instances = np.repeat(np.arange(n), 30)[None].repeat(30, 0)  # every crop a different car
    oracle = _oracle(labels, instances, noise=1.2, confusion=0.15, seed=0)
    feats = oracle.crop_features(np.zeros((30, 30 * n, 3)), [(0, 30 * i, 30, 30 * i + 30) for i in range(n)])
    emb = oracle.class_embeddings(list(range(1, 20)))
    predicted = (100 * feats @ emb.t()).argmax(1).numpy() + 1
    accuracy = (predicted == CAR).mean()
    assert 0.45 < accuracy < 0.9  # CLIP-like: often right, far from always
    wrong = predicted[predicted != CAR]
    # errors go mostly to the other vehicles (4 of 18 wrong classes, 22 % if errors were uniform)
    assert np.isin(wrong, [BICYCLE, MOTORCYCLE, TRUCK, OTHER_VEHICLE]).mean() > 0.5
    # image-image cosines near CLIP's (same class ~0.6-0.9) and image-text near CLIP's 0.3-0.5
    f = feats.numpy()
    assert 0.55 < (f[:200] @ f[200:400].T).mean() < 0.9
    assert 0.3 < (f @ emb[CAR - 1].numpy()).mean() < 0.6


def test_the_same_object_looks_alike_across_frames():
    labels = np.full((30, 60), CAR, dtype=np.int64)
    instances = np.zeros_like(labels)
    instances[:, 30:] = 7
    boxes = [(0, 0, 30, 30), (0, 30, 30, 60)]
    frames = []
    for frame in range(40):  # two cars (instances 0 and 7) in 40 frames of one sequence
        oracle = _oracle(labels, instances, noise=1.2, seed=1)
        oracle._frame_key = (1, frame)
        frames.append(oracle.crop_features(np.zeros((30, 60, 3)), boxes).numpy())
    a, b = np.array([f[0] for f in frames]), np.array([f[1] for f in frames])
    same = (a @ a.T)[np.triu_indices(40, 1)].mean()
    different = (a @ b.T).mean()
    assert same > different + 0.02  # the persistent per-object part, keyed by instance id (not by label counts)


def test_dense_labeler_reads_noise_free_pixel_features(tmp_path):
    from pc3d.config import apply_overrides, load_preset, validate_preset
    from pc3d.methods import affinity3d as a3d

    sets = [f"run.out={tmp_path}", "run.name=d", "data.synthetic_count=1", "data.synthetic_rays=3200",
            "data.synthetic_image=[60,200]", "visibility.n_segments=100", "labeler=dense"]
    config = validate_preset(apply_overrides(load_preset("affinity3d-oracle"), sets), "affinity3d-oracle")
    dataset = a3d.dataset_for(config, a3d.output_root(config))
    labeler = a3d.PseudoLabeler(config, a3d.build_source(config, torch.device("cpu")))
    (sample, result), = labeler.push(dataset[0])  # dense frames never wait in the queue
    assert labeler.flush() == [] and result.features.shape[1] == 0
    hit = result.pseudo & (sample["gt"] > 0)
    assert hit.sum() > 100
    # each visible point takes the class rendered at its pixel (the nearest point there): mostly its own
    assert (result.labels[hit] == sample["gt"][hit]).mean() > 0.8
