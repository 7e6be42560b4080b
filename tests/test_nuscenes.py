"""nuScenes-lidarseg reader on a tiny fixture in the dataset's real layout (json tables + .pcd.bin / _lidarseg.bin)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pc3d.data.readers.nuscenes import NUSCENES_CLASSES, NUSCENES_SPLITS, NuScenesLidarSeg, NuScenesScenes
from pc3d.errors import InputError

VERSION = "v1.0-trainval"
# (category index, name) of the real category table (a subset)
CATEGORIES = [(0, "noise"), (2, "human.pedestrian.adult"), (17, "vehicle.car"), (24, "flat.driveable_surface"),
              (30, "static.vegetation"), (31, "vehicle.ego")]


def quaternion(rng: np.random.Generator) -> list[float]:
    q = rng.normal(size=4)
    return list(q / np.linalg.norm(q))  # w, x, y, z


def write_fixture(root: Path, seed: int = 0) -> dict:
    """Scenes scene-0001 (train), scene-0003 (val) and scene-0077 (test): two LIDAR_TOP key frames each, with a
    sweep between them, plus a camera frame that must be ignored. Returns the tables and the written points."""
    rng = np.random.default_rng(seed)
    tables: dict[str, list] = {k: [] for k in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor",
                                               "ego_pose", "lidarseg", "category")}
    tables["sensor"] = [{"token": "lidar", "channel": "LIDAR_TOP", "modality": "lidar"},
                        {"token": "cam", "channel": "CAM_FRONT", "modality": "camera"}]
    tables["category"] = [{"token": f"cat{i}", "name": n, "description": "", "index": i} for i, n in CATEGORIES]
    tables["calibrated_sensor"] = [
        {"token": "cs_lidar", "sensor_token": "lidar", "translation": [0.9, 0.0, 1.8], "rotation": quaternion(rng),
         "camera_intrinsic": []},
        {"token": "cs_cam", "sensor_token": "cam", "translation": [1.5, 0.0, 1.5], "rotation": [1.0, 0, 0, 0],
         "camera_intrinsic": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}]
    points: dict[str, np.ndarray] = {}
    for s, name in enumerate(("scene-0001", "scene-0003", "scene-0077")):
        scene = f"scene{s}"
        samples = [f"{scene}_s{i}" for i in range(2)]
        tables["scene"].append({"token": scene, "name": name, "log_token": "log", "nbr_samples": 2,
                                "first_sample_token": samples[0], "last_sample_token": samples[1],
                                "description": ""})
        # sample_data chain: key0 -> sweep -> key1 (timestamps in microseconds)
        chain = [(f"{scene}_k0", True, samples[0], 1_000_000 * (10 * s + 1)),
                 (f"{scene}_w", False, samples[0], 1_000_000 * (10 * s + 1) + 50_000),
                 (f"{scene}_k1", True, samples[1], 1_000_000 * (10 * s + 1) + 500_000)]
        for i, token in enumerate(samples):
            tables["sample"].append({"token": token, "timestamp": chain[2 * i][3], "scene_token": scene,
                                     "prev": samples[i - 1] if i else "", "next": samples[1] if not i else ""})
        for i, (token, key, sample, stamp) in enumerate(chain):
            folder = "samples" if key else "sweeps"
            filename = f"{folder}/LIDAR_TOP/{token}__LIDAR_TOP__{stamp}.pcd.bin"
            n = int(rng.integers(50, 90))
            cloud = np.concatenate([rng.normal(scale=20, size=(n, 3)), rng.uniform(0, 255, (n, 1)),
                                    rng.integers(0, 32, (n, 1))], 1).astype(np.float32)
            (root / folder / "LIDAR_TOP").mkdir(parents=True, exist_ok=True)
            cloud.tofile(root / filename)
            points[token] = cloud
            tables["ego_pose"].append({"token": f"ego_{token}", "timestamp": stamp, "rotation": quaternion(rng),
                                       "translation": list(rng.normal(scale=100, size=3))})
            tables["sample_data"].append({
                "token": token, "sample_token": sample, "ego_pose_token": f"ego_{token}",
                "calibrated_sensor_token": "cs_lidar", "timestamp": stamp, "fileformat": "pcd", "is_key_frame": key,
                "height": 0, "width": 0, "filename": filename, "prev": chain[i - 1][0] if i else "",
                "next": chain[i + 1][0] if i < 2 else ""})
            if key:
                labels = rng.choice([i for i, _ in CATEGORIES], size=n).astype(np.uint8)
                seg = f"lidarseg/{VERSION}/{token}_lidarseg.bin"
                (root / "lidarseg" / VERSION).mkdir(parents=True, exist_ok=True)
                labels.tofile(root / seg)
                points[f"{token}_labels"] = labels
                tables["lidarseg"].append({"token": f"ls_{token}", "sample_data_token": token, "filename": seg})
        tables["sample_data"].append({  # a camera image of the first sample: not a LiDAR frame
            "token": f"{scene}_cam", "sample_token": samples[0], "ego_pose_token": f"ego_{scene}_k0",
            "calibrated_sensor_token": "cs_cam", "timestamp": chain[0][3], "fileformat": "jpg", "is_key_frame": True,
            "height": 900, "width": 1600, "filename": f"samples/CAM_FRONT/{scene}.jpg", "prev": "", "next": ""})
    (root / VERSION).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(rows))
    return {"tables": tables, "points": points}


@pytest.fixture
def fixture(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_fixture(tmp_path)


def test_official_split_sizes_and_members() -> None:
    assert len(NUSCENES_SPLITS["train"]) == 700 and len(NUSCENES_SPLITS["val"]) == 150
    assert not NUSCENES_SPLITS["train"] & NUSCENES_SPLITS["val"]
    assert {"scene-0001", "scene-1110", "scene-0061"} <= NUSCENES_SPLITS["train"]
    assert {"scene-0003", "scene-0103", "scene-1073"} <= NUSCENES_SPLITS["val"]
    for test_scene in ("scene-0077", "scene-0091", "scene-1043"):  # official test scenes are in neither
        assert test_scene not in NUSCENES_SPLITS["train"] | NUSCENES_SPLITS["val"]
    assert NUSCENES_SPLITS["mini_val"] == {"scene-0103", "scene-0916"}


def test_key_frames_points_and_mapped_labels(fixture: tuple[Path, dict]) -> None:
    root, data = fixture
    train, val = NuScenesLidarSeg(root, "train"), NuScenesLidarSeg(root, "val")
    assert [f[1] for f in train.frames] == ["scene0_k0", "scene0_k1"]  # key frames of scene-0001, in time order
    assert [f[1] for f in val.frames] == ["scene1_k0", "scene1_k1"]  # scene-0077 (test) is in neither split
    item = train[1]
    raw = data["points"]["scene0_k1"]
    np.testing.assert_array_equal(item["points"], raw[:, :3])
    np.testing.assert_array_equal(item["intensity"], raw[:, 3])
    # the lidarseg challenge's 16 classes, written out by hand for the fixture's categories
    by_index = {0: -1, 2: NUSCENES_CLASSES.index("pedestrian"), 17: NUSCENES_CLASSES.index("car"),
                24: NUSCENES_CLASSES.index("driveable_surface"), 30: NUSCENES_CLASSES.index("vegetation"), 31: -1}
    assert by_index == {0: -1, 2: 6, 17: 3, 24: 10, 30: 15, 31: -1}  # Pointcept's learning_map, 0-based
    want = np.array([by_index[int(v)] for v in data["points"]["scene0_k1_labels"]])
    np.testing.assert_array_equal(item["labels"], want)
    assert item["keyframe"].all() and (item["time_lag"] == 0).all()


def test_tables_parsed_once_until_the_file_changes(fixture: tuple[Path, dict], monkeypatch) -> None:
    import pc3d.data.readers.nuscenes as nuscenes

    root, _ = fixture
    parsed: list[str] = []
    real_loads = json.loads
    monkeypatch.setattr(nuscenes.json, "loads", lambda text: parsed.append(text[:20]) or real_loads(text))
    NuScenesLidarSeg(root, "train")
    first = len(parsed)
    val = NuScenesLidarSeg(root, "val")  # the start-up check, train and val read one version folder
    assert first == len(nuscenes._TABLES) and len(parsed) == first
    scenes = root / VERSION / "scene.json"
    table = real_loads(scenes.read_text())
    table[1]["name"] = "scene-0003"  # another val scene: an edited table is read again, never served stale
    scenes.write_text(json.dumps(table))
    assert len(parsed) == first and NuScenesLidarSeg(root, "val").frames == val.frames
    assert len(parsed) == first + 1


def test_sweep_moved_into_the_key_frame_through_the_poses(fixture: tuple[Path, dict]) -> None:
    root, data = fixture
    reader = NuScenesLidarSeg(root, "train", sweeps=3)
    first, second = reader[0], reader[1]
    assert first["points"].shape[0] == data["points"]["scene0_k0"].shape[0]  # nothing before the first frame
    key, sweep = data["points"]["scene0_k1"], data["points"]["scene0_w"]
    # the prev chain of key frame 1 is the sweep, then key frame 0, then the scene's start (3 asked, 2 exist)
    tables = data["tables"]
    ego = {r["token"]: r for r in tables["ego_pose"]}
    cs = tables["calibrated_sensor"][0]

    def rot(q: list[float]) -> Rotation:
        return Rotation.from_quat([q[1], q[2], q[3], q[0]])  # scipy: scalar last

    def to_key(cloud: np.ndarray, token: str) -> np.ndarray:
        """Step by step: sensor -> ego (sweep time) -> global -> ego (key time) -> sensor (key)."""
        p = rot(cs["rotation"]).apply(cloud.astype(np.float64)) + cs["translation"]
        e = ego[f"ego_{token}"]
        p = rot(e["rotation"]).apply(p) + e["translation"]
        k = ego["ego_scene0_k1"]
        p = rot(k["rotation"]).inv().apply(p - k["translation"])
        return rot(cs["rotation"]).inv().apply(p - cs["translation"])

    n = key.shape[0]
    expected = np.concatenate([to_key(sweep[:, :3], "scene0_w"), to_key(data["points"]["scene0_k0"][:, :3],
                                                                          "scene0_k0")])
    assert second["points"].shape[0] == n + expected.shape[0]
    np.testing.assert_allclose(second["points"][n:], expected, atol=2e-3)  # float32 points ~100 m from the origin
    assert (second["labels"][n:] == -1).all() and not second["keyframe"][n:].any()
    lags = np.unique(second["time_lag"][n:])
    np.testing.assert_allclose(lags, [0.45, 0.5], atol=1e-6)  # key1 at +0.5 s, the sweep at +0.05 s, key0 at 0
    one = NuScenesLidarSeg(root, "train", sweeps=1)[1]
    assert one["points"].shape[0] == n + sweep.shape[0]


def test_scene_form_and_bad_input(fixture: tuple[Path, dict]) -> None:
    root, data = fixture
    sample = NuScenesScenes(root, "val")[0]
    raw = data["points"]["scene1_k0"]
    np.testing.assert_array_equal(sample["color"][:, 0], np.clip(raw[:, 3], 0, 255))
    assert sample["normal"].shape == sample["coord"].shape and (sample["instance"] == -1).all()
    with pytest.raises(InputError, match="split"):
        NuScenesLidarSeg(root, "test")
    with pytest.raises(InputError, match="tables"):
        NuScenesLidarSeg(root / "missing", "train")
    (root / data["tables"]["sample_data"][0]["filename"]).write_bytes(b"\0" * 12)
    with pytest.raises(InputError, match="multiple of 5"):
        NuScenesLidarSeg(root, "train")[0]


def test_outdoor_pretraining_reads_both_datasets(fixture: tuple[Path, dict], tmp_path: Path) -> None:
    """pointins-outdoor's data section (SemanticKITTI + nuScenes) on synthetic KITTI and the nuScenes fixture."""
    from pc3d.config.pointins import PointINSPreset
    from pc3d.methods.sonata import load_scenes

    root, _ = fixture
    kitti = tmp_path / "kitti"
    seq = kitti / "sequences" / "00"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    rng = np.random.default_rng(1)
    for frame in range(2):
        rng.normal(size=(40, 4)).astype(np.float32).tofile(seq / "velodyne" / f"{frame:06d}.bin")
        np.full(40, 40, np.uint32).tofile(seq / "labels" / f"{frame:06d}.label")
    config = PointINSPreset.model_validate({"data": {
        "source": "folder", "dataset": "semantickitti", "root": str(kitti), "train_sequences": ["00"],
        "also": [{"dataset": "nuscenes", "root": str(root)}]}})
    scenes = load_scenes(config.data, 0, "train")
    assert len(scenes) == 2 + 2
    assert scenes[0]["name"].startswith("00/") and scenes[2]["name"] == "scene-0001/scene0_k0"
    assert scenes[3]["coord"].shape == (data_points := NuScenesScenes(root, "train")[1]["coord"]).shape
    np.testing.assert_array_equal(scenes[3]["coord"], data_points)
