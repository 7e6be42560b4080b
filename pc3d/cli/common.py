"""Options shared by the commands, and the one path from flags to a method's entry point."""

from __future__ import annotations

import importlib
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from pc3d.console import set_verbosity
from pc3d.errors import ConfigError, InputError


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", "-p", metavar="NAME|FILE",
                 help="A variant of this command's preset (--preset quickstart), another shipped preset, or a "
                 "YAML file; `pc3d presets COMMAND` lists them."),
]
def set_opt(example: str) -> Any:
    """The --set option, with an example that is a real key of this command's presets (a test checks it)."""
    return Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help=f"Override a preset value, e.g. --set {example} (repeatable); "
                     "--print-config shows the keys.", metavar="KEY.PATH=VALUE"),
    ]


SetOpt = set_opt("optim.lr=1e-4")  # pretrain, finetune and detect presets all train with an optimiser
PrintConfigOpt = Annotated[
    bool, typer.Option("--print-config", help="Print the resolved config (YAML) on stdout and exit without running.")
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (run folders go below it).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (overrides run.seed).")]
DeviceOpt = Annotated[Device | None, typer.Option("--device", help="cpu, cuda, or auto (cuda when available).")]
GpusOpt = Annotated[int | None, typer.Option("--gpus", min=0, help="Number of GPU worker processes (DDP).")]
NprocOpt = Annotated[int | None, typer.Option("--nproc", min=1, help="CPU worker processes (gloo DDP).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object with the result on stdout, nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or status lines.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.")]


def data_overrides(data: Path | None, category: str | None = None) -> list[str]:
    """--data / --category are shorthands for the preset keys data.source, data.root and data.category."""
    sets = ["data.source=folder", f"data.root={data}"] if data is not None else []
    return sets + ([f"data.category={category}"] if category else [])


def setup_output(json_out: bool, quiet: bool, verbose: bool) -> None:
    set_verbosity(quiet=quiet or json_out, verbose=verbose and not json_out, progress_lines=not quiet)


def finish_run(result: dict[str, Any], json_out: bool, title: str = "", config: Any = None) -> None:
    """The end of every command that writes a run folder (`result["run_dir"]`): the folder gets its
    summary.json (the very object `--json` prints), and config.yaml / versions.json where the method wrote
    none; then the result is shown. Under torchrun / SLURM only rank 0 does this (one summary, one JSON object
    on the job's stdout)."""
    from pc3d.engine.distributed import outside_rank
    from pc3d.runs import RunDir

    if outside_rank() != 0:
        return
    run_dir = result.get("run_dir")
    if run_dir and Path(run_dir).is_dir():
        run = RunDir(Path(run_dir))
        if config is not None and not run.config_file.is_file():
            run.save_config_only(config.model_dump(mode="json"))
        if not (run.path / "versions.json").is_file():
            run.save_versions()
        run.write_summary(result)
    emit(result, json_out, title)


def emit(result: dict[str, Any], json_out: bool, title: str = "") -> None:
    """Show a command's result: one JSON object on stdout, or a table on stderr for people."""
    if json_out:
        from pc3d.runs import result_json

        sys.stdout.write(result_json(result) + "\n")
        sys.stdout.flush()
        return
    from rich.table import Table

    from pc3d.console import console, is_quiet

    if is_quiet():
        return
    table = Table(title=title or None, show_header=False)
    for key, value in _flatten(result):
        table.add_row(key, _fmt(value))
    console.print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


# inference commands run a family of presets named after their default one (detect: a finetune preset's model)
COMMAND_PRESETS = {"segment": "partstad", "detect": "det-scannet"}


def preset_families(command: str) -> dict[str, list[str]]:
    """Top-level presets a command runs -> their variants (what `--preset` takes next to them)."""
    from pc3d.config import preset_catalog

    catalog = preset_catalog()
    tops = sorted(n for n, info in catalog.items() if info.base is None and
                  (info.command == command or n == COMMAND_PRESETS.get(command)))
    return {top: sorted(info.variant for info in catalog.values() if info.base == top) for top in tops}


def preset_help(command: str) -> str:
    """The presets paragraph of a command's --help: one unwrapped line per preset with its variants."""
    import textwrap

    from pc3d.config import PLANNED

    families = preset_families(command)
    planned = [name for name, (cmd, _) in PLANNED.items() if cmd == command and name not in families]
    parts = []
    if families:
        width = max(len(top) for top in families) + 2
        lines = ["\b", f"Presets and their variants (for --preset); `pc3d presets {command}` describes them:"]
        for top, variants in families.items():
            # click would break names at their hyphens; \b keeps these lines as written
            wrapped = textwrap.wrap(", ".join(variants) or "-", 76 - width, break_on_hyphens=False,
                                    break_long_words=False)
            lines += [f"  {top:<{width}}{wrapped[0]}", *(f"  {'':<{width}}{rest}" for rest in wrapped[1:])]
        parts.append("\n".join(lines))
    if planned:
        parts.append("Not built yet: " + ", ".join(planned) + ".")
    return "\n\n".join(parts)


def print_config(config: Any, json_out: bool) -> None:
    """--print-config: the config a command would run, as YAML (or one JSON object with --json)."""
    data = config.model_dump(mode="json")
    if json_out:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    sys.stdout.flush()


def resolve_config(command: str, name: str, preset: str | None, sets: list[str] | None,
                   flags: dict[str, Any], also_accept: tuple[str, ...] = ()) -> Any:
    """Preset (by name or --preset) + --set overrides + CLI flags -> validated config.

    `also_accept` lists other commands whose presets fit (detect runs a finetune preset's model)."""
    from pc3d.config import apply_overrides, load_preset, validate_preset

    source = preset or name
    data = load_preset(source, variant_of=name if preset else None, command=command)
    if data.get("command") not in (None, command, *also_accept):
        raise ConfigError(f"preset '{source}' is a '{data.get('command')}' preset, not a '{command}' one")
    data.setdefault("command", command)
    data = apply_overrides(data, sets or [])
    run = data.setdefault("run", {})
    if not isinstance(run, dict):
        raise ConfigError(f"preset {source}: run: must be a section")
    run.setdefault("name", Path(name).stem if name else Path(source).stem)
    for key, value in flags.items():
        if value is not None:
            run[key] = value.value if isinstance(value, Enum) else value
    return validate_preset(data, source)


def dispatch(config: Any, preset_name: str, **request: Any) -> dict[str, Any]:
    """Import the method's entry point only now (keeps `pc3d --help` fast) and run it."""
    from pc3d.runs import RunRequest

    module_name, _, func_name = type(config).entry.partition(":")
    if not module_name:
        raise InputError(f"method '{config.method}' has no entry point")
    module = importlib.import_module(module_name)
    run_request = RunRequest(config=config, preset_name=preset_name, **request)
    # what the command line asked for is checked first (a method's own `check_request`), then the dataset
    # folders (sampled, so a broken dataset fails here rather than in epoch 3)
    check_request = getattr(module, "check_request", None)
    if check_request is not None:
        check_request(run_request)
    from pc3d.data.prepare.preflight import startup_check

    startup_check(config, inference=bool(request.get("inputs")))
    return getattr(module, func_name)(run_request)
