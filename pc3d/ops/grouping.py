"""Point-MAE patch grouping: FPS centres, k nearest points of each centre, coordinates relative to it."""

from __future__ import annotations

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops._common import check_points
from pc3d.ops.neighbors import knn
from pc3d.ops.sampling import farthest_point_sample


def group_patches(xyz: Tensor, num_groups: int, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split each cloud into `num_groups` patches of `group_size` points (Point-MAE's group divider).

    xyz (B,N,3). Returns neighborhood (B,G,M,3) = patch points minus their centre, center (B,G,3) chosen by
    FPS (start index 0), and idx (B,G,M) int64 indices into N, nearest first.
    """
    check_points(xyz, "group_patches: xyz", batched=True)
    num_points = xyz.shape[1]
    if not 0 < num_groups <= num_points:
        raise InputError(f"group_patches: num_groups must be in [1, {num_points}], got {num_groups}")
    if not 0 < group_size <= num_points:
        raise InputError(f"group_patches: group_size must be in [1, {num_points}], got {group_size}")
    centre_idx = farthest_point_sample(xyz, num_groups)
    center = torch.gather(xyz, 1, centre_idx.unsqueeze(-1).expand(-1, -1, 3))
    _, idx = knn(center, xyz, group_size)
    batch = xyz.shape[0]
    points = torch.gather(xyz, 1, idx.reshape(batch, -1, 1).expand(-1, -1, 3))
    neighborhood = points.view(batch, num_groups, group_size, 3) - center.unsqueeze(2)
    return neighborhood, center, idx
