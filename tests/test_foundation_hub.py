"""pc3d.foundation.hub: a tiny CLIP saved in huggingface_hub's cache layout, loaded back through the real hub code."""

from __future__ import annotations

import pytest
import torch

from pc3d.errors import InputError


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def test_save_then_load_through_the_hub_cache(offline_home):
    from transformers import CLIPModel, CLIPProcessor

    from pc3d.foundation.clip import build_tiny_random_clip
    from pc3d.foundation.hub import load_pretrained, load_processor, resolve_snapshot

    snapshot = build_tiny_random_clip("hf://pc3d/tiny-clip", offline_home)
    repo = offline_home / "models--pc3d--tiny-clip"
    commit = (repo / "refs" / "main").read_text()
    assert snapshot == repo / "snapshots" / commit and len(commit) == 40
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "config.json").is_file()
    assert resolve_snapshot("hf://pc3d/tiny-clip").resolve() == snapshot.resolve()
    assert resolve_snapshot("hf://pc3d/tiny-clip@main").resolve() == snapshot.resolve()
    model = load_pretrained(CLIPModel, "hf://pc3d/tiny-clip")
    local = load_pretrained(CLIPModel, str(snapshot))
    assert not model.training
    pixels = torch.randn(2, 3, 32, 32)
    a = model.get_image_features(pixel_values=pixels).pooler_output
    b = local.get_image_features(pixel_values=pixels).pooler_output
    assert torch.equal(a, b)
    processor = load_processor(CLIPProcessor, "hf://pc3d/tiny-clip")
    assert processor.tokenizer("a car")["input_ids"][0] == processor.tokenizer.bos_token_id
    # saving the same model again gives the same commit (content hash)
    assert build_tiny_random_clip("hf://pc3d/tiny-clip", offline_home) == snapshot


def test_missing_repo_or_folder_is_one_line_input_error(offline_home, tmp_path):
    from transformers import CLIPModel

    from pc3d.foundation.hub import load_pretrained

    for spec in ("hf://pc3d/absent", str(tmp_path / "nowhere")):
        with pytest.raises(InputError) as exc:
            load_pretrained(CLIPModel, spec)
        assert "\n" not in str(exc.value) and spec in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        load_pretrained(CLIPModel, str(tmp_path / "empty"))
