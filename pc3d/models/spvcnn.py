"""SPVCNN (sparse point-voxel CNN) on pc3d.models.sparse, in 2DPASS's layout (voxel 0.05 m, cs = 32..96).

Voxel branch: stem (2 x SubM k3) -> 4 stages (Conv k2 s2, 2 residual blocks) -> 4 up stages (inverse conv k2,
concat skip, 2 residual blocks). Point branch: features devoxelised (trilinear over the 8 surrounding voxel
centres) at the stem, after stage 4, after up 2 and up 4, each adding a point MLP. The sparse convs run on
the backend of the input's device (spconv, spconv-triton or plain torch; see pc3d.models.sparse). `forward`
returns per-point features (N, cs[8]) and the multi-scale point features of the four encoder stages
(strides 2, 4, 8, 16) used by the 2D-3D knowledge transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pc3d.models.sparse import (
    SparseConv3d,
    SparseConvTensor,
    SparseInverseConv3d,
    SparseModule,
    SparseSequential,
    SubMConv3d,
)
from pc3d.ops import scatter_mean

_KEY_BITS = 20  # per-axis bits of the voxel hash (coordinates are shifted to be >= 0)


def voxel_keys(batch: Tensor, coords: Tensor) -> Tensor:
    """int64 hash of (batch, x, y, z) integer voxel coordinates (each in [0, 2^20))."""
    c = coords.long()
    return (((batch.long() << _KEY_BITS) | c[:, 0]) << (2 * _KEY_BITS)) | (c[:, 1] << _KEY_BITS) | c[:, 2]


@dataclass
class PointCloudBatch:
    """Points of a batch: float coordinates in voxel units (>= 0), batch index, features."""

    coords: Tensor  # (N, 3) float, in voxels
    batch: Tensor  # (N,) int64
    features: Tensor  # (N, C)


def lookup(table_keys: Tensor, query_keys: Tensor) -> Tensor:
    """Row of each query key in `table_keys` (-1 when absent)."""
    order = torch.argsort(table_keys)
    sorted_keys = table_keys[order]
    pos = torch.searchsorted(sorted_keys, query_keys).clamp_max(max(len(sorted_keys) - 1, 0))
    found = sorted_keys[pos] == query_keys if len(sorted_keys) else torch.zeros_like(query_keys, dtype=torch.bool)
    return torch.where(found, order[pos], torch.full_like(pos, -1))


def point_to_voxel(x, points: PointCloudBatch, stride: int) -> Tensor:
    """Mean of the point features in each voxel of sparse tensor `x` (stride `stride`); (V, C)."""
    cell = torch.floor(points.coords / stride).long()
    rows = lookup(voxel_keys(x.indices[:, 0], x.indices[:, 1:]), voxel_keys(points.batch, cell))
    keep = rows >= 0
    return scatter_mean(points.features[keep], rows[keep], 0, x.features.shape[0])


def voxel_to_point(x, points: PointCloudBatch, stride: int) -> Tensor:
    """Trilinear interpolation of voxel features at the points (voxel centres at (i + 0.5) * stride); weights
    of missing neighbours are dropped and the rest renormalised. (N, C)."""
    pos = points.coords / stride - 0.5
    base = torch.floor(pos)
    frac = pos - base
    keys = voxel_keys(x.indices[:, 0], x.indices[:, 1:])
    out = torch.zeros(pos.shape[0], x.features.shape[1], dtype=x.features.dtype, device=pos.device)
    total = torch.zeros(pos.shape[0], 1, dtype=x.features.dtype, device=pos.device)
    for corner in range(8):
        offset = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=pos.device)
        cell = (base + offset).long()
        weight = torch.prod(torch.where(offset.bool(), frac, 1 - frac), dim=1, keepdim=True)
        valid = (cell >= 0).all(dim=1)
        rows = lookup(keys, voxel_keys(points.batch, cell.clamp_min(0)))
        rows = torch.where(valid, rows, torch.full_like(rows, -1))
        hit = (rows >= 0).unsqueeze(1)
        weight = torch.where(hit, weight, torch.zeros_like(weight)).to(out.dtype)
        out = out + weight * x.features[rows.clamp_min(0)]
        total = total + weight
    return out / total.clamp_min(1e-8)


class ResidualBlock(SparseModule):
    def __init__(self, cin: int, cout: int, key: str) -> None:
        super().__init__()
        self.main = SparseSequential(
            SubMConv3d(cin, cout, 3, indice_key=key, bias=False), nn.BatchNorm1d(cout),
            nn.ReLU(inplace=True),
            SubMConv3d(cout, cout, 3, indice_key=key, bias=False), nn.BatchNorm1d(cout))
        self.shortcut = (nn.Identity() if cin == cout else
                         SparseSequential(SubMConv3d(cin, cout, 1, indice_key=key + "p", bias=False),
                                          nn.BatchNorm1d(cout)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: SparseConvTensor) -> SparseConvTensor:
        skip = self.shortcut(x) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.main(x)
        return out.replace_feature(self.relu(out.features + skip.features))


class SPVCNN(nn.Module):
    """Sparse point-voxel CNN. Input: points (N,3) metres, batch (N,), features (N, in_channels)."""

    def __init__(self, in_channels: int = 4, channels: list[int] | tuple[int, ...] = (32, 32, 64, 128, 256, 256, 128,
                                                                                       96, 96),
                 voxel_size: float = 0.05, dropout: float = 0.3) -> None:
        super().__init__()
        cs = list(channels)
        self.voxel_size, self.channels = voxel_size, cs
        self.stem = SparseSequential(
            SubMConv3d(in_channels, cs[0], 3, indice_key="s1", bias=False), nn.BatchNorm1d(cs[0]),
            nn.ReLU(inplace=True),
            SubMConv3d(cs[0], cs[0], 3, indice_key="s1", bias=False), nn.BatchNorm1d(cs[0]),
            nn.ReLU(inplace=True))
        self.down = nn.ModuleList()
        for i in range(4):
            self.down.append(SparseSequential(
                SparseConv3d(cs[i], cs[i], 2, 2, indice_key=f"d{i + 1}", bias=False),
                nn.BatchNorm1d(cs[i]), nn.ReLU(inplace=True),
                ResidualBlock(cs[i], cs[i + 1], f"s{2 ** (i + 1)}"), ResidualBlock(cs[i + 1], cs[i + 1],
                                                                               f"s{2 ** (i + 1)}")))
        skips = [cs[3], cs[2], cs[1], cs[0]]
        self.up_conv, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for j in range(4):
            cin, cout = cs[4 + j], cs[5 + j]
            self.up_conv.append(SparseSequential(
                SparseInverseConv3d(cin, cout, 2, indice_key=f"d{4 - j}", bias=False),
                nn.BatchNorm1d(cout), nn.ReLU(inplace=True)))
            stride = 2 ** (3 - j)
            self.up_blocks.append(SparseSequential(ResidualBlock(cout + skips[j], cout, f"s{stride}"),
                                                   ResidualBlock(cout, cout, f"s{stride}")))
        self.point_mlps = nn.ModuleList([
            nn.Sequential(nn.Linear(cs[0], cs[4]), nn.BatchNorm1d(cs[4]), nn.ReLU(True)),
            nn.Sequential(nn.Linear(cs[4], cs[6]), nn.BatchNorm1d(cs[6]), nn.ReLU(True)),
            nn.Sequential(nn.Linear(cs[6], cs[8]), nn.BatchNorm1d(cs[8]), nn.ReLU(True))])
        self.dropout = nn.Dropout(dropout)
        self.out_channels = cs[8]
        self.scale_channels = cs[1:5]

    def forward(self, xyz: Tensor, batch: Tensor, features: Tensor) -> tuple[Tensor, list[Tensor]]:
        batch = batch.long()
        # voxel coordinates relative to each cloud's minimum corner (non-negative for the hash and the sparse
        # convs)
        lo = torch.full((int(batch.max()) + 1, 3), float("inf"), device=xyz.device, dtype=xyz.dtype)
        lo = lo.scatter_reduce(0, batch[:, None].expand(-1, 3), xyz, "amin")
        coords = (xyz - lo[batch]) / self.voxel_size
        points = PointCloudBatch(coords, batch, features)
        cells = torch.floor(coords).long()
        keys = voxel_keys(batch, cells)
        unique_keys, inverse = torch.unique(keys, return_inverse=True)
        first = torch.full((len(unique_keys),), len(keys), dtype=torch.long, device=keys.device)
        first = first.scatter_reduce(0, inverse, torch.arange(len(keys), device=keys.device), "amin")
        indices = torch.cat([batch[first, None], cells[first]], dim=1).int()
        shape = (cells.max(dim=0).values + 1).clamp_min(16).tolist()
        shape = [((s + 15) // 16) * 16 for s in shape]  # four stride-2 stages
        voxel_feats = scatter_mean(features, inverse, 0, len(unique_keys))
        x0 = SparseConvTensor(voxel_feats, indices, shape, int(batch.max()) + 1)
        x0 = self.stem(x0)
        z0 = voxel_to_point(x0, points, 1)
        x0 = x0.replace_feature(point_to_voxel(x0, PointCloudBatch(coords, batch, z0), 1))
        encoder = [x0]
        for stage in self.down:
            encoder.append(stage(encoder[-1]))
        scales = [voxel_to_point(encoder[i + 1], points, 2 ** (i + 1)) for i in range(4)]
        z1 = scales[3] + self.point_mlps[0](z0)
        y = encoder[4].replace_feature(self.dropout(point_to_voxel(encoder[4], PointCloudBatch(coords, batch, z1),
                                                                   16)))
        z = z1
        for j in range(4):
            y = self.up_conv[j](y)
            skip = encoder[3 - j]
            y = y.replace_feature(torch.cat([y.features, skip.features], dim=1))
            y = self.up_blocks[j](y)
            stride = 2 ** (3 - j)
            if j == 1:
                z = voxel_to_point(y, points, stride) + self.point_mlps[1](z)
                y = y.replace_feature(self.dropout(point_to_voxel(y, PointCloudBatch(coords, batch, z), stride)))
        z = voxel_to_point(y, points, 1) + self.point_mlps[2](z)
        return z, scales
