"""`write_synthetic`: generate one kind of synthetic data and write it in every layout that fits."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.errors import InputError

KINDS = ("objects", "scenes", "lidar")
DEFAULT_COUNT = {"objects": 26, "scenes": 2, "lidar": 2}  # objects: two of each category
DEFAULT_POINTS = {"objects": 2048, "scenes": 50_000, "lidar": 64 * 1800}  # lidar: rays per scan
FRAMES_PER_SEQUENCE = 10


def write_synthetic(kind: str, out: str | os.PathLike, count: int | None = None, seed: int = 0,
                    points: int | None = None, preview: bool = True) -> dict[str, Any]:
    """Generate `count` shapes / scenes / LiDAR frames from `seed` and write them under `out`.

    Returns a JSON-able summary: counts per category or class, points, the folders written and the
    preview image's path. Item i depends only on (seed, i), so a larger count extends a smaller one."""
    if kind not in KINDS:
        raise InputError(f"unknown synthetic data kind '{kind}' (choose from {', '.join(KINDS)})")
    count = DEFAULT_COUNT[kind] if count is None else int(count)
    points = DEFAULT_POINTS[kind] if points is None else int(points)
    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")
    if points < 16:
        raise InputError(f"--points must be at least 16, got {points}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    writer = {"objects": _write_objects, "scenes": _write_scenes, "lidar": _write_lidar}[kind]
    summary: dict[str, Any] = {"kind": kind, "out": str(out), "count": count, "seed": seed}
    summary.update(writer(out, count, seed, points, preview))
    return summary


def _write_preview(out: Path, image: np.ndarray) -> str:
    from pc3d.io.images import write_image

    path = out / "preview.png"
    write_image(path, image)
    return str(path)


def _write_objects(out: Path, count: int, seed: int, points: int, preview: bool) -> dict[str, Any]:
    from pc3d.console import track
    from pc3d.data import layouts
    from pc3d.data.synthetic.objects import CATEGORIES, generate_object, object_rng
    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    shapes = []
    numbering: Counter[str] = Counter()
    for i in track(range(count), total=count, description="objects"):
        category = CATEGORIES[i % len(CATEGORIES)].name
        shape = generate_object(category, object_rng(seed, i), points)
        shapes.append(shape)
        numbering[category] += 1
        fields = {"label": np.full(points, shape.label, np.int32), "part": shape.part.astype(np.int32),
                  "instance": shape.part_instance.astype(np.int32)}
        write_point_cloud(out / "shapes" / f"{category}_{numbering[category]:04d}.ply",
                          PointCloud(shape.points, shape.colors, shape.normals, fields))
    folders = [out / "shapes", layouts.write_modelnet40(out, shapes),
               layouts.write_shapenetpart(out, shapes, seed), layouts.write_partnete(out, shapes)]
    result: dict[str, Any] = {
        "points_per_shape": points,
        "categories": dict(sorted(numbering.items())),
        "parts": int(sum(len(np.unique(s.part)) for s in shapes)),
        "folders": [str(f) for f in folders],
    }
    if preview:
        from pc3d.viz.synthetic import preview_objects

        result["preview"] = _write_preview(out, preview_objects(shapes))
    return result


def _write_scenes(out: Path, count: int, seed: int, points: int, preview: bool) -> dict[str, Any]:
    from pc3d.console import track
    from pc3d.data import layouts
    from pc3d.data.labels import SCANNET20_NAMES, SCANNET20_NYU40_IDS
    from pc3d.data.synthetic.scenes import generate_scene, scene_rng
    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    scenes = []
    classes: Counter[str] = Counter()
    for i in track(range(count), total=count, description="scenes"):
        scene = generate_scene(scene_rng(seed, i), points, name=f"scene{i:04d}_00")
        scenes.append(scene)
        fields = {"label": scene.semantic.astype(np.int32), "instance": scene.instance.astype(np.int32)}
        write_point_cloud(out / "scenes" / f"{scene.name}.ply",
                          PointCloud(scene.points, scene.colors, scene.normals, fields))
        for nyu40 in scene.boxes[:, 6].astype(int):
            classes[SCANNET20_NAMES[SCANNET20_NYU40_IDS.index(nyu40)]] += 1
    folders = [out / "scenes", layouts.write_scannet_pointcept(out, scenes),
               layouts.write_scannet_detection(out, scenes)]
    result: dict[str, Any] = {
        "points_per_scene": points,
        "objects": dict(sorted(classes.items())),
        "boxes": int(sum(len(s.boxes) for s in scenes)),
        "folders": [str(f) for f in folders],
    }
    if preview:
        from pc3d.viz.synthetic import preview_scenes

        result["preview"] = _write_preview(out, preview_scenes(scenes))
    return result


def _write_lidar(out: Path, count: int, seed: int, rays: int, preview: bool) -> dict[str, Any]:
    from pc3d.console import track
    from pc3d.data import layouts
    from pc3d.data.labels import SEMANTIC_KITTI_IDS
    from pc3d.data.synthetic.lidar import CLASS_COLORS, generate_lidar_sequence, lidar_rng

    lengths = [min(FRAMES_PER_SEQUENCE, count - start) for start in range(0, count, FRAMES_PER_SEQUENCE)]
    sequences = [generate_lidar_sequence(lidar_rng(seed, s), n, rays)
                 for s, n in track(list(enumerate(lengths)), description="lidar sequences")]
    frames = [f for seq in sequences for f in seq]
    names = {v: k for k, v in SEMANTIC_KITTI_IDS.items()}
    classes: Counter[str] = Counter()
    for frame in frames:
        ids, counts = np.unique(frame.semantic, return_counts=True)
        for label, n in zip(ids, counts, strict=True):
            classes[names.get(int(label), str(int(label)))] += int(n)
    result: dict[str, Any] = {
        "sequences": len(sequences),
        "rays_per_scan": rays,
        "points_per_scan": int(round(np.mean([len(f.points) for f in frames]))),
        "points_per_class": dict(sorted(classes.items())),
        "image_size": list(frames[0].image.shape[:2]),
        "folders": [str(layouts.write_semantickitti(out, sequences))],
    }
    if preview:
        from pc3d.viz.synthetic import preview_lidar

        result["preview"] = _write_preview(out, preview_lidar(frames, CLASS_COLORS))
    return result
