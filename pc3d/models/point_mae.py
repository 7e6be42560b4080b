"""Point-MAE backbone: patch grouper, mini-PointNet tokenizer, pre-norm transformer, heads.

Layout follows the official Point-MAE (see shared/reference/point-mae.md): the positional
embedding of the patch centres is re-added before every block, qkv has no bias, drop-path
rises linearly over depth. pc3d's own parameter names are snake_case; `pc3d.models.convert`
maps them to and from the official checkpoint keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pc3d.ops.grouping import group_patches


class PatchGrouper(nn.Module):
    """FPS centres + kNN patches (no parameters): neighbourhood (B,G,M,3) centred, centres (B,G,3)."""

    def __init__(self, num_groups: int, group_size: int) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.group_size = group_size

    def forward(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        neighborhood, center, _ = group_patches(xyz, self.num_groups, self.group_size)
        return neighborhood, center


class PatchTokenizer(nn.Module):
    """Mini-PointNet per patch: shared MLP, max-pool, concat global with per-point, MLP, max-pool."""

    def __init__(self, dim: int = 384) -> None:
        super().__init__()
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, dim, 1)
        )

    def forward(self, neighborhood: torch.Tensor) -> torch.Tensor:
        b, g, m, _ = neighborhood.shape
        x = neighborhood.reshape(b * g, m, 3).transpose(1, 2)
        feat = self.first_conv(x)
        global_feat = feat.max(dim=2, keepdim=True).values
        feat = torch.cat([global_feat.expand(-1, -1, m), feat], dim=1)
        feat = self.second_conv(feat)
        return feat.max(dim=2).values.reshape(b, g, -1)


def position_mlp(dim: int) -> nn.Sequential:
    """Centre coordinates -> token-sized positional embedding (Linear-GELU-Linear, keys 0.* and 2.*)."""
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample during training."""

    def __init__(self, prob: float = 0.0) -> None:
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # SDPA's default scale is head_dim^-0.5, the Point-MAE scale
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (keys norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def make_blocks(dim: int, depth: int, heads: int, drop_path: float) -> nn.ModuleList:
    rates = torch.linspace(0, drop_path, depth).tolist() if depth > 1 else [drop_path] * depth
    return nn.ModuleList(Block(dim, heads, drop_path=rate) for rate in rates)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, pos: torch.Tensor,
               keep: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Point-MAE re-adds the positional embedding before every block; optionally keep block outputs."""
    kept = []
    for i, block in enumerate(blocks):
        x = block(x + pos)
        if i in keep:
            kept.append(x)
    return x, kept


def init_weights(module: nn.Module, linear: str = "trunc_normal") -> None:
    """Point-MAE init: trunc_normal(.02) (encoder) or xavier_uniform (decoder) Linear/Conv1d; LN=(1,0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv1d):
            if linear == "xavier" and isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PointMAEEncoder(nn.Module):
    """Tokenizer + positional MLP + transformer + final LayerNorm (official `MAE_encoder`)."""

    def __init__(self, dim: int = 384, depth: int = 12, heads: int = 6, drop_path: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.tokenizer = PatchTokenizer(dim)
        self.pos_embed = position_mlp(dim)
        self.blocks = make_blocks(dim, depth, heads, drop_path)
        self.norm = nn.LayerNorm(dim)
        init_weights(self)

    def tokens(self, neighborhood: torch.Tensor, center: torch.Tensor,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens and positions of the visible patches (mask True = hidden; same count per sample)."""
        # the official code tokenizes every patch (BatchNorm sees all of them), then keeps the visible ones
        tokens = self.tokenizer(neighborhood)
        pos = self.pos_embed(center)
        if mask is not None:
            b, _, c = tokens.shape
            tokens = tokens[~mask].reshape(b, -1, c)
            pos = pos[~mask].reshape(b, -1, c)
        return tokens, pos

    def forward(self, neighborhood: torch.Tensor, center: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x, pos = self.tokens(neighborhood, center, mask)
        x, _ = run_blocks(self.blocks, x, pos)
        return self.norm(x)


class PointMAEDecoder(nn.Module):
    """Light transformer over [visible tokens, mask tokens]; LayerNorm of the last `n` (or all) tokens."""

    def __init__(self, dim: int = 384, depth: int = 4, heads: int = 6, drop_path: float = 0.1) -> None:
        super().__init__()
        self.blocks = make_blocks(dim, depth, heads, drop_path)
        self.norm = nn.LayerNorm(dim)
        init_weights(self, linear="xavier")

    def forward(self, x: torch.Tensor, pos: torch.Tensor, last: int | None = None) -> torch.Tensor:
        x, _ = run_blocks(self.blocks, x, pos)
        return self.norm(x if last is None else x[:, -last:])


def step_generator() -> torch.Generator:
    """A CPU generator for this step's augmentation, seeded from the global RNG (which the engine seeds
    per rank and checkpoints), so augmentations are reproducible and resume exactly."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))


def random_patch_mask(batch: int, groups: int, ratio: float, device: torch.device | str,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Point-MAE `rand` masking: exactly int(ratio*G) patches per sample, uniformly at random (True = masked)."""
    num_mask = int(ratio * groups)
    noise = torch.rand(batch, groups, device=device, generator=generator)
    order = noise.argsort(dim=1)
    mask = torch.zeros(batch, groups, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :num_mask], True)
    return mask


def decode_with_mask_tokens(decoder: nn.Module, pos_mlp: nn.Module, x_vis: torch.Tensor, center: torch.Tensor,
                            mask: torch.Tensor, mask_token: torch.Tensor, last: int | None) -> torch.Tensor:
    """Run `decoder` on [visible tokens, mask tokens] with positions [visible centres, masked centres].

    The token order of the output is therefore: visible patches, then masked ones (each in natural order)."""
    b, _, c = x_vis.shape
    pos_vis = pos_mlp(center[~mask]).reshape(b, -1, c)
    pos_mask = pos_mlp(center[mask]).reshape(b, -1, c)
    x = torch.cat([x_vis, mask_token.expand(b, pos_mask.shape[1], -1)], dim=1)
    return decoder(x, torch.cat([pos_vis, pos_mask], dim=1), last)


class PointMAE(nn.Module):
    """The pretraining network: encoder of visible patches, decoder with mask tokens, patch head.

    pc3d key -> official key: encoder.tokenizer -> MAE_encoder.encoder, encoder.blocks ->
    MAE_encoder.blocks.blocks, decoder_pos_embed, decoder.blocks -> MAE_decoder.blocks,
    reconstruction_head -> increase_dim.0 (see pc3d.models.convert).
    """

    def __init__(self, dim: int = 384, depth: int = 12, heads: int = 6, decoder_depth: int = 4,
                 decoder_heads: int = 6, drop_path: float = 0.1, num_groups: int = 64,
                 group_size: int = 32, mask_ratio: float = 0.6) -> None:
        super().__init__()
        self.mask_ratio = mask_ratio
        self.group_size = group_size
        self.grouper = PatchGrouper(num_groups, group_size)
        self.encoder = PointMAEEncoder(dim, depth, heads, drop_path)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = position_mlp(dim)
        self.decoder = PointMAEDecoder(dim, decoder_depth, decoder_heads, drop_path)
        self.reconstruction_head = nn.Conv1d(dim, 3 * group_size, 1)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def patches_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,T,C) decoder tokens -> (B,T,M,3) local patch coordinates."""
        b, t, _ = tokens.shape
        return self.reconstruction_head(tokens.transpose(1, 2)).transpose(1, 2).reshape(b, t, -1, 3)

    def forward(self, neighborhood: torch.Tensor, center: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Predicted local patches of the masked groups, (B, #masked, M, 3), in natural patch order."""
        x_vis = self.encoder(neighborhood, center, mask)
        num_mask = int(mask[0].sum())
        decoded = decode_with_mask_tokens(self.decoder, self.decoder_pos_embed, x_vis, center, mask,
                                          self.mask_token, last=num_mask)
        return self.patches_from_tokens(decoded)


class PointMAEClassifier(nn.Module):
    """Finetuning classifier (official `PointTransformer`): cls token + encoder, head on [cls, max]."""

    def __init__(self, num_classes: int, dim: int = 384, depth: int = 12, heads: int = 6,
                 drop_path: float = 0.1, num_groups: int = 64, group_size: int = 32,
                 head_dropout: float = 0.5) -> None:
        super().__init__()
        self.grouper = PatchGrouper(num_groups, group_size)
        self.encoder = PointMAEEncoder(dim, depth, heads, drop_path)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, dim))
        # indices 0,1,4,5,8 hold parameters, as in the official `cls_head_finetune`
        self.head = nn.Sequential(
            nn.Linear(2 * dim, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(head_dropout),
            nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(head_dropout),
            nn.Linear(256, num_classes),
        )
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)
        init_weights(self.head)

    def features(self, points: torch.Tensor) -> torch.Tensor:
        """(B,N,3) -> (B, 2*dim) pooled feature [cls output, max over patch tokens]."""
        neighborhood, center = self.grouper(points)
        tokens, pos = self.encoder.tokens(neighborhood, center)
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(b, -1, -1), pos], dim=1)
        x, _ = run_blocks(self.encoder.blocks, x, pos)
        x = self.encoder.norm(x)
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(points))


def three_nn_interpolate(xyz: torch.Tensor, centers: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """PointNet++ feature propagation: inverse-distance weights of the 3 nearest centres.

    xyz (B,N,3), centers (B,G,3), feats (B,G,C) -> (B,N,C)."""
    from pc3d.ops.neighbors import knn

    dist, idx = knn(xyz, centers, 3)
    # knn distances are Euclidean; PointNet++ weights by 1/squared distance
    weight = 1.0 / (dist.pow(2) + 1e-8)
    weight = weight / weight.sum(dim=-1, keepdim=True)
    b, n, _ = idx.shape
    gathered = torch.gather(feats, 1, idx.reshape(b, n * 3, 1).expand(-1, -1, feats.shape[-1]))
    return (gathered.reshape(b, n, 3, -1) * weight.unsqueeze(-1)).sum(dim=2)


class PointMAEPartSeg(nn.Module):
    """ShapeNetPart head: features of blocks 3/7/11 (shared LN), global max+avg, label embedding,
    3-NN propagation to all points, per-point MLP -> part logits."""

    def __init__(self, num_parts: int = 50, num_categories: int = 16, dim: int = 384, depth: int = 12,
                 heads: int = 6, drop_path: float = 0.1, num_groups: int = 128, group_size: int = 32,
                 fetch_blocks: tuple[int, ...] = (3, 7, 11)) -> None:
        super().__init__()
        self.fetch_blocks = tuple(i for i in fetch_blocks if i < depth) or (depth - 1,)
        self.num_categories = num_categories
        feat_dim = dim * len(self.fetch_blocks)
        self.grouper = PatchGrouper(num_groups, group_size)
        self.encoder = PointMAEEncoder(dim, depth, heads, drop_path)
        self.label_conv = nn.Sequential(
            nn.Conv1d(num_categories, 64, 1, bias=False), nn.BatchNorm1d(64), nn.LeakyReLU(0.2)
        )
        self.propagation = nn.Sequential(
            nn.Conv1d(feat_dim + 3, 1536, 1), nn.BatchNorm1d(1536), nn.ReLU(inplace=True),
            nn.Conv1d(1536, 1024, 1), nn.BatchNorm1d(1024), nn.ReLU(inplace=True),
        )
        self.seg_head = nn.Sequential(
            nn.Conv1d(1024 + 2 * feat_dim + 64, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Conv1d(512, 256, 1), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Conv1d(256, num_parts, 1),
        )

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """points (B,N,3), category (B,) object class -> part logits (B,N,num_parts)."""
        b, n, _ = points.shape
        neighborhood, center = self.grouper(points)
        tokens, pos = self.encoder.tokens(neighborhood, center)
        _, kept = run_blocks(self.encoder.blocks, tokens, pos, keep=self.fetch_blocks)
        feats = torch.cat([self.encoder.norm(x) for x in kept], dim=-1)  # (B,G,feat_dim)
        global_feat = torch.cat([feats.max(dim=1).values, feats.mean(dim=1)], dim=-1)
        onehot = F.one_hot(category.long(), self.num_categories).float().unsqueeze(-1)
        label_feat = self.label_conv(onehot).squeeze(-1)
        point_feat = three_nn_interpolate(points, center, feats)
        point_feat = self.propagation(torch.cat([points, point_feat], dim=-1).transpose(1, 2))
        per_shape = torch.cat([global_feat, label_feat], dim=-1).unsqueeze(-1).expand(-1, -1, n)
        logits = self.seg_head(torch.cat([point_feat, per_shape], dim=1))
        return logits.transpose(1, 2)
