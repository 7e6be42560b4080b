"""PartSTAD / PartSLIP rendering stage: the unit-sphere-normalised cloud seen from fixed views.

Not the paper's contribution: PartSLIP renders with PyTorch3D (`render_pc.py`: 10 views, distance 2.2, 60 deg
FoV, point radius 0.005 NDC, white background); pc3d's rasteriser (`pc3d.ops.raster`) reproduces the geometry.
Besides the images, the 3-D side needs per-pixel point indices, per-point visibility and screen coordinates.

A cloud without colours is shaded, not flat: PartSLIP's renders always carry the file's colours, and a flat grey
point cloud renders as a silhouette in which a 2-D detector sees outlines only. Lambertian shading with a
headlight (light at the camera) gives the detector the surface orientation, as a shaded mesh render would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pc3d.config.partstad import RenderConfig

BACKGROUND = 1.0  # white, as PartSLIP renders
DEFAULT_GREY = 0.6  # colour of points when the file has none
# headlight shading of colourless clouds: brightness = grey * (AMBIENT + (1 - AMBIENT) |cos(normal, view ray)|);
# |cos| because estimated normals have no reliable sign; the ambient term keeps grazing surfaces visible
AMBIENT = 0.25
SHADING_NORMAL_RADIUS, SHADING_NORMAL_MAX_NN = 0.1, 30  # PartSLIP's normal estimation (gen_superpoint.py)


@dataclass
class Views:
    images: np.ndarray  # (V,H,W,3) uint8 renders, white background
    index: Tensor  # (V,H,W) int64 point index per pixel, -1 = background
    visible: Tensor  # (V,N) bool: the point wins at least one pixel of view v
    uv: Tensor  # (V,N,2) float64 screen coordinates (x = column, y = row) of every point
    directions: Tensor  # (V,3) unit vectors from the object centre to the camera


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Subtract the mean, divide by the largest point norm (PartNetE's normalisation)."""
    centred = np.asarray(points, dtype=np.float64) - np.asarray(points, dtype=np.float64).mean(0)
    scale = np.linalg.norm(centred, axis=1).max()
    return centred / (scale if scale > 0 else 1.0)


def camera_position(elevation: float, azimuth: float, distance: float) -> np.ndarray:
    """PyTorch3D's look_at_view_transform convention (y up): azimuth 0 looks from +z, elevation from the xz plane."""
    el, az = math.radians(elevation), math.radians(azimuth)
    return distance * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def camera_matrices(elevation: float, azimuth: float, cfg: RenderConfig) -> tuple[Tensor, Tensor]:
    """Intrinsics K (3,3) of a square image with vertical field of view `fov`, and world->camera E (4,4)."""
    from pc3d.ops import look_at

    size = cfg.image_size
    focal = (size / 2) / math.tan(math.radians(cfg.fov) / 2)
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]], dtype=torch.float64)
    eye = torch.tensor(camera_position(elevation, azimuth, cfg.distance))
    E = look_at(eye, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    return K, E


def headlight_shading(points: np.ndarray, normals: np.ndarray, eye: np.ndarray, grey: float = DEFAULT_GREY
                      ) -> np.ndarray:
    """(N,3) grey levels in [0, 1] of the points lit by a light at the camera position `eye`."""
    ray = np.asarray(eye, dtype=np.float64)[None, :] - np.asarray(points, dtype=np.float64)
    ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-12)
    unit = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    cosine = np.abs((unit * ray).sum(1))
    level = grey * (AMBIENT + (1.0 - AMBIENT) * cosine)
    return np.repeat(level[:, None], 3, axis=1)


def render_views(points: np.ndarray, colors: np.ndarray | None, cfg: RenderConfig,
                 normals: np.ndarray | None = None) -> Views:
    """Render the (already normalised) cloud from every view of `cfg`. Without colours (and with
    `cfg.shading == "headlight"`) each view is shaded by the points' normals (estimated unless given)."""
    from pc3d.ops import project_points, rasterize_points

    xyz = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    shaded = colors is None and cfg.shading == "headlight" and len(xyz) >= 3
    if shaded and normals is None:
        from pc3d.methods.partstad_superpoints import estimate_normals

        normals = estimate_normals(np.asarray(points), SHADING_NORMAL_RADIUS, SHADING_NORMAL_MAX_NN)
    flat = (torch.full((len(xyz), 3), DEFAULT_GREY, dtype=torch.float64) if colors is None
            else torch.as_tensor(np.asarray(colors), dtype=torch.float64) / 255.0)
    radius = int(round(cfg.point_radius * cfg.image_size / 2))  # NDC radius -> pixels
    images, index, visible, uv, directions = [], [], [], [], []
    for elevation, azimuth in cfg.views:
        K, E = camera_matrices(elevation, azimuth, cfg)
        eye = camera_position(elevation, azimuth, cfg.distance)
        rgb = torch.as_tensor(headlight_shading(np.asarray(points), normals, eye)) if shaded else flat
        raster = rasterize_points(xyz, K, E, cfg.image_size, cfg.image_size, radius, colors=rgb, background=BACKGROUND)
        images.append(np.round(raster.color.clamp(0, 1).numpy() * 255).astype(np.uint8))
        index.append(raster.index)
        visible.append(raster.visible)
        uv.append(project_points(xyz, K, E)[0])
        directions.append(torch.as_tensor(eye / np.linalg.norm(eye)))
    return Views(np.stack(images), torch.stack(index), torch.stack(visible), torch.stack(uv),
                 torch.stack(directions).float())
