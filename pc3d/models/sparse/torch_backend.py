"""Sparse convolution in plain torch: neighbour maps from sorted int64 site keys, then gather-GEMM-scatter.

Sites (b, x, y, z) are encoded as one int64 key in the row-major order of (batch, *spatial_shape); a sorted
copy of the keys answers "which row holds this site" for every site and kernel offset at once through
searchsorted. The map of a conv is a list of (input row, output row) pairs grouped by kernel offset; the
conv is, per offset k, out[pairs_out] += x[pairs_in] @ W[k]. Everything is torch ops (index_select, matmul,
index_add_), so autograd gives the input and weight gradients, and the same code runs on CPU and CUDA.

Results match spconv 2.x (same weights, same pairs) up to float summation order; the output sites of a
strided conv are spconv's, in sorted key order rather than spconv's hash order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.models.sparse.core import ConvSpec, SparseConvTensor

NAME = "torch"


def load() -> None:
    """Nothing to import: plain torch is always there."""


@dataclass
class NeighbourMap:
    """The (input row, output row) pairs of one conv, grouped by kernel offset (row-major over kx, ky, kz)."""

    subm: bool
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    dilation: tuple[int, int, int]
    in_indices: Tensor  # (N_in, 4) int32
    out_indices: Tensor  # (N_out, 4) int32; the input's own for a submanifold map
    in_shape: list[int]
    out_shape: list[int]
    pair_in: Tensor  # (P,) int64, sorted by offset
    pair_out: Tensor  # (P,) int64
    counts: list[int]  # pairs per offset, host side so the conv loop needs no device sync; a submanifold
    # map leaves out its centre offset, whose pairs are all (i, i)


def _encode(batch: Tensor, xyz: Tensor, shape: list[int]) -> Tensor:
    """Row-major int64 key of (batch, x, y, z) in a grid of `shape` per batch (unique for in-range sites)."""
    xyz = xyz.long()
    return ((batch.long() * shape[0] + xyz[..., 0]) * shape[1] + xyz[..., 1]) * shape[2] + xyz[..., 2]


def _decode(keys: Tensor, shape: list[int]) -> Tensor:
    z = keys % shape[2]
    rest = keys // shape[2]
    y = rest % shape[1]
    rest = rest // shape[1]
    x = rest % shape[0]
    return torch.stack([rest // shape[0], x, y, z], 1).int()


def _offsets(kernel_size: tuple[int, int, int], device: torch.device) -> Tensor:
    """(K, 3) kernel offsets in the flattening order of the weight's (kx, ky, kz) axes."""
    grid = itertools.product(*(range(k) for k in kernel_size))
    return torch.tensor(list(grid), dtype=torch.long, device=device).reshape(-1, 3)


def _subm_map(spec: ConvSpec, x: SparseConvTensor) -> NeighbourMap:
    """Pairs (neighbour row, site row) of a submanifold conv, grouped by kernel offset.

    Keys are row-major with z fastest and linear in the coordinates, so for one kernel column (dx, dy) the
    key of (x + dx, y + dy, z - r d) is the site's key plus a constant, and in sorted order those queries are
    sorted too. One binary search per site and column finds the lowest z of the window; the keys of the
    window's z values are then consecutive integers, so walking the next sorted positions one z at a time
    (advancing only past keys that are present) finds every neighbour of the column. That is kx*ky searches
    per site instead of kx*ky*kz (9 rather than 27 for k3, 25 rather than 125 for k5), and the searches are
    what the map costs."""
    idx = x.indices.long()
    shape = x.spatial_shape
    n = idx.shape[0]
    kx, ky, kz = spec.kernel_size
    dil = spec.dilation
    reach = [(k // 2) * d for k, d in zip(spec.kernel_size, dil, strict=True)]
    keys = _encode(idx[:, 0], idx[:, 1:], shape)
    sorted_keys, order = torch.sort(keys)
    site = idx[order]
    found_rows, found_pos = [], []  # per offset k (row-major over kx, ky, kz): (N,) bool, (N,) sorted position
    last = max(n - 1, 0)
    for i in range(kx):
        dx = i * dil[0] - reach[0]
        x_ok = (site[:, 1] + dx >= 0) & (site[:, 1] + dx < shape[0])
        for j in range(ky):
            dy = j * dil[1] - reach[1]
            column_ok = x_ok & (site[:, 2] + dy >= 0) & (site[:, 2] + dy < shape[1])
            low = sorted_keys + ((dx * shape[1] + dy) * shape[2] - reach[2])
            pos = torch.searchsorted(sorted_keys, low)
            for u in range(2 * reach[2] + 1):  # every integer z of the window, so `pos` stays exact
                present = (pos < n) & (sorted_keys[pos.clamp_max(last)] == low + u)
                if u % dil[2] == 0:
                    z = site[:, 3] + (u - reach[2])
                    # a key outside [0, S2) in z is another column's site: present, but not a neighbour
                    found_rows.append(present & column_ok & (z >= 0) & (z < shape[2]))
                    found_pos.append(pos)
                pos = pos + present.long()
    found = torch.stack(found_rows)  # (K, N)
    found[spec.volume // 2] = False  # the centre pairs (i, i) are one plain matmul in the conv
    counts = found.sum(1).tolist()
    # masked_select walks the (K, N) table row by row, so the pairs come out grouped by offset
    src = order[torch.stack(found_pos).masked_select(found)]
    dst = order.expand_as(found).masked_select(found)
    return NeighbourMap(True, spec.kernel_size, spec.stride, spec.padding, spec.dilation, x.indices, x.indices,
                        shape, shape, src, dst, counts)


def output_shape(spec: ConvSpec, shape: list[int]) -> list[int]:
    """spconv's output grid of a regular conv: (in + 2p - d(k-1) - 1) // s + 1 per axis."""
    return [(s + 2 * p - d * (k - 1) - 1) // st + 1
            for s, k, st, p, d in zip(shape, spec.kernel_size, spec.stride, spec.padding, spec.dilation,
                                      strict=True)]


def _conv_map(spec: ConvSpec, x: SparseConvTensor) -> NeighbourMap:
    idx = x.indices.long()
    device = idx.device
    out_shape = output_shape(spec, x.spatial_shape)
    if any(s <= 0 for s in out_shape):
        raise InputError(f"sparse conv: spatial shape {x.spatial_shape} is smaller than the kernel "
                         f"{spec.kernel_size}")
    stride = torch.tensor(spec.stride, device=device)
    # input i feeds output o through offset k when o * s - p + k * d = i, i.e. o = (i + p - k d) / s exactly
    start = idx[:, None, 1:] + torch.tensor(spec.padding, device=device) - \
        _offsets(spec.kernel_size, device) * torch.tensor(spec.dilation, device=device)  # (N, K, 3)
    out_xyz = torch.div(start, stride, rounding_mode="floor")
    hit = ((start - out_xyz * stride) == 0).all(-1) & (out_xyz >= 0).all(-1) & \
        (out_xyz < torch.tensor(out_shape, device=device)).all(-1)
    k, i = torch.nonzero(hit.t(), as_tuple=True)  # pairs, offset-major
    out_keys = _encode(idx[i, 0], out_xyz[i, k], out_shape)
    unique_keys, out_rows = torch.unique(out_keys, return_inverse=True)
    counts = torch.bincount(k, minlength=hit.shape[1]).tolist()
    return NeighbourMap(False, spec.kernel_size, spec.stride, spec.padding, spec.dilation, x.indices,
                        _decode(unique_keys, out_shape), x.spatial_shape, out_shape, i, out_rows, counts)


# gathered rows x channels per step (1 MiB in fp32): temporaries this small are recycled by the allocator
# instead of being freshly mapped (and page-faulted) memory, which on CPU costs more than the copy itself
_CHUNK_ELEMENTS = 1 << 18


def _chunks(counts: list[int], width: int) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Consecutive slices of the pair list of about _CHUNK_ELEMENTS gathered values each:
    (first pair, end pair, [(offset k, start, end) relative to the slice])."""
    step = max(_CHUNK_ELEMENTS // max(width, 1), 1)
    bounds = []  # (k, start, end) of every offset with pairs, in pair order
    start = 0
    for k, count in enumerate(counts):
        if count:
            bounds.append((k, start, start + count))
        start += count
    runs = []
    for first in range(0, start, step):
        end = min(first + step, start)
        parts = [(k, max(a, first) - first, min(b, end) - first) for k, a, b in bounds if a < end and b > first]
        runs.append((first, end, parts))
    return runs


class _GatherGemmScatter(torch.autograd.Function):
    """out[dst] += features[src] @ W[k] for the pairs of every offset k, W being (K, C_in, C_out).

    One gather, one matmul per offset into a shared buffer and one index_add_ per run of offsets, instead of
    three autograd nodes per offset: fewer, larger kernels, and the backward recomputes the gather rather
    than keeping K gathered copies of the input alive between forward and backward. `identity` is the
    offset whose pairs would be (i, i) for every row (the centre of a submanifold conv); its pairs are not
    in the lists and it is one plain matmul that also initialises the output."""

    @staticmethod
    def forward(ctx, features: Tensor, weight: Tensor, src: Tensor, dst: Tensor, counts: list[int],
                n_out: int, identity: int | None) -> Tensor:
        ctx.save_for_backward(features, weight, src, dst)
        ctx.counts, ctx.identity = counts, identity
        c_out = weight.shape[2]
        out = features @ weight[identity] if identity is not None else features.new_zeros(n_out, c_out)
        for first, end, parts in _chunks(counts, max(features.shape[1], c_out)):
            gathered = features.index_select(0, src[first:end])
            products = gathered.new_empty(end - first, c_out)
            for k, a, b in parts:
                torch.mm(gathered[a:b], weight[k], out=products[a:b])
            out.index_add_(0, dst[first:end], products)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        features, weight, src, dst = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        need_input, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_input = grad_weight = None
        if need_input:
            grad_input = (grad_out @ weight[ctx.identity].t() if ctx.identity is not None
                          else features.new_zeros(features.shape))
        if need_weight:
            grad_weight = torch.zeros_like(weight)
            if ctx.identity is not None:
                grad_weight[ctx.identity] = features.t() @ grad_out
        for first, end, parts in _chunks(ctx.counts, max(features.shape[1], weight.shape[2])):
            grad_rows = grad_out.index_select(0, dst[first:end])
            if need_input:
                back = grad_rows.new_empty(end - first, features.shape[1])
                for k, a, b in parts:
                    torch.mm(grad_rows[a:b], weight[k].t(), out=back[a:b])
                grad_input.index_add_(0, src[first:end], back)
            if need_weight:
                gathered = features.index_select(0, src[first:end])
                for k, a, b in parts:
                    grad_weight[k] += gathered[a:b].t() @ grad_rows[a:b]
        return grad_input, grad_weight, None, None, None, None, None


def _find_map(spec: ConvSpec, x: SparseConvTensor) -> NeighbourMap | None:
    if spec.indice_key is None:
        return None
    found = x.maps(NAME).get(spec.indice_key)
    if found is None:
        return None
    assert isinstance(found, NeighbourMap)
    return found


def conv(spec: ConvSpec, x: SparseConvTensor, weight: Tensor, bias: Tensor | None,
         training: bool) -> SparseConvTensor:
    """Run one conv of `spec` on `x` with a KRSC weight (out, kx, ky, kz, in)."""
    features = x.features
    # the conv runs in the features' dtype; autocast is switched off inside so that it cannot pick another
    # dtype for some of the matmuls than for the buffers they write into
    weight = weight.to(features.dtype)
    with torch.autocast(features.device.type, enabled=False):
        return _conv(spec, x, features, weight, bias)


def _conv(spec: ConvSpec, x: SparseConvTensor, features: Tensor, weight: Tensor,
          bias: Tensor | None) -> SparseConvTensor:
    if spec.is_1x1:
        # spconv computes a 1x1x1 conv as features @ weight.view(in, out): a reinterpretation of the KRSC
        # memory, not a transpose; checkpoints trained on spconv rely on it, so it is reproduced here
        out = features @ weight.reshape(spec.in_channels, spec.out_channels)
        if bias is not None:
            out = out + bias.to(out.dtype)
        return SparseConvTensor(out, x.indices, x.spatial_shape, x.batch_size, x.indice_dict)
    # (out, kx, ky, kz, in) -> (K, in, out): W[k] maps a row of input features to output features
    w = weight.reshape(spec.out_channels, spec.volume, spec.in_channels).permute(1, 2, 0)
    cached = _find_map(spec, x)
    maps = x.maps(NAME)
    if spec.kind == "inverse":
        if cached is None or cached.subm:
            raise InputError(f"SparseInverseConv3d: no strided conv with indice_key {spec.indice_key!r} ran "
                             "before it on this tensor")
        if cached.out_indices.shape[0] != features.shape[0] or cached.kernel_size != spec.kernel_size:
            raise InputError(f"SparseInverseConv3d {spec.indice_key!r}: its input does not match the output of "
                             "the conv it inverts")
        out = _GatherGemmScatter.apply(features, w, cached.pair_out, cached.pair_in, cached.counts,
                                       cached.in_indices.shape[0], None)
        out_indices, out_shape = cached.in_indices, cached.in_shape
    else:
        subm = spec.kind == "subm"
        if cached is not None:
            if not subm:
                raise InputError(f"sparse conv: indice_key {spec.indice_key!r} is already used on this tensor; "
                                 "only submanifold convs may share one")
            if (not cached.subm or cached.kernel_size != spec.kernel_size or cached.dilation != spec.dilation
                    or cached.in_indices.shape[0] != features.shape[0]):
                raise InputError(f"SubMConv3d: indice_key {spec.indice_key!r} was built for other sites or "
                                 "another kernel")
            nmap = cached
        else:
            nmap = _subm_map(spec, x) if subm else _conv_map(spec, x)
            if spec.indice_key is not None:
                maps = {**maps, spec.indice_key: nmap}
        centre = spec.volume // 2 if subm else None
        out = _GatherGemmScatter.apply(features, w, nmap.pair_in, nmap.pair_out, nmap.counts,
                                       nmap.out_indices.shape[0], centre)
        out_indices, out_shape = nmap.out_indices, nmap.out_shape
    if bias is not None:
        out = out + bias.to(out.dtype)
    return SparseConvTensor(out, out_indices, out_shape, x.batch_size, x.with_maps(NAME, maps))
