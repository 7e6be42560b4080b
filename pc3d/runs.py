"""Run folders: one layout for every command that writes results.

`<out>/<name>/<time>/` holds config.yaml (what ran), versions.json (with what), summary.json (exactly the
result object `--json` prints) and the command's outputs beside them (checkpoints/, metrics.jsonl, label
files, ...). `<out>/<name>/latest` names the newest run folder: a relative symlink, replaced atomically
when a run starts (so a running job is `latest`), or on file systems without symlinks a text file holding
the folder's name; `resolve_latest` reads both.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pc3d.io.atomic import write_text_atomic

LATEST = "latest"
SUMMARY = "summary.json"
# <time> of a run folder: YYYYmmdd-HHMMSS, with -N when two runs of a name start in the same second
RUN_STAMP = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    names = ["pc3d", "torch", "numpy", "scipy", "open3d-cpu", "open3d", "transformers", "triton", "spconv-triton"]
    # spconv ships one distribution per CUDA flavour (spconv-cu120, spconv-cu126, ...): record whichever is here
    names += sorted({dist.metadata["Name"] for dist in metadata.distributions()
                     if (dist.metadata["Name"] or "").startswith("spconv-cu")})
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, out: str | Path, name: str, stamp: str | None = None, checkpoints: bool = True) -> RunDir:
        """A new `<out>/<name>/<time>/` (with checkpoints/ for the commands that write some), made `latest`."""
        stamp = stamp or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(out) / name
        base.mkdir(parents=True, exist_ok=True)
        suffix = 0
        while True:  # two runs of a name started in the same second (mkdir is the atomic claim)
            path = base / (stamp if not suffix else f"{stamp}-{suffix}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                suffix += 1
        if checkpoints:
            (path / "checkpoints").mkdir()
        run = cls(path)
        run.mark_latest()
        return run

    @classmethod
    def latest(cls, out: str | Path, name: str) -> RunDir | None:
        """The run `<out>/<name>/latest` names (the last one started or resumed); without a valid link, the
        newest run folder by its time stamp."""
        base = Path(out) / name
        if not base.is_dir():
            return None
        linked = _latest_name(base / LATEST)
        if linked and RUN_STAMP.match(linked) and (base / linked).is_dir():
            return cls(base / linked)
        runs = sorted((p for p in base.iterdir() if RUN_STAMP.match(p.name) and p.is_dir() and not p.is_symlink()),
                      key=_stamp_key)
        return cls(runs[-1]) if runs else None

    @classmethod
    def continue_or_create(cls, out: str | Path, name: str, config: dict[str, Any], resume: bool) -> RunDir:
        """The latest run of `name` when `resume` and it ran exactly this config (its config.yaml), made
        `latest` again; else a new run with this config. For commands that continue by skipping finished
        outputs (pseudolabel): a changed config never mixes its outputs with another config's."""
        if resume and (run := cls.latest(out, name)) is not None and run.config_file.is_file():
            try:
                recorded = yaml.safe_load(run.config_file.read_text())
            except (OSError, yaml.YAMLError):
                recorded = None
            if recorded == json.loads(result_json(config)):
                run.mark_latest()
                return run
        run = cls.create(out, name, checkpoints=False)
        run.save_config(config)
        return run

    def mark_latest(self) -> None:
        """Point `<out>/<name>/latest` at this run (resumed runs too: the running job is the latest)."""
        path = resolve_latest(self.path)  # a run reached through `latest` itself: the folder it names
        if path.name != LATEST:
            update_latest(path.parent, path.name)

    def write_summary(self, result: dict[str, Any]) -> Path:
        """summary.json: the command's result, serialised exactly as `--json` prints it."""
        path = self.path / SUMMARY
        write_text_atomic(path, result_json(result, indent=1) + "\n")
        return path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def save_config(self, config: dict[str, Any]) -> None:
        self.save_config_only(config)
        self.save_versions()

    def save_versions(self) -> None:
        info = {"versions": package_versions(), "argv": sys.argv}
        write_text_atomic(self.path / "versions.json", json.dumps(info, indent=2))

    def save_config_only(self, config: dict[str, Any]) -> None:
        """Rewrite config.yaml alone (a resume that changed the config keeps the run's versions.json)."""
        write_text_atomic(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line (line-sized appends; a crash loses at most the last line)."""
        with open(self.metrics_file, "a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")


def _stamp_key(path: Path) -> tuple[str, int]:
    """Sort key of a run folder: its time, then the same-second counter as a number (-10 after -9)."""
    return path.name[:15], int(path.name[16:] or 0)


def json_default(value: Any) -> Any:
    """How results turn into JSON: arrays and tensors as lists, paths and anything else as text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def result_json(result: dict[str, Any], indent: int | None = None) -> str:
    """The one serialisation of a command's result (stdout of `--json` and summary.json)."""
    return json.dumps(result, default=json_default, indent=indent)


def update_latest(base: Path, folder: str) -> None:
    """`base/latest` -> `folder` (a name inside `base`): a relative symlink swapped in with one rename, so a
    reader never sees it missing; where symlinks cannot be made, a text file with the name, also atomic."""
    link = base / LATEST
    tmp = base / f".{LATEST}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(folder, tmp, target_is_directory=True)
        os.replace(tmp, link)
        return
    except OSError:  # no symlinks here (some network and Windows file systems), or a stale tmp in the way
        with contextlib.suppress(OSError):
            tmp.unlink()
    if link.is_symlink():
        link.unlink()
    write_text_atomic(link, folder + "\n")


def resolve_latest(path: str | Path) -> Path:
    """`path` with every `latest` (the symlink, or the text file where symlinks cannot be made) replaced by
    the run folder it names: `runs/x/latest/checkpoints/last.json` -> `runs/x/<time>/checkpoints/last.json`."""
    resolved = Path()
    for part in Path(path).expanduser().parts:
        candidate = resolved / part
        if part == LATEST:
            name = _latest_name(candidate)
            if name:  # the run folder's own name: results and resumed runs show where they really are
                candidate = resolved / name
        resolved = candidate
    return resolved


def _latest_name(link: Path) -> str | None:
    """The folder name a `latest` link or text file holds; None when it is neither or names something else."""
    try:
        name = os.readlink(link) if link.is_symlink() else link.read_text().strip() if link.is_file() else ""
    except OSError:
        return None
    return name if name and "/" not in name and os.sep not in name and name not in (".", "..") else None


@dataclass
class RunRequest:
    """What a command hands to a method's entry point: the validated preset plus per-invocation flags."""

    config: Any  # a validated pc3d.config.PresetBase subclass
    preset_name: str
    resume: bool = False  # continue the latest run of this name; an error when there is none
    resume_auto: bool = False  # continue the latest run of this name when there is one, else start one
    resume_checkpoint: str | None = None  # continue exactly this checkpoint sidecar (in <run>/checkpoints/)
    resume_changes: dict[str, dict[str, Any]] | None = None  # key -> {"from", "to"}: accepted with --allow-change
    init_from: str | None = None  # weights to start from: path or hf://owner/repo[@rev][/file]
    push_to_hub: str | None = None
    inputs: dict[str, Any] | None = None  # command-specific inputs (point-cloud file, part names, ...)
    resume_run: str | None = None  # the run folder to continue when it has no checkpoint of its own (few-shot)
