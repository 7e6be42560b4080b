"""Which schema validates which `method`, and which methods are planned but not built.

Schemas live in small modules imported lazily (`SCHEMA_MODULES`), so adding a method means
adding one module here; nothing heavier than pydantic is imported.
"""

from __future__ import annotations

import importlib

from pc3d.config.base import PresetBase
from pc3d.errors import NotBuiltError

SCHEMAS: dict[str, type[PresetBase]] = {}

# method name -> module that defines (and registers) its schema
SCHEMA_MODULES: dict[str, str] = {}

# preset/method names a command may be asked for before its issue lands -> (command, what is missing)
PLANNED: dict[str, tuple[str, str]] = {
    "point-mae": ("pretrain", "Point-MAE pretraining (issue 6)"),
    "geomask3d": ("pretrain", "GeoMask3D pretraining (issue 6)"),
    "cls-modelnet40": ("finetune", "object finetuning (issue 6)"),
    "cls-scanobjectnn": ("finetune", "object finetuning (issue 6)"),
    "fewshot-modelnet40": ("finetune", "few-shot classification (issue 6)"),
    "partseg-shapenetpart": ("finetune", "part segmentation finetuning (issue 6)"),
    "svm-modelnet40": ("finetune", "linear-SVM probe (issue 6)"),
    "point-mode": ("pretrain", "Point-MoDE block-to-scene pretraining (issue 7)"),
    "det-scannet": ("finetune", "Point-MoDE detection finetuning (issue 7)"),
    "det-sunrgbd": ("finetune", "Point-MoDE detection finetuning (issue 7)"),
    "pointins": ("pretrain", "PointINS pretraining (issue 8)"),
    "sonata": ("pretrain", "Sonata-style scene SSL (issue 8)"),
    "probe-scannet": ("finetune", "PointINS semantic/instance/panoptic probing (issue 8)"),
    "affinity3d": ("pseudolabel", "Affinity3D pseudo-labelling (issue 9)"),
    "affinity3d-kitti": ("pseudolabel", "Affinity3D pseudo-labelling (issue 9)"),
    "spvcnn-kitti": ("finetune", "Affinity3D SPVCNN training (issue 9)"),
    "partstad": ("segment", "PartSTAD part segmentation (issue 10)"),
    "partstad-fewshot": ("finetune", "PartSTAD few-shot adaptation (issue 10)"),
}


def register_schema(cls: type[PresetBase]) -> type[PresetBase]:
    """Class decorator: make `cls` the schema of the method its `method` Literal names."""
    annotation = cls.model_fields["method"].annotation
    for name in getattr(annotation, "__args__", ()):
        SCHEMAS[name] = cls
    return cls


def schema_for(method: str) -> type[PresetBase]:
    if method not in SCHEMAS and method in SCHEMA_MODULES:
        importlib.import_module(SCHEMA_MODULES[method])
    if method in SCHEMAS:
        return SCHEMAS[method]
    if method in PLANNED:
        raise NotBuiltError(f"method '{method}' is not built yet: {PLANNED[method][1]}")
    known = sorted(set(SCHEMA_MODULES) | set(SCHEMAS))
    raise KeyError(f"unknown method '{method}' (allowed: {', '.join(known) or 'none yet'})")
