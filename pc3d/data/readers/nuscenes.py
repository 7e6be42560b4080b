"""nuScenes-lidarseg from the dataset's own files (no nuscenes-devkit: it pulls in OpenCV, matplotlib and more).

Layout under `root` (as downloaded): `<version>/*.json` tables (scene, sample, sample_data, calibrated_sensor,
sensor, ego_pose, lidarseg, category), `samples/LIDAR_TOP/*.pcd.bin` (float32 x 5 per point: x y z intensity
ring, in the sensor frame), `sweeps/LIDAR_TOP/*.pcd.bin` (the unlabelled frames between key frames) and
`lidarseg/<version>/<token>_lidarseg.bin` (uint8 per key-frame point: the `index` of its category).

One item per key frame of the split's scenes (the official scene split of nuScenes' devkit), ordered by scene
name and time. Labels follow the lidarseg challenge: the 32 categories map to 16 classes (barrier ... vegetation,
0..15 here; unlabelled / ignored categories -1), by category name.

`sweeps` > 0 adds that many preceding LIDAR_TOP frames (following sample_data's `prev` chain; fewer where the
scene starts), each moved into the key frame's sensor frame through the poses, as Pointcept's nuScenes info
files record them (preprocess_nuscenes_info.py, 10 sweeps): key-sensor <- key-ego <- global <- sweep-ego <-
sweep-sensor, each pose a rotation quaternion (w, x, y, z) and a translation. Sweep points carry no labels
(-1) and their time lag (key timestamp - sweep timestamp, seconds). Pointcept's NuScenesDataset itself reads
the key frame only (sweeps 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.readers._common import require_dir
from pc3d.errors import InputError

NUSCENES_CLASSES: tuple[str, ...] = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "traffic_cone",
    "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade", "vegetation")
# lidarseg challenge (devkit eval/lidarseg/utils.py fine2coarse): category name -> class; the rest are ignored
NUSCENES_CATEGORY_CLASS: dict[str, str] = {
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian", "human.pedestrian.construction_worker": "pedestrian",
    "vehicle.car": "car", "vehicle.motorcycle": "motorcycle", "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus", "vehicle.bus.rigid": "bus", "vehicle.truck": "truck",
    "vehicle.construction": "construction_vehicle", "vehicle.trailer": "trailer",
    "movable_object.barrier": "barrier", "movable_object.trafficcone": "traffic_cone",
    "flat.driveable_surface": "driveable_surface", "flat.sidewalk": "sidewalk", "flat.terrain": "terrain",
    "flat.other": "other_flat", "static.manmade": "manmade", "static.vegetation": "vegetation"}
# things of the panoptic challenge (the 10 object classes); the 6 surfaces are stuff
NUSCENES_THING_CLASSES: tuple[int, ...] = tuple(range(10))
NUSCENES_STUFF_CLASSES: tuple[int, ...] = tuple(range(10, 16))

# the official scene split (nuscenes-devkit utils/splits.py: train = train_detect + train_track, 700 scenes; val 150),
# as inclusive ranges of scene numbers (scene-NNNN)
_TRAIN_RANGES = (
    (1, 2), (4, 11), (19, 34), (41, 76), (120, 135), (138, 139), (149, 152), (154, 155), (157, 168), (170, 185),
    (187, 188), (190, 196), (199, 200), (202, 204), (206, 214), (218, 220), (222, 222), (224, 264), (283, 306),
    (315, 318), (321, 321), (323, 324), (328, 328), (347, 386), (388, 403), (405, 408), (410, 459), (461, 465),
    (467, 469), (471, 472), (474, 480), (499, 502), (504, 515), (517, 518), (525, 539), (541, 546), (566, 566),
    (568, 568), (570, 578), (580, 580), (582, 600), (639, 679), (681, 681), (683, 689), (695, 698), (700, 701),
    (703, 719), (726, 728), (730, 731), (733, 741), (744, 744), (746, 747), (749, 752), (757, 765), (767, 769),
    (786, 787), (789, 792), (803, 806), (808, 813), (815, 817), (819, 822), (847, 856), (858, 858), (860, 866),
    (868, 873), (875, 878), (880, 880), (882, 903), (945, 945), (947, 947), (949, 949), (952, 953), (955, 961),
    (975, 984), (988, 992), (994, 1025), (1044, 1058), (1074, 1102), (1104, 1110))
_VAL_RANGES = (
    (3, 3), (12, 18), (35, 36), (38, 39), (92, 110), (221, 221), (268, 278), (329, 332), (344, 346), (519, 524),
    (552, 565), (625, 627), (629, 630), (632, 638), (770, 771), (775, 775), (777, 778), (780, 784), (794, 800),
    (802, 802), (904, 917), (919, 931), (962, 963), (966, 969), (971, 972), (1059, 1073))
_MINI = {"mini_train": (61, 553, 655, 757, 796, 1077, 1094, 1100), "mini_val": (103, 916)}


# Parsed tables by file, valid while the file's size and mtime are unchanged: a run reads the same version folder
# for its start-up check, its train split and its val split, and trainval's sample_data.json alone is ~0.5 GB of
# JSON (tens of seconds to parse). Readers never modify the tables, so they share one copy.
_TABLE_CACHE: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


def read_table(path: Path) -> list[dict[str, Any]]:
    """One nuScenes json table (a list of records), parsed once per process while the file is unchanged."""
    if not path.is_file():
        raise InputError(f"nuScenes: missing table {path}")
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    cached = _TABLE_CACHE.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"nuScenes: {path} is not valid JSON ({exc})") from exc
    _TABLE_CACHE[path] = (stamp, table)
    return table


def _names(ranges: tuple[tuple[int, int], ...]) -> frozenset[str]:
    return frozenset(f"scene-{n:04d}" for lo, hi in ranges for n in range(lo, hi + 1))


NUSCENES_SPLITS: dict[str, frozenset[str]] = {
    "train": _names(_TRAIN_RANGES), "val": _names(_VAL_RANGES),
    **{name: frozenset(f"scene-{n:04d}" for n in nums) for name, nums in _MINI.items()}}
_TABLES = ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose", "lidarseg", "category")


def quaternion_matrix(q: Any) -> np.ndarray:
    """3x3 rotation of a unit quaternion (w, x, y, z), nuScenes' order (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(np.asarray(q, dtype=np.float64))
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def pose_matrix(record: dict[str, Any]) -> np.ndarray:
    """4x4 of a pose record (rotation, translation): child frame -> parent frame."""
    m = np.eye(4)
    m[:3, :3] = quaternion_matrix(record["rotation"])
    m[:3, 3] = np.asarray(record["translation"], dtype=np.float64)
    return m


def read_lidar(path: Path) -> np.ndarray:
    """(N,5) float32 x y z intensity ring of a .pcd.bin file."""
    if not path.is_file():
        raise InputError(f"nuScenes: missing lidar file {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 5:
        raise InputError(f"nuScenes: {path} holds {raw.size} floats, not a multiple of 5 (x y z intensity ring)")
    return raw.reshape(-1, 5)


class NuScenesLidarSeg:
    """Key frames of one split; `reader[i]` reads frame i (and its sweeps) from disk.

    Items: points (N,3) float32 in the key frame's LIDAR_TOP frame, intensity (N,) float32 (0-255), ring (N,),
    time_lag (N,) float32 seconds (0 on the key frame), labels (N,) int64 (0..15, -1 = ignored / sweep points),
    raw_labels (N,) int64 (the 32-category index, -1 on sweep points), keyframe (N,) bool, token, scene."""

    def __init__(self, root: str | Path, split: str = "train", version: str = "v1.0-trainval", sweeps: int = 0,
                 max_frames: int | None = None) -> None:
        if split not in NUSCENES_SPLITS:
            raise InputError(f"nuScenes: split must be one of {', '.join(NUSCENES_SPLITS)}, got {split!r}")
        if sweeps < 0:
            raise InputError(f"nuScenes: sweeps must be >= 0, got {sweeps}")
        self.root = Path(root)
        tables = require_dir(self.root / version, f"nuScenes {version} tables")
        self.tables = {name: read_table(tables / f"{name}.json") for name in _TABLES}
        self.sweeps = sweeps
        self.sample_data = {r["token"]: r for r in self.tables["sample_data"]}
        self.calibrated = {r["token"]: r for r in self.tables["calibrated_sensor"]}
        self.ego = {r["token"]: r for r in self.tables["ego_pose"]}
        channel = {r["token"]: r["channel"] for r in self.tables["sensor"]}
        self.lidar = {t for t, r in self.calibrated.items() if channel.get(r["sensor_token"]) == "LIDAR_TOP"}
        self.labels_of = {r["sample_data_token"]: r["filename"] for r in self.tables["lidarseg"]}
        lut = np.full(256, -1, np.int64)
        for cat in self.tables["category"]:
            coarse = NUSCENES_CATEGORY_CLASS.get(cat["name"])
            if coarse is not None:
                lut[int(cat["index"])] = NUSCENES_CLASSES.index(coarse)
        self.lut = lut
        scene_name = {r["token"]: r["name"] for r in self.tables["scene"]}
        sample_scene = {r["token"]: scene_name[r["scene_token"]] for r in self.tables["sample"]}
        wanted = NUSCENES_SPLITS[split]
        frames = [(sample_scene[r["sample_token"]], r["timestamp"], r["token"]) for r in self.tables["sample_data"]
                  if r["is_key_frame"] and r["calibrated_sensor_token"] in self.lidar
                  and sample_scene.get(r["sample_token"]) in wanted]
        frames.sort()
        if max_frames is not None:
            frames = frames[:max_frames]
        if not frames:
            raise InputError(f"nuScenes: no LIDAR_TOP key frames of split {split} in {tables}")
        self.frames = [(scene, token) for scene, _, token in frames]

    def __len__(self) -> int:
        return len(self.frames)

    def sweep_transform(self, key: dict[str, Any], sweep: dict[str, Any]) -> np.ndarray:
        """4x4: sweep sensor frame -> key frame sensor frame, through the global frame."""
        key_sensor = pose_matrix(self.calibrated[key["calibrated_sensor_token"]])
        key_ego = pose_matrix(self.ego[key["ego_pose_token"]])
        sweep_ego = pose_matrix(self.ego[sweep["ego_pose_token"]])
        sweep_sensor = pose_matrix(self.calibrated[sweep["calibrated_sensor_token"]])
        return np.linalg.inv(key_sensor) @ np.linalg.inv(key_ego) @ sweep_ego @ sweep_sensor

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene, token = self.frames[index]
        key = self.sample_data[token]
        points = read_lidar(self.root / key["filename"])
        n = points.shape[0]
        raw = np.full(n, -1, np.int64)
        if token in self.labels_of:
            path = self.root / self.labels_of[token]
            if not path.is_file():
                raise InputError(f"nuScenes: missing lidarseg labels {path}")
            raw = np.fromfile(path, dtype=np.uint8).astype(np.int64)
            if raw.shape[0] != n:
                raise InputError(f"nuScenes: {path} has {raw.shape[0]} labels for {n} points")
        parts, lags, raws = [points], [np.zeros(n, np.float32)], [raw]
        current = key
        for _ in range(self.sweeps):
            if not current["prev"]:
                break  # the scene starts here
            current = self.sample_data[current["prev"]]
            sweep = read_lidar(self.root / current["filename"])
            m = self.sweep_transform(key, current)
            moved = sweep.copy()
            moved[:, :3] = (sweep[:, :3].astype(np.float64) @ m[:3, :3].T + m[:3, 3]).astype(np.float32)
            parts.append(moved)
            lags.append(np.full(sweep.shape[0], (key["timestamp"] - current["timestamp"]) * 1e-6, np.float32))
            raws.append(np.full(sweep.shape[0], -1, np.int64))
        allpoints = np.concatenate(parts)
        raw_all = np.concatenate(raws)
        labels = np.where(raw_all >= 0, self.lut[np.clip(raw_all, 0, 255)], -1)
        keyframe = np.zeros(allpoints.shape[0], bool)
        keyframe[:n] = True
        return {"points": allpoints[:, :3].copy(), "intensity": allpoints[:, 3].copy(), "ring": allpoints[:, 4].copy(),
                "time_lag": np.concatenate(lags), "labels": labels, "raw_labels": raw_all, "keyframe": keyframe,
                "token": token, "scene": scene}


class NuScenesScenes:
    """nuScenes frames in the scene-sample form of pc3d.methods.sonata: intensity as a grey colour, no normals
    (zeros), segment = the 16 lidarseg classes (-1 ignored), no instances (-1)."""

    def __init__(self, root: str | Path, split: str, version: str = "v1.0-trainval", sweeps: int = 0,
                 max_frames: int | None = None) -> None:
        self.reader = NuScenesLidarSeg(root, split, version, sweeps, max_frames)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.reader[index]
        points = s["points"].astype(np.float32)
        grey = np.repeat(np.clip(s["intensity"], 0, 255)[:, None], 3, axis=1).astype(np.float32)
        return {"coord": points, "color": grey, "normal": np.zeros_like(points), "segment": s["labels"],
                "instance": np.full(points.shape[0], -1, np.int64), "name": f"{s['scene']}/{s['token']}"}
