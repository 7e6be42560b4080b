"""`pc3d presets [COMMAND]`: the shipped presets, what each is for, and the variants `--preset` takes."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated, Any

import typer

from pc3d.cli.common import COMMAND_PRESETS, JsonOpt, preset_families


class PresetCommand(str, Enum):
    pretrain = "pretrain"
    finetune = "finetune"
    pseudolabel = "pseudolabel"
    segment = "segment"
    detect = "detect"


def preset_listing(command: str | None = None) -> dict[str, Any]:
    """The catalogue as one JSON-able object: every top-level preset with its variants."""
    from pc3d.config import preset_catalog
    from pc3d.config.loading import _preset_dir

    catalog = preset_catalog()
    commands = [command] if command else [c.value for c in PresetCommand]
    entries: dict[str, dict[str, Any]] = {}
    for cmd in commands:
        for top, variants in preset_families(cmd).items():
            info = catalog[top]
            entry = entries.setdefault(top, {
                "name": top, "command": info.command, "run_by": [], "description": info.description,
                "variants": [{"name": v, "preset": f"{top}-{v}", "description": catalog[f"{top}-{v}"].description}
                             for v in variants]})
            entry["run_by"].append(cmd)
    return {"folder": str(_preset_dir()), "presets": sorted(entries.values(), key=lambda e: (e["command"] or "",
                                                                                           e["name"]))}


def presets_command(
    command: Annotated[PresetCommand | None, typer.Argument(help="Only this command's presets.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the shipped presets: command, one-line description, and the variants --preset takes.

    A variant `<name>-<variant>.yaml` runs as `pc3d COMMAND <name> --preset <variant>`; the description is
    the first sentence of the preset file's leading comment. The list goes to stdout (one JSON object
    with --json).

    \b
    Examples:
      pc3d presets
      pc3d presets pretrain --json
    """
    listing = preset_listing(command.value if command else None)
    if json_out:
        sys.stdout.write(json.dumps(listing) + "\n")
        return
    lines = []
    for entry in listing["presets"]:
        also = [c for c in entry["run_by"] if c != entry["command"]]
        where = entry["command"] + (f", run by {', '.join(also)}" if also else "")
        lines.append(f"{entry['name']} ({where}): {entry['description']}")
        width = max((len(v["name"]) for v in entry["variants"]), default=0)
        lines += [f"    --preset {v['name']:<{width}}  {v['description']}" for v in entry["variants"]]
    lines.append(f"(folder {listing['folder']}; `pc3d COMMAND NAME [--preset VARIANT] --print-config` shows one "
                 "resolved)")
    sys.stdout.write("\n".join(lines) + "\n")


__all__ = ["COMMAND_PRESETS", "PresetCommand", "preset_listing", "presets_command"]
