"""Point-MoDE: a scene expert (3DETR-style transformer over scene tokens) and an object expert
(Point-MAE over normalised kNN blocks), joined by a projection of max-pooled block features into
the scene decoder's queries.

Parameter prefixes are shared by the pretraining network and the detector, so a pretraining
checkpoint loads into the detector name for name: `scene.*` (tokenizer, encoder, projection,
positional encoding, decoder), `object.*` (Point-MAE: `object.encoder.*` is the encoder),
`block_projection.*`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pc3d.models.detr3d import (
    Decoder,
    EncoderLayer,
    FourierPositionEncoding,
    SetAbstraction,
    apply_conv_mlp,
    conv_mlp,
    gather_points,
)
from pc3d.models.point_mae import PatchGrouper, PointMAE, PointMAEEncoder
from pc3d.ops.neighbors import knn
from pc3d.ops.transforms import random_rotation

# ------------------------------------------------------------------------------------------ blocks


def sample_blocks(points: Tensor, count: int, size: int, generator: torch.Generator) -> Tensor:
    """K random blocks per scene: centres drawn uniformly among the scene's points (without
    replacement), each block = the centre's `size` nearest points. points (B,N,3) -> (B,K,size,3)."""
    b, n, _ = points.shape
    centre_idx = torch.stack([torch.randperm(n, generator=generator)[:count] for _ in range(b)])
    centre_idx = centre_idx.to(points.device)
    if count > n:  # fewer points than blocks: reuse centres
        centre_idx = centre_idx.repeat(1, -(-count // n))[:, :count]
    centres = gather_points(points, centre_idx)
    _, idx = knn(centres.detach(), points.detach(), size)
    return gather_points(points, idx)


def block_boxes(blocks: Tensor, centre: str = "mean") -> Tensor:
    """Axis-aligned box targets (..., 6) of blocks (..., M, 3): centre (mean of the points, or the middle of
    the extent) and full size max - min per axis."""
    low, high = blocks.amin(dim=-2), blocks.amax(dim=-2)
    middle = blocks.mean(dim=-2) if centre == "mean" else (low + high) / 2
    return torch.cat([middle, high - low], dim=-1)


def to_object_view(blocks: Tensor, rotation: str, generator: torch.Generator) -> Tensor:
    """Scene-to-object coordinate transform: subtract each block's centroid, scale it into the unit
    ball (max norm 1, so every coordinate lies in [-1, 1]), rotate it randomly. (..., M, 3) -> same."""
    centred = blocks - blocks.mean(dim=-2, keepdim=True)
    scale = centred.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(1e-9)
    unit = centred / scale.unsqueeze(-1)
    if rotation == "none":
        return unit
    lead = unit.shape[:-2]
    count = int(torch.tensor(lead).prod()) if lead else 1
    # drawn in float64 so float64 blocks rotate exactly rigidly; float32 blocks round the same as before
    mats = torch.stack([random_rotation(generator, rotation, torch.float64) for _ in range(count)]).to(unit)
    flat = unit.reshape(count, -1, 3)
    return torch.bmm(flat, mats.transpose(1, 2)).reshape(unit.shape)


def replicate_to(features: Tensor, count: int) -> Tensor:
    """(B,K,C) -> (B,count,C) by cycling over the K entries: entry j is entry j mod K.

    Point-MoDE section 3.2: "the number of point blocks and queries often differ, we replicate B_g to match
    all queries". Block features and block-box targets both go through this, so query j is always paired
    with block j mod K."""
    k = features.shape[1]
    index = torch.arange(count, device=features.device) % k
    return features[:, index]


# ------------------------------------------------------------------------------------------ experts


@dataclass
class SceneTokens:
    xyz: Tensor  # (B,T,3) token centres in scene coordinates
    features: Tensor  # (B,T,D) encoder output after the encoder-to-decoder projection
    pos: Tensor  # (B,T,D) Fourier encoding of xyz
    low: Tensor  # (B,3) scene minimum
    high: Tensor  # (B,3) scene maximum


class SceneExpert(nn.Module):
    """PointNet++ tokenizer -> pre-norm transformer encoder -> 1x1-conv projection -> decoder."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        in_channels = 3 + (3 if cfg.use_color else 0)
        self.use_color = cfg.use_color
        self.dim = cfg.dim
        self.encoder_pos = cfg.encoder_pos
        self.tokenizer = SetAbstraction(cfg.tokens, cfg.radius, cfg.samples,
                                        [in_channels, *cfg.tokenizer_hidden, cfg.dim])
        self.encoder = nn.ModuleList(EncoderLayer(cfg.dim, cfg.heads, cfg.encoder_ffn, cfg.dropout)
                                     for _ in range(cfg.encoder_layers))
        # 3DETR encoder_to_decoder_projection: BN + ReLU after every layer, no output bias
        self.encoder_to_decoder = conv_mlp([cfg.dim, cfg.dim, cfg.dim, cfg.dim], last_activation=True,
                                           last_bias=False)
        self.pos_encoding = FourierPositionEncoding(cfg.dim, cfg.pos_scale)
        self.decoder = Decoder(cfg.dim, cfg.heads, cfg.decoder_ffn, cfg.dropout, cfg.decoder_layers)

    def encode(self, points: Tensor, colors: Tensor | None = None) -> SceneTokens:
        """points (B,N,3) scene coordinates, colors (B,N,3) normalised or None -> scene tokens."""
        low, high = points.amin(dim=1), points.amax(dim=1)
        feats = colors if self.use_color else None
        xyz, tokens, _ = self.tokenizer(points, feats)
        pos = self.pos_encoding(xyz, low, high)
        if self.encoder_pos:  # absolute position as an input feature, so self-attention can relate tokens by place
            tokens = tokens + pos
        for layer in self.encoder:
            tokens = layer(tokens)
        tokens = apply_conv_mlp(self.encoder_to_decoder, tokens)
        return SceneTokens(xyz, tokens, pos, low, high)

    def decode(self, tgt: Tensor, query_pos: Tensor, scene: SceneTokens) -> Tensor:
        """(B,Q,D) queries -> (L,B,Q,D) outputs of every decoder layer."""
        return self.decoder(tgt, scene.features, query_pos, scene.pos)


def build_object_expert(cfg: Any) -> PointMAE:
    return PointMAE(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, decoder_depth=cfg.decoder_depth,
                    decoder_heads=cfg.heads, drop_path=cfg.drop_path, num_groups=cfg.num_groups,
                    group_size=cfg.group_size, mask_ratio=cfg.mask_ratio)


class ObjectEncoder(nn.Module):
    """The object expert without its reconstruction decoder (finetuning): keys match PointMAE's."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.grouper = PatchGrouper(cfg.num_groups, cfg.group_size)
        self.encoder = PointMAEEncoder(cfg.dim, cfg.depth, cfg.heads, cfg.drop_path)

    def forward(self, blocks: Tensor) -> Tensor:
        """(N,M,3) normalised blocks -> (N,C) max-pooled token features (all patches visible)."""
        neighborhood, center = self.grouper(blocks)
        return self.encoder(neighborhood, center).max(dim=1).values


def box_head(dim: int, out: int, dropout: float) -> nn.Sequential:
    """3DETR per-query head: 1x1 conv MLP dim -> dim -> dim -> out, BN + ReLU + dropout."""
    return conv_mlp([dim, dim, dim, out], dropout=dropout)


# ------------------------------------------------------------------------------------------ networks


class PointMoDE(nn.Module):
    """The pretraining network: both experts, the block projection, query embeddings, block-box heads."""

    def __init__(self, scene_cfg: Any, object_cfg: Any, num_blocks: int, num_queries: int | None = None) -> None:
        super().__init__()
        self.scene = SceneExpert(scene_cfg)
        self.object = build_object_expert(object_cfg)
        self.block_projection = nn.Linear(object_cfg.dim, scene_cfg.dim)
        # one learnable embedding per query; with more queries than blocks the block features are cycled over them
        self.query_embed = nn.Parameter(torch.randn(num_queries or num_blocks, scene_cfg.dim) * 0.02)
        self.center_head = box_head(scene_cfg.dim, 3, scene_cfg.head_dropout)
        self.size_head = box_head(scene_cfg.dim, 3, scene_cfg.head_dropout)

    def block_queries(self, block_features: Tensor | None, batch: int) -> tuple[Tensor, Tensor]:
        """tgt_j = proj(f_{j mod K}) + e_j (or e_j alone), query_pos = e_j, for the Q query embeddings."""
        embed = self.query_embed.unsqueeze(0).expand(batch, -1, -1)
        if block_features is None:
            return embed, embed
        projected = replicate_to(self.block_projection(block_features), embed.shape[1])
        return projected + embed, embed

    def predict_boxes(self, outputs: Tensor, scene: SceneTokens) -> tuple[Tensor, Tensor]:
        """(L,B,Q,D) decoder outputs -> boxes (L,B,Q,6) in scene coordinates and normalised (L,B,Q,6):
        centre = sigmoid in [0,1] of the scene's min/max box, size = sigmoid x scene extent."""
        centre_unit = apply_conv_mlp(self.center_head, outputs).sigmoid()
        size_unit = apply_conv_mlp(self.size_head, outputs).sigmoid()
        extent = (scene.high - scene.low).clamp_min(1e-6)[None, :, None]
        boxes = torch.cat([scene.low[None, :, None] + centre_unit * extent, size_unit * extent], dim=-1)
        return boxes, torch.cat([centre_unit, size_unit], dim=-1)


class PointMoDEDetector(nn.Module):
    """3DETR detector on the scene expert; the object expert encodes random blocks whose projected
    features (cycled over the queries) plus learnable query embeddings are the decoder's tgt."""

    def __init__(self, scene_cfg: Any, object_cfg: Any | None, num_queries: int, num_classes: int,
                 query_content: bool = False) -> None:
        super().__init__()
        dim = scene_cfg.dim
        self.num_queries = num_queries
        self.query_content = query_content
        self.num_classes = num_classes
        self.scene = SceneExpert(scene_cfg)
        self.object = ObjectEncoder(object_cfg) if object_cfg is not None else None
        self.block_projection = nn.Linear(object_cfg.dim, dim) if object_cfg is not None else None
        self.query_embed = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        # 3DETR query_projection: Fourier encoding of the FPS query xyz -> 1x1 conv + ReLU, twice
        self.query_projection = nn.Sequential(nn.Conv1d(dim, dim, 1), nn.ReLU(inplace=True),
                                              nn.Conv1d(dim, dim, 1), nn.ReLU(inplace=True))
        self.class_head = box_head(dim, num_classes + 1, scene_cfg.head_dropout)  # last = no object
        self.center_head = box_head(dim, 3, scene_cfg.head_dropout)
        self.size_head = box_head(dim, 3, scene_cfg.head_dropout)

    def forward(self, points: Tensor, colors: Tensor | None = None,
                object_blocks: Tensor | None = None) -> dict[str, Tensor]:
        """points (B,N,3); object_blocks (B,K,M,3) normalised blocks for the object expert.

        Returns per decoder layer: logits (L,B,Q,C+1), boxes (L,B,Q,6) in scene coordinates,
        boxes_norm (L,B,Q,6) (centre in [0,1] of the scene box, size / extent), and scene low/high."""
        from pc3d.ops.sampling import farthest_point_sample

        scene = self.scene.encode(points, colors)
        b = points.shape[0]
        query_idx = farthest_point_sample(scene.xyz.detach(), self.num_queries)
        query_xyz = gather_points(scene.xyz, query_idx)
        query_pos = self.scene.pos_encoding(query_xyz, scene.low, scene.high)
        query_pos = self.query_projection(query_pos.transpose(1, 2)).transpose(1, 2)
        tgt = self.query_embed.unsqueeze(0).expand(b, -1, -1)
        if self.query_content:  # each query starts from what the encoder saw at its own token
            tgt = tgt + gather_points(scene.features, query_idx)
        if self.object is not None and object_blocks is not None:
            k = object_blocks.shape[1]
            feats = self.object(object_blocks.reshape(b * k, *object_blocks.shape[2:])).reshape(b, k, -1)
            tgt = tgt + replicate_to(self.block_projection(feats), self.num_queries)
        outputs = self.scene.decode(tgt, query_pos, scene)
        logits = apply_conv_mlp(self.class_head, outputs)
        # 3DETR: centre = query xyz + (sigmoid - 0.5) metres, size = sigmoid x scene extent
        centre = query_xyz.unsqueeze(0) + apply_conv_mlp(self.center_head, outputs).sigmoid() - 0.5
        extent = (scene.high - scene.low).clamp_min(1e-6)[None, :, None]
        size_unit = apply_conv_mlp(self.size_head, outputs).sigmoid()
        centre_unit = (centre - scene.low[None, :, None]) / extent
        return {"logits": logits, "boxes": torch.cat([centre, size_unit * extent], dim=-1),
                "boxes_norm": torch.cat([centre_unit, size_unit], dim=-1), "low": scene.low, "high": scene.high}
