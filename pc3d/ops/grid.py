"""Grid (voxel) sampling: which cell each point falls in, the occupied cells, per-cell reductions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops.scatter import scatter_max, scatter_mean, scatter_min, scatter_sum


@dataclass
class GridSample:
    """Result of `grid_sample`. Cells are sorted by (batch, x, y, z)."""

    grid_coord: Tensor  # (N,3) int64: integer cell of each point, relative to its cloud's minimum corner
    cell_coord: Tensor  # (C,3) int64: integer coordinate of each occupied cell
    cell_batch: Tensor  # (C,) int64: batch index of each cell
    inverse: Tensor  # (N,) int64: cell of each point
    counts: Tensor  # (C,) int64: points per cell
    unique_index: Tensor  # (C,) int64: lowest point index inside each cell (one representative point)

    @property
    def num_cells(self) -> int:
        return int(self.counts.numel())

    def reduce(self, values: Tensor, reduction: Literal["mean", "sum", "max", "min"] = "mean") -> Tensor:
        """Per-cell reduction of per-point values (N,...) -> (C,...)."""
        if values.shape[0] != self.inverse.numel():
            raise InputError(f"GridSample.reduce: values have {values.shape[0]} rows, "
                             f"the grid has {self.inverse.numel()} points")
        ops = {"mean": scatter_mean, "sum": scatter_sum}
        if reduction in ops:
            return ops[reduction](values, self.inverse, 0, self.num_cells)
        if reduction in ("max", "min"):
            fn = scatter_max if reduction == "max" else scatter_min
            return fn(values, self.inverse, 0, self.num_cells)[0]
        raise InputError(f"GridSample.reduce: unknown reduction {reduction!r}")


def grid_sample(coords: Tensor, grid_size: float, batch: Tensor | None = None) -> GridSample:
    """Quantise coords (N,3) to cells of edge `grid_size`; cells of different batch entries never merge.

    grid_coord = floor(coord / grid_size) - its batch entry's minimum of that, as Pointcept's GridSample does
    (cells are aligned to the origin, not to the cloud's minimum, so PTv3 weights see the same cells).
    """
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise InputError(f"grid_sample: coords must have shape (N,3), got {tuple(coords.shape)}")
    if not grid_size > 0:
        raise InputError(f"grid_sample: grid_size must be > 0, got {grid_size}")
    n = coords.shape[0]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=coords.device)
    elif batch.shape != (n,):
        raise InputError(f"grid_sample: batch must have shape ({n},), got {tuple(batch.shape)}")
    batch = batch.long()
    num_batches = int(batch.max()) + 1 if n else 0
    cell = torch.floor(coords / grid_size).long()
    lo = torch.full((num_batches, 3), torch.iinfo(torch.long).max, dtype=torch.long, device=coords.device)
    lo = lo.scatter_reduce(0, batch.unsqueeze(1).expand(-1, 3), cell, "amin")
    grid_coord = cell - lo[batch]
    keys = torch.cat([batch.unsqueeze(1), grid_coord], dim=1)
    cells, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    first = torch.full((cells.shape[0],), n, dtype=torch.long, device=coords.device)
    first = first.scatter_reduce(0, inverse, torch.arange(n, device=coords.device), "amin")
    return GridSample(grid_coord=grid_coord, cell_coord=cells[:, 1:], cell_batch=cells[:, 0],
                      inverse=inverse, counts=counts, unique_index=first)
