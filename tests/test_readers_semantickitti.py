"""SemanticKITTI reader on a tiny synthetic sequence in the real layout."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.data.readers import semantickitti as sk
from pc3d.errors import InputError


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    from pc3d.data import layouts
    from pc3d.data.synthetic.lidar import generate_lidar_sequence, lidar_rng

    frames = generate_lidar_sequence(lidar_rng(0, 0), 2, 64 * 60, (47, 155))
    return layouts.write_semantickitti(tmp_path_factory.mktemp("kitti"), [frames])


def test_learning_map_split_and_weights():
    raw = np.array([0, 10, 252, 15, 18, 31, 81, 40, 60, 99, 5000])
    assert sk.map_labels(raw).tolist() == [0, 1, 1, 3, 4, 7, 19, 9, 9, 0, 0]
    assert sk.map_labels(sk.unmap_labels(np.arange(20))).tolist() == list(range(20))
    assert sk.zero_shot_labels(np.array([1, 3, 4, 7, 19, 9])).tolist() == [1, 0, 0, 0, 0, 9]
    assert len(sk.SEEN_CLASSES) == 15 and set(sk.UNSEEN_CLASSES) == {3, 4, 7, 19}
    counts = np.zeros(20)
    counts[[0, 1, 2]] = [100, 80, 10]
    weights = sk.class_weights(counts)
    assert weights[0] == 0 and weights[1] == pytest.approx(1.0) and weights[2] == pytest.approx(8 ** (1 / 3))


def test_projection_matches_hand_computed_pixel():
    proj = np.array([[700.0, 0.0, 600.0, 45.0], [0.0, 700.0, 180.0, -0.3], [0.0, 0.0, 1.0, 0.005]])
    tr = np.eye(4)
    tr[:3, :3] = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
    full = proj @ tr
    point = np.array([[10.0, 1.0, -0.5]])  # velodyne: 10 m ahead, 1 m left, 0.5 m down
    # camera: x = -1, y = 0.5, z = 10 -> q = (700*-1 + 600*10 + 45, 700*0.5 + 180*10 - 0.3, 10.005)
    u, v = (5345.0 / 10.005, 2149.7 / 10.005)
    view = sk.front_view(point, full, (376, 1241))
    assert view.index.tolist() == [0]
    assert np.allclose(view.uv[0], [u, v]) and view.depth[0] == pytest.approx(10.005)
    assert sk.front_view(np.array([[-10.0, 1.0, -0.5]]), full, (376, 1241)).index.size == 0


def test_reader_settings(kitti_root):
    full = sk.SemanticKITTI(kitti_root, ["00"], "full", with_image=True)
    gzs = sk.SemanticKITTI(kitti_root, ["0"], "gzs")
    free = sk.SemanticKITTI(kitti_root, ["00"], "annotation-free")
    assert len(full) == 2
    a, b, c = full[1], gzs[1], free[1]
    assert a["points"].dtype == np.float32 and a["points"].shape[1] == 3 and len(a["intensity"]) == len(a["points"])
    assert np.array_equal(b["labels"], sk.zero_shot_labels(a["gt"])) and "labels" not in c
    assert a["image"].shape == (47, 155, 3)
    proj = a["proj"]
    q = np.c_[a["points"][a["fov_index"]], np.ones(len(a["fov_index"]))] @ proj.T
    assert np.allclose(a["fov_uv"], q[:, :2] / q[:, 2:], atol=1e-4)
    front = sk.SemanticKITTI(kitti_root, ["00"], "full", front_view_only=True)[1]
    assert len(front["points"]) == len(a["fov_index"]) and len(front["fov_index"]) == len(front["points"])
    with pytest.raises(InputError):
        sk.SemanticKITTI(kitti_root, ["05"])
    with pytest.raises(InputError):
        sk.SemanticKITTI(kitti_root.parent / "nothing", ["00"])
