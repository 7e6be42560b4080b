"""Which schema validates which `method`, and which methods are planned but not built.

Each method's schema lives in its own module of `pc3d.config` and registers itself with
`@register_schema`; the modules are discovered and imported on first use, so adding a method
means adding one module. Nothing heavier than pydantic is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from pc3d.config.base import PresetBase
from pc3d.errors import NotBuiltError

SCHEMAS: dict[str, type[PresetBase]] = {}

# preset/method names a command may be asked for before its issue lands -> (command, what is missing)
PLANNED: dict[str, tuple[str, str]] = {
    "det-sunrgbd": ("finetune", "SUN RGB-D detection finetuning: the reader exists, its task preset not yet (issue 7)"),
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
    # the folder of this module, not `import pc3d.config`: the package imports this module
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
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
