"""Labelled triangle meshes built from primitives, and area-uniform surface sampling.

Every face carries a label (a part id, or a semantic class) and an instance id, so a point
sampled on a face, or a ray that hits it, inherits both. Primitives are numpy copies of open3d's
tessellators (pc3d.data.synthetic.primitives: same vertices and triangles, bit for bit), so the data is
the same with or without open3d installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pc3d.data.synthetic.primitives import box_mesh, cone_mesh, cylinder_mesh, sphere_mesh, torus_mesh
from pc3d.io.mesh import sample_surface_points


@dataclass
class LabeledMesh:
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64, counter-clockwise seen from outside (normals point out)
    label: np.ndarray  # (F,) int64
    instance: np.ndarray  # (F,) int64

    @property
    def face_normals(self) -> np.ndarray:
        tri = self.vertices[self.faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)

    @property
    def face_areas(self) -> np.ndarray:
        tri = self.vertices[self.faces]
        return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)

    def transformed(self, rotation: np.ndarray | None = None, translation: Sequence[float] = (0, 0, 0),
                    scale: float = 1.0) -> LabeledMesh:
        """x -> scale * R x + t (a proper rotation keeps the faces' winding, so normals stay outward)."""
        rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
        vertices = scale * self.vertices @ rot.T + np.asarray(translation, dtype=np.float64)
        return LabeledMesh(vertices, self.faces.copy(), self.label.copy(), self.instance.copy())

    def relabeled(self, label: int | None = None, instance: int | None = None) -> LabeledMesh:
        n = len(self.faces)
        return LabeledMesh(self.vertices, self.faces,
                           self.label if label is None else np.full(n, label, np.int64),
                           self.instance if instance is None else np.full(n, instance, np.int64))

    def select_faces(self, keep: np.ndarray) -> LabeledMesh:
        return LabeledMesh(self.vertices, self.faces[keep], self.label[keep], self.instance[keep])

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        used = self.vertices[np.unique(self.faces)]
        return used.min(axis=0), used.max(axis=0)


def concat(meshes: Sequence[LabeledMesh]) -> LabeledMesh:
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return LabeledMesh(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.faces + off for m, off in zip(meshes, offsets, strict=True)]),
        np.concatenate([m.label for m in meshes]),
        np.concatenate([m.instance for m in meshes]),
    )


def _labeled(tessellation: tuple[np.ndarray, np.ndarray], label: int, instance: int) -> LabeledMesh:
    vertices, faces = tessellation
    n = len(faces)
    return LabeledMesh(vertices, faces, np.full(n, label, np.int64), np.full(n, instance, np.int64))


def rotation_to(direction: Sequence[float]) -> np.ndarray:
    """A rotation taking +z to `direction` (Rodrigues; used to orient cylinders and cones)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, d)
    c = float(z @ d)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def box(center: Sequence[float], size: Sequence[float], label: int, instance: int) -> LabeledMesh:
    sx, sy, sz = (float(s) for s in size)
    mesh = _labeled(box_mesh(sx, sy, sz), label, instance)
    return mesh.transformed(translation=np.asarray(center, dtype=np.float64) - np.array([sx, sy, sz]) / 2)


def quad(corner: Sequence[float], edge_u: Sequence[float], edge_v: Sequence[float], label: int,
         instance: int) -> LabeledMesh:
    """A one-sided rectangle; its normal is edge_u x edge_v."""
    c, u, v = (np.asarray(a, dtype=np.float64) for a in (corner, edge_u, edge_v))
    vertices = np.stack([c, c + u, c + u + v, c + v])
    faces = np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64)
    return LabeledMesh(vertices, faces, np.full(2, label, np.int64), np.full(2, instance, np.int64))


def cylinder(start: Sequence[float], end: Sequence[float], radius: float, label: int, instance: int,
             resolution: int = 16, top_radius: float | None = None, caps: str = "both") -> LabeledMesh:
    """A (possibly truncated-cone) cylinder from `start` to `end`; caps: "both", "start" or "none"."""
    start_v, end_v = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    height = float(np.linalg.norm(end_v - start_v))
    mesh = _labeled(cylinder_mesh(radius, height, resolution, 1), label, instance)
    if top_radius is not None:  # taper: scale the top ring's radius (a frustum, e.g. a lamp shade)
        top = mesh.vertices[:, 2] > 0
        mesh.vertices[top, :2] *= top_radius / radius
    # the tessellation's vertex 0 is the top (end) cap centre, vertex 1 the bottom (start) one; drop their fans
    dropped = {"both": [], "start": [0], "none": [0, 1]}[caps]
    if dropped:
        mesh = mesh.select_faces(~np.isin(mesh.faces, dropped).any(axis=1))
    mesh.vertices[:, 2] += height / 2  # the tessellation is centred; start at the origin
    return mesh.transformed(rotation_to(end_v - start_v), start_v)


def ellipsoid(center: Sequence[float], radii: Sequence[float], label: int, instance: int,
              resolution: int = 12) -> LabeledMesh:
    mesh = _labeled(sphere_mesh(1.0, resolution), label, instance)
    mesh.vertices *= np.asarray(radii, dtype=np.float64)  # positive scales keep the winding
    return mesh.transformed(translation=center)


def cone(base: Sequence[float], tip: Sequence[float], radius: float, label: int, instance: int,
         resolution: int = 16) -> LabeledMesh:
    base_v, tip_v = np.asarray(base, dtype=np.float64), np.asarray(tip, dtype=np.float64)
    height = float(np.linalg.norm(tip_v - base_v))
    mesh = _labeled(cone_mesh(radius, height, resolution, 1), label, instance)
    return mesh.transformed(rotation_to(tip_v - base_v), base_v)


def torus(center: Sequence[float], normal: Sequence[float], radius: float, tube: float, label: int,
          instance: int, radial: int = 20, tubular: int = 8) -> LabeledMesh:
    mesh = _labeled(torus_mesh(radius, tube, radial, tubular), label, instance)
    return mesh.transformed(rotation_to(normal), center)


def sample_surface(mesh: LabeledMesh, count: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` points uniformly by area: (points (n,3), face normals (n,3), face index (n,))."""
    points, _, face = sample_surface_points(mesh.vertices, mesh.faces, count, rng)
    return points, mesh.face_normals[face], face
