"""`pc3d finetune partstad-detector` (PartSLIP's few-shot detector adaptation): ground-truth footprint boxes against
an independent pinhole projection, transformers' Grounding DINO loss on pc3d's targets, learning, the saved
detector loading back with changed outputs, box AP by hand, and `segment` / `partstad-fewshot` with it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pc3d.config.partstad import RenderConfig
from pc3d.config.partstad_detector import AdaptConfig
from pc3d.methods.partstad_detector import (
    ShapeViews,
    adapt_detector,
    average_precision,
    box_metrics,
    footprint_boxes,
    min_pixels,
)
from pc3d.methods.partstad_render import render_views


def _pinhole(points: np.ndarray, elevation0_azimuth: float, size: int, distance: float, fov: float) -> np.ndarray:
    """Pixel (x right, y down) of world points seen from elevation 0, azimuth 0 (camera on +z) or 90 (on +x),
    looking at the origin with y up, written out by hand."""
    focal = (size / 2) / math.tan(math.radians(fov) / 2)
    x, y, z = points.T
    if elevation0_azimuth == 0:  # right = +x, down = -y, depth = d - z
        right, up, depth = x, y, distance - z
    else:  # azimuth 90: right = -z, down = -y, depth = d - x
        right, up, depth = -z, y, distance - x
    return np.stack([focal * right / depth + size / 2, -focal * up / depth + size / 2], 1)


def test_footprint_boxes_equal_independent_projection():
    rng = np.random.default_rng(0)
    # two parts (one of two instances) and a 2-point speck, spread so that each point wins its own pixels
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(3), indexing="ij"), -1).reshape(-1, 2) * 0.1
    blocks = [np.c_[grid + [-0.6, -0.2], rng.uniform(-0.05, 0.05, 12)],
              np.c_[grid + [0.1, 0.3], rng.uniform(-0.05, 0.05, 12)],
              np.c_[grid + [0.1, -0.5], rng.uniform(-0.05, 0.05, 12)],
              np.array([[0.55, 0.55, 0.0], [0.6, 0.55, 0.0]])]
    points = np.concatenate(blocks)
    semantic = np.repeat([0, 1, 1, 2], [12, 12, 12, 2])
    instance = np.repeat([0, 1, 2, 3], [12, 12, 12, 2])
    cfg = RenderConfig(image_size=96, point_radius=2 / 48, views=[(0, 0), (0, 90)], shading="flat")
    radius = int(round(cfg.point_radius * cfg.image_size / 2))
    assert radius == 2
    views = render_views(points, None, cfg)
    boxes = footprint_boxes(views, semantic, instance, radius, min_pixels=4 * 25 - 1)
    for v, azimuth in enumerate((0, 90)):
        uv = _pinhole(points, azimuth, 96, cfg.distance, cfg.fov)
        visible = views.visible[v].numpy()
        won = np.bincount(views.index[v].numpy()[views.index[v].numpy() >= 0], minlength=len(points))
        expected = []
        for inst in range(4):
            member = (instance == inst) & visible
            if won[instance == inst].sum() < 99:  # the speck (<= 2 x 25 pixels) is dropped
                continue
            lo, hi = np.floor(uv[member]).min(0) - 2, np.floor(uv[member]).max(0) + 3
            expected.append((semantic[instance == inst][0], np.clip([lo[0], lo[1], hi[0], hi[1]], 0, 96)))
        got_boxes, got_labels = boxes[v]
        assert sorted(got_labels.tolist()) == sorted(e[0] for e in expected)
        order = np.lexsort(np.array([e[1] for e in expected]).T[::-1])
        got_order = np.lexsort(got_boxes.T[::-1])
        assert np.allclose(got_boxes[got_order], np.array([e[1] for e in expected])[order], atol=1e-6)
    # seen from the front, the three 12-point blocks are fully visible and boxed; the speck is not
    assert len(boxes[0][1]) == 3 and 2 not in boxes[0][1].tolist()


def test_min_pixels_is_one_stride8_cell_at_800px():
    cfg = AdaptConfig()
    assert min_pixels(cfg, 800, 800) == 64 and min_pixels(cfg, 64, 64) == cfg.min_visible_pixels


def test_box_ap_and_recall_by_hand():
    from pc3d.foundation.detector import Detections

    truth = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]
    labels = [np.array([0, 0])]
    det = Detections(torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 30, 30], [0, 0, 10, 9]]).float(),
                     torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 0, 0]), torch.zeros(4, 1))
    # ranked: hit (P 1, R .5), miss (P .5), hit (P 2/3, R 1), duplicate of a taken box (miss)
    out = box_metrics([det], truth, labels, 2, threshold=0.75)
    assert out["ap50"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert out["ap50_per_part"][1] is None  # no ground truth for part 1
    assert out["recall"] == pytest.approx(0.5) and out["precision"] == pytest.approx(0.5)
    assert average_precision(np.array([0.5]), np.array([False]), 3) == 0.0


def test_training_loss_is_transformers_loss_on_normalised_cxcywh(hub_cache):
    from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps

    from pc3d.foundation.detector import build_detector, write_tiny_random_detector

    detector = build_detector("grounding-dino", write_tiny_random_detector("grounding-dino"))
    images = np.random.default_rng(1).integers(0, 255, (2, 96, 128, 3), dtype=np.uint8)  # H 96, W 128
    targets = [(torch.tensor([[10.0, 20.0, 50.0, 60.0], [0, 0, 128, 96]]), torch.tensor([1, 0])),
               (torch.tensor([[64.0, 48.0, 96.0, 72.0]]), torch.tensor([2]))]
    loss, parts_of_loss = detector.training_loss(images, ["arm", "seat", "leg"], targets)
    inputs = detector._inputs(list(images), "arm . seat . leg .")
    labels = [{"class_labels": torch.tensor([1, 0]),
               "boxes": torch.tensor([[30 / 128, 40 / 96, 40 / 128, 40 / 96], [0.5, 0.5, 1.0, 1.0]])},
              {"class_labels": torch.tensor([2]), "boxes": torch.tensor([[80 / 128, 60 / 96, 32 / 128, 24 / 96]])}]
    out = detector.model(**inputs, labels=labels)
    assert float(loss.detach()) == pytest.approx(float(out.loss.detach()), rel=1e-6) and parts_of_loss["loss_bbox"] > 0
    # class c indexes the c-th phrase: the label map of "seat" marks exactly its token
    ids = inputs["input_ids"][0].tolist()
    maps = build_label_maps(out.logits, inputs["input_ids"])[0]
    for c, word in enumerate(["arm", "seat", "leg"]):
        position = ids.index(detector.tokenizer.convert_tokens_to_ids(word))
        assert torch.nonzero(maps[c]).reshape(-1).tolist() == [position]


def _synthetic_shape_views(count: int, size: int = 96) -> tuple[list[ShapeViews], list[str]]:
    from pc3d.data.synthetic.objects import CATEGORIES, generate_object, object_rng
    from pc3d.methods.partstad_render import normalize_unit_sphere

    chair = next(c for c in CATEGORIES if c.name == "chair")
    parts = list(chair.parts)
    cfg = RenderConfig(image_size=size, views=[(10, 0), (10, 90), (40, 240), (-20, 60)])
    shapes = []
    for i in range(count):
        shape = generate_object("chair", object_rng(0, i), 1024)
        semantic = np.array([chair.part_ids.index(int(k)) for k in shape.part])
        views = render_views(normalize_unit_sphere(shape.points), shape.colors, cfg)
        per_view = footprint_boxes(views, semantic, shape.part_instance, 1, 4)
        shapes.append(ShapeViews(str(i), views.images, [b for b, _ in per_view], [c for _, c in per_view]))
    return shapes, parts


def test_adaptation_learns_and_the_saved_detector_loads_with_changed_outputs(hub_cache, tmp_path):
    from pc3d.foundation.detector import adapted_detector_folder, build_detector, write_tiny_random_detector
    from pc3d.methods.partstad_detector import load_adapted

    shapes, parts = _synthetic_shape_views(2)
    assert all(len(c) for s in shapes for c in s.labels)
    spec = write_tiny_random_detector("grounding-dino")
    detector = build_detector("grounding-dino", spec, max_boxes=30)
    before = detector.detect(shapes[0].images, parts, 0.0)
    cfg = AdaptConfig(tune="full", epochs=8, lr=1e-3, weight_decay=0.0, batch_views=4)
    records: list[dict] = []
    losses = adapt_detector(detector, shapes, parts, cfg, seed=0, log=records.append)
    assert len(records) == 8 * 2 and all(math.isfinite(r["loss"]) for r in records)
    assert losses[-1] < 0.7 * losses[0], losses  # learning, not noise: 30 % lower after 16 steps
    assert not any(p.requires_grad for p in detector.model.parameters()) and not detector.model.training
    folder = detector.save_adapted(tmp_path / "run" / "detector", {"parts": parts})
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    import hashlib

    sidecar = json.loads((folder / "pc3d_detector.json").read_text())
    assert sidecar["weights_sha1"] == hashlib.sha1((folder / "model.safetensors").read_bytes()).hexdigest()
    assert adapted_detector_folder(str(tmp_path / "run"), "grounding-dino") == str(folder)
    reloaded = load_adapted(tmp_path / "run", max_boxes=30)
    after, again = detector.detect(shapes[0].images, parts, 0.0), reloaded.detect(shapes[0].images, parts, 0.0)
    for a, b in zip(after, again, strict=True):
        assert torch.allclose(a.boxes, b.boxes, atol=1e-3) and torch.allclose(a.scores, b.scores, atol=1e-5)
    assert not all(torch.allclose(a.scores, b.scores) for a, b in zip(before, after, strict=True))


def test_prompt_tuning_trains_only_the_text_projection(hub_cache):
    from pc3d.foundation.detector import build_detector, write_tiny_random_detector

    detector = build_detector("grounding-dino", write_tiny_random_detector("grounding-dino"))
    frozen = {k: v.clone() for k, v in detector.model.state_dict().items()}
    shapes, parts = _synthetic_shape_views(1, size=64)
    adapt_detector(detector, shapes, parts, AdaptConfig(tune="prompt", epochs=1, lr=1e-2, batch_views=4), seed=0)
    changed = {k for k, v in detector.model.state_dict().items() if not torch.equal(v, frozen[k])}
    assert changed == {"model.text_projection.weight", "model.text_projection.bias"}


def test_adapted_detector_path_errors_are_one_line(tmp_path):
    from pc3d.errors import InputError
    from pc3d.foundation.detector import ADAPTED_SIDECAR, adapted_detector_folder

    with pytest.raises(InputError, match="not an adapted detector"):
        adapted_detector_folder(str(tmp_path / "missing"), "grounding-dino")
    (tmp_path / "detector").mkdir()
    (tmp_path / "detector" / ADAPTED_SIDECAR).write_text(json.dumps({"kind": "owlv2"}))
    with pytest.raises(InputError, match="'owlv2' detector"):
        adapted_detector_folder(str(tmp_path), "grounding-dino")


@pytest.mark.slow
def test_finetune_then_segment_and_fewshot_use_the_adapted_detector(cli, tmp_path, hub_cache):
    from pc3d.data.synthetic.writer import write_synthetic

    small = ["--set", "data.synthetic_count=10", "--set", "data.synthetic_points=512", "--set",
             "render.image_size=64", "--set", "adapt.epochs=1", "--set", "data.max_test=1"]
    result = cli("finetune", "partstad-detector", "--preset", "quickstart", *small, "--out", tmp_path / "runs",
                 "--json")
    assert result.code == 0, result.err
    trained = json.loads(result.out)
    run = Path(trained["run_dir"])
    assert (run / "detector" / "model.safetensors").is_file() and (run / "summary.json").is_file()
    assert trained["train_boxes"] > 0 and math.isfinite(trained["loss_last_epoch"])
    assert set(trained["zero_shot"]) == set(trained["adapted"]) == {"val", "test"}
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()][0] == 1

    write_synthetic("objects", tmp_path / "objects", count=6, points=512, preview=False)
    chair = tmp_path / "objects" / "shapes" / "chair_0001.ply"
    latest = tmp_path / "runs" / "partstad-detector" / "latest"
    segmented = cli("segment", chair, "--parts", "arm,back,leg,seat,wheel", "--preset", "tiny-random", "--set",
                    "sam.enabled=false", "--set", "render.image_size=64", "--detector", latest,
                    "--out", tmp_path / "seg", "--json")
    assert segmented.code == 0, segmented.err
    summary = json.loads(segmented.out)
    config = (Path(summary["out"]) / "config.yaml").read_text()
    assert f"weights: {latest}" in config and summary["boxes"] > 0
    assert summary["detector_weights"] == str(latest)  # the summary says which detector labelled the shape
    assert "warning" not in segmented.err  # same render size, same parts as the adaptation

    # other renders and other parts than the adaptation's still run, with one warning line each
    other = cli("segment", chair, "--parts", "seat,leg", "--preset", "tiny-random", "--set", "sam.enabled=false",
                "--set", "render.image_size=48", "--detector", latest, "--out", tmp_path / "seg", "--json")
    assert other.code == 0, other.err
    warnings = [line for line in other.err.splitlines() if line.startswith("pc3d: warning:")]
    assert len(warnings) == 2 and "64-px renders" in warnings[0] and "render.image_size=64" in warnings[0]
    assert "arm, back, leg, seat, wheel (Chair)" in warnings[1] and "asks for seat, leg" in warnings[1]

    fewshot = cli("finetune", "partstad-fewshot", "--preset", "tiny-random", "--set", "sam.enabled=false",
                  "--set", f"detector.weights={run}", "--set", "train.epochs=1", "--set", "data.max_test=1",
                  "--out", tmp_path / "fs", "--json")
    assert fewshot.code == 0, fewshot.err
    assert json.loads(fewshot.out)["test"]["shapes"] == 1

    bad = cli("segment", chair, "--parts", "arm,seat", "--preset", "tiny-random", "--detector",
              tmp_path / "nowhere", "--out", tmp_path / "seg")
    assert bad.code == 2 and bad.err.strip().startswith("pc3d: error:") and len(bad.err.strip().splitlines()) == 1


def test_fewshot_cache_key_follows_the_adapted_weights_not_their_path(tmp_path):
    from pc3d.config.partstad import PartstadFewShotPreset
    from pc3d.foundation.detector import ADAPTED_SIDECAR
    from pc3d.methods.partstad_io import ShapeRecord, shape_cache_key

    cloud = tmp_path / "pc.ply"
    cloud.write_bytes(b"ply")
    (tmp_path / "run" / "detector").mkdir(parents=True)
    sidecar = tmp_path / "run" / "detector" / ADAPTED_SIDECAR
    cfg = PartstadFewShotPreset(command="finetune", method="partstad-fewshot",
                                detector={"kind": "grounding-dino", "weights": str(tmp_path / "run")})
    keys = []
    for weights in ("a" * 40, "b" * 40):  # a retrained detector at the same path
        sidecar.write_text(json.dumps({"kind": "grounding-dino", "weights_sha1": weights}))
        keys.append(shape_cache_key(ShapeRecord("1", cloud), ["arm"], cfg))
    assert keys[0] != keys[1]
