"""Writers that put synthetic data on disk in the real public dataset layouts.

One function per layout; each returns the folder a dataset reader would be pointed at:

- ModelNet40 (resampled, with normals): modelnet40_normal_resampled/<class>/<class>_0001.txt
  ("x,y,z,nx,ny,nz" per line), modelnet40_shape_names.txt, modelnet40_{train,test}.txt
- ShapeNetPart (with normals): shapenetcore_partanno_segmentation_benchmark_v0_normal/<synset>/<id>.txt
  ("x y z nx ny nz part", part = global part id), synsetoffset2category.txt,
  train_test_split/shuffled_{train,val,test}_file_list.json ("shape_data/<synset>/<id>")
- PartNet-Ensembled as used by PartSLIP/PartSTAD: PartNetE_meta.json,
  data/{few_shot,test}/<Category>/<id>/{pc.ply, label.npy}, val_list.json
- ScanNet, Pointcept's preprocessed npy:
  scannet/{train,val}/<scene>/{coord,color,normal,segment20,instance}.npy
- ScanNet, VoteNet/3DETR detection: meta_data/scannetv2_{train,val}.txt,
  scannet_train_detection_data/<scene>_{vert,sem_label,ins_label,bbox}.npy
- SemanticKITTI: sequences/<seq>/{velodyne/*.bin, labels/*.label, image_2/*.png, calib.txt, poses.txt,
  times.txt}

Splits are deterministic: every fifth item (and the last, so a split is never empty) is held out.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pc3d.data.labels import SCANNET_DET_NYU40_IDS, SHAPENETPART_SYNSETS, scannet20_index
from pc3d.data.synthetic.lidar import LidarFrame
from pc3d.data.synthetic.objects import CATEGORY_BY_NAME, SyntheticObject
from pc3d.data.synthetic.scenes import SyntheticScene
from pc3d.io.atomic import atomic_write, write_text_atomic

MODELNET_DIR = "modelnet40_normal_resampled"
SHAPENETPART_DIR = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
PARTNETE_DIR = "partnete"
SCANNET_POINTCEPT_DIR = "scannet"
SCANNET_DETECTION_DIR = "scannet_detection"
SEMANTIC_KITTI_DIR = "semantic_kitti"


def held_out(count: int) -> set[int]:
    """Indices of the held-out split (test / val): every fifth item, and at least one when count >= 2."""
    chosen = {i for i in range(count) if i % 5 == 4}
    if count >= 2 and not chosen:
        chosen.add(count - 1)
    return chosen


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _table_text(array: np.ndarray, fmt: str, delimiter: str) -> str:
    buffer = io.StringIO()
    np.savetxt(buffer, array, fmt=fmt, delimiter=delimiter)
    return buffer.getvalue()


def write_modelnet40(root: str | os.PathLike, shapes: Sequence[SyntheticObject]) -> Path:
    """ModelNet40 resampled layout; class names are ModelNet40's (mug -> cup, shelf -> bookshelf, ...).
    The shape-name list holds only the classes present, so class index = line number."""
    base = Path(root) / MODELNET_DIR
    numbering: Counter[str] = Counter()
    train, test = [], []
    test_index = held_out(len(shapes))
    for i, shape in enumerate(shapes):
        name = CATEGORY_BY_NAME[shape.category].modelnet
        numbering[name] += 1
        shape_id = f"{name}_{numbering[name]:04d}"
        table = np.hstack([shape.points, shape.normals]).astype(np.float64)
        write_text_atomic(base / name / f"{shape_id}.txt", _table_text(table, "%.6f", ","))
        (test if i in test_index else train).append(shape_id)
    write_text_atomic(base / "modelnet40_shape_names.txt", "".join(f"{n}\n" for n in sorted(numbering)))
    write_text_atomic(base / "modelnet40_train.txt", "".join(f"{s}\n" for s in train))
    write_text_atomic(base / "modelnet40_test.txt", "".join(f"{s}\n" for s in test))
    return base


def shapenet_model_id(seed: int, index: int) -> str:
    """A 32-hex-digit id shaped like ShapeNet's, stable for (seed, index)."""
    return hashlib.md5(f"pc3d-synthetic-{seed}-{index}".encode()).hexdigest()


def write_shapenetpart(root: str | os.PathLike, shapes: Sequence[SyntheticObject], seed: int = 0) -> Path:
    """ShapeNetPart (normal) layout for the shapes whose category is in ShapeNetPart."""
    base = Path(root) / SHAPENETPART_DIR
    eligible = [(i, s) for i, s in enumerate(shapes) if CATEGORY_BY_NAME[s.category].shapenetpart]
    test_index = held_out(len(eligible))
    val_index = {k for k in range(len(eligible)) if k % 10 == 2 and k not in test_index}
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    present = set()
    for k, (i, shape) in enumerate(eligible):
        category = CATEGORY_BY_NAME[shape.category].shapenetpart
        synset = SHAPENETPART_SYNSETS[category]
        present.add(category)
        model_id = shapenet_model_id(seed, i)
        table = np.hstack([shape.points, shape.normals, shape.part[:, None]]).astype(np.float64)
        write_text_atomic(base / synset / f"{model_id}.txt", _table_text(table, "%.6f", " "))
        split = "test" if k in test_index else "val" if k in val_index else "train"
        splits[split].append(f"shape_data/{synset}/{model_id}")
    write_text_atomic(base / "synsetoffset2category.txt",
                      "".join(f"{c}\t{SHAPENETPART_SYNSETS[c]}\n" for c in sorted(present)))
    for split, entries in splits.items():
        write_text_atomic(base / "train_test_split" / f"shuffled_{split}_file_list.json", json.dumps(entries))
    return base


def write_partnete(root: str | os.PathLike, shapes: Sequence[SyntheticObject]) -> Path:
    """PartNet-Ensembled layout (PartSLIP / PartSTAD) for the shapes whose category is in PartNetE.

    label.npy is a pickled dict {semantic_seg: (n,) index into the category's PartNetE_meta.json list,
    -1 = no part; instance_seg: (n,) part instance, -1 = none}, as the released data stores it."""
    from pc3d.data.labels import PARTNETE_PARTS
    from pc3d.io.pointcloud import PointCloud, write_point_cloud

    base = Path(root) / PARTNETE_DIR
    by_category: dict[str, list[tuple[int, SyntheticObject]]] = {}
    for i, shape in enumerate(shapes):
        category = CATEGORY_BY_NAME[shape.category].partnete
        if category:
            by_category.setdefault(category, []).append((i, shape))
    val_list: dict[str, list[str]] = {}
    for category, members in sorted(by_category.items()):
        spec = CATEGORY_BY_NAME[members[0][1].category]
        names = PARTNETE_PARTS[category]
        few_shot = min(8, (len(members) + 1) // 2)  # PartSLIP: 8 few-shot shapes per category
        for rank, (i, shape) in enumerate(members):
            split = "few_shot" if rank < few_shot else "test"
            folder = base / "data" / split / category / str(i)
            lookup = {pid: names.index(spec.partnete_parts[p]) if p in spec.partnete_parts else -1
                      for p, pid in zip(spec.parts, spec.part_ids, strict=True)}
            semantic = np.array([lookup[int(p)] for p in shape.part], dtype=np.int64)
            instance = np.full(len(semantic), -1, np.int64)
            labelled = semantic >= 0
            if labelled.any():
                instance[labelled] = np.unique(shape.part_instance[labelled], return_inverse=True)[1]
            write_point_cloud(folder / "pc.ply", PointCloud(shape.points, colors=shape.colors))
            with atomic_write(folder / "label.npy", "wb") as handle:
                np.save(handle, np.array({"semantic_seg": semantic, "instance_seg": instance}, dtype=object),
                        allow_pickle=True)
            if split == "test" and len(val_list.setdefault(category, [])) < 8:
                val_list[category].append(str(i))
    write_text_atomic(base / "PartNetE_meta.json",
                      json.dumps({c: list(PARTNETE_PARTS[c]) for c in sorted(by_category)}, indent=2))
    write_text_atomic(base / "val_list.json", json.dumps(val_list, indent=2))
    return base


def write_scannet_pointcept(root: str | os.PathLike, scenes: Sequence[SyntheticScene]) -> Path:
    """Pointcept's preprocessed ScanNet: coord/normal float32, color uint8, segment20/instance int64
    (segment20 = index into the 20 benchmark classes, -1 = ignore)."""
    base = Path(root) / SCANNET_POINTCEPT_DIR
    val_index = held_out(len(scenes))
    to20 = np.vectorize(scannet20_index, otypes=[np.int64])
    for i, scene in enumerate(scenes):
        folder = base / ("val" if i in val_index else "train") / scene.name
        _save_npy(folder / "coord.npy", scene.points.astype(np.float32))
        _save_npy(folder / "color.npy", scene.colors.astype(np.uint8))
        _save_npy(folder / "normal.npy", scene.normals.astype(np.float32))
        _save_npy(folder / "segment20.npy", to20(scene.semantic))
        _save_npy(folder / "instance.npy", scene.instance.astype(np.int64))
    return base


def write_scannet_detection(root: str | os.PathLike, scenes: Sequence[SyntheticScene]) -> Path:
    """VoteNet/3DETR ScanNet detection data: _vert (N,6) float32 xyz rgb, _sem_label uint32 NYU40,
    _ins_label uint32 (0 = unannotated, objects from 1), _bbox (K,7) cx cy cz dx dy dz nyu40."""
    base = Path(root) / SCANNET_DETECTION_DIR
    data = base / "scannet_train_detection_data"
    val_index = held_out(len(scenes))
    for scene in scenes:
        prefix = data / scene.name
        vert = np.hstack([scene.points, scene.colors.astype(np.float32)]).astype(np.float32)
        _save_npy(prefix.with_name(f"{scene.name}_vert.npy"), vert)
        _save_npy(prefix.with_name(f"{scene.name}_sem_label.npy"), scene.semantic.astype(np.uint32))
        _save_npy(prefix.with_name(f"{scene.name}_ins_label.npy"), (scene.instance + 1).astype(np.uint32))
        keep = np.isin(scene.boxes[:, 6], SCANNET_DET_NYU40_IDS)
        _save_npy(prefix.with_name(f"{scene.name}_bbox.npy"), scene.boxes[keep].astype(np.float64))
    for split, names in (("train", [s.name for i, s in enumerate(scenes) if i not in val_index]),
                         ("val", [s.name for i, s in enumerate(scenes) if i in val_index])):
        write_text_atomic(base / "meta_data" / f"scannetv2_{split}.txt", "".join(f"{n}\n" for n in names))
    return base


def write_semantickitti(root: str | os.PathLike, sequences: Sequence[Sequence[LidarFrame]]) -> Path:
    """SemanticKITTI layout, one numbered sequence per entry of `sequences`."""
    from pc3d.io.images import write_image
    from pc3d.io.kitti import write_kitti_bin, write_kitti_calib, write_kitti_label, write_kitti_poses

    base = Path(root) / SEMANTIC_KITTI_DIR
    for s, frames in enumerate(sequences):
        folder = base / "sequences" / f"{s:02d}"
        for k, frame in enumerate(frames):
            scan = np.column_stack([frame.points, frame.intensity])
            write_kitti_bin(folder / "velodyne" / f"{k:06d}.bin", scan)
            write_kitti_label(folder / "labels" / f"{k:06d}.label", frame.semantic, frame.instance)
            write_image(folder / "image_2" / f"{k:06d}.png", frame.image)
        write_kitti_calib(folder / "calib.txt", frames[0].calib)
        write_kitti_poses(folder / "poses.txt", np.stack([f.pose for f in frames]))
        write_text_atomic(folder / "times.txt", "".join(f"{0.1 * k:.6e}\n" for k in range(len(frames))))
    return base
