"""The synthetic generator's labels, checked against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.data.labels import SEMANTIC_KITTI_THINGS
from pc3d.data.synthetic.lidar import CLASS_COLORS, generate_lidar_sequence, lidar_rng
from pc3d.data.synthetic.objects import CATEGORIES, build_object_mesh, generate_object, object_rng
from pc3d.data.synthetic.scenes import generate_scene, scene_rng

# ShapeNetPart's official global part ids (PointNet++'s seg_classes table), typed in independently
SHAPENETPART_RANGES = {
    "airplane": {0, 1, 2, 3}, "car": {8, 9, 10, 11}, "chair": {12, 13, 14, 15}, "guitar": {19, 20, 21},
    "lamp": {24, 25, 26, 27}, "laptop": {28, 29}, "mug": {36, 37}, "table": {47, 48, 49},
}
CHAIR_LEG = 14


def test_at_least_ten_categories_with_their_own_part_ids():
    assert len(CATEGORIES) >= 10
    all_ids = [i for c in CATEGORIES for i in c.part_ids]
    assert len(all_ids) == len(set(all_ids))  # no part id shared by two categories


@pytest.mark.parametrize("index", range(6))
def test_every_chair_has_four_leg_instances(index):
    mesh = build_object_mesh("chair", object_rng(7, index))
    assert len(np.unique(mesh.instance[mesh.label == CHAIR_LEG])) == 4
    shape = generate_object("chair", object_rng(7, index), 2048)
    leg_instances = np.unique(shape.part_instance[shape.part == CHAIR_LEG])
    assert len(leg_instances) == 4
    for inst in leg_instances:  # each leg instance is one leg: a thin vertical strip of points
        legs = shape.points[shape.part_instance == inst]
        extent = legs.max(axis=0) - legs.min(axis=0)
        assert extent[1] > 2 * max(extent[0], extent[2])  # y is up in the stored shapes


@pytest.mark.parametrize("category", [c.name for c in CATEGORIES])
def test_object_parts_normals_colours_and_normalisation(category):
    shape = generate_object(category, object_rng(3, 0), 1024)
    parts = set(np.unique(shape.part).tolist())
    if category in SHAPENETPART_RANGES:
        assert parts <= SHAPENETPART_RANGES[category]
    else:
        assert min(parts) >= 50  # categories outside ShapeNetPart never reuse its 0..49
    assert len(parts) >= 2
    np.testing.assert_allclose(np.linalg.norm(shape.points, axis=1).max(), 1.0, atol=1e-6)
    np.testing.assert_allclose(shape.points.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(shape.normals, axis=1), 1.0, atol=1e-5)
    for part in parts:  # one uniform colour per part
        assert len(np.unique(shape.colors[shape.part == part], axis=0)) == 1
    assert shape.label == [c.name for c in CATEGORIES].index(category)


def test_objects_are_deterministic_per_seed():
    a = generate_object("lamp", object_rng(11, 4), 512)
    b = generate_object("lamp", object_rng(11, 4), 512)
    c = generate_object("lamp", object_rng(12, 4), 512)
    for name in ("points", "normals", "colors", "part", "part_instance"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.points, c.points)


def _overlap_volume(a: np.ndarray, b: np.ndarray) -> float:
    low = np.maximum(a[:3] - a[3:6] / 2, b[:3] - b[3:6] / 2)
    high = np.minimum(a[:3] + a[3:6] / 2, b[:3] + b[3:6] / 2)
    return float(np.prod(np.clip(high - low, 0, None)))


@pytest.mark.parametrize("index", range(3))
def test_scene_boxes_contain_their_points_and_never_overlap(index):
    scene = generate_scene(scene_rng(5, index), 8000)
    assert scene.points.shape == (8000, 3)
    assert {1, 2} <= set(np.unique(scene.semantic).tolist())  # walls and floor
    furniture = ~np.isin(scene.boxes[:, 6], [8, 9, 11])  # door, window, picture hang on the walls
    assert 5 <= furniture.sum() <= 20
    for box, inst in zip(scene.boxes, scene.box_instance, strict=True):
        mine = scene.points[scene.instance == inst]
        low, high = box[:3] - box[3:6] / 2 - 1e-5, box[:3] + box[3:6] / 2 + 1e-5
        for p in mine:  # a plain loop, independent of the generator's vectorised code
            assert all(low[k] <= p[k] <= high[k] for k in range(3))
        assert len(np.unique(scene.semantic[scene.instance == inst])) <= 1
        assert box[6] in (3, 4, 5, 6, 7, 8, 9, 10, 11)
    for box in scene.boxes[furniture]:  # furniture stands on the floor
        assert abs(box[2] - box[5] / 2) < 1e-9
    for i in range(len(scene.boxes)):
        for j in range(i + 1, len(scene.boxes)):
            assert _overlap_volume(scene.boxes[i], scene.boxes[j]) == 0.0


def test_scenes_are_deterministic_per_seed():
    a, b = generate_scene(scene_rng(1, 0), 2000), generate_scene(scene_rng(1, 0), 2000)
    c = generate_scene(scene_rng(2, 0), 2000)
    for name in ("points", "colors", "semantic", "instance", "boxes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.points, c.points)


@pytest.fixture(scope="module")
def lidar_frames():
    return generate_lidar_sequence(lidar_rng(0, 0), 2, rays_per_frame=64 * 600)


def test_lidar_streets_hold_the_unseen_classes_of_the_gzs_split():
    """Affinity3D's GZS setting labels motorcycle, truck, bicyclist and traffic-sign: the streets must show them
    to the scanner (signs at KITTI heights, within the 64 beams' field of view)."""
    frames = generate_lidar_sequence(lidar_rng(0, 0), 10, rays_per_frame=64 * 1800)
    seen = {int(c): int(sum((f.semantic == c).sum() for f in frames)) for c in (15, 18, 31, 81)}
    assert seen[18] > 1000 and seen[81] > 50 and seen[15] > 50, seen  # truck, traffic-sign, motorcycle
    sequences = [generate_lidar_sequence(lidar_rng(seed, 0), 1, rays_per_frame=64 * 600) for seed in range(1, 5)]
    assert sum(int((s[0].semantic == 31).sum()) for s in sequences) > 0  # bicyclists: oncoming, in some streets


def test_lidar_scan_labels_and_intensity(lidar_frames):
    frame = lidar_frames[0]
    assert frame.points.shape[0] > 0.8 * 64 * 600
    assert {40, 48, 50, 10}.issubset(set(np.unique(frame.semantic).tolist()))
    things = np.isin(frame.semantic, sorted(SEMANTIC_KITTI_THINGS))  # car, bicycle, motorcycle, truck, people
    assert (frame.instance[things] > 0).all() and (frame.instance[~things] == 0).all()
    assert frame.intensity.min() >= 0 and frame.intensity.max() < 1
    # 64 beams: the elevation angles of the returns fall into 64 clusters within +2 .. -24.9 degrees
    elevation = np.degrees(np.arcsin(frame.points[:, 2] / np.linalg.norm(frame.points, axis=1)))
    assert elevation.max() < 2.2 and elevation.min() > -24.6
    road = frame.semantic == 40
    np.testing.assert_allclose(frame.points[road, 2], -1.73, atol=0.06)  # road under a 1.73 m high sensor


def test_lidar_points_project_onto_what_the_camera_sees(lidar_frames):
    for frame in lidar_frames:
        height, width = frame.image.shape[:2]
        projection = frame.calib["P2"] @ frame.calib["Tr"]
        homogeneous = np.hstack([frame.points, np.ones((len(frame.points), 1))]) @ projection.T
        depth = homogeneous[:, 2]
        front = depth > 0.5
        u = np.rint(homogeneous[front, 0] / depth[front]).astype(int)
        v = np.rint(homogeneous[front, 1] / depth[front]).astype(int)
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        assert inside.sum() > 1000 and (~front).sum() > 1000  # a 360-degree scan, a forward camera
        u, v, z = u[inside], v[inside], depth[front][inside]
        semantic = frame.semantic[front][inside]
        seen = np.abs(frame.image_depth[v, u] - z) < 0.03 * z + 0.1  # not hidden behind something nearer
        assert seen.mean() > 0.9  # a 20-pixel calibration error drops this to ~0.6
        assert (frame.image_semantic[v, u][seen] == semantic[seen]).mean() > 0.98
        pixel = frame.image[v, u][seen].astype(np.float64)
        expected = np.array([CLASS_COLORS[int(s)] for s in semantic[seen]], dtype=np.float64)
        norms = np.linalg.norm(pixel, axis=1) * np.linalg.norm(expected, axis=1)
        cosine = (pixel * expected).sum(1) / norms
        assert (cosine > 0.99).mean() > 0.95  # shaded versions of the point's class colour


def test_lidar_is_deterministic_per_seed():
    a = generate_lidar_sequence(lidar_rng(4, 0), 1, rays_per_frame=64 * 100, image_size=(40, 120))[0]
    b = generate_lidar_sequence(lidar_rng(4, 0), 1, rays_per_frame=64 * 100, image_size=(40, 120))[0]
    c = generate_lidar_sequence(lidar_rng(5, 0), 1, rays_per_frame=64 * 100, image_size=(40, 120))[0]
    for name in ("points", "intensity", "semantic", "instance", "image"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.points.shape != c.points.shape or not np.array_equal(a.points, c.points)
