"""Open3D's triangle-mesh primitives re-done in numpy, vertex for vertex and triangle for triangle.

The synthetic data (objects, indoor scenes, LiDAR streets) was first built from
`open3d.geometry.TriangleMesh.create_*`; these functions reproduce that tessellation exactly (same
vertex order and float64 values, same triangle order and winding; see Open3D's
cpp/open3d/geometry/TriangleMeshFactory.cpp) so that the generated data stays the same whether or not
open3d is installed. Each returns (vertices (V, 3) float64, triangles (F, 3) int64).

Exactness notes: the trigonometry goes through `math.sin` / `math.cos` (the C library, like Open3D's
`sin`/`cos`) rather than numpy's ufuncs, which some numpy builds vectorise with their own, not always
identically rounded, kernels; and every product and sum is written in Open3D's evaluation order so each
float64 is rounded the same way.
"""

from __future__ import annotations

import math

import numpy as np


def _cos_sin(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([math.cos(a) for a in angles.tolist()], dtype=np.float64),
            np.array([math.sin(a) for a in angles.tolist()], dtype=np.float64))


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _ring_band(first: int, second: int, resolution: int, order: tuple[str, ...]) -> np.ndarray:
    """Two triangles per segment between vertex rings starting at `first` and `second` (resolution
    vertices each, wrapping around), corners named b1/b1j1/b2/b2j1 and listed in Open3D's `order`."""
    j = np.arange(resolution, dtype=np.int64)
    j1 = (j + 1) % resolution
    corner = {"b1": first + j, "b1j1": first + j1, "b2": second + j, "b2j1": second + j1}
    tri_a = np.stack([corner[name] for name in order[:3]], axis=1)
    tri_b = np.stack([corner[name] for name in order[3:]], axis=1)
    return np.stack([tri_a, tri_b], axis=1).reshape(-1, 3)  # a, b interleaved per segment


def box_mesh(width: float = 1.0, height: float = 1.0, depth: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """TriangleMesh.create_box: the box [0, width] x [0, height] x [0, depth], 8 vertices, 12 triangles."""
    _check_positive(width=width, height=height, depth=depth)
    w, h, d = float(width), float(height), float(depth)
    vertices = np.array([[0.0, 0.0, 0.0], [w, 0.0, 0.0], [0.0, 0.0, d], [w, 0.0, d],
                         [0.0, h, 0.0], [w, h, 0.0], [0.0, h, d], [w, h, d]], dtype=np.float64)
    triangles = np.array([[4, 7, 5], [4, 6, 7], [0, 2, 4], [2, 6, 4], [0, 1, 2], [1, 3, 2],
                          [1, 5, 7], [1, 7, 3], [2, 3, 7], [2, 7, 6], [0, 4, 1], [1, 4, 5]], dtype=np.int64)
    return vertices, triangles


def sphere_mesh(radius: float = 1.0, resolution: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """TriangleMesh.create_sphere: poles first (+z, -z), then resolution - 1 latitude rings of
    2 * resolution vertices from the north pole down."""
    _check_positive(radius=radius, resolution=resolution)
    r, n = float(radius), int(resolution)
    step = math.pi / float(n)
    cos_a, sin_a = _cos_sin(step * np.arange(1, n, dtype=np.float64))  # alpha_i = step * i, i = 1..n-1
    cos_t, sin_t = _cos_sin(step * np.arange(2 * n, dtype=np.float64))  # theta_j = step * j
    # Open3D: Vector3d(sin(a) cos(t), sin(a) sin(t), cos(a)) * radius
    rings = np.stack(np.broadcast_arrays((sin_a[:, None] * cos_t[None, :]) * r,
                                         (sin_a[:, None] * sin_t[None, :]) * r,
                                         cos_a[:, None] * r), axis=-1).reshape(-1, 3)
    vertices = np.concatenate([[[0.0, 0.0, r], [0.0, 0.0, -r]], rings]).astype(np.float64)

    ring = 2 * n
    j = np.arange(ring, dtype=np.int64)
    j1 = (j + 1) % ring
    south = 2 + ring * (n - 2)
    poles = np.stack([np.stack([np.zeros_like(j), 2 + j, 2 + j1], axis=1),  # north fan ...
                      np.stack([np.ones_like(j), south + j1, south + j], axis=1)],  # ... interleaved with south
                     axis=1).reshape(-1, 3)
    bands = [_ring_band(2 + ring * (i - 1), 2 + ring * i, ring, ("b2", "b1j1", "b1", "b2", "b2j1", "b1j1"))
             for i in range(1, n - 1)]
    return vertices, np.concatenate([poles, *bands]).astype(np.int64)


def cylinder_mesh(radius: float = 1.0, height: float = 2.0, resolution: int = 20,
                  split: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """TriangleMesh.create_cylinder: axis z, centred at the origin; cap centres first (top +h/2,
    bottom -h/2), then split + 1 rings of `resolution` vertices from the top down."""
    _check_positive(radius=radius, height=height, resolution=resolution, split=split)
    r, h, n, s = float(radius), float(height), int(resolution), int(split)
    step = math.pi * 2.0 / float(n)
    h_step = h / float(s)
    cos_t, sin_t = _cos_sin(step * np.arange(n, dtype=np.float64))
    z = h * 0.5 - h_step * np.arange(s + 1, dtype=np.float64)
    rings = np.stack(np.broadcast_arrays(cos_t[None, :] * r, sin_t[None, :] * r, z[:, None]),
                     axis=-1).reshape(-1, 3)
    vertices = np.concatenate([[[0.0, 0.0, h * 0.5], [0.0, 0.0, -h * 0.5]], rings]).astype(np.float64)

    j = np.arange(n, dtype=np.int64)
    j1 = (j + 1) % n
    bottom = 2 + n * s
    caps = np.stack([np.stack([np.zeros_like(j), 2 + j, 2 + j1], axis=1),  # top fan interleaved ...
                     np.stack([np.ones_like(j), bottom + j1, bottom + j], axis=1)],  # ... with the bottom
                    axis=1).reshape(-1, 3)
    sides = [_ring_band(2 + n * i, 2 + n * (i + 1), n, ("b2", "b1j1", "b1", "b2", "b2j1", "b1j1"))
             for i in range(s)]
    return vertices, np.concatenate([caps, *sides]).astype(np.int64)


def cone_mesh(radius: float = 1.0, height: float = 2.0, resolution: int = 20,
              split: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """TriangleMesh.create_cone: base centre at the origin (vertex 0), apex at (0, 0, height)
    (vertex 1), then `split` rings of `resolution` vertices from the base ring up."""
    _check_positive(radius=radius, height=height, resolution=resolution, split=split)
    r, h, n, s = float(radius), float(height), int(resolution), int(split)
    step = math.pi * 2.0 / float(n)
    h_step = h / float(s)
    r_step = r / float(s)
    cos_t, sin_t = _cos_sin(step * np.arange(n, dtype=np.float64))
    i = np.arange(s)
    ring_r = r_step * (s - i).astype(np.float64)
    z = h_step * i.astype(np.float64)
    rings = np.stack(np.broadcast_arrays(cos_t[None, :] * ring_r[:, None], sin_t[None, :] * ring_r[:, None],
                                         z[:, None]), axis=-1).reshape(-1, 3)
    vertices = np.concatenate([[[0.0, 0.0, 0.0], [0.0, 0.0, h]], rings]).astype(np.float64)

    j = np.arange(n, dtype=np.int64)
    j1 = (j + 1) % n
    top = 2 + n * (s - 1)
    fans = np.stack([np.stack([np.zeros_like(j), 2 + j1, 2 + j], axis=1),  # base fan interleaved ...
                     np.stack([np.ones_like(j), top + j, top + j1], axis=1)],  # ... with the apex fan
                    axis=1).reshape(-1, 3)
    sides = [_ring_band(2 + n * k, 2 + n * (k + 1), n, ("b2j1", "b1", "b1j1", "b2j1", "b2", "b1"))
             for k in range(s - 1)]
    return vertices, np.concatenate([fans, *sides]).astype(np.int64)


def torus_mesh(torus_radius: float = 1.0, tube_radius: float = 0.5, radial_resolution: int = 30,
               tubular_resolution: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """TriangleMesh.create_torus: in the xy plane around z; vertex (u, v) at u * tubular + v."""
    _check_positive(torus_radius=torus_radius, tube_radius=tube_radius, radial_resolution=radial_resolution,
                    tubular_resolution=tubular_resolution)
    big, small = float(torus_radius), float(tube_radius)
    nu, nv = int(radial_resolution), int(tubular_resolution)
    cos_u, sin_u = _cos_sin(np.arange(nu, dtype=np.float64) * (2 * math.pi / float(nu)))
    cos_v, sin_v = _cos_sin(np.arange(nv, dtype=np.float64) * (2 * math.pi / float(nv)))
    # Open3D: torus_radius * w + tube_radius * cos(v) * w + (0, 0, tube_radius * sin(v)), w = (cos u, sin u, 0)
    tube_cos = small * cos_v  # (tube_radius * cos(v)) is formed first, then scales w
    x = big * cos_u[:, None] + tube_cos[None, :] * cos_u[:, None] + 0.0
    y = big * sin_u[:, None] + tube_cos[None, :] * sin_u[:, None] + 0.0
    z = big * 0.0 + tube_cos[None, :] * 0.0 + small * sin_v[None, :]
    vertices = np.stack(np.broadcast_arrays(x, y, z), axis=-1).reshape(-1, 3).astype(np.float64)

    u = np.arange(nu, dtype=np.int64)[:, None]
    v = np.arange(nv, dtype=np.int64)[None, :]
    u1, v1 = (u + 1) % nu, (v + 1) % nv
    here, next_u, next_uv, next_v = (np.broadcast_to(a * nv + b, (nu, nv)) for a, b in
                                     ((u, v), (u1, v), (u1, v1), (u, v1)))
    tri_a = np.stack([next_u, next_uv, here], axis=-1)
    tri_b = np.stack([here, next_uv, next_v], axis=-1)
    return vertices, np.stack([tri_a, tri_b], axis=2).reshape(-1, 3).astype(np.int64)
