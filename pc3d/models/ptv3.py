"""Point Transformer V3-style encoder (Wu et al., CVPR 2024), as Sonata / PointINS use it.

Points are grid-sampled, serialised along space-filling curves (z / z-trans / hilbert / hilbert-trans,
the order list shuffled per serialisation while training), and attend inside fixed-size patches of
consecutive points in serialised order (torch's scaled_dot_product_attention). Each block is
CPE (sparse submanifold conv, pc3d.models.sparse) -> pre-norm patch attention -> pre-norm MLP. Stages are joined by grid
pooling (cells of twice the size, segment-max of a projection) that records which coarse point each
fine point went to, so coarse features can be up-cast (concatenated back onto finer levels).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pc3d.errors import InputError
from pc3d.models.sparse import SparseConvTensor, SubMConv3d
from pc3d.ops.grid import grid_sample
from pc3d.ops.scatter import scatter_max, scatter_mean
from pc3d.ops.serialization import ORDERS, encode

MAX_DEPTH = 16  # serialisation bits per axis (PTv3's limit)
# how a pooled level picks its serialisation depth, per checkpoint family: "own" = bit length of its own largest
# cell + 1 (Sonata / PTv3 v3m2 re-serialise every pooled level from scratch), "parent" = the parent's depth - 1
# (PTv3 v3m1 shifts the parent's codes by 3 bits). The two differ by one exactly when the parent's largest cell is
# 2^(k+1) - 2; Hilbert codes depend on the depth, so the orders, hence the attention patches, change with the rule.
POOLED_DEPTH_RULES: tuple[str, ...] = ("own", "parent")


# ----------------------------------------------------------------------------- the point structure


@dataclass
class Point:
    """One level of a batch of scenes: points of all scenes concatenated, `batch` says which scene."""

    coord: Tensor  # (N,3) float
    grid_coord: Tensor  # (N,3) int64 cell of each point at this level
    batch: Tensor  # (N,) int64
    feat: Tensor  # (N,C)
    orders: Tensor | None = None  # (O,N) serialised position -> point index, one row per curve
    inverses: Tensor | None = None  # (O,N) point index -> serialised position
    codes: Tensor | None = None  # (O,N) int64 curve codes (batch in the high bits), rows as `orders`
    sparse: SparseConvTensor | None = None  # sparse tensor over (batch, grid_coord), shared by the CPEs
    parent: Point | None = None  # the finer level this one was pooled from
    pooling_inverse: Tensor | None = None  # (N_parent,) which point of this level each parent point joined
    extras: dict[str, Tensor] = field(default_factory=dict)  # per-point values pooled by mean (origin_coord)
    depth: int | None = None  # serialisation bits per axis; None = from this level's own extent

    @property
    def num_scenes(self) -> int:
        return int(self.batch.max()) + 1 if self.batch.numel() else 0


def voxelize(coord: Tensor, feat: Tensor, batch: Tensor, grid_size: float,
             extras: dict[str, Tensor] | None = None) -> tuple[Point, Tensor]:
    """Grid-sample points (one representative per cell of edge `grid_size`) -> (Point, cell of each input).

    The representative is the lowest-index point of its cell; `extras` follow the same selection."""
    sample = grid_sample(coord, grid_size, batch)
    keep = sample.unique_index
    chosen = {k: v[keep] for k, v in (extras or {}).items()}
    point = Point(coord=coord[keep], grid_coord=sample.grid_coord[keep], batch=batch[keep].long(),
                  feat=feat[keep], extras=chosen)
    return point, sample.inverse


def serialize(point: Point, orders: tuple[str, ...], shuffle: bool) -> Point:
    """Codes of every curve, the serialised order (argsort) and its inverse; `shuffle` permutes the curves.

    Codes are unique within a level (one point per cell), so the argsort is the same whatever sort is used."""
    if point.grid_coord.numel() == 0:
        raise InputError("serialize: no points")
    names = list(orders)
    if shuffle:
        names = [names[i] for i in torch.randperm(len(names)).tolist()]
    # the input level's depth comes from its extent; a pooled level arrives with a depth only under the "parent"
    # rule (see POOLED_DEPTH_RULES)
    depth = point.depth or max(int(point.grid_coord.max() + 1).bit_length(), 1)
    if depth > MAX_DEPTH:
        raise InputError(f"serialize: the scene spans {int(point.grid_coord.max()) + 1} cells per axis, more "
                         f"than 2^{MAX_DEPTH}; use a larger grid size")
    codes = torch.stack([encode(point.grid_coord, point.batch, depth, name) for name in names])
    order = torch.argsort(codes, dim=1)
    inverse = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device)
                                              .expand_as(order).contiguous())
    return replace(point, orders=order, inverses=inverse, codes=codes, depth=depth)


def sparse_tensor(point: Point) -> SparseConvTensor:
    """The sparse tensor of a level (its index pairs are computed once and shared by all CPEs)."""
    indices = torch.cat([point.batch.unsqueeze(1), point.grid_coord], 1).int()
    shape = (point.grid_coord.max(0).values + 1).tolist()
    return SparseConvTensor(point.feat, indices, shape, point.num_scenes)


# ----------------------------------------------------------------------------- patch layout


@dataclass
class PatchLayout:
    index: Tensor  # (P,K) serialised positions gathered into each patch
    back: Tensor  # (N,) flat position in (P*K) that gives each serialised position its output
    size: int  # K


def patch_layout(batch_sorted: Tensor, patch_size: int) -> PatchLayout:
    """Split each scene's serialised run into patches of K = min(patch_size, smallest scene) points.

    A scene of n points gets ceil(n/K) patches; the last one is the scene's final K points, i.e. it re-uses
    the tail of the previous patch as padding (so every patch is full and attention needs no mask). Each
    point takes its output from the first patch that holds it. `batch_sorted` is the batch index in
    serialised order (non-decreasing, since the batch sits in the codes' high bits)."""
    device = batch_sorted.device
    counts = torch.unique_consecutive(batch_sorted, return_counts=True)[1]
    k = int(min(patch_size, int(counts.min())))
    per_scene = (counts + k - 1) // k
    scene_start = torch.cumsum(counts, 0) - counts
    patch_first = torch.cumsum(per_scene, 0) - per_scene
    scenes = torch.arange(counts.numel(), device=device)
    patch_scene = torch.repeat_interleave(scenes, per_scene)
    patch_rank = torch.arange(int(per_scene.sum()), device=device) - patch_first[patch_scene]
    local_start = torch.minimum(patch_rank * k, counts[patch_scene] - k)
    index = (scene_start[patch_scene] + local_start).unsqueeze(1) + torch.arange(k, device=device)
    point_scene = torch.repeat_interleave(scenes, counts)
    local = torch.arange(batch_sorted.numel(), device=device) - scene_start[point_scene]
    rank = torch.minimum(local // k, per_scene[point_scene] - 1)
    slot = local - torch.minimum(rank * k, counts[point_scene] - k)
    back = (patch_first[point_scene] + rank) * k + slot
    return PatchLayout(index=index, back=back, size=k)


# ----------------------------------------------------------------------------- layers


class DropPath(nn.Module):
    """Stochastic depth per point (PTv3 drops per point, not per sample)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], 1, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1 - self.p)


class SparseCPE(nn.Module):
    """Conditional positional encoding: SubMConv3d(k3) + Linear + LayerNorm (added residually by the block).

    The conv runs on the sparse backend of the input's device (pc3d.models.sparse); all backends share the
    KRSC weight layout, so one module serves either device and any backend."""

    def __init__(self, channels: int, indice_key: str) -> None:
        super().__init__()
        # no conv bias: spconv's CPU path has none, and the Linear right after absorbs it exactly
        self.conv = SubMConv3d(channels, channels, 3, bias=False, indice_key=indice_key)
        self.linear = nn.Linear(channels, channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, point: Point, feat: Tensor) -> Tensor:
        out = self.conv(point.sparse.replace_feature(feat))
        point.sparse = out  # keeps the index pairs cached under the indice key for the next block
        return self.norm(self.linear(out.features))


class SparseStem(nn.Module):
    """The embedding of Pointcept's PTv3 v3m1: SubMConv3d(k5, no bias) over the input cells + norm + GELU.

    It reads the level's sparse tensor, so the encoder runs it after serialising the input level."""

    def __init__(self, in_channels: int, channels: int, norm: nn.Module) -> None:
        super().__init__()
        self.conv = SubMConv3d(in_channels, channels, 5, bias=False, indice_key="stem")
        self.norm = norm
        self.act = nn.GELU()

    def forward(self, point: Point) -> Tensor:
        out = self.conv(point.sparse.replace_feature(point.feat))
        point.sparse = out  # the stem's index pairs stay cached beside the CPEs' (another indice key)
        return self.act(self.norm(out.features))


class LayerScale(nn.Module):
    """Per-channel residual-branch scale (Sonata's optional `layer_scale`; off in the released model)."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def make_norm(kind: str, channels: int) -> nn.Module:
    """LayerNorm (Sonata) or BatchNorm1d with Pointcept's eps 1e-3 / momentum 0.01 (PTv3 v3m1's stem, pooling)."""
    if kind == "layer":
        return nn.LayerNorm(channels)
    if kind == "batch":
        return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)
    raise InputError(f"PTv3: norm must be 'layer' or 'batch', got {kind!r}")


class SerializedAttention(nn.Module):
    """Multi-head self-attention inside patches of consecutive points in one serialised order."""

    def __init__(self, channels: int, heads: int, patch_size: int, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if channels % heads:
            raise InputError(f"PTv3: channels {channels} are not divisible by heads {heads}")
        self.heads, self.patch_size, self.attn_drop = heads, patch_size, attn_drop
        self.qkv = nn.Linear(channels, channels * 3, bias=True)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, point: Point, feat: Tensor, order_index: int) -> Tensor:
        order = point.orders[order_index % point.orders.shape[0]]
        inverse = point.inverses[order_index % point.orders.shape[0]]
        layout = patch_layout(point.batch[order], self.patch_size)
        n, c = feat.shape
        qkv = self.qkv(feat[order])[layout.index]  # (P,K,3C)
        qkv = qkv.view(qkv.shape[0], layout.size, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(-1, c)[layout.back]  # serialised order
        return self.proj_drop(self.proj(out[inverse]))


class Block(nn.Module):
    def __init__(self, channels: int, heads: int, patch_size: int, mlp_ratio: float, drop_path: float,
                 order_index: int, indice_key: str, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 layer_scale: float | None = None) -> None:
        super().__init__()
        self.order_index = order_index
        self.cpe = SparseCPE(channels, indice_key)
        self.norm1 = nn.LayerNorm(channels)
        self.attn = SerializedAttention(channels, heads, patch_size, attn_drop, proj_drop)
        self.norm2 = nn.LayerNorm(channels)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(proj_drop),
                                 nn.Linear(hidden, channels), nn.Dropout(proj_drop))
        self.drop_path = DropPath(drop_path)
        # no modules at all without layer scale, so such encoders keep their state-dict keys
        self.ls1 = LayerScale(channels, layer_scale) if layer_scale is not None else None
        self.ls2 = LayerScale(channels, layer_scale) if layer_scale is not None else None

    def forward(self, point: Point) -> Point:
        feat = point.feat + self.cpe(point, point.feat)
        attn = self.attn(point, self.norm1(feat), self.order_index)
        feat = feat + self.drop_path(self.ls1(attn) if self.ls1 is not None else attn)
        mlp = self.mlp(self.norm2(feat))
        feat = feat + self.drop_path(self.ls2(mlp) if self.ls2 is not None else mlp)
        point.feat = feat
        return point


def pooled_depth_rule(rule: str | None, stem: str) -> str:
    """The pooled-level depth rule; None = that of the family whose stem the encoder has (linear: Sonata, own
    depth; sparse-conv: PTv3 v3m1, parent's depth - 1)."""
    if rule is None:
        return "own" if stem == "linear" else "parent"
    if rule not in POOLED_DEPTH_RULES:
        raise InputError(f"PTv3: pooled_depth must be one of {', '.join(POOLED_DEPTH_RULES)}, got {rule!r}")
    return rule


class GridPooling(nn.Module):
    """Cells of twice the size: feat = segment-max of Linear(feat), coord / extras = segment-mean.

    `depth_rule` says how the pooled level will be serialised (POOLED_DEPTH_RULES)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, norm: str = "layer",
                 depth_rule: str = "parent") -> None:
        super().__init__()
        self.stride = stride
        self.depth_rule = pooled_depth_rule(depth_rule, "")
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = make_norm(norm, out_channels)
        self.act = nn.GELU()

    def forward(self, point: Point) -> Point:
        # integer cells are already relative to each scene's minimum, so this is grid_coord // stride
        cells = grid_sample(point.grid_coord.to(torch.float64), float(self.stride), point.batch)
        n = cells.num_cells
        feat = scatter_max(self.proj(point.feat), cells.inverse, 0, n)[0]
        extras = {k: scatter_mean(v, cells.inverse, 0, n) for k, v in point.extras.items()}
        return Point(coord=scatter_mean(point.coord, cells.inverse, 0, n), grid_coord=cells.cell_coord,
                     batch=cells.cell_batch, feat=self.act(self.norm(feat)), parent=point,
                     pooling_inverse=cells.inverse, extras=extras,
                     depth=max(point.depth - 1, 1) if point.depth and self.depth_rule == "parent" else None)


# ----------------------------------------------------------------------------- the encoder


@dataclass(frozen=True)
class PTv3Size:
    depths: tuple[int, ...]
    channels: tuple[int, ...]
    heads: tuple[int, ...]
    patch_size: int = 1024


class PTv3Encoder(nn.Module):
    """Embedding + stages of blocks joined by grid pooling; `forward` returns the coarsest level, whose
    `parent` chain leads back to the finest (use `up_cast` for multi-scale features).

    The defaults are Sonata's encoder (Linear + LayerNorm + GELU stem, LayerNorm pooling, no layer scale);
    `stem="sparse-conv"` with `down_norm="batch"` is Pointcept's PTv3 v3m1 (k5 sparse-conv stem, BatchNorm in
    the stem and the pooling), so either family of official checkpoints maps onto this module. `pooled_depth`
    (POOLED_DEPTH_RULES; None: the stem's family) is how pooled levels are serialised."""

    def __init__(self, in_channels: int = 9, depths: tuple[int, ...] = (3, 3, 3, 12, 3),
                 channels: tuple[int, ...] = (48, 96, 192, 384, 512), heads: tuple[int, ...] = (3, 6, 12, 24, 32),
                 patch_size: int = 1024, mlp_ratio: float = 4.0, drop_path: float = 0.3,
                 orders: tuple[str, ...] = ORDERS, shuffle_orders: bool = True, mask_token: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, stem: str = "linear", down_norm: str = "layer",
                 layer_scale: float | None = None, pooled_depth: str | None = None) -> None:
        super().__init__()
        if not len(depths) == len(channels) == len(heads):
            raise InputError("PTv3: depths, channels and heads must have one entry per stage")
        unknown = [o for o in orders if o not in ORDERS]
        if unknown or not orders:
            raise InputError(f"PTv3: orders must be taken from {', '.join(ORDERS)}, got {list(orders)}")
        self.orders, self.shuffle_orders = tuple(orders), shuffle_orders
        self.channels = tuple(channels)
        if stem not in ("linear", "sparse-conv"):
            raise InputError(f"PTv3: stem must be 'linear' or 'sparse-conv', got {stem!r}")
        self.stem = stem
        self.pooled_depth = pooled_depth_rule(pooled_depth, stem)
        if stem == "linear":
            self.embedding: nn.Module = nn.Sequential(nn.Linear(in_channels, channels[0]),
                                                      make_norm(down_norm, channels[0]), nn.GELU())
        else:
            self.embedding = SparseStem(in_channels, channels[0], make_norm(down_norm, channels[0]))
        self.mask_token = nn.Parameter(torch.zeros(1, channels[0])) if mask_token else None
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.pools = nn.ModuleList()
        self.stages = nn.ModuleList()
        done = 0
        for s, (depth, width, head) in enumerate(zip(depths, channels, heads, strict=True)):
            if s:
                self.pools.append(GridPooling(channels[s - 1], width, norm=down_norm, depth_rule=self.pooled_depth))
            self.stages.append(nn.ModuleList(
                Block(width, head, patch_size, mlp_ratio, rates[done + i], i, f"stage{s}", attn_drop, proj_drop,
                      layer_scale) for i in range(depth)))
            done += depth

    def set_pooled_depth(self, rule: str | None) -> None:
        """Switch the pooled-level depth rule (None: the stem family's); it has no weights, so a built or loaded
        encoder can follow the rule of the checkpoint it holds."""
        self.pooled_depth = pooled_depth_rule(rule, self.stem)
        for pool in self.pools:
            pool.depth_rule = self.pooled_depth

    def _prepare(self, point: Point) -> Point:
        point = serialize(point, self.orders, self.shuffle_orders and self.training)
        point.sparse = sparse_tensor(point)
        return point

    def forward(self, point: Point, mask: Tensor | None = None) -> Point:
        if self.stem == "linear":
            point = self._prepare(replace(point, feat=self.embedding(point.feat)))
        else:  # the sparse conv needs the input level's sparse tensor first
            point = self._prepare(point)
            point.feat = self.embedding(point)
        if mask is not None:
            if self.mask_token is None:
                raise InputError("PTv3: masking needs a model built with mask_token=True")
            point.feat = torch.where(mask.unsqueeze(1), self.mask_token.to(point.feat.dtype).expand_as(point.feat),
                                     point.feat)
        for s, blocks in enumerate(self.stages):
            if s:
                point = self._prepare(self.pools[s - 1](point))
            for block in blocks:
                point = block(point)
        return point


def up_cast(point: Point, levels: int) -> Point:
    """Concatenate coarse features onto the next finer level, `levels` times (Sonata's up-cast)."""
    for _ in range(levels):
        if point.parent is None:
            raise InputError("up_cast: asked for more levels than the encoder has stages")
        parent = point.parent
        point = replace(parent, feat=torch.cat([parent.feat, point.feat[point.pooling_inverse]], 1))
    return point


def level_inverse(point: Point, levels: int) -> Tensor:
    """For the level `levels` steps finer than `point`: which point of `point` each of its points is in."""
    index = None
    for _ in range(levels):
        step = point.pooling_inverse
        index = step if index is None else index[step]
        point = point.parent
    if index is None:
        return torch.arange(point.coord.shape[0], device=point.coord.device)
    return index


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_upcast_channels(channels: tuple[int, ...], levels: int) -> int:
    """Width of the up-cast feature: the last levels+1 stages' widths summed."""
    return int(sum(channels[-(levels + 1):]))
