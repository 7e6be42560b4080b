"""Preset schema of `pc3d finetune partstad-detector` (issue 21): PartSLIP's few-shot adaptation of the
open-vocabulary 2-D detector on the rendered views of one category's few-shot shapes."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pc3d.config.base import PresetBase, StrictModel
from pc3d.config.partstad import FewShotDataConfig, PartstadSections
from pc3d.config.registry import register_schema


class AdaptConfig(StrictModel):
    """Detector finetuning with transformers' own Grounding DINO training loss (Hungarian matching, focal
    class loss over the caption's phrases, L1 + GIoU box losses, the two-stage encoder loss)."""

    tune: Literal["prompt", "heads", "full"] = Field(
        "prompt", description="prompt: train only the linear map of the text features into the detector "
        "(GLIP's prompt tuning 'language_prompt_v2', which PartSLIP's GLIP fork configures: backbones, fusion and "
        "heads frozen); heads: also the encoder, decoder and box heads (image and text backbones frozen); "
        "full: every weight")
    epochs: int = Field(200, ge=1)
    lr: float = Field(0.05, gt=0, description="AdamW learning rate (constant)")
    weight_decay: float = Field(0.25, ge=0)
    batch_views: int = Field(4, ge=1, description="rendered views per optimiser step")
    grad_clip: float = Field(1.0, ge=0, description="max gradient 2-norm (0: off)")
    min_visible_fraction: float = Field(
        1e-4, ge=0, lt=1, description="a part instance gets a training box in a view only when its points win at "
        "least this share of the image's pixels (and at least min_visible_pixels): 1e-4 = 64 px at 800 px, one "
        "cell of the detector's finest (stride-8) feature map; a smaller part has no feature cell of its own, and "
        "its box would teach a localisation the detector cannot make")
    min_visible_pixels: int = Field(4, ge=1, description="floor of the pixel threshold at small render sizes")
    eval_max_boxes: int = Field(100, ge=1, description="detections per view kept for box AP (all scores)")


@register_schema
class PartstadDetectorPreset(PresetBase, PartstadSections):
    entry: ClassVar[str] = "pc3d.methods.partstad_detector:finetune"
    command: Literal["finetune"] = "finetune"
    method: Literal["partstad-detector"] = "partstad-detector"
    data: FewShotDataConfig = Field(default_factory=FewShotDataConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
