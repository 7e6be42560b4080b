"""The numpy ray caster against open3d's RaycastingScene, and the LiDAR synthesis without open3d."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pc3d.data.synthetic.mesh import box, concat, cone, cylinder, ellipsoid, quad, torus
from pc3d.data.synthetic.raycast import INVALID_ID, RayCaster

LIDAR_ARGS = {"frames": 1, "rays_per_frame": 64 * 400, "image_size": (40, 132)}


def small_scene():
    """A few metres of primitives: a ground quad, boxes (one thin), cylinders, a cone, a sphere, a torus."""
    return concat([
        quad((-4, -4, 0), (8, 0, 0), (0, 8, 0), 1, 0),
        box((1.5, 0.5, 0.5), (1.0, 0.8, 1.0), 2, 1),
        box((-1.0, 2.0, 0.02), (2.0, 0.02, 0.04), 3, 2),
        cylinder((-1.5, -1.5, 0), (-1.5, -1.5, 2.0), 0.3, 4, 3, resolution=16),
        cylinder((0.0, -2.0, 0.5), (1.0, -2.5, 1.5), 0.1, 4, 4, resolution=6, caps="start"),
        cone((2.0, -1.5, 0.0), (2.0, -1.5, 1.2), 0.4, 5, 5, resolution=20),
        ellipsoid((-2.0, 1.0, 1.0), (0.5, 0.4, 0.6), 6, 6, resolution=12),
        torus((0.5, 2.5, 0.6), (0, 1, 0), 0.4, 0.05, 7, 7, radial=16, tubular=6),
    ])


def scene_rays(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rays from several eyes in random directions (not unit length), plus axis-parallel ones."""
    eyes = np.array([[0.0, 0.0, 1.5], [5.0, 1.0, 2.0], [-3.0, -3.5, 0.4], [0.3, 0.2, 0.6]])
    directions = rng.normal(size=(len(eyes), 5000, 3)) * rng.uniform(0.5, 2.0, (len(eyes), 5000, 1))
    axes = np.concatenate([np.eye(3), -np.eye(3)])
    directions[:, :6] = axes
    origins = np.broadcast_to(eyes[:, None, :], directions.shape)
    return origins.reshape(-1, 3), directions.reshape(-1, 3)


def test_matches_open3d_raycasting_scene():
    o3d = pytest.importorskip("open3d")
    import open3d.core as o3c

    mesh = small_scene()
    origins, directions = scene_rays(np.random.default_rng(0))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3c.Tensor(mesh.vertices.astype(np.float32)), o3c.Tensor(mesh.faces.astype(np.uint32)))
    result = scene.cast_rays(o3c.Tensor(np.hstack([origins, directions]).astype(np.float32)))
    t_ref = result["t_hit"].numpy().astype(np.float64)
    id_ref = result["primitive_ids"].numpy().astype(np.int64)
    normal_ref = result["primitive_normals"].numpy().astype(np.float64)

    t_hit, ids, normals = RayCaster(mesh.vertices, mesh.faces).cast_rays(origins, directions)
    hit = np.isfinite(t_ref)
    assert 0.2 < hit.mean() < 0.9  # the scene is neither empty nor closed around the eyes
    np.testing.assert_array_equal(np.isfinite(t_hit), hit)
    np.testing.assert_allclose(t_hit[hit], t_ref[hit], rtol=0, atol=1e-5)
    assert (ids[~hit] == INVALID_ID).all() and (id_ref[~hit] == INVALID_ID).all()
    assert (ids == id_ref).mean() >= 0.999  # a ray through a shared edge may report either triangle
    same = hit & (ids == id_ref)
    assert np.einsum("ij,ij->i", normals[same], normal_ref[same]).min() > 0.9999  # same side, too


def test_single_origin_and_chunks_agree():
    """One (3,) origin broadcasts; the chunk size changes nothing."""
    mesh = small_scene()
    caster = RayCaster(mesh.vertices, mesh.faces)
    _, directions = scene_rays(np.random.default_rng(1))
    eye = np.array([0.0, 0.0, 1.5])
    whole = caster.cast_rays(eye, directions)
    chunked = caster.cast_rays(np.broadcast_to(eye, directions.shape), directions, chunk=777)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    # straight down from above the ground quad hits it at the height
    t_hit, ids, normals = caster.cast_rays(np.array([[3.5, 3.5, 2.0]]), np.array([[0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(t_hit, [2.0], atol=1e-6)
    assert ids[0] in (0, 1) and abs(normals[0, 2]) == pytest.approx(1.0)


_HIDDEN = """
import json, sys
sys.modules["open3d"] = None  # any `import open3d` now raises ImportError
import numpy as np
from pc3d.data.synthetic.lidar import generate_lidar_sequence, lidar_rng
args = json.loads(sys.argv[1])
frame = generate_lidar_sequence(lidar_rng(0, 0), args["frames"], args["rays_per_frame"],
                                tuple(args["image_size"]))[0]
print(json.dumps({"points": len(frame.points), "classes": np.unique(frame.semantic).tolist(),
                  "sky": float((frame.image_semantic == 0).mean())}))
"""


@pytest.fixture(scope="module")
def hidden_run() -> dict:
    done = subprocess.run([sys.executable, "-c", _HIDDEN, json.dumps(LIDAR_ARGS)], check=True,
                          capture_output=True, text=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_lidar_synth_without_open3d(hidden_run):
    assert hidden_run["points"] > 0.5 * LIDAR_ARGS["rays_per_frame"]
    assert len(hidden_run["classes"]) >= 4
    assert 0.0 < hidden_run["sky"] < 1.0


def test_lidar_synth_without_open3d_matches_open3d(hidden_run, monkeypatch):
    pytest.importorskip("open3d")
    from pc3d.data.synthetic.lidar import generate_lidar_sequence, lidar_rng

    frame = generate_lidar_sequence(lidar_rng(0, 0), LIDAR_ARGS["frames"], LIDAR_ARGS["rays_per_frame"],
                                    LIDAR_ARGS["image_size"])[0]
    assert abs(hidden_run["points"] - len(frame.points)) <= 0.01 * len(frame.points)
    assert hidden_run["classes"] == np.unique(frame.semantic).tolist()


# ---------------------------------------------------------------- PartSTAD's normals without open3d
# (the other open3d stand-in on a quickstart path; kept here with the ray caster's open3d comparisons)


def normal_clouds() -> list[np.ndarray]:
    from pc3d.data.synthetic.objects import generate_object, object_rng

    rng = np.random.default_rng(2)
    clouds = []
    for index, category in enumerate(["chair", "lamp", "airplane"]):
        points = np.asarray(generate_object(category, object_rng(0, index), 6000).points, dtype=np.float64)
        points = (points - points.mean(0)) / np.abs(points - points.mean(0)).max()
        clouds.append(points)
    clouds.append(clouds[0] + rng.normal(0, 0.004, clouds[0].shape))  # noisy: no exact planes
    return clouds


@pytest.mark.parametrize("radius, max_nn", [(0.1, 30), (0.04, 16), (0.02, 50)])
def test_normals_match_open3d_up_to_sign(radius, max_nn):
    o3d = pytest.importorskip("open3d")
    from pc3d.ops.normals import estimate_normals_hybrid

    for points in normal_clouds():
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=max_nn))
        ours = estimate_normals_hybrid(points, radius, max_nn)
        cosine = np.abs(np.einsum("ij,ij->i", np.asarray(cloud.normals), ours))
        assert (cosine > 0.999).mean() >= 0.99


def test_normals_fallback_and_partstad_orientation(monkeypatch):
    """Isolated points get open3d's +z; PartSTAD's centroid rule orients both implementations alike."""
    from pc3d.methods.partstad_superpoints import estimate_normals
    from pc3d.ops.normals import estimate_normals_hybrid

    lonely = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    np.testing.assert_array_equal(estimate_normals_hybrid(lonely, 0.5, 30), np.tile([0.0, 0.0, 1.0], (3, 1)))
    points = normal_clouds()[0]
    monkeypatch.setenv("PC3D_NO_OPEN3D", "1")
    ours = estimate_normals(points, 0.1, 30)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-9)
    pytest.importorskip("open3d")
    monkeypatch.setenv("PC3D_NO_OPEN3D", "0")
    theirs = estimate_normals(points, 0.1, 30)
    assert (np.einsum("ij,ij->i", ours, theirs) > 0.999).mean() >= 0.99
