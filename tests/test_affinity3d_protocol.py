"""Affinity3D protocol against the paper (issue: MSFSKD Eqs. 11-17, Eq. 19, sections 3.2, 4.1, 4.2, Table 4):
the residual gated fusion, the KL domain, the per-scale loss sum, Eq. 17's concatenation, the text-embedding heads,
the augmentation, small-superpoint removal, per-instance accuracy, the GZS threshold, the front-view evaluation and
the one-pass class-weight count."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pc3d.methods import affinity3d as a3d
from pc3d.methods.affinity3d_fusion import MSFSKD, ClassHead, GatedFusion, distillation_kl

TINY = [8, 8, 16, 16, 32, 32, 16, 16, 16]


# ------------------------------------------------------------------------------------------ MSFSKD


def test_fusion_adds_the_image_feature_back_after_the_gate():
    torch.manual_seed(0)
    fusion = GatedFusion(6)
    f3, f2 = torch.randn(5, 6), torch.randn(5, 6)
    c = fusion.fuse(torch.cat([f2, F.relu(fusion.learner(f3))], 1))
    expected = f2 + F.relu(c * torch.sigmoid(fusion.gate(c)))  # Eqs. 11-12 / 2DPASS fuse_pred = feat_cat + img
    assert torch.allclose(fusion(f3, f2), expected)
    with torch.no_grad():  # a closed gate leaves exactly the image feature (the residual)
        fusion.gate.weight.zero_()
        fusion.gate.bias.fill_(-1e4)
    assert torch.allclose(fusion(f3, f2), f2)


def test_gate_scales_the_fused_feature_elementwise():
    fusion = GatedFusion(2)
    with torch.no_grad():
        fusion.learner.weight.copy_(torch.eye(2))
        fusion.learner.bias.zero_()
        fusion.fuse.weight.copy_(torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))  # c = ReLU(f3)
        fusion.fuse.bias.zero_()
        fusion.gate.weight.zero_()
        fusion.gate.bias.copy_(torch.tensor([0.0, 1e4]))  # gate 0.5 on channel 0, fully open on channel 1
    f3, f2 = torch.tensor([[2.0, 3.0]]), torch.tensor([[10.0, 20.0]])
    assert torch.allclose(fusion(f3, f2), torch.tensor([[10.0 + 0.5 * 2.0, 20.0 + 3.0]]))


def _msfskd_inputs(n: int = 12, hidden: int = 4, scales: int = 2):
    torch.manual_seed(1)
    point = [torch.randn(n, hidden) for _ in range(scales)]
    visible = torch.zeros(n, dtype=torch.bool)
    visible[::2] = True
    image = [torch.randn(int(visible.sum()), hidden) for _ in range(scales)]
    return point, image, visible


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if not bool((labels != 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=0)


def test_kl_covers_every_visible_point_labelled_or_not():
    point, image, visible = _msfskd_inputs()
    module = MSFSKD(4, 2, None, lambda_seg2d=1.0, lambda_xm=0.5)
    unlabelled = torch.zeros(12, dtype=torch.long)  # no visible point has a label
    terms = module(point, image, visible, unlabelled, None, _ce)
    expected = 0.0
    for s in range(2):
        p3 = module.heads_3d[s](point[s], None)[visible]
        pf = module.heads_fuse[s](module.fusions[s](point[s][visible], image[s]), None)
        expected += F.kl_div(F.log_softmax(p3, 1), F.softmax(pf, 1), reduction="none").mean()  # mean of elements
    assert float(terms["xm"].detach()) > 0  # the labelled-only version gave 0 here
    assert torch.allclose(terms["xm"], 0.5 / 2 * expected)
    # invisible points never enter the distillation
    moved = [p.clone() for p in point]
    for p in moved:
        p[~visible] += 5.0
    assert torch.allclose(module(moved, image, visible, unlabelled, None, _ce)["xm"], terms["xm"])


def test_distillation_teacher_is_detached():
    student, teacher = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True)
    distillation_kl(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_per_scale_3d_losses_are_summed_not_averaged():
    point, image, visible = _msfskd_inputs(scales=4)
    labels = torch.randint(1, 20, (12,))
    module = MSFSKD(4, 4, None, lambda_seg2d=1.0, lambda_xm=0.05)
    terms = module(point, image, visible, labels, None, _ce)
    expected = sum(_ce(module.heads_3d[s](point[s], None), labels) for s in range(4))
    assert torch.allclose(terms["seg_3d_scales"], expected)
    fused = [module.fusions[s](point[s][visible], image[s]) for s in range(4)]
    seg2d = sum(_ce(module.heads_fuse[s](fused[s], None), labels[visible]) for s in range(4))
    assert torch.allclose(terms["seg_2d"], seg2d / 4)  # lambda_seg2d / S, as 2DPASS
    assert torch.allclose(terms["seg_2d_cls"], _ce(module.classifier_2d(torch.cat(fused, 1), None), labels[visible]))


def test_per_scale_heads_are_text_embedding_classifiers():
    torch.manual_seed(2)
    text = F.normalize(torch.randn(20, 8), dim=1)
    module = MSFSKD(4, 2, 8, lambda_seg2d=1.0, lambda_xm=0.05)
    for head in [*module.heads_3d, *module.heads_fuse, module.classifier_2d]:
        assert isinstance(head, ClassHead) and hasattr(head, "project") and not hasattr(head, "mlp")
    head = module.heads_3d[0]
    f = torch.randn(6, 4)
    expected = 100 * F.normalize(head.project(f), dim=1) @ text.t()  # exp(log(1/0.07)) = 14.3 < 100: no cap
    expected = expected * (1 / 0.07) / 100
    assert torch.allclose(head(f, text), expected, atol=1e-5)
    # a class's logit follows its embedding: swapping two embeddings swaps two logit columns
    swapped = text.clone()
    swapped[[3, 5]] = text[[5, 3]]
    assert torch.allclose(head(f, swapped)[:, [5, 3]], head(f, text)[:, [3, 5]], atol=1e-6)


def _seg_config(**model):
    from pc3d.config import load_preset, validate_preset

    preset = load_preset("affinity3d-semantickitti", variant_of=None)
    preset["model"] = {"channels": TINY, "voxel_size": 0.3, "text_classifier": False, **model}
    preset["image"] = {"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "hidden": 8, "crop": None}
    return validate_preset(preset)


def test_eq17_classifier_reads_the_concatenated_layers():
    from pc3d.methods.zeroshot_seg import ZeroShotSeg

    torch.manual_seed(0)
    method = ZeroShotSeg(_seg_config(), None, np.ones(20, np.float32)).eval()
    xyz = torch.rand(300, 3) * torch.tensor([8.0, 8.0, 2.0])
    batch = {"xyz": xyz, "intensity": torch.rand(300), "batch": torch.zeros(300, dtype=torch.long)}
    features, per_scale = method.point_features(batch)
    last, scales = method.backbone(xyz, batch["batch"], torch.cat([xyz, batch["intensity"][:, None]], 1))
    projected = [method.point_proj[s](scales[s]) for s in range(4)]
    assert features.shape[1] == 4 * 8 + TINY[8]
    assert torch.allclose(features, torch.cat([*projected, last], 1))
    assert all(torch.allclose(a, b) for a, b in zip(per_scale, projected, strict=True))
    assert torch.allclose(method.forward_points(batch)[0], method.classifier(features, None))
    only_last = ZeroShotSeg(_seg_config(head_features="last"), None, np.ones(20, np.float32))
    assert only_last.classifier.mlp[0].in_features == TINY[8]


# ------------------------------------------------------------------------------------------ data / augmentation


class _FakeKitti:
    front_view_only = False

    def __init__(self, n: int = 1000) -> None:
        rng = np.random.default_rng(0)
        self.points = rng.uniform(-20, 20, (n, 3)).astype(np.float32)
        self.frames = [0]

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        n = len(self.points)
        fov = np.arange(0, n, 3)
        return {"points": self.points.copy(), "intensity": np.linspace(0, 1, n, dtype=np.float32),
                "labels": np.arange(n) % 20, "image": np.full((40, 60, 3), 128, np.uint8), "fov_index": fov,
                "fov_uv": np.stack([fov % 60, fov % 40], 1).astype(np.float64) + 0.5}


def test_section_4_2_augmentation_translates_scales_and_downsamples():
    from pc3d.methods.zeroshot_seg import Augmentation, SegFrames

    kitti = _FakeKitti()
    frames = SegFrames(kitti, None, True, True, None, seed=3, augmentation=Augmentation(scale=(1.0, 1.0)))
    for draw in range(5):
        torch.manual_seed(draw)
        out = frames[0]
        assert len(out["xyz"]) == 700  # 70 % of 1000
        keep = out["intensity"].numpy() * 999  # the intensity ramp identifies each kept point
        index = np.rint(keep).astype(int)
        shift = out["xyz"].numpy() - kitti.points[index]
        assert np.allclose(shift, shift[0], atol=1e-4)  # a pure translation: no rotation, no flip
        assert (np.abs(shift[0]) <= 0.5).all()
        assert np.array_equal(out["labels"].numpy(), index % 20)
        assert bool(out["visible"].any()) and not bool(out["visible"][torch.from_numpy(index % 3 != 0)].any())


def test_color_jitter_changes_colours_within_its_bounds():
    from pc3d.methods.zeroshot_seg import color_jitter

    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    rng = np.random.default_rng(1)
    outs = [color_jitter(image, 0.4, rng) for _ in range(10)]
    assert all(o.dtype == np.uint8 and o.shape == image.shape for o in outs)
    assert any(not np.array_equal(o, image) for o in outs)
    assert np.array_equal(color_jitter(image, 0.0, rng), image)
    grey = np.full((4, 4, 3), 100, np.uint8)  # saturation and contrast leave a flat grey image grey
    assert all(len(np.unique(color_jitter(grey, 0.4, rng))) == 1 for _ in range(5))


# ------------------------------------------------------------------------------------------ pseudo-labels


def test_superpoints_under_two_points_are_dropped():
    sp = np.array([0, 0, 1, 2, 2, 2, -1, 3])
    assert a3d.drop_small_superpoints(sp, 2).tolist() == [0, 0, -1, 2, 2, 2, -1, -1]
    assert a3d.drop_small_superpoints(sp, 1).tolist() == sp.tolist()


def test_instance_accuracy_and_unscored_points_are_reported():
    gt = np.array([3, 3, 3, 4, 4, 7, 0, 0, 19])
    instance = np.array([1, 1, 1, 2, 2, 5, 0, 0, 0])
    labels = np.array([3, 3, 4, 7, 7, 7, 4, 0, 19])
    pseudo = np.array([True, True, True, True, True, True, True, False, True])
    truth, voted = a3d.instance_votes(labels, gt, instance, pseudo)
    assert truth.tolist() == [3, 4, 7] and voted.tolist() == [3, 7, 7]  # majority vote inside each instance
    acc = a3d.Accuracy("gzs")
    result = a3d.FrameResult(labels, np.ones(9, bool), pseudo, np.zeros((0, 1)), np.zeros((0, 1)),
                             stats={"rejected_points": 4})
    acc.add(gt, np.zeros(9, np.int64), result, np.ones(9, bool), instance)
    summary = acc.summary()
    assert summary["instances"] == 3 and summary["instance_accuracy"] == pytest.approx(2 / 3)
    assert summary["accuracy"] == pytest.approx(4 / 7)  # per point, over the 7 points with ground truth
    assert summary["unscored_points"] == 1 and summary["unscored_share"] == pytest.approx(1 / 8)
    assert summary["rejected_points"] == 4


def test_gzs_threshold_is_its_own_setting(tmp_path):
    from pc3d.config import apply_overrides, load_preset, validate_preset

    base = load_preset("affinity3d")
    config = validate_preset(apply_overrides(base, [f"run.out={tmp_path}", "gzs_threshold=0.6", "confidence=0.2"]),
                             "affinity3d")
    assert config.gzs_threshold == 0.6 and validate_preset(base, "affinity3d").gzs_threshold == 0.0

    class Source:
        logit_scale = 1.0

        def class_embeddings(self, classes: list[int]) -> torch.Tensor:
            return torch.eye(len(classes), 4)

    assert a3d.PseudoLabeler(config, Source()).threshold == 0.6
    free = validate_preset(apply_overrides(base, ["data.setting=annotation-free", "confidence=0.2"]), "affinity3d")
    assert a3d.PseudoLabeler(free, Source()).threshold == 0.2


# ------------------------------------------------------------------------------------------ evaluation / counting


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    from pc3d.data import layouts
    from pc3d.data.synthetic.lidar import generate_lidar_sequence, lidar_rng

    folder = tmp_path_factory.mktemp("kitti")
    frames = [generate_lidar_sequence(lidar_rng(0, s), 2, 64 * 60, (60, 200)) for s in range(2)]
    return layouts.write_semantickitti(folder, frames)


def test_evaluation_scores_the_front_view_by_default(kitti_root):
    from pc3d.config import load_preset, validate_preset
    from pc3d.methods.zeroshot_seg import _kitti

    preset = load_preset("affinity3d-semantickitti", variant_of=None)
    preset["data"].update(root=str(kitti_root), sequences=["00"], val_sequences=["01"])
    config = validate_preset(preset)
    front = _kitti(config, ["01"], train=False)
    sample = front[0]
    assert front.front_view_only and len(sample["fov_index"]) == len(sample["points"])
    assert not _kitti(config, ["00"], train=True).front_view_only  # training keeps the whole scan
    preset["data"]["eval_front_view"] = False
    full = _kitti(validate_preset(preset), ["01"], train=False)
    assert not full.front_view_only and len(full[0]["points"]) > len(sample["points"])


def test_evaluate_says_which_points_it_scored(kitti_root):
    from pc3d.data.readers.semantickitti import SemanticKITTI
    from pc3d.methods.zeroshot_seg import SegFrames, ZeroShotSeg, evaluate

    method = ZeroShotSeg(_seg_config(), None, np.ones(20, np.float32))
    for front, name in ((True, "camera-fov"), (False, "360")):
        frames = SegFrames(SemanticKITTI(kitti_root, ["01"], "full", with_image=True, front_view_only=front,
                                         max_frames=1), None, False, False, None)
        assert evaluate(method, frames, 0, "scannet")["eval_points"] == name


def test_class_weights_are_counted_from_label_files_only(kitti_root, monkeypatch):
    from pc3d.data.readers.semantickitti import NUM_CLASSES, SemanticKITTI
    from pc3d.methods.zeroshot_seg import SegFrames, _label_counts

    kitti = SemanticKITTI(kitti_root, ["00", "01"], "gzs", with_image=True)
    frames = SegFrames(kitti, None, True, False, None)
    expected = sum(np.bincount(kitti[i]["labels"], minlength=NUM_CLASSES) for i in range(len(kitti)))

    def no_reading(self, index):  # the scan and the image must not be read to count labels
        raise AssertionError("label counting read a whole sample")

    monkeypatch.setattr(SemanticKITTI, "sample", no_reading)
    assert np.array_equal(_label_counts(frames), expected)


def test_finetune_counts_class_weights_once(kitti_root, tmp_path, monkeypatch):
    import types

    import pc3d.engine.checkpoint as checkpoint
    import pc3d.engine.trainer as trainer
    import pc3d.methods.zeroshot_seg as zs

    config = _seg_config()
    config = config.model_copy(update={
        "data": config.data.model_copy(update={"root": str(kitti_root), "sequences": ["00"], "val_sequences": ["01"],
                                               "pseudo_labels": None}),
        "run": config.run.model_copy(update={"name": "once", "out": str(tmp_path)})})
    calls, saved = [], {}
    real_counts = zs._label_counts
    monkeypatch.setattr(zs, "_label_counts", lambda frames: calls.append(1) or real_counts(frames))

    def fake_fit(request, build):  # what the trainer does: build once (one rank), train, save
        setup = build(request.config, 0)
        saved.update(setup.method.state_dict())
        return {"checkpoints": {"last": "last.json"}, "run_dir": str(tmp_path)}

    monkeypatch.setattr(trainer, "fit", fake_fit)
    monkeypatch.setattr(checkpoint, "load_weights", lambda spec: dict(saved))
    seen = {}
    monkeypatch.setattr(zs, "evaluate", lambda method, frames, tta, convention: seen.update(
        weights=method.class_weights.clone(), region=frames.kitti.front_view_only) or {"miou": 0.0})
    zs.run(types.SimpleNamespace(config=config))
    assert len(calls) == 1  # counted for training only; evaluation restores the weights from the checkpoint
    assert torch.equal(seen["weights"], saved["class_weights"]) and seen["region"]
