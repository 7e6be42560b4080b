"""Geometry ops in plain torch (CPU and CUDA); CUDA tensors use Triton kernels from `pc3d_kernels` when
Triton imports (set PC3D_NO_TRITON=1 to force the torch paths)."""

from pc3d.ops.camera import look_at, project_points
from pc3d.ops.chamfer import chamfer_distance
from pc3d.ops.clustering import connected_components, kmeans
from pc3d.ops.grid import GridSample, grid_sample
from pc3d.ops.grouping import group_patches
from pc3d.ops.neighbors import ball_query, knn
from pc3d.ops.pit import probability_integral_transform
from pc3d.ops.raster import RasterResult, rasterize_points
from pc3d.ops.sampling import farthest_point_sample
from pc3d.ops.scatter import scatter_max, scatter_mean, scatter_min, scatter_sum
from pc3d.ops.serialization import decode, encode

fps = farthest_point_sample

__all__ = [
    "GridSample", "RasterResult", "ball_query", "chamfer_distance", "connected_components", "decode", "encode",
    "farthest_point_sample", "fps", "grid_sample", "group_patches", "kmeans", "knn", "look_at",
    "probability_integral_transform", "project_points", "rasterize_points", "scatter_max", "scatter_mean",
    "scatter_min", "scatter_sum",
]
