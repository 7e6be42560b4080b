"""SAM box -> mask: tiny random SamModel saved in the real hub layout, checked against the real processor path."""

from __future__ import annotations

import numpy as np
import torch

from pc3d.foundation.sam import SamBoxSegmenter, write_tiny_random_sam


def test_masks_match_the_processor_pipeline(hub_cache):
    segmenter = SamBoxSegmenter(write_tiny_random_sam(), batch_size=2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 50, 70, 3), dtype=np.uint8)
    boxes = [torch.tensor([[5.0, 5.0, 30.0, 40.0], [20.0, 10.0, 60.0, 45.0]]), torch.zeros(0, 4),
             torch.tensor([[0.0, 0.0, 69.0, 49.0]])]
    masks = segmenter.masks(images, boxes)
    assert [tuple(m.shape) for m in masks] == [(2, 50, 70), (0, 50, 70), (1, 50, 70)]
    assert all(m.dtype == torch.bool for m in masks)
    # the same through SamProcessor (its own box normalisation), one view at a time
    from transformers import SamProcessor

    snapshot = next((hub_cache / "models--pc3d-tiny-random--sam" / "snapshots").iterdir())
    processor = SamProcessor.from_pretrained(str(snapshot))
    for v in (0, 2):
        inputs = processor(images=images[v], input_boxes=[boxes[v].tolist()], return_tensors="pt")
        with torch.no_grad():
            out = segmenter.model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                                  multimask_output=False)
        expected = processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                                inputs["reshaped_input_sizes"])[0][:, 0]
        assert torch.equal(masks[v], expected)
