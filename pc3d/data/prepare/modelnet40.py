"""Raw ModelNet40 meshes -> the `modelnet40_normal_resampled` layout, plus FPS caches in .npz.

Raw: `<raw>/ModelNet40/<class>/{train,test}/<class>_<nnnn>.off` (or `<raw>` is that ModelNet40 folder).
Output under `<out>/modelnet40_normal_resampled/`: `<class>/<class>_<nnnn>.txt` with 10 000 rows
`x,y,z,nx,ny,nz` (%.6f) sampled uniformly by area with the normal of the sampled face, centred and scaled
into the unit sphere as the released files are; `modelnet40_shape_names.txt` (classes present, alphabetical:
all 40 gives the official order), `modelnet40_{train,test}.txt` (shape ids), and
`modelnet40_{train,test}_2048pts_fps.npz` with `points` (M,2048,6) float32, `labels` (M,) int64 and
`ids` (M,) str: the first 2048 farthest-point samples of each shape (Point-MAE/PointNeXt cache 8192 in
pickled `.dat` files). Here it is an .npz of plain arrays, readable with allow_pickle=False; the ModelNet40
reader takes its first `num_points` (any num_points <= 2048: 1024, and the 1200-point pool of the
finetuning presets) instead of running FPS at load.

Deviations: each shape's sample is seeded by its id, and FPS starts at the first point (the released
resampling and the .dat caches used unseeded random draws), so a rerun reproduces every file exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pc3d.data.prepare._common import complete, run_jobs, save_npz, stable_seed
from pc3d.errors import InputError
from pc3d.io.atomic import write_text_atomic

OUT_DIR = "modelnet40_normal_resampled"
NUM_SAMPLES = 10_000
FPS_POINTS = 2048  # covers num_points 1024 and fps_pool 1200 of the presets
SPLITS = ("train", "test")


def find_root(raw: Path) -> Path:
    for base in (raw / "ModelNet40", raw):
        if base.is_dir() and (any(base.glob("*/train/*.off")) or any(base.glob("*/test/*.off"))):
            return base
    raise InputError(f"ModelNet40: no <class>/train/*.off or <class>/test/*.off under {raw} "
                     f"(nor under {raw / 'ModelNet40'})")


def resample(path: Path, shape_id: str) -> np.ndarray:
    """(10000, 6) xyz + face normals, uniform by area, in the unit sphere."""
    from pc3d.io.mesh import read_mesh, sample_surface_points, triangle_areas

    vertices, faces = read_mesh(path)
    if triangle_areas(vertices, faces).sum() <= 0:
        raise InputError(f"{path}: the mesh has zero surface area; nothing to sample")
    rng = np.random.default_rng(stable_seed("modelnet40", shape_id))
    points, normals, _ = sample_surface_points(vertices, faces, NUM_SAMPLES, rng)
    points = points - points.mean(axis=0)
    radius = np.linalg.norm(points, axis=1).max()
    return np.hstack([points / radius if radius > 0 else points, normals])


def fps_subset(table: np.ndarray) -> np.ndarray:
    import torch

    from pc3d.ops.sampling import farthest_point_sample

    keep = farthest_point_sample(torch.from_numpy(np.ascontiguousarray(table[:, :3], np.float32)), FPS_POINTS)
    return table[keep.numpy()].astype(np.float32)


def read_resampled(path: Path) -> np.ndarray | None:
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError):
        return None
    return table if table.shape == (NUM_SAMPLES, 6) else None


def prepare_shape(off: Path, cls: str, out: Path, need_fps: bool) -> dict[str, Any]:
    shape_id = off.stem
    target = out / OUT_DIR / cls / f"{shape_id}.txt"
    table = read_resampled(target) if complete([target]) else None
    skipped = table is not None
    if table is None:  # missing, or a file of the wrong shape: (re)sample it
        table = resample(off, shape_id)
        rows = "\n".join(",".join(f"{v:.6f}" for v in row) for row in table.tolist())
        write_text_atomic(target, rows + "\n")
        table = np.round(table, 6)  # what the file holds, so the cache equals a read of the file
    result: dict[str, Any] = {"id": shape_id, "class": cls, "split": off.parent.name, "skipped": skipped}
    if need_fps:
        result["fps"] = fps_subset(table)
    return result


def _cache_current(path: Path, ids: list[str]) -> bool:
    try:
        with np.load(path, allow_pickle=False) as cache:
            return cache["ids"].tolist() == ids and cache["points"].shape == (len(ids), FPS_POINTS, 6)
    except (OSError, ValueError, KeyError, EOFError):
        return False


def prepare_modelnet40(raw: Path, out: Path, workers: int = 1) -> dict[str, Any]:
    root = find_root(raw)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*/*.off")))
    shapes = {split: sorted((off for cls in classes for off in (root / cls / split).glob("*.off")),
                            key=lambda p: p.stem) for split in SPLITS}
    base = out / OUT_DIR
    summary: dict[str, Any] = {"dataset": "modelnet40", "raw": str(raw), "out": str(out), "classes": len(classes),
                               "shapes": {}, "written": 0, "skipped_complete": 0, "fps_cache": {}}
    for split in SPLITS:
        ids = [off.stem for off in shapes[split]]
        cache = base / f"modelnet40_{split}_{FPS_POINTS}pts_fps.npz"
        need_fps = not _cache_current(cache, ids)
        jobs = [(off, off.parent.parent.name, out, need_fps) for off in shapes[split]]
        results = run_jobs(prepare_shape, jobs, workers, f"ModelNet40 {split}")
        summary["shapes"][split] = len(results)
        summary["written"] += sum(not r["skipped"] for r in results)
        summary["skipped_complete"] += sum(r["skipped"] for r in results)
        write_text_atomic(base / f"modelnet40_{split}.txt", "".join(f"{i}\n" for i in ids))
        if need_fps and results:
            save_npz(cache, points=np.stack([r["fps"] for r in results]),
                     labels=np.array([classes.index(r["class"]) for r in results], np.int64),
                     ids=np.array(ids))
        summary["fps_cache"][split] = str(cache) if results else None
    write_text_atomic(base / "modelnet40_shape_names.txt", "".join(f"{c}\n" for c in classes))
    summary["outputs"] = {"modelnet40": str(base)}
    return summary
