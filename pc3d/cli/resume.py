"""`--resume`: a run's own config.yaml decides how it continues.

A resumed run must compute what the run started computing: the preset and overrides come from the
run's config.yaml, and a command line that would change them (another `--preset`, a `--set` with a new
value) is refused with the difference, unless `--allow-change` accepts it, which the trainer records in
the run. Only where and on how many workers it runs may differ. Only pydantic and yaml are imported
here at module level (the CLI stays fast).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pc3d.errors import ConfigError, InputError

# where and on how many workers a run happens, not what it computes: these may differ at a resume
RUNTIME_KEYS = ("run.device", "run.gpus", "run.nproc")
# run.out is where the run was found (a moved run folder keeps working), run.name the folder's name
LOCATION_KEYS = ("run.out", "run.name")
_TRAINING_COMMANDS = ("pretrain", "finetune")
# methods whose run trains several runs inside its folder (fold0/, fold1/, ...) and has no checkpoint itself
FOLDED_METHODS = ("object-fewshot",)
_MAX_SHOWN = 6


@dataclass
class ResumePlan:
    """What `--resume` continues: the config to run and the checkpoint (None: the trainer decides)."""

    config: Any
    checkpoint: Path | None = None
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_path: Path | None = None  # the run folder continued (few-shot runs continue it without a checkpoint)


def rewrite_resume_argv(argv: list[str]) -> list[str]:
    """`--resume auto`, `--resume PATH`, `--resume=X` -> `--resume-from X`.

    Typer's parser has no options with an optional value, and `--resume` alone must stay a flag, so
    the value form is recognised here: `auto`, or a token that names a path (has a `/` or ends in
    `.json`). Anything else after `--resume` stays what it was (the METHOD, another option)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first not in _TRAINING_COMMANDS:
        return argv
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":  # everything after it is positional
            out.extend(argv[i:])
            break
        if token.startswith("--resume="):
            out += ["--resume-from", token.split("=", 1)[1]]
        elif token == "--resume" and i + 1 < len(argv) and _names_a_resume_target(argv[i + 1]):
            out += ["--resume-from", argv[i + 1]]
            i += 1
        else:
            out.append(token)
        i += 1
    return out


def _names_a_resume_target(token: str) -> bool:
    if token == "auto":
        return True
    if token.startswith("-") or token.endswith((".yaml", ".yml")):
        return False
    return os.sep in token or "/" in token or token.endswith(".json")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Keys whose values differ between two config dicts (dotted paths), runtime and location keys left out."""
    old, new = _flatten(before), _flatten(after)
    skip = (*RUNTIME_KEYS, *LOCATION_KEYS)
    return {key: {"from": old.get(key), "to": new.get(key)} for key in sorted(set(old) | set(new))
            if key not in skip and old.get(key) != new.get(key)}


def _run_location(name: str, preset: str | None, sets: list[str], out: str | None) -> tuple[str, str]:
    """(out, name) of the runs this command line would write, read from the preset's YAML without
    validating it (the full preset may name a dataset that is not here; that must not matter)."""
    from pc3d.config import apply_overrides, load_preset

    data: dict[str, Any] = {}
    try:
        data = load_preset(preset or name, variant_of=name if preset else None)
    except InputError:
        if preset:
            raise
    run = apply_overrides(data, sets).get("run") or {}
    run = run if isinstance(run, dict) else {}
    return str(out or run.get("out") or "runs"), str(run.get("name") or Path(name).stem)


def _locate(target: str, name: str, preset: str | None, sets: list[str],
            out: str | None) -> tuple[Path, Path | None] | None:
    """The run folder and checkpoint `target` (latest, auto or a path) points at; None when there is none."""
    from pc3d.engine.checkpoint import CheckpointFolder
    from pc3d.runs import RunDir, resolve_latest

    if target in ("latest", "auto"):
        run_out, run_name = _run_location(name, preset, sets, out)
        run = RunDir.latest(run_out, run_name)
        if run is None:
            return None
        return run.path, CheckpointFolder(run.checkpoints, keep_last=1).latest()
    path = resolve_latest(target)  # runs/NAME/latest[/...]: the run folder it names
    if not path.exists():
        raise InputError(f"--resume {target}: no such run folder or checkpoint")
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise InputError(f"--resume {target}: not a run folder (no config.yaml); give runs/NAME/TIME or "
                             "a checkpoint runs/NAME/TIME/checkpoints/*.json")
        return path, CheckpointFolder(path / "checkpoints", keep_last=1).latest()
    sidecar = path.with_suffix(".json") if path.suffix == ".safetensors" else path
    run_path = sidecar.parent.parent
    if sidecar.suffix != ".json" or sidecar.parent.name != "checkpoints" \
            or not (run_path / "config.yaml").is_file():
        raise InputError(f"--resume {target}: not a checkpoint of a run folder (expected "
                         "runs/NAME/TIME/checkpoints/*.json next to the run's config.yaml)")
    if not sidecar.is_file():
        raise InputError(f"--resume {target}: sidecar {sidecar.name} is missing")
    return run_path, sidecar


def _read_run_config(run_path: Path) -> dict[str, Any]:
    import yaml

    path = run_path / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"--resume: run {run_path} has no config.yaml") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"--resume: cannot read {path} ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--resume: {path} is not a mapping of keys")
    return data


def _given(key: str, flags: dict[str, Any], sets: list[str]) -> bool:
    """Did the command line itself set this run.* key (a flag, or --set run.key=...)?"""
    leaf = key.split(".", 1)[1]
    return flags.get(leaf) is not None or any(s.split("=", 1)[0].strip() == key for s in sets)


def plan_resume(command: str, name: str, target: str, preset: str | None, sets: list[str],
                flags: dict[str, Any], allow_change: bool) -> ResumePlan:
    """Resolve `--resume`/`--resume auto`/`--resume PATH` into the config to run.

    With a run and a checkpoint to continue, the run's config.yaml is the base: without `--preset`
    the `--set`s apply on top of it, with `--preset` the command line is resolved in full, and any
    difference outside the runtime keys is refused unless `allow_change`. With nothing to continue
    the command line's own config is returned and the trainer starts the run (auto); plain --resume
    without an earlier run is refused here."""
    from pc3d.cli.common import resolve_config
    from pc3d.config import apply_overrides, validate_preset

    found = _locate(target, name, preset, sets, flags.get("out"))
    recorded = _read_run_config(found[0]) if found is not None and (found[0] / "config.yaml").is_file() else {}
    fewshot = recorded.get("method") in FOLDED_METHODS
    if found is not None and fewshot and found[0].parent.name.startswith("fold") \
            and (found[0].parent.parent / "config.yaml").is_file():
        raise InputError(f"--resume {target}: one fold of the few-shot run {found[0].parent.parent}; resume the "
                         f"run itself: --resume {found[0].parent.parent}")
    if found is None and target == "latest":  # said here, before the dataset start-up check would speak
        run_out, run_name = _run_location(name, preset, sets, flags.get("out"))
        raise InputError(f"--resume: no earlier run named '{run_name}' under {run_out}/")
    if found is None or (found[1] is None and not fewshot):
        if target not in ("latest", "auto"):
            raise InputError(f"--resume {target}: run {found[0] if found else target} has no checkpoint yet")
        return ResumePlan(resolve_config(command, name, preset, sets, flags))
    # a few-shot run has no checkpoint of its own: its folds continue from theirs, under the same config check
    run_path, checkpoint = found
    recorded = recorded or _read_run_config(run_path)
    source = str(run_path / "config.yaml")
    if recorded.get("command") != command:
        raise InputError(f"--resume: {source} is a '{recorded.get('command')}' run, not a '{command}' one")
    before = validate_preset(recorded, source).model_dump(mode="json")
    if preset:
        after = resolve_config(command, name, preset, sets, flags).model_dump(mode="json")
    else:
        data = apply_overrides(before, sets)
        if flags.get("seed") is not None:
            data["run"]["seed"] = flags["seed"]
        after = validate_preset(data, source).model_dump(mode="json")
    changes = config_changes(before, after)
    if changes and not allow_change:
        shown = ", ".join(f"{k} {_show(v['from'])} -> {_show(v['to'])}" for k, v in list(changes.items())[:_MAX_SHOWN])
        more = f" (and {len(changes) - _MAX_SHOWN} more)" if len(changes) > _MAX_SHOWN else ""
        verb = "differs" if len(changes) == 1 else "differ"
        raise InputError(f"--resume: {shown}{more} {verb} from the run's config.yaml ({source}); leave out "
                         "--preset/--set to continue the run as it is, or add --allow-change to record the change")
    run = after["run"]
    for key in RUNTIME_KEYS:
        leaf = key.split(".", 1)[1]
        value = flags.get(leaf)
        if value is not None:
            run[leaf] = getattr(value, "value", value)  # the Device enum of --device
        elif not _given(key, flags, sets):  # not asked for now: as the run had it
            run[leaf] = before["run"][leaf]
    # the run continues where it is, whatever out/name it was started with (it may have been moved)
    run["out"], run["name"] = str(run_path.parent.parent), run_path.parent.name
    return ResumePlan(validate_preset(after, source), checkpoint, changes if allow_change else {}, run_path)
