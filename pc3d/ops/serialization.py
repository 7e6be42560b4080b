"""Space-filling-curve codes of integer grid coordinates, bit-identical to Point Transformer V3's serialization.

code = (batch << 3*depth) | curve_code, where curve_code interleaves three "axis words" level by level:
bit i of word 0 / 1 / 2 lands at position 3i+2 / 3i+1 / 3i (word 0 is the most significant at every level).

- "z": the words are x, y, z themselves (Morton code; the octree key layout PTv3 takes from OctFormer/O-CNN).
- "hilbert": the words are Skilling's (2004) "transposed" Hilbert index of (x, y, z), x the first axis; this is
  what PTv3's torch port of numpy-hilbert-curve computes.
- "z-trans" / "hilbert-trans": the same curves after swapping x and y, i.e. on (y, x, z).

Official PTv3/Sonata weights only see the same points inside an attention patch if these codes match PTv3's
exactly; tests/test_ops_serialization.py checks them against a loop-based reference and hand-computed values.
Note the Hilbert curve (unlike Morton) depends on `depth` itself, not only on the coordinates: callers must use
the checkpoint family's depth (bit length of max grid coordinate + 1 at the first level; at a pooled level the
same of its own cells for Sonata / PTv3 v3m2, the parent's depth - 1 for PTv3 v3m1; see pc3d.models.ptv3).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pc3d.errors import InputError

Order = Literal["z", "z-trans", "hilbert", "hilbert-trans"]
ORDERS: tuple[str, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")
_SWAP_XY = [1, 0, 2]  # the "-trans" permutation; it is its own inverse


def encode(grid_coord: Tensor, batch: Tensor | None = None, depth: int = 16, order: Order = "z") -> Tensor:
    """int64 codes (N,) of integer coordinates (N,3) in [0, 2**depth); the batch index sits above 3*depth bits."""
    _check_order(order, "encode")
    _check_depth(depth, "encode")
    if grid_coord.ndim != 2 or grid_coord.shape[1] != 3 or grid_coord.is_floating_point():
        raise InputError(f"encode: grid_coord must be an integer (N,3) tensor, got {grid_coord.dtype} "
                         f"{tuple(grid_coord.shape)}")
    coord = grid_coord.long()
    if coord.numel() and (int(coord.min()) < 0 or int(coord.max()) >= (1 << depth)):
        raise InputError(f"encode: grid_coord must lie in [0, {1 << depth}) for depth {depth}")
    if order.endswith("-trans"):
        coord = coord[:, _SWAP_XY]
    words = coord if order.startswith("z") else _axes_to_transpose(coord, depth)
    code = _interleave(words, depth)
    if batch is not None:
        batch = batch.long()
        if batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= (1 << (63 - 3 * depth))):
            raise InputError(f"encode: batch index must lie in [0, {1 << (63 - 3 * depth)}) for depth {depth}")
        code = (batch << (3 * depth)) | code
    return code


def decode(code: Tensor, depth: int = 16, order: Order = "z") -> tuple[Tensor, Tensor]:
    """Inverse of `encode` for any order: (grid_coord (N,3) int64, batch (N,) int64)."""
    _check_order(order, "decode")
    _check_depth(depth, "decode")
    code = code.long()
    words = _deinterleave(code & ((1 << (3 * depth)) - 1), depth)
    coord = words if order.startswith("z") else _transpose_to_axes(words, depth)
    if order.endswith("-trans"):
        coord = coord[:, _SWAP_XY]
    return coord, code >> (3 * depth)


def _check_order(order: str, who: str) -> None:
    if order not in ORDERS:
        raise InputError(f"{who}: order must be one of {', '.join(ORDERS)}, got {order!r}")


def _check_depth(depth: int, who: str) -> None:
    if not 1 <= depth <= 20:  # 3*20 bits of curve code leave 3 bits of batch in an int64
        raise InputError(f"{who}: depth must be in [1, 20], got {depth}")


def _interleave(words: Tensor, depth: int) -> Tensor:
    code = torch.zeros(words.shape[0], dtype=torch.long, device=words.device)
    for bit in range(depth):
        for axis in range(3):  # word 0 lands on the highest of the three bits of each level
            code |= ((words[:, axis] >> bit) & 1) << (3 * bit + 2 - axis)
    return code


def _deinterleave(code: Tensor, depth: int) -> Tensor:
    words = torch.zeros(code.shape[0], 3, dtype=torch.long, device=code.device)
    for bit in range(depth):
        for axis in range(3):
            words[:, axis] |= ((code >> (3 * bit + 2 - axis)) & 1) << bit
    return words


def _axes_to_transpose(coord: Tensor, depth: int) -> Tensor:
    """Skilling's AxestoTranspose: coordinates (N,3) -> transposed Hilbert index (N,3), vectorised over points."""
    x = [coord[:, i].clone() for i in range(3)]
    q = 1 << (depth - 1)
    while q > 1:  # undo the excess work of the curve's rotations and reflections, coarsest level first
        p = q - 1
        for i in range(3):
            high = (x[i] & q) != 0
            swap = (x[0] ^ x[i]) & p
            x[0] = torch.where(high, x[0] ^ p, x[0] ^ swap)
            if i:
                x[i] = torch.where(high, x[i], x[i] ^ swap)
        q >>= 1
    for i in range(1, 3):  # Gray encode
        x[i] = x[i] ^ x[i - 1]
    t = torch.zeros_like(x[0])
    q = 1 << (depth - 1)
    while q > 1:
        t = torch.where((x[2] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    return torch.stack([xi ^ t for xi in x], dim=1)


def _transpose_to_axes(words: Tensor, depth: int) -> Tensor:
    """Skilling's TransposetoAxes, the exact inverse of `_axes_to_transpose`."""
    x = [words[:, i].clone() for i in range(3)]
    t = x[2] >> 1  # Gray decode by H ^ (H/2)
    for i in (2, 1):
        x[i] = x[i] ^ x[i - 1]
    x[0] = x[0] ^ t
    q = 2
    while q != 1 << depth:  # redo the rotations and reflections, finest level first
        p = q - 1
        for i in (2, 1, 0):
            high = (x[i] & q) != 0
            swap = (x[0] ^ x[i]) & p
            x[0] = torch.where(high, x[0] ^ p, x[0] ^ swap)
            if i:
                x[i] = torch.where(high, x[i], x[i] ^ swap)
        q <<= 1
    return torch.stack(x, dim=1)
