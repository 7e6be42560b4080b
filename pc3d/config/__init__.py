"""Presets: YAML files validated by typed pydantic schemas, with `--set key.path=value` overrides.

A preset names its `command` (pretrain, finetune, ...) and its `method`; the method picks the
schema (a discriminated union kept as a small registry so each method file adds its own).
Only pydantic and yaml are imported here, so the CLI stays fast.
"""

from pc3d.config.base import (
    DataConfig,
    OptimConfig,
    PresetBase,
    RunConfig,
    StrictModel,
    TrainConfig,
)
from pc3d.config.loading import (
    PresetInfo,
    apply_overrides,
    available_presets,
    did_you_mean,
    find_preset,
    load_preset,
    parse_override,
    preset_catalog,
    validate_preset,
)
from pc3d.config.registry import PLANNED, SCHEMAS, register_schema, schema_for

__all__ = [
    "PLANNED",
    "SCHEMAS",
    "DataConfig",
    "OptimConfig",
    "PresetBase",
    "PresetInfo",
    "RunConfig",
    "StrictModel",
    "TrainConfig",
    "apply_overrides",
    "available_presets",
    "did_you_mean",
    "find_preset",
    "load_preset",
    "parse_override",
    "preset_catalog",
    "register_schema",
    "schema_for",
    "validate_preset",
]
