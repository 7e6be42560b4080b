"""Space-filling-curve codes of integer grid coordinates (PTv3-style serialization).

code = (batch << 3*depth) | curve_code. "z": Morton code, bit i of x/y/z at position 3i+2 / 3i+1 / 3i
(the octree key layout PTv3 inherits from OctFormer). "hilbert": Skilling's transpose algorithm with x
as the most significant axis (written from the paper; bit-for-bit agreement with PTv3's port of
numpy-hilbert-curve is not checked). "-trans" variants permute (x,y,z) -> (y,x,z) first.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pc3d.errors import InputError

Order = Literal["z", "z-trans", "hilbert", "hilbert-trans"]
ORDERS: tuple[str, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")


def encode(grid_coord: Tensor, batch: Tensor | None = None, depth: int = 16, order: Order = "z") -> Tensor:
    """int64 codes (N,) of integer coordinates (N,3) in [0, 2**depth); the batch index sits above 3*depth bits."""
    if order not in ORDERS:
        raise InputError(f"encode: order must be one of {', '.join(ORDERS)}, got {order!r}")
    if not 1 <= depth <= 20:
        raise InputError(f"encode: depth must be in [1, 20], got {depth}")
    if grid_coord.ndim != 2 or grid_coord.shape[1] != 3 or grid_coord.is_floating_point():
        raise InputError(f"encode: grid_coord must be an integer (N,3) tensor, got {grid_coord.dtype} "
                         f"{tuple(grid_coord.shape)}")
    coord = grid_coord.long()
    if coord.numel() and (int(coord.min()) < 0 or int(coord.max()) >= (1 << depth)):
        raise InputError(f"encode: grid_coord must lie in [0, {1 << depth}) for depth {depth}")
    if order.endswith("-trans"):
        coord = coord[:, [1, 0, 2]]
    code = _interleave(coord, depth) if order.startswith("z") else _interleave(_hilbert_transpose(coord, depth), depth)
    if batch is not None:
        batch = batch.long()
        if batch.numel() and int(batch.max()) >= (1 << (63 - 3 * depth)):
            raise InputError(f"encode: batch index too large for depth {depth}")
        code = (batch << (3 * depth)) | code
    return code


def decode(code: Tensor, depth: int = 16) -> tuple[Tensor, Tensor]:
    """Inverse of the "z" order: (grid_coord (N,3), batch (N,))."""
    code = code.long()
    coord = torch.zeros(code.shape[0], 3, dtype=torch.long, device=code.device)
    for bit in range(depth):
        for axis in range(3):
            coord[:, axis] |= ((code >> (3 * bit + 2 - axis)) & 1) << bit
    return coord, code >> (3 * depth)


def _interleave(coord: Tensor, depth: int) -> Tensor:
    code = torch.zeros(coord.shape[0], dtype=torch.long, device=coord.device)
    for bit in range(depth):
        for axis in range(3):  # x lands on the highest of the three bits of each level
            code |= ((coord[:, axis] >> bit) & 1) << (3 * bit + 2 - axis)
    return code


def _hilbert_transpose(coord: Tensor, depth: int) -> Tensor:
    """Skilling (2004) AxestoTranspose: coordinates -> 'transposed' Hilbert index, vectorised over points."""
    x = [coord[:, i].clone() for i in range(3)]
    q = 1 << (depth - 1)
    while q > 1:  # undo the excess work of the curve's rotations and reflections
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
