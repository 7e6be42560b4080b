"""Which schema validates which `method`, and which methods are planned but not built.

Each method's schema lives in its own module of `pc3d.config` and registers itself with
`@register_schema`; the modules are discovered and imported on first use, so adding a method
means adding one module. Nothing heavier than pydantic is imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from pc3d.config.base import PresetBase
from pc3d.errors import NotBuiltError

SCHEMAS: dict[str, type[PresetBase]] = {}

# preset/method names a command may be asked for before its issue lands -> (command, what is missing)
PLANNED: dict[str, tuple[str, str]] = {
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


_INFRASTRUCTURE = {"base", "loading", "registry"}


def load_all_schemas() -> None:
    """Import every schema module of pc3d.config (each registers its methods)."""
    import pc3d.config as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _INFRASTRUCTURE:
            importlib.import_module(f"pc3d.config.{info.name}")


def schema_for(method: str) -> type[PresetBase]:
    if method not in SCHEMAS:
        load_all_schemas()
    if method in SCHEMAS:
        return SCHEMAS[method]
    if method in PLANNED:
        raise NotBuiltError(f"method '{method}' is not built yet: {PLANNED[method][1]}")
    known = sorted(SCHEMAS)
    raise KeyError(f"unknown method '{method}' (allowed: {', '.join(known) or 'none yet'})")
