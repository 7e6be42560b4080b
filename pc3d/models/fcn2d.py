"""ResNet-34-style fully convolutional image encoder (plain torch) for the 2D branch of 2DPASS / MSFSKD.

Stem (conv 7x7 s2, BN, ReLU, max-pool) then four stages of basic residual blocks ([3, 4, 6, 3] blocks of
[64, 128, 256, 512] channels, strides 1, 2, 2, 2, so the stages sit at strides 4, 8, 16, 32). Each stage is
projected by a 1x1 conv to `hidden` channels; `sample(features, pixels)` reads them bilinearly at point pixels,
which equals upsampling every map to full resolution and indexing it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.down(x), inplace=True)


class ResNetFCN(nn.Module):
    """Multi-scale image features: a list of 4 maps (B, hidden, H/s, W/s), s = 4, 8, 16, 32."""

    def __init__(self, widths: list[int] | tuple[int, ...] = (64, 128, 256, 512),
                 blocks: list[int] | tuple[int, ...] = (3, 4, 6, 3), hidden: int = 64) -> None:
        super().__init__()
        stem_width = widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, stem_width, 7, 2, 3, bias=False), nn.BatchNorm2d(stem_width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.ModuleList()
        cin = stem_width
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers = [BasicBlock(cin, width, 1 if i == 0 else 2)]
            layers += [BasicBlock(width, width, 1) for _ in range(count - 1)]
            self.stages.append(nn.Sequential(*layers))
            cin = width
        self.heads = nn.ModuleList([nn.Sequential(nn.Conv2d(w, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(True))
                                    for w in widths])

    def forward(self, image: Tensor) -> list[Tensor]:
        x = self.stem(image)
        maps = []
        for stage, head in zip(self.stages, self.heads, strict=True):
            x = stage(x)
            maps.append(head(x))
        return maps


def sample(feature_map: Tensor, pixels: Tensor, batch: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Bilinear features (M, C) at pixel positions (M, 2) as (row, col) of images `batch` (M,)."""
    height, width = image_size
    # pixel centres at +0.5; align_corners=False maps [0, W] onto [-1, 1]
    grid_x = (pixels[:, 1].float() + 0.5) / width * 2 - 1
    grid_y = (pixels[:, 0].float() + 0.5) / height * 2 - 1
    out = feature_map.new_zeros(pixels.shape[0], feature_map.shape[1])
    for b in torch.unique(batch).tolist():
        rows = torch.nonzero(batch == b).squeeze(1)
        grid = torch.stack([grid_x[rows], grid_y[rows]], dim=1).view(1, 1, -1, 2).to(feature_map.dtype)
        values = F.grid_sample(feature_map[b:b + 1], grid, mode="bilinear", align_corners=False)
        out[rows] = values[0, :, 0].t()
    return out
