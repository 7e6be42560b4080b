"""The PTv3 decoder (Pointcept PT-v3m2 with enc_mode=False), trained on a frozen encoder for decoder probing.

From the coarsest encoder level down, each stage un-pools onto the next finer encoder level and runs PTv3 blocks
there: parent = LN/GELU(Linear(skip feat)) + LN/GELU(Linear(coarse feat))[pooling_inverse], then `depth` blocks
that reuse that level's serialisation orders and sparse-conv index pairs (PT-v3m2's `GridUnpooling` + `Block`,
cpe indice key of the encoder stage). Stochastic depth grows linearly over the decoder's blocks and is reversed
within a stage, as PT-v3m2 does. Sonata's decoder probe (insseg-sonata-v1m1-0b-scannet-pg-dec.py): depths
(2, 2, 2, 2), widths (64, 96, 192, 384), heads (4, 6, 12, 24), patch 1024, drop_path 0.3.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from pc3d.errors import InputError
from pc3d.models.ptv3 import Block, Point


class GridUnpooling(nn.Module):
    """Coarse features carried back to the finer level's points and added to its projected skip features."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_channels, out_channels), nn.LayerNorm(out_channels), nn.GELU())
        self.proj_skip = nn.Sequential(nn.Linear(skip_channels, out_channels), nn.LayerNorm(out_channels), nn.GELU())

    def forward(self, point: Point, feat: Tensor) -> Point:
        """`point`: a pooled encoder level; `feat`: the decoder's features on it -> the finer level, decoded."""
        parent = point.parent
        if parent is None or point.pooling_inverse is None:
            raise InputError("PTv3 decoder: the level has no finer encoder level to un-pool onto")
        merged = self.proj_skip(parent.feat) + self.proj(feat)[point.pooling_inverse]
        # a copy of the encoder level: the blocks below write their features into it, not into the encoder's
        return replace(parent, feat=merged)


class PTv3Decoder(nn.Module):
    """Decoder over an encoder's levels; `forward(top)` returns features on the finest level's points."""

    def __init__(self, encoder_channels: tuple[int, ...], depths: tuple[int, ...], channels: tuple[int, ...],
                 heads: tuple[int, ...], patch_size: int = 1024, mlp_ratio: float = 4.0, drop_path: float = 0.3,
                 num_orders: int = 4) -> None:
        super().__init__()
        stages = len(encoder_channels) - 1
        if not len(depths) == len(channels) == len(heads) == stages:
            raise InputError(f"PTv3 decoder: {stages} decoder stages for a {len(encoder_channels)}-stage encoder, "
                             f"got depths {list(depths)}, channels {list(channels)}, heads {list(heads)}")
        self.depths, self.channels = tuple(depths), tuple(channels)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        widths = [*channels, encoder_channels[-1]]  # stage s un-pools from width widths[s + 1]
        self.up = nn.ModuleList()
        self.stages = nn.ModuleList()
        for s in range(stages):  # index s = decoder stage on encoder level s (run from the coarsest down)
            stage_rates = rates[sum(depths[:s]):sum(depths[:s + 1])][::-1]
            self.up.append(GridUnpooling(widths[s + 1], encoder_channels[s], channels[s]))
            self.stages.append(nn.ModuleList(
                Block(channels[s], heads[s], patch_size, mlp_ratio, stage_rates[i], i % num_orders, f"stage{s}")
                for i in range(depths[s])))
        self.apply(_init_linear)

    def forward(self, top: Point) -> Tensor:
        point, feat = top, top.feat
        for s in range(len(self.stages) - 1, -1, -1):
            point = self.up[s](point, feat)
            for block in self.stages[s]:
                point = block(point)
            feat = point.feat
        return feat


def _init_linear(module: nn.Module) -> None:
    # PT-v3m2's _init_weights: truncated-normal (std 0.02) Linear weights, zero biases
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
