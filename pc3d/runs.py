"""Run folders: `<out>/<name>/<time>/` with config.yaml, versions.json, metrics.jsonl, checkpoints/."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pc3d.io.atomic import write_text_atomic


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
    def create(cls, out: str | Path, name: str, stamp: str | None = None) -> RunDir:
        stamp = stamp or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(out) / name
        path = base / stamp
        suffix = 1
        while path.exists():  # two runs started in the same second
            path = base / f"{stamp}-{suffix}"
            suffix += 1
        (path / "checkpoints").mkdir(parents=True)
        return cls(path)

    @classmethod
    def latest(cls, out: str | Path, name: str) -> RunDir | None:
        base = Path(out) / name
        runs = sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []
        return cls(runs[-1]) if runs else None

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def save_config(self, config: dict[str, Any]) -> None:
        self.save_config_only(config)
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
