"""Open-vocabulary detectors: tiny random Grounding DINO / OWLv2 saved in the real hub layout, loaded offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.foundation.detector import (
    TINY_GROUNDING_DINO_REPO,
    build_detector,
    caption_spans,
    nms_per_label,
    write_tiny_random_detector,
)


def test_caption_spans_by_hand():
    # "arm . seat ." with character offsets of a word-level tokenizer: [CLS] arm . seat . [SEP]
    offsets = [(0, 0), (0, 3), (4, 5), (6, 10), (11, 12), (0, 0)]
    caption, tokens = caption_spans(["arm", "seat"], offsets)
    assert caption == "arm . seat ."
    assert tokens == [[1], [3]]


def test_nms_per_label_keeps_overlaps_of_other_labels():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 1, 0])
    # box 1 overlaps box 0 (IoU 0.81) with the same label; box 2 overlaps it but names another part
    assert nms_per_label(boxes, scores, labels, 0.5).tolist() == [0, 2, 3]


def test_grounding_dino_from_hub_cache(hub_cache):
    from transformers import GroundingDinoForObjectDetection

    spec = write_tiny_random_detector("grounding-dino")
    assert spec == f"hf://{TINY_GROUNDING_DINO_REPO}"
    assert (hub_cache / "models--pc3d-tiny-random--grounding-dino" / "refs" / "main").is_file()
    detector = build_detector("grounding-dino", spec, max_boxes=100, nms_iou=1.0)
    assert isinstance(detector.model, GroundingDinoForObjectDetection) and detector.feature_dim == 32
    images = np.random.default_rng(0).integers(0, 255, (3, 80, 72, 3), dtype=np.uint8)
    found = detector.detect(images, ["arm", "seat", "leg"], threshold=0.0)
    assert len(found) == 3
    for d in found:
        assert d.features.shape == (len(d), 32) and set(d.labels.tolist()) <= {0, 1, 2}
        assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 2] <= 72).all() and (d.boxes[:, 3] <= 80).all()
        assert (d.scores >= 0).all() and (d.scores <= 1).all()
    # independent check: run the model through the real processor and compare the best query's feature
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(next((hub_cache / "models--pc3d-tiny-random--grounding-dino"
                                                         / "snapshots").iterdir())))
    inputs = processor(images=list(images[:1]), text=["arm . seat . leg ."], return_tensors="pt")
    with torch.no_grad():
        out = detector.model(**inputs)
    ids = inputs["input_ids"][0].tolist()
    part_tokens = [ids.index(t) for t in processor.tokenizer.convert_tokens_to_ids(["arm", "seat", "leg"])]
    scores, labels = out.logits[0].sigmoid()[:, part_tokens].max(-1)
    best = int(scores.argmax())
    assert found[0].scores[0].item() == pytest.approx(scores[best].item(), rel=1e-5)
    assert int(found[0].labels[0]) == int(labels[best])
    assert torch.allclose(found[0].features[0], out.last_hidden_state[0, best], atol=1e-5)


def test_owlv2_from_hub_cache(hub_cache):
    detector = build_detector("owlv2", write_tiny_random_detector("owlv2"))
    images = np.full((2, 64, 64, 3), 200, np.uint8)
    found = detector.detect(images, ["arm", "seat"], threshold=0.0)
    assert len(found) == 2 and all(d.features.shape[1] == 16 for d in found)
    assert all(set(d.labels.tolist()) <= {0, 1} for d in found)


def test_unknown_detector_and_missing_model_are_input_errors(hub_cache):
    from pc3d.errors import InputError

    with pytest.raises(InputError, match="unknown detector"):
        build_detector("glip", "hf://x/y")
    with pytest.raises(InputError, match="not in the local Hugging Face cache"):
        build_detector("grounding-dino", "hf://nobody/nothing")
