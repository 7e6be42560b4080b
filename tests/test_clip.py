"""pc3d.foundation.clip against direct computations with the transformers model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    import os

    from pc3d.foundation.clip import ClipEncoder, build_tiny_random_clip

    home = tmp_path_factory.mktemp("hf")
    old = {k: os.environ.get(k) for k in ("HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    os.environ.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    os.environ.pop("HF_HUB_CACHE", None)
    try:
        build_tiny_random_clip()
        yield ClipEncoder("hf://pc3d/tiny-random-clip")
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_text_embeddings_are_normalised_prompt_ensembles_and_cached(encoder):
    templates = ("a photo of a {}.", "a {} in the street.")
    emb = encoder.encode_text(["car", "traffic-sign"], templates)
    assert emb.shape == (2, encoder.dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    tokens = encoder.tokenizer(["a photo of a traffic sign.", "a traffic sign in the street."], padding=True,
                               return_tensors="pt")
    direct = F.normalize(encoder.model.get_text_features(**tokens).pooler_output, dim=-1)
    expected = F.normalize(direct.mean(0), dim=0)
    assert torch.allclose(emb[1], expected, atol=1e-5)
    assert encoder.encode_text(["car", "traffic-sign"], templates) is emb


def test_crop_encoding_matches_manual_preprocessing(encoder):
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (40, 64, 3), dtype=np.uint8), rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)]
    feats = encoder.encode_crops(crops, batch_size=1)
    assert feats.shape == (2, encoder.dim)
    image = torch.from_numpy(crops[0]).permute(2, 0, 1)[None].float() / 255
    resized = F.interpolate(image, size=(32, 51), mode="bicubic", align_corners=False, antialias=True)
    left = (51 - 32) // 2
    pixels = (resized[..., :, left:left + 32].clamp(0, 1) - encoder.mean) / encoder.std
    direct = F.normalize(encoder.model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    assert torch.allclose(feats[0], direct[0], atol=1e-5)
    dense = encoder.encode_dense(rng.integers(0, 256, (40, 96, 3), dtype=np.uint8))
    assert dense.shape[-1] == encoder.dim and torch.allclose(dense.norm(dim=-1), torch.ones(dense.shape[:2]),
                                                             atol=1e-5)
