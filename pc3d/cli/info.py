"""`pc3d info`: the versions, devices and folders a bug report needs, on stdout."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from typing import Any

from pc3d.cli.common import JsonOpt

# distribution names as pip knows them; spconv comes as one of several spconv-cu* distributions
_PACKAGES = ("torch", "numpy", "triton", "spconv-triton", "transformers", "huggingface_hub", "safetensors",
             "open3d", "open3d-cpu", "typer", "pydantic")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _spconv() -> dict[str, str]:
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.startswith("spconv-cu") or name == "spconv":
            found[name] = dist.version
    return found


def _torch() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"installed": False}
    cuda = torch.cuda.is_available()
    devices = []
    if cuda:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append({"index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
                            "memory_gib": round(props.total_memory / 2**30, 1)})
    return {"version": torch.__version__, "cuda_build": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_available": cuda, "devices": devices}


def _sparse_backend(device: str) -> str:
    try:
        from pc3d.models.sparse import backend_name
    except (ImportError, AttributeError):  # older layout, or spconv's import failing inside it
        return "unknown"
    try:
        return str(backend_name(device))
    except Exception as exc:  # info must describe a broken install, not die of it
        return f"unknown ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"


def _hub() -> dict[str, Any]:
    offline_env = os.environ.get("HF_HUB_OFFLINE")
    try:
        from huggingface_hub import constants
    except ImportError:
        return {"cache": None, "offline": offline_env}
    return {"cache": str(constants.HF_HUB_CACHE), "offline": bool(constants.HF_HUB_OFFLINE),
            "HF_HUB_OFFLINE": offline_env, "HF_HOME": os.environ.get("HF_HOME")}


def collect_info() -> dict[str, Any]:
    from pc3d import __version__
    from pc3d.config import available_presets
    from pc3d.config.loading import _preset_dir

    torch_info = _torch()
    device = "cuda" if torch_info.get("cuda_available") else "cpu"
    return {
        "pc3d": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch_info,
        "packages": {name: _version(name) for name in _PACKAGES if _version(name) is not None},
        "spconv": _spconv(),
        "sparse_backend": {"device": device, "backend": _sparse_backend(device),
                           "PC3D_SPARSE_BACKEND": os.environ.get("PC3D_SPARSE_BACKEND")},
        "hub": _hub(),
        "presets": {"folder": str(_preset_dir()), "count": len(available_presets())},
    }


def _lines(data: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines += _lines(value, f"{prefix}{key}.")
        elif isinstance(value, list):
            lines.append(f"{prefix}{key}: " + ("; ".join(", ".join(f"{k} {v}" for k, v in item.items())
                                                         if isinstance(item, dict) else str(item) for item in value)
                                              or "none"))
        else:
            lines.append(f"{prefix}{key}: {'none' if value is None or value == {} else value}")
    return lines


def info_command(json_out: JsonOpt = False) -> None:
    """Versions, CUDA devices, the sparse-conv backend, hub cache and presets folder, for bug reports.

    \b
    Examples:
      pc3d info
      pc3d info --json
    """
    data = collect_info()
    if json_out:
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        sys.stdout.write("\n".join(_lines(data)) + "\n")
