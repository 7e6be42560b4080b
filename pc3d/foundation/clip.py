"""CLIP (transformers) behind a small interface: prompt-ensembled class embeddings and batched crop encoding.

`ClipEncoder(spec)` loads any CLIP repository (`hf://openai/clip-vit-base-patch32` by default) through
`pc3d.foundation.hub`. Text embeddings: every class name is written into each prompt template, encoded,
L2-normalised, averaged and re-normalised; they are cached per (class list, templates). Crops are
preprocessed in torch (short side to the model's size, bicubic, centre crop, CLIP mean/std), so a batch
of crops runs on the model's device without PIL round trips. `encode_dense` gives MaskCLIP-style per-patch
features (value path of the last attention block, projected into the joint space) for the dense baseline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CLIP = "hf://openai/clip-vit-base-patch32"
TINY_RANDOM_CLIP = "hf://pc3d/tiny-random-clip"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Prompt ensemble for street-scene crops (our own wording, in the style of CLIP's ImageNet templates).
DRIVING_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a cropped photo of a {}.",
    "a photo of the {} in a street.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of a {} seen from a car.",
    "a dark photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "there is a {} in the scene.",
    "a street view image showing a {}.",
)


def as_text(name: str) -> str:
    """Class ids like 'traffic-sign' or 'other_vehicle' read as words in a prompt."""
    return name.replace("-", " ").replace("_", " ")


class ClipEncoder:
    """A CLIP model and its processor config; all outputs are L2-normalised float32 tensors on `device`."""

    def __init__(self, spec: str = DEFAULT_CLIP, *, device: str | torch.device = "cpu", dtype: Any = None) -> None:
        from transformers import CLIPModel, CLIPProcessor

        from pc3d.foundation.hub import load_pretrained, load_processor

        self.spec = spec
        self.device = torch.device(device)
        self.model = load_pretrained(CLIPModel, spec, device=self.device, dtype=dtype)
        processor = load_processor(CLIPProcessor, spec)
        self.tokenizer = processor.tokenizer
        image_processor = processor.image_processor
        self.input_size = _crop_size(image_processor, self.model.config.vision_config.image_size)
        mean = getattr(image_processor, "image_mean", None) or CLIP_MEAN
        std = getattr(image_processor, "image_std", None) or CLIP_STD
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.dtype = next(self.model.parameters()).dtype
        self._text_cache: dict[tuple, Tensor] = {}

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature exp(t) (100 for the released CLIP models)."""
        return float(self.model.logit_scale.exp().item())

    @torch.no_grad()
    def encode_text(self, class_names: Sequence[str], templates: Sequence[str] = DRIVING_TEMPLATES) -> Tensor:
        """(C, D) prompt-ensembled class embeddings, cached per class list and template set."""
        key = (tuple(class_names), tuple(templates))
        if key not in self._text_cache:
            prompts = [t.format(as_text(name)) for name in class_names for t in templates]
            max_length = int(self.model.config.text_config.max_position_embeddings)
            tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_length,
                                    return_tensors="pt").to(self.device)
            out = self.model.get_text_features(**tokens)
            feats = _features(out).float()
            feats = F.normalize(feats, dim=-1).view(len(class_names), len(templates), -1).mean(dim=1)
            self._text_cache[key] = F.normalize(feats, dim=-1)
        return self._text_cache[key]

    def preprocess(self, crops: Sequence[np.ndarray | Tensor]) -> Tensor:
        """(B, 3, S, S) model inputs from HxWx3 uint8 crops: short side to S (bicubic), centre crop, normalise."""
        size = self.input_size
        batch = []
        for crop in crops:
            image = torch.as_tensor(np.ascontiguousarray(crop) if isinstance(crop, np.ndarray) else crop)
            image = image.to(self.device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
            h, w = image.shape[-2:]
            scale = size / min(h, w)
            new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
            image = F.interpolate(image, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            batch.append(image[..., top:top + size, left:left + size].clamp(0, 1))
        pixels = torch.cat(batch) if batch else torch.empty(0, 3, size, size, device=self.device)
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def encode_crops(self, crops: Sequence[np.ndarray | Tensor], batch_size: int = 64) -> Tensor:
        """(B, D) image embeddings of HxWx3 uint8 crops, encoded `batch_size` at a time."""
        out = []
        for start in range(0, len(crops), batch_size):
            pixels = self.preprocess(crops[start:start + batch_size]).to(self.dtype)
            out.append(F.normalize(_features(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1))
        return torch.cat(out) if out else torch.empty(0, self.dim, device=self.device)

    @torch.no_grad()
    def encode_dense(self, image: np.ndarray) -> Tensor:
        """MaskCLIP-style (h, w, D) patch embeddings of a whole HxWx3 uint8 image (short side resized to S).

        The last block's query-key attention is dropped: each patch token's value projection goes through the
        output projection, the final layer norm and the visual projection, so it lives in the text space."""
        vision = self.model.vision_model
        h, w = image.shape[:2]
        scale = self.input_size / min(h, w)
        patch = int(self.model.config.vision_config.patch_size)
        new_h = max(patch, round(h * scale / patch) * patch)
        new_w = max(patch, round(w * scale / patch) * patch)
        pixels = torch.as_tensor(np.ascontiguousarray(image), device=self.device).permute(2, 0, 1)[None].float() / 255
        pixels = F.interpolate(pixels, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
        pixels = ((pixels.clamp(0, 1) - self.mean) / self.std).to(self.dtype)
        out = vision(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True)
        tokens = out.hidden_states[-2]  # input of the last encoder block
        last = vision.encoder.layers[-1]
        values = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(tokens)))
        values = self.model.visual_projection(vision.post_layernorm(values[:, 1:]))  # drop the class token
        grid = F.normalize(values.float(), dim=-1).view(new_h // patch, new_w // patch, -1)
        return grid


def _features(out: Any) -> Tensor:
    """transformers >= 5 returns an output object from get_*_features (the projection is its pooler_output)."""
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"unexpected CLIP output {type(out).__name__}: no pooler_output")
    return pooled


def _crop_size(image_processor: Any, default: int) -> int:
    crop = getattr(image_processor, "crop_size", None)
    height = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
    return int(height or default)


# ---------------------------------------------------------------- tiny random-weight CLIP for offline runs


def build_tiny_random_clip(repo_id: str = TINY_RANDOM_CLIP, cache_dir: str | os.PathLike | None = None,
                           seed: int = 0) -> Path:
    """Save a tiny random-weight CLIP (real config, safetensors, CLIP tokenizer over printable ASCII) into the
    Hugging Face cache as `repo_id`, so the real hub code loads it offline. Its labels are meaningless."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from pc3d.engine.hub import hub_cache_dir, parse_hub_spec
    from pc3d.foundation.hub import save_to_hub_cache

    repo = parse_hub_spec(repo_id).repo_id if repo_id.startswith("hf://") else repo_id
    chars = [chr(i) for i in range(33, 127)]  # byte-level BPE maps printable ASCII to itself
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    size = 32
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77, "projection_dim": 32,
                     "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": size, "patch_size": 8, "projection_dim": 32},
        projection_dim=32, logit_scale_init_value=math.log(100.0))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIPModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                         image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_to_hub_cache(model, processor, repo, cache_dir if cache_dir is not None else hub_cache_dir())


def tiny_random_cached(repo_id: str = TINY_RANDOM_CLIP) -> bool:
    """Whether `repo_id` already has a snapshot in the current Hugging Face cache."""
    from pc3d.engine.hub import hub_cache_dir, parse_hub_spec

    repo = parse_hub_spec(repo_id).repo_id
    folder = hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    return (folder / "refs" / "main").is_file()
