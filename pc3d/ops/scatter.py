"""Segment reductions with torch_scatter's conventions, built on torch's native scatter_reduce.

Empty segments get value 0; for scatter_max/min their arg index is src.size(dim). Among equal extreme
values the lowest position wins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pc3d.errors import InputError


def _prepare(src: Tensor, index: Tensor, dim: int, dim_size: int | None) -> tuple[Tensor, int, int, list[int]]:
    """Broadcast `index` to src's shape (a 1-D index runs along `dim`) and fix the output size."""
    dim = dim % src.ndim if src.ndim else 0
    if index.dtype not in (torch.int64, torch.int32):
        raise InputError(f"scatter: index must be an integer tensor, got {index.dtype}")
    index = index.long()
    if index.ndim == 1 and src.ndim > 1:
        if index.numel() != src.shape[dim]:
            raise InputError(f"scatter: index has {index.numel()} entries, src.size({dim}) is {src.shape[dim]}")
        view = [1] * src.ndim
        view[dim] = -1
        index = index.view(view)
    if index.ndim != src.ndim:
        raise InputError(f"scatter: index shape {tuple(index.shape)} does not match src {tuple(src.shape)}")
    index = index.expand_as(src)
    if index.numel() and int(index.min()) < 0:
        raise InputError("scatter: index has negative entries")
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    out_shape = list(src.shape)
    out_shape[dim] = dim_size
    return index, dim, dim_size, out_shape


def scatter_sum(src: Tensor, index: Tensor, dim: int = 0, dim_size: int | None = None) -> Tensor:
    """out[..., i, ...] = sum of src entries whose index along `dim` is i."""
    index, dim, _, shape = _prepare(src, index, dim, dim_size)
    return torch.zeros(shape, dtype=src.dtype, device=src.device).scatter_add(dim, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim: int = 0, dim_size: int | None = None) -> Tensor:
    """Segment mean; empty segments are 0. Integer inputs are averaged with floor division."""
    index, dim, _, shape = _prepare(src, index, dim, dim_size)
    total = torch.zeros(shape, dtype=src.dtype, device=src.device).scatter_add(dim, index, src)
    count = torch.zeros(shape, dtype=src.dtype, device=src.device).scatter_add(dim, index, torch.ones_like(src))
    count = count.clamp_min(1)
    return total / count if src.is_floating_point() else torch.div(total, count, rounding_mode="floor")


def scatter_max(src: Tensor, index: Tensor, dim: int = 0, dim_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Segment maximum and the position (along `dim`) of the element holding it."""
    return _scatter_extreme(src, index, dim, dim_size, "amax")


def scatter_min(src: Tensor, index: Tensor, dim: int = 0, dim_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Segment minimum and the position (along `dim`) of the element holding it."""
    return _scatter_extreme(src, index, dim, dim_size, "amin")


def _scatter_extreme(src: Tensor, index: Tensor, dim: int, dim_size: int | None,
                     reduce: str) -> tuple[Tensor, Tensor]:
    index, dim, _, shape = _prepare(src, index, dim, dim_size)
    values = torch.zeros(shape, dtype=src.dtype, device=src.device)
    values = values.scatter_reduce(dim, index, src, reduce, include_self=False)  # empty segments stay 0
    n = src.shape[dim]
    view = [1] * src.ndim
    view[dim] = -1
    position = torch.arange(n, device=src.device).view(view).expand_as(src)
    holds_extreme = src == values.gather(dim, index)
    candidate = torch.where(holds_extreme, position, torch.full_like(position, n))
    arg = torch.full(shape, n, dtype=torch.long, device=src.device)
    arg = arg.scatter_reduce(dim, index, candidate, "amin", include_self=True)
    return values, arg
