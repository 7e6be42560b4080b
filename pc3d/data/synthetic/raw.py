"""The synthetic scenes and objects written in the raw layouts of the public downloads, so every
`pc3d data prepare` path runs end to end on generated data whose labels are known exactly.

- ScanNet v2: `scans/<id>/<id>_vh_clean_2.ply` (binary mesh: float xyz, uchar rgba, triangles),
  `<id>_vh_clean_2.0.010000.segs.json`, `<id>.aggregation.json`, `<id>.txt` (axisAlignment),
  `scannetv2-labels.combined.tsv` and `scannetv2_{train,val}.txt`.
- S3DIS v1.2: `Area_<k>/<room>/Annotations/<class>_<n>.txt` and `<room>/<room>.txt` (`x y z r g b` rows).
- ModelNet40: `ModelNet40/<class>/{train,test}/<class>_<nnnn>.off`.

What is synthetic about them: a ScanNet mesh's vertices are the generator's sampled points (a scan mesh's
vertices are its points too), joined into triangles with their two nearest neighbours of the same instance
and oriented by the generator's normals; each instance is split into two over-segments along x, so a
segGroup gathers several segments as in the release. The raw vertices are the generator's points moved by
the inverse of a known axis alignment, so preparing them must undo it. Nothing here changes the generator:
scene i / object i are exactly what `pc3d data synth` writes for the same seed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.synthetic.scenes import SyntheticScene
from pc3d.io.atomic import write_text_atomic

DATASETS = ("scannet", "s3dis", "modelnet40")

# NYU40 id of the synthetic classes -> (raw_category, tsv id) as rows of scannetv2-labels.combined.tsv
SCANNET_RAW_CATEGORY = {1: ("wall", 1), 2: ("floor", 3), 3: ("cabinet", 7), 4: ("bed", 11), 5: ("chair", 2),
                        6: ("couch", 6), 7: ("table", 4), 8: ("door", 5), 9: ("window", 15),
                        10: ("bookshelf", 17), 11: ("picture", 14)}
NYU40_NAMES = {1: "wall", 2: "floor", 3: "cabinet", 4: "bed", 5: "chair", 6: "sofa", 7: "table", 8: "door",
               9: "window", 10: "bookshelf", 11: "picture"}
# NYU40 id -> S3DIS class name (cabinet and bed have no S3DIS class: clutter; a picture is a board)
S3DIS_CLASS_OF_NYU40 = {1: "wall", 2: "floor", 3: "clutter", 4: "clutter", 5: "chair", 6: "sofa", 7: "table",
                        8: "door", 9: "window", 10: "bookcase", 11: "board"}
# a rotation of 30 degrees about z and a shift, as ScanNet's axisAlignment matrices are
_ANGLE = np.pi / 6
AXIS_ALIGNMENT = np.array([[np.cos(_ANGLE), -np.sin(_ANGLE), 0.0, -1.5],
                           [np.sin(_ANGLE), np.cos(_ANGLE), 0.0, 0.75],
                           [0.0, 0.0, 1.0, 0.1],
                           [0.0, 0.0, 0.0, 1.0]])


def _generate_scenes(count: int, seed: int, points: int) -> list[SyntheticScene]:
    from pc3d.data.synthetic.scenes import generate_scene, scene_rng

    return [generate_scene(scene_rng(seed, i), points, name=f"scene{i:04d}_00") for i in range(count)]


def neighbour_triangles(points: np.ndarray, normals: np.ndarray, groups: np.ndarray, k: int = 12) -> np.ndarray:
    """(N', 3) triangles: each point with its two nearest neighbours of the same group whose normals agree
    with its own and that lie near its tangent plane (so a triangle does not bridge a chair's seat and leg,
    nor a picture and the wall behind it), wound so the triangle's normal
    agrees with the point's normal; degenerate ones are dropped."""
    from scipy.spatial import cKDTree

    faces = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if len(members) < 3:
            continue
        _, near = cKDTree(points[members]).query(points[members], k=min(k, len(members)))
        near = members[near]  # (M, k) global indices, column 0 the point itself
        offset = points[near[:, 1:]] - points[near[:, :1]]
        in_plane = np.abs((offset * normals[near[:, :1]]).sum(axis=2)) < 0.2 * np.linalg.norm(offset, axis=2)
        agree = ((normals[near[:, 1:]] * normals[near[:, :1]]).sum(axis=2) > 0.9) & in_plane
        # the two nearest agreeing neighbours (a stable sort keeps distance order); a point with fewer
        # starts no triangle (it still gets a normal from its neighbours' triangles, or none)
        order = np.argsort(~agree, axis=1, kind="stable")[:, :2]
        usable = np.take_along_axis(agree, order, axis=1).all(axis=1)
        tri = np.hstack([near[:, :1], np.take_along_axis(near[:, 1:], order, axis=1)])[usable]
        corners = points[tri].astype(np.float64)
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        flip = (normal * normals[tri[:, 0]]).sum(axis=1) < 0
        tri[flip] = tri[flip][:, [0, 2, 1]]
        faces.append(tri[np.linalg.norm(normal, axis=1) > 1e-12])
    return np.concatenate(faces).astype(np.int64) if faces else np.zeros((0, 3), np.int64)


def scene_segments(scene: SyntheticScene) -> np.ndarray:
    """Over-segment id of each point: two per instance (left / right of the instance's median x)."""
    segments = np.zeros(len(scene.points), np.int64)
    for instance in np.unique(scene.instance):
        members = scene.instance == instance
        right = scene.points[members, 0] > np.median(scene.points[members, 0])
        segments[members] = 2 * instance + right
    return segments


def write_scannet_raw(root: str | os.PathLike, scenes: Sequence[SyntheticScene],
                      val: set[int] | None = None) -> Path:
    """ScanNet v2 download layout under `root`; scene i goes to val when i is in `val` (default every
    fifth and the last, as the synthetic writer holds out)."""
    from pc3d.data.layouts import held_out
    from pc3d.io.ply import PlyList, write_ply

    base = Path(root)
    val = held_out(len(scenes)) if val is None else val
    inverse = np.linalg.inv(AXIS_ALIGNMENT)
    for scene in scenes:
        folder = base / "scans" / scene.name
        # raw = A^-1 [gt 1]: preparing with A gives back the generator's axis-aligned coordinates
        raw = (np.hstack([scene.points.astype(np.float64), np.ones((len(scene.points), 1))]) @ inverse.T)[:, :3]
        raw_normals = scene.normals.astype(np.float64) @ inverse[:3, :3].T
        segments = scene_segments(scene)
        faces = neighbour_triangles(raw, raw_normals, segments)
        write_ply(folder / f"{scene.name}_vh_clean_2.ply", {
            "vertex": {"x": raw[:, 0].astype(np.float32), "y": raw[:, 1].astype(np.float32),
                       "z": raw[:, 2].astype(np.float32), "red": scene.colors[:, 0], "green": scene.colors[:, 1],
                       "blue": scene.colors[:, 2], "alpha": np.full(len(raw), 255, np.uint8)},
            "face": {"vertex_indices": PlyList(np.full(len(faces), 3, np.int64),
                                               faces.reshape(-1).astype(np.int32))},
        })
        write_text_atomic(folder / f"{scene.name}_vh_clean_2.0.010000.segs.json",
                          json.dumps({"sceneId": scene.name, "segIndices": segments.tolist()}))
        groups = []
        for instance in np.unique(scene.instance).tolist():
            nyu40 = int(scene.semantic[scene.instance == instance][0])
            groups.append({"id": instance, "objectId": instance, "label": SCANNET_RAW_CATEGORY[nyu40][0],
                           "segments": sorted(set(segments[scene.instance == instance].tolist()))})
        write_text_atomic(folder / f"{scene.name}.aggregation.json",
                          json.dumps({"sceneId": scene.name, "segGroups": groups}))
        write_text_atomic(folder / f"{scene.name}.txt", "axisAlignment = "
                          + " ".join(f"{v:.17g}" for v in AXIS_ALIGNMENT.reshape(-1)) + "\ncolorHeight = 968\n")
    header = "id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\n"
    rows = "".join(f"{tsv}\t{raw}\t{raw}\t1\t{nyu}\t0\t{raw}\t{NYU40_NAMES[nyu]}\n"
                   for nyu, (raw, tsv) in sorted(SCANNET_RAW_CATEGORY.items(), key=lambda kv: kv[1][1]))
    write_text_atomic(base / "scannetv2-labels.combined.tsv", header + rows)
    for split, names in (("train", [s.name for i, s in enumerate(scenes) if i not in val]),
                         ("val", [s.name for i, s in enumerate(scenes) if i in val])):
        write_text_atomic(base / f"scannetv2_{split}.txt", "".join(f"{n}\n" for n in names))
    return base


def write_s3dis_raw(root: str | os.PathLike, scenes: Sequence[SyntheticScene]) -> Path:
    """S3DIS v1.2 layout: scene i is room `office_<i // 6 + 1>` of Area_<i % 6 + 1> (six scenes fill all areas)."""
    base = Path(root) / "Stanford3dDataset_v1.2_Aligned_Version"
    for i, scene in enumerate(scenes):
        room = base / f"Area_{i % 6 + 1}" / f"office_{i // 6 + 1}"
        numbering: Counter[str] = Counter()
        tables = []
        for instance in np.unique(scene.instance).tolist():
            members = scene.instance == instance
            name = S3DIS_CLASS_OF_NYU40[int(scene.semantic[members][0])]
            numbering[name] += 1
            table = "".join(f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}\n" for (x, y, z), (r, g, b)
                            in zip(scene.points[members].tolist(), scene.colors[members].tolist(), strict=True))
            write_text_atomic(room / "Annotations" / f"{name}_{numbering[name]}.txt", table)
            tables.append(table)
        write_text_atomic(room / f"{room.name}.txt", "".join(tables))
    return base


def write_modelnet40_raw(root: str | os.PathLike, count: int, seed: int) -> Path:
    """ModelNet40 `.off` meshes of objects 0..count-1 (the meshes `generate_object` samples); test split:
    every fifth (and the last), as the synthetic ModelNet40 layout holds out."""
    from pc3d.data.layouts import held_out
    from pc3d.data.synthetic.objects import CATEGORIES, CATEGORY_BY_NAME, build_object_mesh, object_rng

    base = Path(root) / "ModelNet40"
    numbering: Counter[str] = Counter()
    test = held_out(count)
    for i in range(count):
        category = CATEGORIES[i % len(CATEGORIES)].name
        mesh = build_object_mesh(category, object_rng(seed, i))  # generate_object's first draw: the same mesh
        name = CATEGORY_BY_NAME[category].modelnet
        numbering[name] += 1
        lines = [f"{len(mesh.vertices)} {len(mesh.faces)} 0"]
        lines += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices.tolist()]
        lines += [f"3 {a} {b} {c}" for a, b, c in mesh.faces.tolist()]
        split = "test" if i in test else "train"
        write_text_atomic(base / name / split / f"{name}_{numbering[name]:04d}.off", "OFF\n" + "\n".join(lines) + "\n")
    return base


def write_raw(dataset: str, out: str | os.PathLike, count: int, seed: int = 0,
              points: int = 20_000) -> dict[str, Any]:
    """`pc3d data synth-raw`: `count` generated scenes / objects in `dataset`'s raw download layout."""
    from pc3d.errors import InputError

    if dataset not in DATASETS:
        raise InputError(f"unknown raw layout '{dataset}' (one of: {', '.join(DATASETS)})")
    if count < 1 or points < 16:
        raise InputError(f"--count must be >= 1 and --points >= 16, got {count} and {points}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    summary: dict[str, Any] = {"dataset": dataset, "out": str(out), "count": count, "seed": seed}
    if dataset == "modelnet40":
        summary["folder"] = str(write_modelnet40_raw(out, count, seed))
        return summary
    if dataset == "s3dis" and count < 6:
        raise InputError("S3DIS has six areas: --count must be at least 6 (scene i goes to Area_(i % 6 + 1))")
    scenes = _generate_scenes(count, seed, points)
    writer = write_scannet_raw if dataset == "scannet" else write_s3dis_raw
    summary.update(points_per_scene=points, folder=str(writer(out, scenes)))
    return summary
