"""Find, read, merge, override and validate presets, reporting errors by key path."""

from __future__ import annotations

import copy
import functools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pc3d.config.base import PresetBase
from pc3d.config.registry import PLANNED, schema_for
from pc3d.errors import ConfigError, InputError, NotBuiltError

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: presets load at --help


def _preset_dir() -> Path:
    return Path(str(resources.files("pc3d_presets")))


def available_presets(command: str | None = None) -> list[str]:
    """Names of the shipped presets, optionally only those of one command."""
    return [name for name, cmd in _preset_commands().items() if command is None or cmd == command]


@functools.lru_cache(maxsize=1)
def _preset_commands() -> dict[str, str | None]:
    """Shipped preset name -> its `command` (read once: every --help lists presets per command)."""
    commands: dict[str, str | None] = {}
    for path in sorted(_preset_dir().glob("*.yaml")):
        try:
            data = yaml.load(path.read_text(), Loader=_YAML_LOADER) or {}
        except yaml.YAMLError:
            data = {}
        commands[path.stem] = data.get("command") if isinstance(data, dict) else None
    return commands


def find_preset(name_or_file: str, variant_of: str | None = None) -> Path:
    """A YAML file by path, or a shipped preset by name.

    With `variant_of` (the command's positional name), `--preset quickstart` first looks for the
    variant `<variant_of>-quickstart.yaml`, then for a preset called `quickstart`.
    """
    if variant_of and not Path(name_or_file).suffix:
        variant = _preset_dir() / f"{variant_of}-{name_or_file}.yaml"
        if variant.is_file():
            return variant
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError(f"preset file not found: {path}")
        return path
    shipped = _preset_dir() / f"{name_or_file}.yaml"
    if shipped.is_file():
        return shipped
    if name_or_file in PLANNED:
        raise NotBuiltError(f"'{name_or_file}' is not built yet: {PLANNED[name_or_file][1]}")
    names = ", ".join(available_presets()) or "none"
    raise InputError(f"unknown preset '{name_or_file}' (shipped presets: {names})")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"preset {path}:{where} is not valid YAML") from None
    except OSError as exc:
        raise InputError(f"cannot read preset {path}: {exc.strerror}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path}: top level must be a mapping of keys")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_preset(name_or_file: str, variant_of: str | None = None,
                _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a preset as a plain dict, resolving `extends: other-preset` (deep merge, child wins)."""
    path = find_preset(name_or_file, variant_of)
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is not None:
        if parent in _seen:
            raise ConfigError(f"preset {path}: 'extends' forms a cycle through '{parent}'")
        data = deep_merge(load_preset(str(parent), _seen=(*_seen, name_or_file)), data)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 0.0001); values are parsed as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key.path=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _is_float(value):  # YAML 1.1 reads "1e-4" as a string; people mean a number
        value = float(value)
    return key.split("."), value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"--set {text}: '{where}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def _allowed_keys(schema: type, path: tuple) -> list[str]:
    """Field names of the model that owns `path` (for 'unknown key' messages)."""
    model = schema
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
        for arg in getattr(model, "__args__", ()):
            if hasattr(arg, "model_fields"):
                model = arg
                break
    return sorted(getattr(model, "model_fields", {}))


def _format_error(source: str, schema: type, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not isinstance(p, int) or True)
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, loc[:-1])
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            parts.append(f"{key}: unknown key{hint}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            parts.append(f"{key}: {err['msg']}{shown}")
    return f"preset {source}: " + "; ".join(parts)


def validate_preset(data: dict[str, Any], source: str = "<preset>") -> PresetBase:
    """Validate a merged, overridden preset dict against its method's schema."""
    method = data.get("method")
    if not isinstance(method, str):
        raise ConfigError(f"preset {source}: missing 'method' key")
    try:
        schema = schema_for(method)
    except KeyError as exc:
        raise ConfigError(f"preset {source}: method: {exc.args[0]}") from None
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, schema, exc)) from None
