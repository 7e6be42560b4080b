"""3DETR building blocks (Misra et al., ICCV 2021): PointNet++ set-abstraction tokenizer, Fourier
positional encoding, pre-norm transformer encoder/decoder layers, 1x1-conv MLPs with BatchNorm.

Sizes and layer order follow facebookresearch/3detr (see shared/reference/point-mode.md §1, §4);
the code is pc3d's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pc3d.ops.neighbors import ball_query
from pc3d.ops.sampling import farthest_point_sample


def gather_points(values: Tensor, index: Tensor) -> Tensor:
    """values (B,N,C), index (B,...) int64 -> (B,...,C)."""
    b, c = values.shape[0], values.shape[-1]
    flat = index.reshape(b, -1)
    out = torch.gather(values, 1, flat.unsqueeze(-1).expand(-1, -1, c))
    return out.reshape(*index.shape, c)


class FourierPositionEncoding(nn.Module):
    """Random Fourier features of coordinates normalised to [0, 1] by the scene's min/max.

    pos = [sin(2 pi x B), cos(2 pi x B)] with a fixed Gaussian B (3, dim/2); B is a buffer, so it is
    saved with the weights and identical on every rank (the engine seeds all ranks alike)."""

    def __init__(self, dim: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier encoding needs an even width, got {dim}")
        self.register_buffer("gauss_b", torch.randn(3, dim // 2) * scale)

    def forward(self, xyz: Tensor, low: Tensor, high: Tensor) -> Tensor:
        """xyz (B,N,3), low/high (B,3) -> (B,N,dim)."""
        extent = (high - low).clamp_min(1e-6)
        unit = (xyz - low[:, None]) / extent[:, None]
        proj = (2 * math.pi * unit) @ self.gauss_b.to(unit.dtype)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


def conv_mlp(widths: list[int], dropout: float = 0.0, last_activation: bool = False,
             last_bias: bool = True) -> nn.Sequential:
    """3DETR `GenericMLP` on (B,C,N): 1x1 Conv1d + BatchNorm + ReLU (+ dropout) per hidden layer."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        last = i == len(widths) - 2
        layers.append(nn.Conv1d(cin, cout, 1, bias=last_bias or not last))
        if not last or last_activation:
            layers += [nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]
            if dropout > 0 and not last:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def apply_conv_mlp(mlp: nn.Module, x: Tensor) -> Tensor:
    """Run a Conv1d MLP on channel-last tokens of any leading shape: (..., N, C) -> (..., N, C')."""
    lead, n, c = x.shape[:-2], x.shape[-2], x.shape[-1]
    out = mlp(x.reshape(-1, n, c).transpose(1, 2)).transpose(1, 2)
    return out.reshape(*lead, n, out.shape[-1])


class SetAbstraction(nn.Module):
    """PointNet++ SA layer: FPS centres, ball-query groups, shared MLP on [xyz / radius, features], max-pool."""

    def __init__(self, tokens: int, radius: float, samples: int, widths: list[int]) -> None:
        super().__init__()
        self.tokens, self.radius, self.samples = tokens, radius, samples
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, xyz: Tensor, features: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """xyz (B,N,3), features (B,N,C) or None -> centres (B,T,3), tokens (B,T,D), centre indices (B,T)."""
        centre_idx = farthest_point_sample(xyz.detach(), min(self.tokens, xyz.shape[1]))
        centres = gather_points(xyz, centre_idx)
        # slots past the in-radius neighbours repeat the nearest one: harmless under the max-pool
        _, idx, _ = ball_query(centres.detach(), xyz.detach(), self.radius, self.samples)
        grouped = (gather_points(xyz, idx) - centres.unsqueeze(2)) / self.radius  # normalize_xyz
        if features is not None:
            grouped = torch.cat([grouped, gather_points(features, idx)], dim=-1)
        out = self.mlp(grouped.permute(0, 3, 1, 2))  # (B, D, T, S)
        return centres, out.max(dim=-1).values.transpose(1, 2), centre_idx


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + ReLU FFN (3DETR `vanilla`: d 256, 4 heads, FFN 128, dropout 0.1)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, need_weights=False)[0])
        h = self.norm2(x)
        return x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(h)))))


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention of the queries, cross-attention to the scene tokens, FFN.

    Queries carry `query_pos` and tokens `pos` on the attention keys/queries only (DETR style)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor, pos: Tensor) -> Tensor:
        h = self.norm1(tgt)
        q = h + query_pos
        tgt = tgt + self.dropout(self.self_attn(q, q, h, need_weights=False)[0])
        h = self.norm2(tgt)
        tgt = tgt + self.dropout(self.cross_attn(h + query_pos, memory + pos, memory, need_weights=False)[0])
        h = self.norm3(tgt)
        return tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(h)))))


class Decoder(nn.Module):
    """Stack of decoder layers; returns every layer's output through the shared final LayerNorm (L,B,Q,D)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor, pos: Tensor) -> Tensor:
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, query_pos, pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)
