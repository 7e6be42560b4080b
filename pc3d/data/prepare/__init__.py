"""`pc3d data prepare` / `pc3d data check`: raw public downloads -> the layouts pc3d's readers expect.

scannet, s3dis and modelnet40 are converted (scannet.py, s3dis.py, modelnet40.py); semantickitti,
shapenetpart, scanobjectnn, Point-BERT's few-shot folds (modelnet40_fewshot), an already resampled
ModelNet40, Point-MAE's ShapeNet-55 (shapenet55), PartSLIP's PartNet-Ensembled (partnete) and nuScenes-lidarseg
(nuscenes) are released in the layout pc3d reads, so preparing them only checks them (check.py,
check_released.py) and writes nothing: none of their readers uses a cache (ShapeNet-55 subsamples its 8192
stored points at random, PartSTAD caches its 2-D outputs in the run folder, nuScenes reads the json tables).
Every converter is resumable (finished outputs are skipped) and writes each file atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pc3d.errors import InputError

CONVERTED = ("scannet", "s3dis", "modelnet40")  # modelnet40 also accepts the released resampled layout
READ_AS_RELEASED = ("semantickitti", "shapenetpart", "scanobjectnn", "modelnet40_fewshot", "shapenet55",
                    "partnete", "nuscenes")
DATASETS = CONVERTED + READ_AS_RELEASED


def prepare(dataset: str, raw: str | Path, out: str | Path, workers: int = 1) -> dict[str, Any]:
    """Convert `raw` into `out`; returns the summary (counts, skipped, repairs, output folders)."""
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset '{dataset}' (one of: {', '.join(DATASETS)})")
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise InputError(f"{raw}: no such folder")
    if dataset in READ_AS_RELEASED:
        from pc3d.data.prepare.check import check_dataset

        report = check_dataset(dataset, raw)
        return {"dataset": dataset, "raw": str(raw), "out": None, "written": 0,
                "note": f"{dataset} is released in the layout pc3d reads: checked, nothing written; "
                        f"point presets at {report['root']}", "check": report}
    if dataset == "modelnet40" and _released_resampled(raw):
        from pc3d.data.prepare.check import check_dataset

        # Point-BERT's / PointNet++'s download is already the read layout (its .dat caches included)
        report = check_dataset("modelnet40", raw)
        return {"dataset": dataset, "raw": str(raw), "out": None, "written": 0,
                "note": f"{report['root']} is the released modelnet40_normal_resampled layout: checked, nothing "
                        f"written; FPS caches found: {[c['file'] for s in report['fps_caches'].values() for c in s]}",
                "check": report}
    if out.resolve() == raw.resolve():
        raise InputError(f"OUT must differ from RAW ({out})")
    if dataset == "scannet":
        from pc3d.data.prepare.scannet import prepare_scannet

        return prepare_scannet(raw, out, workers)
    if dataset == "s3dis":
        from pc3d.data.prepare.s3dis import prepare_s3dis

        return prepare_s3dis(raw, out, workers)
    from pc3d.data.prepare.modelnet40 import prepare_modelnet40

    return prepare_modelnet40(raw, out, workers)


def _released_resampled(raw: Path) -> bool:
    """Is RAW (or RAW/modelnet40_normal_resampled) the resampled text layout rather than .off meshes?"""
    return any((base / "modelnet40_shape_names.txt").is_file() and not any(base.glob("*/train/*.off"))
               for base in (raw, raw / "modelnet40_normal_resampled"))
