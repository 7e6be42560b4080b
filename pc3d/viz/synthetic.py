"""Preview sheets of the synthetic data: shapes by part, rooms by colour and instance, LiDAR by class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pc3d.viz.preview import (
    caption,
    colors_for_labels,
    render_points,
    stack_rows,
    tile_grid,
)


def preview_objects(shapes: Sequence, limit: int = 12, tile: int = 192) -> np.ndarray:
    """One tile per shape (distinct categories first), points coloured by global part id."""
    chosen, seen = [], set()
    for shape in shapes:  # first one of each category, then the rest
        if shape.category not in seen:
            seen.add(shape.category)
            chosen.append(shape)
    chosen += [s for s in shapes if not any(s is c for c in chosen)]
    tiles = [caption(render_points(s.points, colors_for_labels(s.part), (tile, tile), up="y", azimuth=30),
                     s.category) for s in chosen[:limit]]
    return tile_grid(tiles, columns=min(6, len(tiles)))


def preview_scenes(scenes: Sequence, limit: int = 3, tile: int = 320) -> np.ndarray:
    """Per scene: its colours, then its instances, seen from above at an angle (near walls culled)."""
    tiles = []
    for scene in scenes[:limit]:
        for colors, text in ((scene.colors, "rgb"), (colors_for_labels(scene.instance), "instances")):
            image = render_points(scene.points, colors, (tile, tile), elevation=55, azimuth=30,
                                  normals=scene.normals)
            tiles.append(caption(image, f"{scene.name} {text}"))
    return tile_grid(tiles, columns=2 * min(limit, len(scenes)))


def preview_lidar(frames: Sequence, class_colors: dict[int, tuple[int, int, int]], limit: int = 3,
                  tile: int = 320, radius: float = 40.0) -> np.ndarray:
    """Bird's-eye tiles of the first scans coloured by class, above the first frame's camera image."""
    palette = np.full((max(class_colors) + 1, 3), 128, np.uint8)
    for label, rgb in class_colors.items():
        palette[label] = rgb
    tiles = []
    for k, frame in enumerate(frames[:limit]):
        near = np.abs(frame.points[:, :2]).max(axis=1) < radius
        image = render_points(frame.points[near], palette[frame.semantic[near]], (tile, tile), elevation=90,
                              azimuth=0, splat=1, shade=False)
        tiles.append(caption(image, f"scan {k:06d}"))
    return stack_rows([tile_grid(tiles, columns=len(tiles)), caption(frames[0].image, "image_2")])
