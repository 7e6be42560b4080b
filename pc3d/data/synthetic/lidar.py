"""Procedural street scenes scanned by a simulated 64-beam spinning LiDAR and seen by a pinhole camera.

The street (road, sidewalks, terrain, buildings, parked and oncoming cars and trucks, poles with traffic
signs, trees, pedestrians, parked bicycles and motorcycles, bicyclists) is one labelled mesh in the velodyne frame of
the sequence's first scan (x forward, y left, z up, sensor 1.73 m above the road). Each frame
moves the ego vehicle forward and casts rays (with open3d's RaycastingScene, or without open3d with
pc3d.data.synthetic.raycast, which agrees with it to float32 rounding): 64 beams over the
HDL-64E's vertical field of view for the scan, one ray per pixel for the camera image, the
camera being exactly the one the KITTI calibration (P2 @ Tr) describes. Labels are SemanticKITTI
ids; things (cars, trucks, people, bicycles, motorcycles, bicyclists) carry instance ids unique within the
sequence. Every class of the generalised zero-shot split's unseen four (motorcycle, truck, bicyclist,
traffic-sign) occurs, at the heights and sizes a 64-beam scan hits (signs 2-3.5 m above the walk, as on
KITTI's streets), so Affinity3D's GZS setting has unseen objects to label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pc3d.data.labels import SEMANTIC_KITTI_IDS as KITTI
from pc3d.data.synthetic.mesh import LabeledMesh, box, concat, cylinder, ellipsoid, quad, torus
from pc3d.data.synthetic.objects import build_object_mesh
from pc3d.data.synthetic.raycast import RayCaster
from pc3d.optional import open3d_or_none

SENSOR_HEIGHT = 1.73
IMAGE_SIZE = (375, 1242)  # KITTI's (height, width)
MAX_RANGE = 120.0
FRAME_STEP = 1.5  # metres the ego vehicle drives between scans
LANE_OFFSET = 1.0  # lane centres: y = -1 (ego, right-hand traffic), y = +1 (oncoming); parked beyond
# HDL-64E: an upper block of 32 lasers (+2 deg .. -8.33 deg) and a lower one (-8.83 deg .. -24.33 deg)
BEAM_ELEVATIONS_DEG = np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.33, 32)])

# per-class camera colour and LiDAR reflectivity
CLASS_COLORS: dict[int, tuple[int, int, int]] = {
    KITTI["road"]: (90, 90, 96), KITTI["sidewalk"]: (190, 175, 160), KITTI["terrain"]: (140, 170, 80),
    KITTI["building"]: (190, 120, 90), KITTI["car"]: (40, 80, 200), KITTI["pole"]: (200, 200, 60),
    KITTI["traffic-sign"]: (230, 40, 40), KITTI["vegetation"]: (40, 150, 40), KITTI["trunk"]: (120, 80, 40),
    KITTI["person"]: (230, 60, 200), KITTI["bicycle"]: (60, 220, 220), KITTI["bicyclist"]: (250, 150, 30),
    KITTI["truck"]: (235, 235, 225), KITTI["motorcycle"]: (30, 30, 30),
}
REFLECTIVITY: dict[int, float] = {
    KITTI["road"]: 0.22, KITTI["sidewalk"]: 0.3, KITTI["terrain"]: 0.35, KITTI["building"]: 0.4,
    KITTI["car"]: 0.45, KITTI["pole"]: 0.5, KITTI["traffic-sign"]: 0.95, KITTI["vegetation"]: 0.35,
    KITTI["trunk"]: 0.3, KITTI["person"]: 0.3, KITTI["bicycle"]: 0.45, KITTI["bicyclist"]: 0.35,
    KITTI["truck"]: 0.5, KITTI["motorcycle"]: 0.4,
}
SKY_TOP, SKY_HORIZON = np.array([110.0, 160.0, 225.0]), np.array([200.0, 220.0, 240.0])
SUN = np.array([0.3, -0.4, 0.85]) / np.linalg.norm([0.3, -0.4, 0.85])


def kitti_calibration(image_size: tuple[int, int] = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """P0..P3 (3x4, rectified cameras of a KITTI-like rig) and Tr (4x4 velodyne -> camera 0).

    Camera 2 (the left colour camera, image_2) sits 6 cm left of camera 0; the velodyne is 27 cm
    behind and 8 cm above the cameras, axes turned from (forward, left, up) to (right, down, forward)."""
    height, width = image_size
    focal = 720.0 * width / IMAGE_SIZE[1]
    intrinsics = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])

    def projection(baseline_x: float) -> np.ndarray:
        # P = K [I | t], t = camera 0's position in the rectified camera's frame
        return intrinsics @ np.hstack([np.eye(3), [[baseline_x], [0.0], [0.0]]])

    tr = np.eye(4)
    tr[:3, :3] = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
    tr[:3, 3] = [0.0, -0.08, -0.27]
    return {"P0": projection(0.0), "P1": projection(-0.54), "P2": projection(0.06), "P3": projection(-0.48),
            "Tr": tr}


@dataclass
class LidarFrame:
    points: np.ndarray  # (N, 3) float32 in this scan's velodyne frame
    intensity: np.ndarray  # (N,) float32 remission in 0..1
    semantic: np.ndarray  # (N,) int64 SemanticKITTI id
    instance: np.ndarray  # (N,) int64, 0 for stuff
    image: np.ndarray  # (H, W, 3) uint8 camera-2 image
    image_semantic: np.ndarray  # (H, W) int64 class seen by each pixel (0 = sky)
    image_depth: np.ndarray  # (H, W) float32 camera-z depth of each pixel's hit (inf = sky)
    calib: dict[str, np.ndarray]  # P0..P3 3x4, Tr 4x4 (velodyne -> camera 0)
    pose: np.ndarray  # (4, 4) camera-0 pose in the first frame's camera-0 frame (poses.txt)


def lidar_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, 3, index])


class _Slots:
    """1-D interval bookkeeping along x for one line of the street (no two objects overlap)."""

    def __init__(self) -> None:
        self.taken: list[tuple[float, float]] = []

    def take(self, low: float, high: float, gap: float = 0.5) -> bool:
        if any(low < b + gap and a < high + gap for a, b in self.taken):
            return False
        self.taken.append((low, high))
        return True


def _person(x: float, y: float, ground: float, rng: np.random.Generator, label: int,
            inst: int) -> LabeledMesh:
    height = rng.uniform(1.55, 1.9)
    legs = box((x, y, ground + height * 0.24), (0.22, 0.3, height * 0.48), 0, 0)
    torso = cylinder((x, y, ground + height * 0.46), (x, y, ground + height * 0.84), 0.18, 0, 0,
                     resolution=10)
    head = ellipsoid((x, y, ground + height * 0.92), (0.1, 0.1, 0.12), 0, 0, resolution=8)
    return concat([legs, torso, head]).relabeled(label, inst)


def _bicycle(x: float, y: float, ground: float, label: int, inst: int) -> LabeledMesh:
    r = 0.33
    wheels = [torus((x + dx, y, ground + r), (0, 1, 0), r, 0.03, 0, 0, radial=16, tubular=6)
              for dx in (-0.5, 0.5)]
    frame = [cylinder((x - 0.5, y, ground + r), (x, y, ground + 0.75), 0.025, 0, 0, resolution=6),
             cylinder((x, y, ground + 0.75), (x + 0.5, y, ground + r), 0.025, 0, 0, resolution=6),
             cylinder((x - 0.15, y, ground + 0.8), (x + 0.35, y, ground + 0.85), 0.025, 0, 0, resolution=6)]
    return concat(wheels + frame).relabeled(label, inst)


def _motorcycle(x: float, y: float, ground: float, inst: int) -> LabeledMesh:
    r = 0.3
    wheels = [torus((x + dx, y, ground + r), (0, 1, 0), r, 0.07, 0, 0, radial=16, tubular=6) for dx in (-0.7, 0.7)]
    body = box((x, y, ground + 0.7), (1.1, 0.35, 0.45), 0, 0)
    seat = box((x - 0.3, y, ground + 0.95), (0.6, 0.3, 0.1), 0, 0)
    bars = cylinder((x + 0.6, y - 0.35, ground + 1.05), (x + 0.6, y + 0.35, ground + 1.05), 0.025, 0, 0,
                    resolution=6)
    return concat([*wheels, body, seat, bars]).relabeled(KITTI["motorcycle"], inst)


def _truck(rng: np.random.Generator) -> LabeledMesh:
    """A box truck facing +x with its rear at x = 0, centred on y = 0, wheels on z = 0 (unlabelled: the caller
    labels it with its instance id, as build_object_mesh's cars)."""
    cab_len, cargo_len, width = rng.uniform(1.8, 2.3), rng.uniform(4.5, 7.0), rng.uniform(2.3, 2.5)
    cargo_h, r = rng.uniform(2.8, 3.5), 0.5
    cargo = box((cargo_len / 2, 0, 0.9 + cargo_h / 2), (cargo_len, width, cargo_h), 0, 0)
    cab = box((cargo_len + 0.2 + cab_len / 2, 0, 0.6 + 1.3), (cab_len, width * 0.95, 2.6), 0, 0)
    wheels = [cylinder((wx, -width / 2 - 0.02, r), (wx, width / 2 + 0.02, r), r, 0, 0, resolution=12)
              for wx in (0.9, cargo_len - 0.6, cargo_len + 0.2 + cab_len * 0.6)]
    return concat([cargo, cab, *wheels])


def build_street(rng: np.random.Generator, length: float) -> tuple[LabeledMesh, float]:
    """The sequence's street mesh from x = -70 to `length` + 70 (face labels: SemanticKITTI ids) and
    the road's width (the road spans |y| < width / 2)."""
    x0, x1 = -70.0, length + 70.0
    g = -SENSOR_HEIGHT
    road_w, walk_w, verge_w = rng.uniform(8.0, 11.0), rng.uniform(2.0, 3.5), rng.uniform(0.0, 3.0)
    half = road_w / 2
    parts = [quad((x0, -half, g), (x1 - x0, 0, 0), (0, road_w, 0), KITTI["road"], 0)]
    next_instance = [1]

    def new_instance() -> int:
        next_instance[0] += 1
        return next_instance[0] - 1

    curb = 0.15
    slots: dict[str, _Slots] = {}
    for side in (-1, 1):
        parts.append(box((0.5 * (x0 + x1), side * (half + walk_w / 2), g + curb / 2), (x1 - x0, walk_w, curb),
                         KITTI["sidewalk"], 0))
        verge_mid = half + walk_w + verge_w / 2
        if verge_w > 0.2:
            parts.append(quad((x0, side * verge_mid - verge_w / 2, g + 0.05), (x1 - x0, 0, 0),
                              (0, verge_w, 0), KITTI["terrain"], 0))
        # buildings: a row of blocks with gaps, set back behind the verge
        x = x0
        front = half + walk_w + verge_w
        while x < x1:
            block, depth, tall = rng.uniform(8.0, 25.0), rng.uniform(8.0, 15.0), rng.uniform(5.0, 20.0)
            parts.append(box((x + block / 2, side * (front + depth / 2), g + tall / 2), (block, depth, tall),
                             KITTI["building"], 0))
            x += block + rng.uniform(0.0, 6.0)
        for line in ("parked", "curb", "walk", "verge"):
            slots[f"{line}{side}"] = _Slots()
        # parked cars along the curb
        x = x0 + rng.uniform(0, 8)
        while x < x1 - 6:
            if rng.random() < 0.35:
                truck = rng.random() < 0.125
                car = _truck(rng) if truck else build_object_mesh("car", rng)
                if rng.random() < 0.5:  # parked facing either way
                    car = car.transformed(np.diag([-1.0, -1.0, 1.0]))
                low, high = car.bounds
                center_y = side * (half - (1.3 if truck else 1.1)) - (low[1] + high[1]) / 2
                car = car.transformed(translation=(x - low[0], center_y, g))
                slots[f"parked{side}"].take(x, x + high[0] - low[0])
                parts.append(car.relabeled(KITTI["truck" if truck else "car"], new_instance()))
                x += high[0] - low[0]
            x += rng.uniform(1.0, 6.0)
        # poles (some carrying a sign) and trees on the curb line, people and bicycles on the walk
        curb_y = side * (half + 0.5)
        for _ in range(int((x1 - x0) / 12)):
            x = rng.uniform(x0, x1)
            if rng.random() < 0.5:
                if not slots[f"curb{side}"].take(x - 0.2, x + 0.2, gap=1.0):
                    continue
                if rng.random() < 0.6:  # a sign post: the sign 2-3.5 m above the walk, the post ending just above
                    size = (0.04, rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9))
                    sign_z = g + curb + rng.uniform(2.0, 3.5)
                    top = sign_z + size[2] / 2 + rng.uniform(0.0, 0.3)
                    parts.append(box((x - 0.06, curb_y, sign_z), size, KITTI["traffic-sign"], 0))
                else:  # a lamp post
                    top = g + curb + rng.uniform(4.0, 7.0)
                parts.append(cylinder((x, curb_y, g + curb), (x, curb_y, top), rng.uniform(0.07, 0.12),
                                      KITTI["pole"], 0, resolution=10))
            else:
                if not slots[f"curb{side}"].take(x - 2.0, x + 2.0, gap=1.0):
                    continue
                trunk_top = g + curb + rng.uniform(2.0, 3.5)
                parts.append(cylinder((x, curb_y, g + curb), (x, curb_y, trunk_top), rng.uniform(0.12, 0.25),
                                      KITTI["trunk"], 0, resolution=10))
                crown = rng.uniform(1.2, 2.0)
                parts.append(ellipsoid((x, curb_y, trunk_top + crown * 0.8), (crown, crown, crown * 1.1),
                                       KITTI["vegetation"], 0, resolution=10))
        walk_y = side * (half + walk_w * 0.65)
        for _ in range(int((x1 - x0) / 15)):
            x = rng.uniform(x0, x1)
            if not slots[f"walk{side}"].take(x - 0.8, x + 0.8):
                continue
            kind = rng.random()
            if kind < 0.55:
                parts.append(_person(x, walk_y, g + curb, rng, KITTI["person"], new_instance()))
            elif kind < 0.8:
                parts.append(_bicycle(x, walk_y, g + curb, KITTI["bicycle"], new_instance()))
            else:
                parts.append(_motorcycle(x, walk_y, g + curb, new_instance()))
        if verge_w > 1.0:  # hedges on the verge
            for _ in range(int((x1 - x0) / 25)):
                x = rng.uniform(x0, x1)
                if slots[f"verge{side}"].take(x - 2, x + 2):
                    parts.append(box((x, side * verge_mid, g + 0.5), (4.0, min(verge_w, 1.2), 0.9),
                                     KITTI["vegetation"], 0))
    # oncoming traffic (cars, trucks) and bicyclists in the left lane (the ego drives in the right one,
    # y = -LANE_OFFSET)
    lane = _Slots()
    for _ in range(int((x1 - x0) / 20)):
        x = rng.uniform(x0, x1)
        kind = rng.random()
        if kind < 0.75:
            truck = kind < 0.15
            car = _truck(rng) if truck else build_object_mesh("car", rng)
            low, high = car.bounds
            if lane.take(x, x + high[0] - low[0], gap=3.0):
                car = car.transformed(np.diag([-1.0, -1.0, 1.0]), (x + high[0], LANE_OFFSET, g))
                parts.append(car.relabeled(KITTI["truck" if truck else "car"], new_instance()))
        elif lane.take(x - 0.9, x + 0.9, gap=3.0):
            inst = new_instance()
            parts.append(_bicycle(x, LANE_OFFSET, g, KITTI["bicyclist"], inst))
            parts.append(_person(x, LANE_OFFSET, g + 0.45, rng, KITTI["bicyclist"], inst))
    return concat(parts), road_w


class _Caster:
    """Ray casting into the street; cast() returns hit distance, face index (-1: miss) and face normal.

    open3d's RaycastingScene (Embree) when open3d is there, being ~15x faster; otherwise the numpy BVH
    of pc3d.data.synthetic.raycast, so the LiDAR data needs no open3d (set PC3D_NO_OPEN3D=1 to force it)."""

    def __init__(self, mesh: LabeledMesh) -> None:
        o3d = open3d_or_none()
        self.numpy: RayCaster | None = None
        if o3d is None:
            self.numpy = RayCaster(mesh.vertices, mesh.faces)
            return
        import open3d.core as o3c

        self._o3c = o3c
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3c.Tensor(mesh.vertices.astype(np.float32)),
                                 o3c.Tensor(mesh.faces.astype(np.uint32)))

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.numpy is not None:
            t_hit, face, normals = self.numpy.cast_rays(origins, directions)
        else:
            rays = np.hstack([np.broadcast_to(origins, directions.shape), directions]).astype(np.float32)
            result = self.scene.cast_rays(self._o3c.Tensor(rays))
            t_hit = result["t_hit"].numpy().astype(np.float64)
            face = result["primitive_ids"].numpy().astype(np.int64)
            normals = result["primitive_normals"].numpy().astype(np.float64)
        face[~np.isfinite(t_hit)] = -1
        return t_hit, face, normals


def scan(caster: _Caster, mesh: LabeledMesh, ego: np.ndarray, columns: int, rng: np.random.Generator
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One 360-degree sweep from the sensor at `ego`: points (sensor frame), intensity, semantic, instance."""
    elevation = np.deg2rad(BEAM_ELEVATIONS_DEG)[:, None]
    azimuth = np.linspace(np.pi, -np.pi, columns, endpoint=False)[None, :]  # spins clockwise from behind
    directions = np.stack(np.broadcast_arrays(
        np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)), axis=-1)
    directions = directions.reshape(-1, 3)
    t_hit, face, normals = caster.cast(ego, directions)
    keep = (face >= 0) & (t_hit < MAX_RANGE)
    distance = t_hit[keep] + rng.normal(0.0, 0.01, int(keep.sum()))  # range noise
    rays = directions[keep]
    points = rays * distance[:, None]
    semantic = mesh.label[face[keep]]
    instance = mesh.instance[face[keep]]
    cosine = np.abs(np.einsum("ij,ij->i", normals[keep], rays))
    reflect = np.array([REFLECTIVITY.get(int(s), 0.3) for s in range(semantic.max() + 1)])[semantic]
    intensity = reflect * (0.4 + 0.6 * cosine) * np.exp(-distance / 200.0)
    intensity += rng.normal(0, 0.02, len(distance))
    return points.astype(np.float32), np.clip(intensity, 0.0, 0.99).astype(np.float32), semantic, instance


def render_camera(caster: _Caster, mesh: LabeledMesh, velo_to_image: np.ndarray, ego: np.ndarray,
                  image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast the pinhole camera whose projection (velodyne -> pixels) is `velo_to_image` (3x4).

    Pixel (row v, column u) looks through image point (u, v): pixel centres sit at integer coordinates,
    so a point that projects to (u, v) lands in pixel (round(v), round(u))."""
    height, width = image_size
    a, b = velo_to_image[:, :3], velo_to_image[:, 3]
    center = -np.linalg.solve(a, b) + ego  # camera centre in the street frame
    v, u = np.mgrid[0:height, 0:width]
    pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1).astype(np.float64)
    directions = np.linalg.solve(a, pixels.T).T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    t_hit, face, normals = caster.cast(center, directions)
    hit = face >= 0
    semantic = np.zeros(u.size, np.int64)
    semantic[hit] = mesh.label[face[hit]]
    depth = np.full(u.size, np.inf)
    # camera z of the hit = third row of the projection applied to the hit point (P's last row is [0 0 1 0])
    hits = center + directions[hit] * t_hit[hit, None] - ego
    depth[hit] = hits @ a[2] + b[2]
    palette = np.zeros((max(CLASS_COLORS) + 1, 3))
    for label, rgb in CLASS_COLORS.items():
        palette[label] = rgb
    facing = np.where(np.einsum("ij,ij->i", normals[hit], directions[hit])[:, None] > 0, -1.0, 1.0)
    shade = 0.4 + 0.6 * np.clip((normals[hit] * facing) @ SUN, 0.0, 1.0)
    rgb = np.empty((u.size, 3))
    rgb[hit] = palette[semantic[hit]] * shade[:, None]
    sky = v.ravel()[~hit] / max(height - 1, 1)
    rgb[~hit] = SKY_TOP + (SKY_HORIZON - SKY_TOP) * sky[:, None]
    image = np.clip(np.round(rgb), 0, 255).astype(np.uint8).reshape(height, width, 3)
    return image, semantic.reshape(height, width), depth.astype(np.float32).reshape(height, width)


def generate_lidar_sequence(rng: np.random.Generator, frames: int, rays_per_frame: int = 64 * 1800,
                            image_size: tuple[int, int] = IMAGE_SIZE) -> list[LidarFrame]:
    """`frames` consecutive scans (the ego drives FRAME_STEP metres between them) of one street."""
    mesh, _ = build_street(rng, FRAME_STEP * frames)
    caster = _Caster(mesh)
    calib = kitti_calibration(image_size)
    tr = calib["Tr"]
    velo_to_image = calib["P2"] @ tr
    columns = max(1, rays_per_frame // len(BEAM_ELEVATIONS_DEG))
    lane_y = -LANE_OFFSET
    out = []
    for k in range(frames):
        ego = np.array([FRAME_STEP * k, lane_y, 0.0])
        points, intensity, semantic, instance = scan(caster, mesh, ego, columns, rng)
        image, image_semantic, image_depth = render_camera(caster, mesh, velo_to_image, ego, image_size)
        motion = np.eye(4)
        motion[:3, 3] = ego - np.array([0.0, lane_y, 0.0])  # velodyne frame k -> frame 0
        pose = tr @ motion @ np.linalg.inv(tr)
        out.append(LidarFrame(points, intensity, semantic, instance, image, image_semantic, image_depth,
                              {key: value.copy() for key, value in calib.items()}, pose))
    return out
