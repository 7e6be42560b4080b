"""Segment Anything (transformers' SamModel) for box -> mask, batched over views.

The image encoder (the expensive part) runs once per view, in batches of views; the prompt encoder and mask
decoder then run once per view with all of that view's boxes. One mask per box (`multimask_output=False`, as
PartSTAD's `sam_pred.py`). The `segment-anything` package is not used: it needs torchvision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

DEFAULT_SAM = "hf://facebook/sam-vit-base"
TINY_SAM_REPO = "pc3d-tiny-random/sam"


class SamBoxSegmenter:
    def __init__(self, spec: str = DEFAULT_SAM, device: str | torch.device = "cpu", batch_size: int = 4) -> None:
        from transformers import SamModel
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

        from pc3d.foundation.hub import load_pretrained, load_processor

        self.model = load_pretrained(SamModel, spec, device=device)
        self.image_processor = load_processor(SamImageProcessorPil, spec)
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def masks(self, images: np.ndarray, boxes: Sequence[Tensor]) -> list[Tensor]:
        """images (V,H,W,3) uint8, boxes[v] (K_v,4) xyxy pixels -> masks[v] (K_v,H,W) bool."""
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box lists")
        height, width = images.shape[1:3]
        out: list[Tensor] = []
        for start in range(0, len(images), self.batch_size):
            views = [v for v in range(start, min(start + self.batch_size, len(images)))]
            if all(len(boxes[v]) == 0 for v in views):
                out.extend(torch.zeros(0, height, width, dtype=torch.bool) for _ in views)
                continue
            inputs = self.image_processor(list(images[views[0]:views[-1] + 1]), return_tensors="pt")
            embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
            for i, v in enumerate(views):
                if len(boxes[v]) == 0:
                    out.append(torch.zeros(0, height, width, dtype=torch.bool))
                    continue
                original = inputs["original_sizes"][i]
                resized = inputs["reshaped_input_sizes"][i]
                # the processor's coordinate rule: scale x by new_w / old_w and y by new_h / old_h
                scale = torch.stack([resized[1] / original[1], resized[0] / original[0]]).float().repeat(2)
                prompt = (boxes[v].float() * scale)[None].to(self.device)  # (1,K,4)
                result = self.model(image_embeddings=embeddings[i:i + 1], input_boxes=prompt, multimask_output=False)
                masks = self.image_processor.post_process_masks(result.pred_masks.cpu(), original[None],
                                                                 resized[None])[0]
                out.append(masks[:, 0].bool())
        return out


def tiny_sam(image_size: int = 64, seed: int = 0) -> tuple[Any, Any]:
    """A ~20 k-parameter random SamModel and its processor (PIL image processor)."""
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(seed)
    patch = 8
    vision = SamVisionConfig(hidden_size=16, output_channels=16, num_hidden_layers=1, num_attention_heads=2,
                             image_size=image_size, patch_size=patch, mlp_dim=32, global_attn_indexes=[0],
                             window_size=0, num_pos_feats=8)
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=image_size, patch_size=patch, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                                   iou_head_hidden_dim=16)
    model = SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).eval()
    low = image_size // patch * 4  # the decoder upsamples the embedding grid 4x
    square = {"height": image_size, "width": image_size}
    images = SamImageProcessorPil(size={"longest_edge": image_size}, pad_size=square,
                                  mask_size={"longest_edge": low}, mask_pad_size={"height": low, "width": low})
    return model, SamProcessor(image_processor=images)


def write_tiny_random_sam(cache_dir: str | os.PathLike | None = None, repo_id: str = TINY_SAM_REPO) -> str:
    """Save the tiny random SAM into the huggingface_hub cache (unless there); returns its hf:// spec."""
    from pc3d.engine.hub import hub_cache_dir
    from pc3d.foundation.hub import save_to_hub_cache

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    if not (cache / f"models--{repo_id.replace('/', '--')}" / "refs" / "main").is_file():
        model, processor = tiny_sam()
        save_to_hub_cache(model, processor, repo_id, cache)
    return f"hf://{repo_id}"
