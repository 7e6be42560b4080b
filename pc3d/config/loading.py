"""Find, read, merge, override and validate presets, reporting errors by key path."""

from __future__ import annotations

import copy
import difflib
import functools
import re
from dataclasses import dataclass
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
def _raw_presets() -> dict[str, tuple[dict[str, Any], str]]:
    """Shipped preset name -> (its own YAML keys, its text), read once: every --help lists presets."""
    raw: dict[str, tuple[dict[str, Any], str]] = {}
    for path in sorted(_preset_dir().glob("*.yaml")):
        text = path.read_text()
        try:
            data = yaml.load(text, Loader=_YAML_LOADER) or {}
        except yaml.YAMLError:
            data = {}
        raw[path.stem] = (data if isinstance(data, dict) else {}, text)
    return raw


@functools.lru_cache(maxsize=1)
def _preset_commands() -> dict[str, str | None]:
    """Shipped preset name -> its `command`, following `extends` (most variants only name their parent)."""
    raw = _raw_presets()

    def command_of(name: str, seen: tuple[str, ...] = ()) -> str | None:
        data = raw.get(name, ({}, ""))[0]
        if data.get("command"):
            return data["command"]
        parent = data.get("extends")
        return command_of(str(parent), (*seen, name)) if parent and parent not in seen else None

    return {name: command_of(name) for name in raw}


@dataclass(frozen=True)
class PresetInfo:
    """A shipped preset as `pc3d presets` shows it."""

    name: str
    command: str | None
    description: str
    base: str | None  # the preset this is a variant of (`<base>-<variant>.yaml`, same command), or None
    variant: str | None  # what `--preset` calls it next to its base: point-mae-quickstart -> quickstart


def _leading_comment(text: str) -> str:
    """The first sentence of the comment block a preset file starts with."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    joined = " ".join(part for part in lines if part)
    match = re.search(r"\.(\s+[A-Z`(]|$)", joined)  # a full stop followed by a new sentence or the end
    return joined[: match.start() + 1] if match else joined


def _base_of(name: str, commands: dict[str, str | None]) -> str | None:
    """The longest other preset of the same command whose name + '-' starts this one."""
    parts = name.split("-")
    for cut in range(len(parts) - 1, 0, -1):
        candidate = "-".join(parts[:cut])
        if candidate in commands and commands[candidate] == commands[name]:
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def preset_catalog() -> dict[str, PresetInfo]:
    """Every shipped preset with its command, one-line description and the preset it is a variant of."""
    commands, raw = _preset_commands(), _raw_presets()
    catalog = {}
    for name, (data, text) in raw.items():
        base = _base_of(name, commands)
        top = base
        while top is not None and _base_of(top, commands) is not None:
            top = _base_of(top, commands)  # variants are named after the top preset: probe-scannet-semseg-quickstart
        description = _leading_comment(text) or str(data.get("description") or "")
        catalog[name] = PresetInfo(name, commands[name], description, top,
                                   name[len(top) + 1:] if top else None)
    return catalog


def did_you_mean(name: str, candidates: list[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def find_preset(name_or_file: str, variant_of: str | None = None, command: str | None = None) -> Path:
    """A YAML file by path, or a shipped preset by name.

    With `variant_of` (the command's positional name), `--preset quickstart` first looks for the
    variant `<variant_of>-quickstart.yaml`, then for a preset called `quickstart`. `command` narrows
    the suggestions for a name that is not found to that command's presets.
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
    # suggest among what this command could run, not all shipped presets
    own = available_presets(command) if command else available_presets()
    candidates = list(own)
    if variant_of:
        candidates += [n[len(variant_of) + 1:] for n in available_presets() if n.startswith(f"{variant_of}-")]
    hint = did_you_mean(name_or_file, candidates)
    where = f"{command} " if command else ""
    listing = f"`pc3d presets {command}`" if command else "`pc3d presets`"
    raise InputError(f"unknown {where}preset '{name_or_file}'{hint}; {listing} lists them")


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
                _seen: tuple[str, ...] = (), command: str | None = None) -> dict[str, Any]:
    """Read a preset as a plain dict, resolving `extends: other-preset` (deep merge, child wins)."""
    path = find_preset(name_or_file, variant_of, command)
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


# Keys a released pc3d accepted and a later one renamed: a saved config.yaml or an old preset names the new key
# (with what changed in meaning) instead of only listing the allowed ones.
RENAMED_KEYS = {
    "affinity.queue": "affinity.queue_size (the section 3.4 instance queue now counts superpoints, not frames; "
                      "0 = each frame alone)",
}

# Keys a released pc3d accepted and a later one dropped, with the reason.
REMOVED_KEYS = {
    "features.oracle_text_weight": "the oracle's crop features no longer mix in the crop's label histogram, so the "
                                   "affinity walk cannot recover the truth by construction; see "
                                   "pc3d/methods/affinity3d_oracle.py",
}


def _format_error(source: str, schema: type, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden" and key in RENAMED_KEYS:
            parts.append(f"{key}: renamed to {RENAMED_KEYS[key]}")
        elif err["type"] == "extra_forbidden" and key in REMOVED_KEYS:
            parts.append(f"{key}: removed ({REMOVED_KEYS[key]}); delete the line")
        elif err["type"] == "extra_forbidden":
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
