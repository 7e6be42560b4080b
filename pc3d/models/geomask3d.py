"""GeoMask3D student: a Point-MAE encoder/decoder plus the geometric-complexity (GC) predictor.

The GC predictor is a second, deeper decoder fed with its own mask token; its head maps every
token to 384 channels and the GC score is their mean (one scalar per patch), as released.
The released point head used only in the non-feature mode is left out: it has no loss here.
"""

from __future__ import annotations

import torch
from torch import nn

from pc3d.models.point_mae import (
    PatchGrouper,
    PointMAEDecoder,
    PointMAEEncoder,
    decode_with_mask_tokens,
    position_mlp,
)


class GeoMask3DStudent(nn.Module):
    def __init__(self, dim: int = 384, depth: int = 12, heads: int = 6, decoder_depth: int = 4,
                 gc_depth: int = 12, drop_path: float = 0.1, num_groups: int = 64, group_size: int = 32) -> None:
        super().__init__()
        self.grouper = PatchGrouper(num_groups, group_size)
        self.encoder = PointMAEEncoder(dim, depth, heads, drop_path)
        self.decoder_pos_embed = position_mlp(dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder = PointMAEDecoder(dim, decoder_depth, heads, drop_path)
        self.gc_mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.gc_predictor = PointMAEDecoder(dim, gc_depth, heads, drop_path)
        self.gc_head = nn.Sequential(
            nn.Conv1d(dim, 1024, 1), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2), nn.Conv1d(1024, dim, 1)
        )
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.gc_mask_token, std=0.02)

    def forward(self, neighborhood: torch.Tensor, center: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder tokens (B,G,C) and GC scores (B,G), both ordered visible patches then masked ones.

        With an all-False mask (the EMA teacher's view) the order is the natural patch order."""
        x_vis = self.encoder(neighborhood, center, mask)
        decoded = decode_with_mask_tokens(self.decoder, self.decoder_pos_embed, x_vis, center, mask,
                                          self.mask_token, last=None)
        gc_tokens = decode_with_mask_tokens(self.gc_predictor, self.decoder_pos_embed, x_vis, center, mask,
                                            self.gc_mask_token, last=None)
        gc_scores = self.gc_head(gc_tokens.transpose(1, 2)).mean(dim=1)
        return decoded, gc_scores
