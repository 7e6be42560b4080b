"""Recipe tests of the detector side of PartSTAD (issue 21 item 7): `partstad-detector` (PartSLIP's few-shot detector
adaptation) and the detector / SAM keys of the full `partstad` and `partstad-fewshot` presets, each value loaded
through pc3d's preset loader and validator and compared with its source.

Sources: shared/reference/partstad.md refs 3-4 (PartSLIP src/glip_inference.py, PartSTAD src/sam_pred.py); PartSLIP's
GLIP fork github.com/Colin97/GLIP configs/glip_Swin_L_pt.yaml (prompt tuning on, AdamW, gradient clip 1.0) and that
repository's README ("Prompt Tuning": BASE_LR 0.05, WEIGHT_DECAY 0.25, language_prompt_v2; few-shot schedule
"10_200_1" = 200 epochs; IMS_PER_BATCH 4). PartSLIP releases no finetuning script; GLIP-L itself is replaced by
Grounding DINO (not packaged), so the model id is not a paper value.
"""

from __future__ import annotations

from typing import Any

import pytest
from recipes import check_recipe, shipped

DETECTOR: list[tuple[str, Any, str]] = [
    ("detector.threshold", 0.5, "ref 3, glip_inference.py run_on_web_image(..., 0.5)"),
    ("adapt.tune", "prompt", "GLIP fork glip_Swin_L_pt.yaml ADD_LINEAR_LAYER / README language_prompt_v2"),
    ("adapt.lr", 0.05, "GLIP README prompt tuning SOLVER.BASE_LR 0.05"),
    ("adapt.weight_decay", 0.25, "GLIP README prompt tuning SOLVER.WEIGHT_DECAY 0.25"),
    ("adapt.batch_views", 4, "GLIP README few-shot SOLVER.IMS_PER_BATCH 4"),
    ("adapt.grad_clip", 1.0, "glip_Swin_L_pt.yaml SOLVER.CLIP_GRADIENTS.CLIP_VALUE 1.0"),
    ("adapt.epochs", 200, "GLIP README few-shot schedule 10_200_1"),
    ("render.image_size", 800, "ref 2, render_pc.py image_size=800 (the views segment detects on)"),
    ("detector.kind", "grounding-dino", "GLIP-L is not packaged: Grounding DINO through transformers"),
]


@pytest.mark.parametrize(("key", "expected", "source"), DETECTOR, ids=[row[0] for row in DETECTOR])
def test_partstad_detector_recipe(key, expected, source):
    check_recipe("partstad-detector", key, expected, source)


def test_detector_adaptation_renders_the_views_segment_detects_on():
    adapt, segment = shipped("partstad-detector"), shipped("partstad")
    assert adapt.render == segment.render


@pytest.mark.parametrize("name", ["partstad", "partstad-fewshot"])
def test_sam_is_vit_h_as_released(name):
    check_recipe(name, "sam.model", "hf://facebook/sam-vit-huge", "ref 4, sam_pred.py sam_vit_h_4b8939.pth")
    assert shipped(name).detector.weights is None  # no adapted detector ships; --detector / detector.weights
