"""Procedural indoor scenes: a room (floor, walls, a door, pictures, a window) furnished with 5-20
objects placed on the floor without overlaps, sampled like a ScanNet reconstruction.

Labels are NYU40 ids (ScanNet's `nyu40id`): wall 1, floor 2, cabinet 3, bed 4, chair 5, sofa 6,
table 7, door 8, window 9, bookshelf 10, picture 11. Every wall, the floor and every object is an
instance; each object and wall item gets an axis-aligned box (cx, cy, cz, dx, dy, dz, nyu40) that
contains all of its points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pc3d.data.synthetic.mesh import LabeledMesh, box, concat, quad, rotation_z, sample_surface
from pc3d.data.synthetic.objects import CATEGORY_BY_NAME, NUM_PART_IDS, build_object_mesh, part_colors

WALL, FLOOR, DOOR, WINDOW, PICTURE = 1, 2, 8, 9, 11
# furniture that fits ScanNet's 20 classes, with how often a room gets one
FURNITURE: dict[str, float] = {"chair": 0.4, "table": 0.18, "sofa": 0.1, "bed": 0.08, "shelf": 0.12,
                               "cabinet": 0.12}
WALL_GAP = 0.1  # furniture keeps this far from the walls (wall items protrude less than this)
OBJECT_GAP = 0.05


@dataclass
class SyntheticScene:
    name: str  # ScanNet-style scene id, e.g. scene0000_00
    points: np.ndarray  # (N, 3) float32, z up, floor at z = 0, room corner at the origin
    colors: np.ndarray  # (N, 3) uint8
    normals: np.ndarray  # (N, 3) float32
    semantic: np.ndarray  # (N,) int64 NYU40 id
    instance: np.ndarray  # (N,) int64, 0 = floor, 1..4 = walls, then wall items and furniture
    boxes: np.ndarray  # (K, 7) float64: cx, cy, cz, dx, dy, dz, nyu40 id (furniture and wall items)
    box_instance: np.ndarray  # (K,) int64 instance id of each box


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 2, index])


def _footprint(mesh: LabeledMesh) -> tuple[np.ndarray, np.ndarray]:
    low, high = mesh.bounds
    return low[:2], high[:2]


def _place(meshes: list[LabeledMesh], room: np.ndarray, rng: np.random.Generator
           ) -> list[tuple[int, np.ndarray]]:
    """Rejection-sample floor positions: returns (mesh index, xy offset) of every object that fits
    without its footprint (plus a gap) touching another's or a wall."""
    placed: list[tuple[np.ndarray, np.ndarray]] = []
    result = []
    for index, mesh in enumerate(meshes):
        low, high = _footprint(mesh)
        size = high - low
        free = room - 2 * WALL_GAP - size
        if (free <= 0).any():
            continue
        for _ in range(200):
            corner = WALL_GAP + rng.random(2) * free  # where the footprint's low corner goes
            a_low, a_high = corner, corner + size
            if all((a_high + OBJECT_GAP <= b_low).any() or (b_high + OBJECT_GAP <= a_low).any()
                   for b_low, b_high in placed):
                placed.append((a_low, a_high))
                result.append((index, corner - low))
                break
    return result


def _wall_items(room: np.ndarray, height: float, rng: np.random.Generator) -> list[tuple[int, LabeledMesh]]:
    """A door on the first wall, then a window and pictures on the others (one per wall)."""
    items = []
    lx, ly = room

    def on_wall(wall: int, along: float, z: float, width: float, tall: float, depth: float) -> LabeledMesh:
        # walls: 0 at y=0, 1 at x=lx, 2 at y=ly, 3 at x=0; the item protrudes `depth` into the room
        if wall == 0:
            return box((along, depth / 2, z), (width, depth, tall), 0, 0)
        if wall == 1:
            return box((lx - depth / 2, along, z), (depth, width, tall), 0, 0)
        if wall == 2:
            return box((along, ly - depth / 2, z), (width, depth, tall), 0, 0)
        return box((depth / 2, along, z), (depth, width, tall), 0, 0)

    door_w = rng.uniform(0.8, 1.0)
    door_x = rng.uniform(0.3 + door_w / 2, lx - 0.3 - door_w / 2)
    items.append((DOOR, on_wall(0, door_x, 1.0, door_w, 2.0, 0.05)))
    for wall, kind in zip((1, 2, 3), rng.permutation([WINDOW, PICTURE, PICTURE]), strict=True):
        if rng.random() < 0.3:
            continue
        length = ly if wall in (1, 3) else lx
        if kind == WINDOW:
            w, h, z = rng.uniform(0.8, 1.5), rng.uniform(0.8, 1.2), rng.uniform(1.3, 1.6)
            depth = 0.04
        else:
            w, h, z = rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.7), rng.uniform(1.4, 1.8)
            depth = 0.03
        w = min(w, length - 0.4)
        z = min(z, height - h / 2 - 0.1)
        along = rng.uniform(0.2 + w / 2, length - 0.2 - w / 2)
        items.append((int(kind), on_wall(wall, along, z, w, h, depth)))
    return items


def _hsv_color(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
    import colorsys

    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s), rng.uniform(*v))
    return np.round(np.array(rgb) * 255)


def generate_scene(rng: np.random.Generator, points: int = 50_000,
                   name: str = "scene0000_00") -> SyntheticScene:
    names = list(FURNITURE)
    weights = np.array([FURNITURE[n] for n in names])
    wanted = int(rng.integers(5, 21))
    categories = [names[i] for i in rng.choice(len(names), size=wanted, p=weights / weights.sum())]
    meshes, colors = [], []
    for category in categories:
        quarter = rng.integers(4) * np.pi / 2
        jitter = rng.uniform(-0.25, 0.25) if category == "chair" else 0.0  # chairs stand a little askew
        meshes.append(build_object_mesh(category, rng).transformed(rotation_z(quarter + jitter)))
        colors.append(part_colors(category, rng))
    footprint = sum(float(np.prod(_footprint(m)[1] - _footprint(m)[0] + OBJECT_GAP)) for m in meshes)
    aspect = rng.uniform(1.0, 1.6)
    area = max(12.0, 2.5 * footprint)
    room = np.array([np.sqrt(area * aspect), np.sqrt(area / aspect)])
    placement = _place(meshes, room, rng)
    while len(placement) < min(5, len(meshes)):  # too crowded: a bigger room, placed again
        room *= 1.15
        placement = _place(meshes, room, rng)
    height = rng.uniform(2.5, 3.0)
    lx, ly = room

    parts: list[LabeledMesh] = [
        quad((0, 0, 0), (lx, 0, 0), (0, ly, 0), FLOOR, 0),  # normals face into the room
        quad((0, 0, 0), (0, 0, height), (lx, 0, 0), WALL, 1),
        quad((lx, 0, 0), (0, 0, height), (0, ly, 0), WALL, 2),
        quad((lx, ly, 0), (0, 0, height), (-lx, 0, 0), WALL, 3),
        quad((0, ly, 0), (0, 0, height), (0, -ly, 0), WALL, 4),
    ]
    # instance -> NYU40 class, and colours: one per room instance, one per (furniture instance, part)
    instance_class = {0: FLOOR, 1: WALL, 2: WALL, 3: WALL, 4: WALL}
    first_object = 5 + 4  # at most 4 wall items precede the furniture; ids below are reserved for them
    colors_by_part = np.zeros((first_object + len(placement), NUM_PART_IDS, 3))
    colors_by_part[0] = _hsv_color(rng, (0.3, 0.6), (0.45, 0.7))
    colors_by_part[1:5] = _hsv_color(rng, (0.0, 0.15), (0.8, 0.95))
    item_colors = {DOOR: (0.3, 0.6, 0.4, 0.7), WINDOW: (0.1, 0.3, 0.8, 0.95), PICTURE: (0.4, 0.9, 0.3, 0.9)}
    instance = 5
    for nyu40, mesh in _wall_items(room, height, rng):
        parts.append(mesh.relabeled(0, instance))
        instance_class[instance] = nyu40
        s0, s1, v0, v1 = item_colors[nyu40]
        colors_by_part[instance] = _hsv_color(rng, (s0, s1), (v0, v1))
        instance += 1
    for k, (index, offset) in enumerate(placement):
        instance = first_object + k
        mesh = meshes[index].transformed(translation=(offset[0], offset[1], 0.0))
        parts.append(mesh.relabeled(instance=instance))  # face labels stay part ids (for colours)
        instance_class[instance] = CATEGORY_BY_NAME[categories[index]].nyu40
        for part_id, rgb in colors[index].items():
            colors_by_part[instance, part_id] = rgb
    scene = concat(parts)

    # faces nobody can see: undersides resting on the floor
    centroid_z = scene.vertices[scene.faces][:, :, 2].mean(axis=1)
    scene = scene.select_faces(~((scene.face_normals[:, 2] < -0.9) & (centroid_z < 1e-3)))

    xyz, point_normals, face = sample_surface(scene, points, rng)
    inst = scene.instance[face]
    class_of = np.zeros(first_object + len(placement), np.int64)
    for k, nyu40 in instance_class.items():
        class_of[k] = nyu40
    rgb = colors_by_part[inst, scene.label[face]]
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255)  # scanner colour noise

    boxes, box_instance = [], []
    for k in sorted(instance_class):
        if k < 5:
            continue
        verts = scene.vertices[np.unique(scene.faces[scene.instance == k])]
        low, high = verts.min(axis=0), verts.max(axis=0)
        boxes.append([*(low + high) / 2, *(high - low), instance_class[k]])
        box_instance.append(k)
    # renumber instances densely (0 floor, 1-4 walls, then items and furniture in order)
    _, dense = np.unique(np.concatenate([np.arange(5), list(instance_class)]), return_inverse=True)
    remap = np.zeros(first_object + len(placement), np.int64)
    remap[np.concatenate([np.arange(5), list(instance_class)])] = dense
    return SyntheticScene(
        name=name,
        points=xyz.astype(np.float32),
        colors=np.round(rgb).astype(np.uint8),
        normals=point_normals.astype(np.float32),
        semantic=class_of[inst],
        instance=remap[inst],
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 7),
        box_instance=remap[np.array(box_instance, dtype=np.int64)],
    )
