"""Procedural objects: 13 categories built from primitives with random proportions.

Each builder returns a metric, z-up `LabeledMesh` standing on z = 0 (front towards -y) whose face
labels are global part ids and whose instances number the part instances (each chair leg its own).
ShapeNetPart categories use the official global part ids (Chair 12-15: back, seat, leg, arm, ...);
the others continue from 50. `generate_object` samples points on it and normalises them the way
the object datasets are stored: unit sphere, y up (ShapeNet's convention).
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pc3d.data.synthetic.mesh import (
    LabeledMesh,
    box,
    concat,
    cone,
    cylinder,
    rotation_x,
    rotation_z,
    sample_surface,
    torus,
)


@dataclass(frozen=True)
class Category:
    name: str  # pc3d name: file-name prefix and class name
    parts: tuple[str, ...]
    part_ids: tuple[int, ...]  # global part id of each part
    modelnet: str  # ModelNet40 class it is written as
    shapenetpart: str | None = None  # ShapeNetPart category (its part ids are the official ones)
    partnete: str | None = None  # PartNet-Ensembled category
    partnete_parts: dict[str, str] = field(default_factory=dict)  # our part -> PartNetE part name
    nyu40: int | None = None  # NYU40 class id when it furnishes the synthetic rooms

    def part_id(self, part: str) -> int:
        return self.part_ids[self.parts.index(part)]


CATEGORIES: tuple[Category, ...] = (
    Category("airplane", ("body", "wing", "tail", "engine"), (0, 1, 2, 3), "airplane", "Airplane"),
    Category("bed", ("frame", "mattress", "headboard", "leg"), (53, 54, 55, 56), "bed", nyu40=4),
    Category("bottle", ("body", "neck", "lid"), (50, 51, 52), "bottle", partnete="Bottle",
             partnete_parts={"lid": "lid"}),
    Category("cabinet", ("body", "door", "handle"), (64, 65, 66), "wardrobe", partnete="StorageFurniture",
             partnete_parts={"door": "door", "handle": "handle"}, nyu40=3),
    Category("car", ("roof", "hood", "wheel", "body"), (8, 9, 10, 11), "car", "Car"),
    Category("chair", ("back", "seat", "leg", "arm"), (12, 13, 14, 15), "chair", "Chair", "Chair",
             {"back": "back", "seat": "seat", "leg": "leg", "arm": "arm"}, nyu40=5),
    Category("guitar", ("head", "neck", "body"), (19, 20, 21), "guitar", "Guitar"),
    Category("lamp", ("base", "shade", "canopy", "tube"), (24, 25, 26, 27), "lamp", "Lamp", "Lamp",
             {"base": "base", "shade": "shade", "canopy": "body", "tube": "body"}),
    Category("laptop", ("keyboard", "screen"), (28, 29), "laptop", "Laptop", "Laptop",
             {"keyboard": "keyboard", "screen": "screen"}),
    Category("mug", ("handle", "body"), (36, 37), "cup", "Mug"),
    Category("shelf", ("side", "board", "back"), (57, 58, 59), "bookshelf", nyu40=10),
    Category("sofa", ("base", "back", "arm", "cushion"), (60, 61, 62, 63), "sofa", nyu40=6),
    Category("table", ("top", "leg", "drawer"), (47, 48, 49), "table", "Table", "Table",
             {"top": "tabletop", "leg": "leg", "drawer": "drawer"}, nyu40=7),
)
CATEGORY_BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}
NUM_PART_IDS = 1 + max(i for c in CATEGORIES for i in c.part_ids)


class _Builder:
    """Collects primitives of one object; hands out part instance ids in build order."""

    def __init__(self, category: Category) -> None:
        self.category = category
        self.meshes: list[LabeledMesh] = []

    def add(self, part: str, *meshes: LabeledMesh) -> None:
        """All `meshes` form ONE new instance of `part`."""
        instance = len(self.meshes)
        for mesh in meshes:
            self.meshes.append(mesh.relabeled(self.category.part_id(part), instance))

    def mesh(self) -> LabeledMesh:
        mesh = concat(self.meshes)
        _, mesh.instance = np.unique(mesh.instance, return_inverse=True)  # 0..K-1 in build order
        return mesh


def _chair(b: _Builder, rng: np.random.Generator) -> None:
    w, d = rng.uniform(0.40, 0.55), rng.uniform(0.40, 0.55)
    seat_h, seat_t = rng.uniform(0.40, 0.50), rng.uniform(0.03, 0.07)
    b.add("seat", box((0, 0, seat_h - seat_t / 2), (w, d, seat_t), 0, 0))
    back_h, back_t = rng.uniform(0.35, 0.60), rng.uniform(0.03, 0.06)
    b.add("back", box((0, d / 2 - back_t / 2, seat_h + back_h / 2), (w, back_t, back_h), 0, 0))
    leg_r, inset = rng.uniform(0.015, 0.03), rng.uniform(0.03, 0.06)
    round_legs = rng.random() < 0.5
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - inset), sy * (d / 2 - inset)
            if round_legs:
                b.add("leg", cylinder((x, y, 0), (x, y, seat_h - seat_t), leg_r, 0, 0, resolution=10))
            else:
                size = (2 * leg_r, 2 * leg_r, seat_h - seat_t)
                b.add("leg", box((x, y, (seat_h - seat_t) / 2), size, 0, 0))
    if rng.random() < 0.5:
        arm_h, arm_w = rng.uniform(0.18, 0.25), rng.uniform(0.04, 0.07)
        for sx in (-1, 1):
            x = sx * (w / 2 - arm_w / 2)
            rest = box((x, 0, seat_h + arm_h), (arm_w, d * 0.85, 0.03), 0, 0)
            post = box((x, -d * 0.35, seat_h + arm_h / 2), (arm_w * 0.6, 0.03, arm_h), 0, 0)
            b.add("arm", rest, post)


def _table(b: _Builder, rng: np.random.Generator) -> None:
    h, top_t = rng.uniform(0.65, 0.80), rng.uniform(0.03, 0.06)
    if rng.random() < 0.3:  # round pedestal table
        radius = rng.uniform(0.4, 0.7)
        b.add("top", cylinder((0, 0, h - top_t), (0, 0, h), radius, 0, 0, resolution=32))
        b.add("leg", cylinder((0, 0, 0.02), (0, 0, h - top_t), rng.uniform(0.03, 0.06), 0, 0),
              cylinder((0, 0, 0), (0, 0, 0.02), radius * 0.5, 0, 0, resolution=24))
        return
    w, d = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)
    b.add("top", box((0, 0, h - top_t / 2), (w, d, top_t), 0, 0))
    leg_s, inset = rng.uniform(0.04, 0.07), rng.uniform(0.03, 0.08)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.add("leg", box((sx * (w / 2 - inset), sy * (d / 2 - inset), (h - top_t) / 2),
                             (leg_s, leg_s, h - top_t), 0, 0))
    if rng.random() < 0.4:
        dh = rng.uniform(0.08, 0.14)
        b.add("drawer", box((0, -d * 0.1, h - top_t - dh / 2), (w * 0.4, d * 0.7, dh), 0, 0))


def _lamp(b: _Builder, rng: np.random.Generator) -> None:
    base_r, base_h = rng.uniform(0.08, 0.15), rng.uniform(0.02, 0.05)
    b.add("base", cylinder((0, 0, 0), (0, 0, base_h), base_r, 0, 0, resolution=24))
    top = rng.uniform(0.3, 0.6)
    b.add("tube", cylinder((0, 0, base_h), (0, 0, top), rng.uniform(0.008, 0.018), 0, 0, resolution=10))
    canopy_r = rng.uniform(0.025, 0.04)
    b.add("canopy", cylinder((0, 0, top), (0, 0, top + 0.03), canopy_r, 0, 0, resolution=12))
    shade_r, shade_h = rng.uniform(0.12, 0.2), rng.uniform(0.12, 0.22)
    b.add("shade", cylinder((0, 0, top - 0.02), (0, 0, top - 0.02 + shade_h), shade_r, 0, 0, resolution=28,
                            top_radius=shade_r * rng.uniform(0.5, 0.8), caps="none"))


def _mug(b: _Builder, rng: np.random.Generator) -> None:
    r, h = rng.uniform(0.035, 0.05), rng.uniform(0.08, 0.12)
    b.add("body", cylinder((0, 0, 0), (0, 0, h), r, 0, 0, resolution=28, caps="start"))
    ring = torus((r, 0, h / 2), (0, 1, 0), h * rng.uniform(0.25, 0.32), 0.007, 0, 0)
    centroid_x = ring.vertices[ring.faces].mean(axis=1)[:, 0]
    b.add("handle", ring.select_faces(centroid_x > r * 0.98))  # only the half outside the body


def _bottle(b: _Builder, rng: np.random.Generator) -> None:
    r, h = rng.uniform(0.03, 0.045), rng.uniform(0.15, 0.22)
    neck_r, shoulder = r * rng.uniform(0.3, 0.4), rng.uniform(0.03, 0.05)
    neck_h = rng.uniform(0.03, 0.05)
    b.add("body", cylinder((0, 0, 0), (0, 0, h), r, 0, 0, resolution=24, caps="start"))
    b.add("neck", cylinder((0, 0, h), (0, 0, h + shoulder), r, 0, 0, resolution=24, top_radius=neck_r,
                           caps="none"),
          cylinder((0, 0, h + shoulder), (0, 0, h + shoulder + neck_h), neck_r, 0, 0, resolution=16,
                   caps="none"))
    top = h + shoulder + neck_h
    b.add("lid", cylinder((0, 0, top - 0.01), (0, 0, top + 0.015), neck_r * 1.2, 0, 0, resolution=16))


def _bed(b: _Builder, rng: np.random.Generator) -> None:
    w, length = rng.uniform(1.0, 1.8), rng.uniform(1.9, 2.2)
    leg_h, frame_h = rng.uniform(0.08, 0.15), rng.uniform(0.2, 0.3)
    b.add("frame", box((0, 0, leg_h + frame_h / 2), (w, length, frame_h), 0, 0))
    mat_h = rng.uniform(0.15, 0.25)
    b.add("mattress", box((0, -0.03, leg_h + frame_h + mat_h / 2), (w - 0.06, length - 0.12, mat_h), 0, 0))
    head_h = rng.uniform(0.5, 0.9)
    b.add("headboard", box((0, length / 2 + 0.03, leg_h + head_h / 2), (w, 0.06, head_h), 0, 0))
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - 0.06), sy * (length / 2 - 0.06)
            b.add("leg", cylinder((x, y, 0), (x, y, leg_h), 0.03, 0, 0, resolution=10))


def _shelf(b: _Builder, rng: np.random.Generator) -> None:
    w, d, h, t = rng.uniform(0.6, 1.2), rng.uniform(0.25, 0.4), rng.uniform(1.0, 2.0), 0.02
    for sx in (-1, 1):
        b.add("side", box((sx * (w / 2 - t / 2), 0, h / 2), (t, d, h), 0, 0))
    levels = int(rng.integers(3, 7))
    for z in np.linspace(t / 2, h - t / 2, levels):
        b.add("board", box((0, 0, z), (w - 2 * t, d, t), 0, 0))
    b.add("back", box((0, d / 2 + 0.005, h / 2), (w, 0.01, h), 0, 0))


def _sofa(b: _Builder, rng: np.random.Generator) -> None:
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.8, 1.0)
    base_h, arm_w = rng.uniform(0.35, 0.45), rng.uniform(0.15, 0.22)
    b.add("base", box((0, 0, base_h / 2), (w, d, base_h), 0, 0))
    back_t, back_top = rng.uniform(0.15, 0.25), rng.uniform(0.75, 0.9)
    b.add("back", box((0, d / 2 - back_t / 2, (base_h + back_top) / 2), (w, back_t, back_top - base_h), 0, 0))
    arm_top = rng.uniform(0.55, 0.65)
    for sx in (-1, 1):
        b.add("arm", box((sx * (w / 2 - arm_w / 2), -back_t / 2, (base_h + arm_top) / 2),
                         (arm_w, d - back_t, arm_top - base_h), 0, 0))
    seats = int(rng.integers(2, 4))
    inner = w - 2 * arm_w
    for i in range(seats):
        x = -inner / 2 + inner * (i + 0.5) / seats
        b.add("cushion", box((x, -back_t / 2, base_h + 0.06), (inner / seats - 0.02, d - back_t - 0.02, 0.12),
                             0, 0))


def _cabinet(b: _Builder, rng: np.random.Generator) -> None:
    w, d, h = rng.uniform(0.8, 1.2), rng.uniform(0.4, 0.6), rng.uniform(1.6, 2.0)
    b.add("body", box((0, 0, h / 2), (w, d, h), 0, 0))
    for sx in (-1, 1):
        x = sx * w / 4
        b.add("door", box((x, -d / 2 - 0.01, h / 2 + 0.02), (w / 2 - 0.02, 0.02, h - 0.1), 0, 0))
        hx = sx * 0.06
        b.add("handle", cylinder((hx, -d / 2 - 0.04, h * 0.5), (hx, -d / 2 - 0.04, h * 0.5 + 0.15), 0.01,
                                 0, 0, resolution=8))


def _airplane(b: _Builder, rng: np.random.Generator) -> None:
    length = rng.uniform(3.0, 5.0)
    r = length * rng.uniform(0.05, 0.07)
    nose = length * rng.uniform(0.08, 0.12)
    b.add("body", cylinder((-length / 2, 0, 0), (length / 2 - nose, 0, 0), r, 0, 0, resolution=20),
          cone((length / 2 - nose, 0, 0), (length / 2, 0, 0), r, 0, 0, resolution=20))
    span, chord = length * rng.uniform(0.4, 0.6), length * rng.uniform(0.12, 0.18)
    sweep = rng.uniform(0.0, 0.5)
    for sy in (-1, 1):
        wing = box((0, sy * span / 2, 0), (chord, span, r * 0.15), 0, 0)
        b.add("wing", wing.transformed(rotation_z(sy * sweep), (0, sy * r * 0.5, -r * 0.3)))
    tail_x = -length / 2 + chord * 0.4
    b.add("tail", box((tail_x, 0, r + length * 0.07), (chord * 0.6, r * 0.12, length * 0.14), 0, 0))
    for sy in (-1, 1):
        b.add("tail", box((tail_x, sy * length * 0.08, r * 0.3), (chord * 0.4, length * 0.16, r * 0.1), 0, 0))
    engines = 2 if rng.random() < 0.6 else 4
    offsets = (0.35,) if engines == 2 else (0.25, 0.6)
    for sy in (-1, 1):
        for frac in offsets:
            y = sy * (r + span * frac)
            x = -abs(y) * np.tan(sweep) + chord * 0.3
            b.add("engine", cylinder((x - chord * 0.5, y, -r * 0.9), (x + chord * 0.4, y, -r * 0.9), r * 0.35,
                                     0, 0, resolution=14))


def _car(b: _Builder, rng: np.random.Generator) -> None:
    length, width = rng.uniform(3.8, 4.8), rng.uniform(1.6, 1.9)
    wheel_r = rng.uniform(0.3, 0.38)
    body_bottom, body_top = wheel_r * 0.6, rng.uniform(0.85, 1.0)
    b.add("body", box((0, 0, (body_bottom + body_top) / 2), (length, width, body_top - body_bottom), 0, 0))
    hood_len = length * rng.uniform(0.25, 0.33)
    b.add("hood", box((length / 2 - hood_len / 2, 0, body_top + 0.02), (hood_len, width * 0.96, 0.04), 0, 0))
    cabin_len, cabin_h = length * rng.uniform(0.4, 0.5), rng.uniform(0.4, 0.55)
    cabin_x = length / 2 - hood_len - cabin_len / 2 - 0.1
    b.add("roof", box((cabin_x, 0, body_top + cabin_h / 2), (cabin_len, width * 0.9, cabin_h), 0, 0))
    axle = length / 2 - rng.uniform(0.65, 0.85)
    for sx in (-1, 1):
        for sy in (-1, 1):
            y = sy * (width / 2 - 0.05)
            b.add("wheel", cylinder((sx * axle, y - 0.11, wheel_r), (sx * axle, y + 0.11, wheel_r), wheel_r,
                                    0, 0, resolution=18))


def _guitar(b: _Builder, rng: np.random.Generator) -> None:
    t = rng.uniform(0.08, 0.11)
    lower, upper = rng.uniform(0.17, 0.21), rng.uniform(0.12, 0.15)
    b.add("body", cylinder((0, -t / 2, lower), (0, t / 2, lower), lower, 0, 0, resolution=28),
          cylinder((0, -t / 2, 2 * lower + upper * 0.6), (0, t / 2, 2 * lower + upper * 0.6), upper, 0, 0,
                   resolution=28))
    body_top = 2 * lower + upper * 1.5
    neck_len = rng.uniform(0.42, 0.5)
    b.add("neck", box((0, 0, body_top + neck_len / 2 - 0.02), (0.05, 0.03, neck_len), 0, 0))
    head_len = rng.uniform(0.15, 0.2)
    b.add("head", box((0, 0.005, body_top + neck_len + head_len / 2 - 0.02), (0.08, 0.02, head_len), 0, 0))


def _laptop(b: _Builder, rng: np.random.Generator) -> None:
    w, d, t = rng.uniform(0.3, 0.4), rng.uniform(0.2, 0.28), rng.uniform(0.015, 0.025)
    b.add("keyboard", box((0, 0, t / 2), (w, d, t), 0, 0))
    screen_h = d * rng.uniform(0.95, 1.05)
    upright = box((0, 0, screen_h / 2), (w, 0.008, screen_h), 0, 0)
    tilt = np.deg2rad(rng.uniform(5.0, 35.0))  # opened a bit past vertical, leaning back (+y)
    b.add("screen", upright.transformed(rotation_x(-tilt), (0, d / 2, t)))


BUILDERS: dict[str, Callable[[_Builder, np.random.Generator], None]] = {
    "airplane": _airplane, "bed": _bed, "bottle": _bottle, "cabinet": _cabinet, "car": _car,
    "chair": _chair, "guitar": _guitar, "lamp": _lamp, "laptop": _laptop, "mug": _mug, "shelf": _shelf,
    "sofa": _sofa, "table": _table,
}


def build_object_mesh(category: str, rng: np.random.Generator) -> LabeledMesh:
    """Metric, z-up mesh of one random `category` instance (labels: global part ids)."""
    builder = _Builder(CATEGORY_BY_NAME[category])
    BUILDERS[category](builder, rng)
    return builder.mesh()


def part_colors(category: str, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """One uniform colour per part of a shape (random hues, so colour alone never names a part)."""
    colors = {}
    for part_id in CATEGORY_BY_NAME[category].part_ids:
        h, s, v = rng.random(), rng.uniform(0.35, 0.8), rng.uniform(0.45, 0.95)
        colors[part_id] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255).astype(np.uint8)
    return colors


def _color_table(colors: dict[int, np.ndarray]) -> np.ndarray:
    table = np.zeros((NUM_PART_IDS, 3), np.uint8)
    for part_id, rgb in colors.items():
        table[part_id] = rgb
    return table


Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # (x, y, z) -> (x, z, -y)


@dataclass
class SyntheticObject:
    """One sampled shape: unit-sphere normalised, y up (ShapeNet / ModelNet / PartNet convention)."""

    category: str
    label: int  # index into CATEGORIES
    points: np.ndarray  # (N, 3) float32
    normals: np.ndarray  # (N, 3) float32, unit, outward
    colors: np.ndarray  # (N, 3) uint8, uniform per part
    part: np.ndarray  # (N,) int64 global part id
    part_instance: np.ndarray  # (N,) int64, 0..K-1 within the shape


def object_rng(seed: int, index: int) -> np.random.Generator:
    """Item `index`'s own stream: a shape depends on (seed, index) only, not on how many are made."""
    return np.random.default_rng([seed, 1, index])


def generate_object(category: str, rng: np.random.Generator, points: int = 2048) -> SyntheticObject:
    if category not in CATEGORY_BY_NAME:
        from pc3d.errors import InputError

        raise InputError(f"unknown object category '{category}' (choose from {', '.join(BUILDERS)})")
    mesh = build_object_mesh(category, rng)
    colors = part_colors(category, rng)
    xyz, normals, face = sample_surface(mesh, points, rng)
    part = mesh.label[face]
    xyz = (xyz - xyz.mean(axis=0)) @ Z_UP_TO_Y_UP.T
    xyz /= np.linalg.norm(xyz, axis=1).max()
    return SyntheticObject(
        category=category,
        label=[c.name for c in CATEGORIES].index(category),
        points=xyz.astype(np.float32),
        normals=(normals @ Z_UP_TO_Y_UP.T).astype(np.float32),
        colors=_color_table(colors)[part],
        part=part.astype(np.int64),
        part_instance=mesh.instance[face].astype(np.int64),
    )
