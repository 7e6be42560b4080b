"""PNG previews of point clouds: numpy orthographic z-buffer splatting, label palettes, tile grids.

No GL, no display: a point is a small square splat, the nearest point wins each pixel, and a
little depth shading keeps shapes readable. Used by `pc3d data synth` and anything that wants
a quick look at labels.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

BACKGROUND = (255, 255, 255)


def label_palette(count: int) -> np.ndarray:
    """`count` distinct colours (golden-ratio hue steps, alternating brightness), (count, 3) uint8."""
    index = np.arange(count)
    hues = (index * 0.618033988749895) % 1.0
    values = np.where(index % 2 == 0, 0.92, 0.7)
    rgb = [colorsys.hsv_to_rgb(h, 0.75, v) for h, v in zip(hues, values, strict=True)]
    return np.round(np.array(rgb, dtype=np.float64).reshape(-1, 3) * 255).astype(np.uint8)


def colors_for_labels(labels: np.ndarray) -> np.ndarray:
    """Per-point colours for integer labels (negative labels are grey); the same label, the same colour."""
    labels = np.asarray(labels, dtype=np.int64)
    colors = np.full((len(labels), 3), 160, np.uint8)
    valid = labels >= 0
    if valid.any():
        colors[valid] = label_palette(int(labels[valid].max()) + 1)[labels[valid]]
    return colors


def view_rotation(elevation_deg: float, azimuth_deg: float, up: str = "z") -> np.ndarray:
    """World -> view rotation: view x to the right, view y up the screen, view z towards the viewer."""
    to_z_up = np.eye(3) if up == "z" else np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # y-up -> z-up
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    spin = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1.0]])
    # look along +y of the spun frame, tilted down by the elevation
    tilt = np.array([[1.0, 0, 0], [0, np.sin(el), np.cos(el)], [0, -np.cos(el), np.sin(el)]])
    return tilt @ spin @ to_z_up


def render_points(points: np.ndarray, colors: np.ndarray, size: tuple[int, int] = (256, 256),
                  elevation: float = 25.0, azimuth: float = -60.0, up: str = "z", splat: int = 2,
                  margin: float = 0.06, shade: bool = True, normals: np.ndarray | None = None) -> np.ndarray:
    """Orthographic render of a coloured cloud, fitted to the image: (H, W, 3) uint8, white background.

    With `normals`, points facing away from the viewer are culled (see into a room through its walls)."""
    height, width = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return image
    rotation = view_rotation(elevation, azimuth, up)
    colors = np.asarray(colors, dtype=np.float64)
    if normals is not None:
        facing = (np.asarray(normals, dtype=np.float64) @ rotation.T)[:, 2] >= 0
        points, colors = points[facing], colors[facing]
        if len(points) == 0:
            return image
    view = (points - points.mean(axis=0)) @ rotation.T
    low, high = view[:, :2].min(axis=0), view[:, :2].max(axis=0)
    extent = np.maximum(high - low, 1e-9)
    scale = (1 - 2 * margin) * min(width / extent[0], height / extent[1])
    center = (low + high) / 2
    px = np.floor((view[:, 0] - center[0]) * scale + width / 2).astype(np.int64)
    py = np.floor(height / 2 - (view[:, 1] - center[1]) * scale).astype(np.int64)
    depth = view[:, 2]  # larger = nearer the viewer
    if shade:  # nearer points brighter: a cheap depth cue
        span = max(depth.max() - depth.min(), 1e-9)
        colors = colors * (0.6 + 0.4 * ((depth - depth.min()) / span))[:, None]
    offsets = np.arange(splat) - splat // 2
    ox, oy = (a.reshape(-1) for a in np.meshgrid(offsets, offsets))
    sx = (px[:, None] + ox[None]).reshape(-1)
    sy = (py[:, None] + oy[None]).reshape(-1)
    owner = np.repeat(np.arange(len(points)), len(ox))
    inside = (sx >= 0) & (sx < width) & (sy >= 0) & (sy < height)
    sx, sy, owner = sx[inside], sy[inside], owner[inside]
    pixel = sy * width + sx
    order = np.lexsort((-depth[owner], pixel))  # per pixel, nearest first
    pixel, owner = pixel[order], owner[order]
    first = np.unique(pixel, return_index=True)[1]
    image.reshape(-1, 3)[pixel[first]] = np.clip(np.round(colors[owner[first]]), 0, 255).astype(np.uint8)
    return image


def resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    rows = np.minimum((np.arange(height) + 0.5) * image.shape[0] / height, image.shape[0] - 1)
    cols = np.minimum((np.arange(width) + 0.5) * image.shape[1] / width, image.shape[1] - 1)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    return image[rows][:, cols]


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """Write `text` in the top-left corner (PIL's built-in bitmap font)."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    ImageDraw.Draw(canvas).text((4, 2), text, fill=(20, 20, 20))
    return np.asarray(canvas).copy()


def tile_grid(tiles: Sequence[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Equal-size tiles in a grid, row-major, with `gap` pixels of light grey between them."""
    if not tiles:
        raise ValueError("no tiles to arrange")
    height, width = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    shape = (rows * height + (rows + 1) * gap, columns * width + (columns + 1) * gap, 3)
    grid = np.full(shape, 225, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (height + gap), gap + c * (width + gap)
        grid[y:y + height, x:x + width] = tile
    return grid


def stack_rows(rows: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Stack images vertically, each resized (nearest) to the widest one's width."""
    width = max(row.shape[1] for row in rows)
    scaled = [row if row.shape[1] == width else
              resize_nearest(row, (max(1, round(row.shape[0] * width / row.shape[1])), width))
              for row in rows]
    out = np.full((sum(r.shape[0] for r in scaled) + gap * (len(scaled) - 1), width, 3), 225, np.uint8)
    y = 0
    for row in scaled:
        out[y:y + row.shape[0]] = row
        y += row.shape[0] + gap
    return out
