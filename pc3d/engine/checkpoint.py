"""Checkpoints: one safetensors file with every tensor plus a JSON sidecar with everything else.

Layout: `<stem>.safetensors` holds `model/<name>` (the method's state dict) and, for training
checkpoints, `optim/<index>/<key>` (AdamW moments and step counters). `<stem>.json` holds the format
tag, the tensor file's sha256 and size, config, epoch/step/position, scheduler, the optimiser's
non-tensor state, RNG states of every rank, and metrics. The tensor file is written first and the
sidecar last, both atomically, so a sidecar always describes a complete tensor file; a file that was
truncated or edited afterwards fails the hash check and is refused with one line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pc3d.engine.hub import resolve_weights
from pc3d.errors import InputError
from pc3d.io.atomic import atomic_path, write_text_atomic

FORMAT = "pc3d-checkpoint"
FORMAT_VERSION = 1
MODEL_PREFIX = "model/"
OPTIM_PREFIX = "optim/"
_ROLLING = re.compile(r"^step-(\d+)\.json$")


@dataclass
class Checkpoint:
    tensors: dict[str, Tensor]
    meta: dict[str, Any]
    path: Path  # the sidecar

    @property
    def model_state(self) -> dict[str, Tensor]:
        return {k[len(MODEL_PREFIX):]: v for k, v in self.tensors.items() if k.startswith(MODEL_PREFIX)}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, and no two entries sharing memory (safetensors refuses shared storage)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in tensors.items():
        tensor = value.detach().to("cpu")
        if not tensor.is_contiguous() or (tensor.numel() and tensor.data_ptr() in seen):
            tensor = tensor.contiguous().clone()
        if tensor.numel():
            seen.add(tensor.data_ptr())
        out[key] = tensor
    return out


def save_checkpoint(stem: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write `<stem>.safetensors` then `<stem>.json`; returns the sidecar path."""
    from safetensors.torch import save_file

    stem = Path(stem)
    tensor_path = stem.with_name(stem.name + ".safetensors")
    sidecar = stem.with_name(stem.name + ".json")
    with atomic_path(tensor_path) as tmp:
        save_file(_plain_tensors(tensors), str(tmp), metadata={"format": "pt", "producer": FORMAT})
        digest, size = sha256_file(tmp), tmp.stat().st_size
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "sha256": digest, "bytes": size, **meta}
    write_text_atomic(sidecar, json.dumps(record, indent=1))
    return sidecar


def _sidecar_of(path: Path) -> Path:
    return path if path.suffix == ".json" else path.with_suffix(".json")


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar of a checkpoint (given either file), validated as a pc3d checkpoint."""
    sidecar = _sidecar_of(Path(path))
    if not sidecar.is_file():
        raise InputError(f"checkpoint {path}: sidecar {sidecar.name} is missing (not a complete pc3d checkpoint)")
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"checkpoint {sidecar}: sidecar is not valid JSON (truncated or edited)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"checkpoint {sidecar}: not a pc3d checkpoint sidecar")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(f"checkpoint {sidecar}: written by a newer pc3d (format {meta['format_version']})")
    return meta


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load and verify a checkpoint (either file of the pair); InputError (one line) when it is not intact."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    sidecar = _sidecar_of(Path(path))
    meta = read_meta(sidecar)
    tensor_path = sidecar.with_suffix(".safetensors")  # by stem, so a renamed or copied pair still loads
    if not tensor_path.is_file():
        raise InputError(f"checkpoint {sidecar}: tensor file {tensor_path.name} is missing")
    size = tensor_path.stat().st_size
    if size != meta.get("bytes"):
        raise InputError(f"checkpoint {tensor_path}: {size} bytes but the sidecar records {meta.get('bytes')} "
                         "(truncated or replaced)")
    if sha256_file(tensor_path) != meta.get("sha256"):
        raise InputError(f"checkpoint {tensor_path}: contents do not match the sha256 in its sidecar "
                         "(corrupted or modified)")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"checkpoint {tensor_path}: unreadable safetensors file ({exc})") from None
    return Checkpoint(tensors, meta, sidecar)


# ---------------------------------------------------------------- optimiser state


def split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """torch optimiser state dict -> (tensors for safetensors, JSON-able rest)."""
    tensors: dict[str, Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{OPTIM_PREFIX}{index}/{key}"] = value
            else:
                other.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "state": other}


def merge_optimizer_state(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(OPTIM_PREFIX):
            index, key = name[len(OPTIM_PREFIX):].split("/", 1)
            state.setdefault(int(index), {})[key] = value
    for index, entry in rest.get("state", {}).items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": rest["param_groups"]}


# ---------------------------------------------------------------- RNG state


def _b64(tensor: Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python RNG states of this process, JSON-able."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": _b64(torch.get_rng_state()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(_unb64(state["torch"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


# ---------------------------------------------------------------- a run's checkpoint folder


class CheckpointFolder:
    """`step-<N>` rolling checkpoints (keep the last K), `best` by a metric, `last` at the end."""

    def __init__(self, folder: Path, keep_last: int) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last

    def save_rolling(self, step: int, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
        sidecar = save_checkpoint(self.folder / f"step-{step:08d}", tensors, meta)
        for old in self.rolling()[: -self.keep_last]:
            old.with_suffix(".safetensors").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
        return sidecar

    def save_named(self, name: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
        return save_checkpoint(self.folder / name, tensors, meta)

    def rolling(self) -> list[Path]:
        """Sidecars of the rolling checkpoints, oldest first."""
        found = [(int(m.group(1)), p) for p in self.folder.glob("step-*.json") if (m := _ROLLING.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The sidecar with the highest step (rolling or `last`); None when there is none."""
        candidates = [(int(_ROLLING.match(p.name).group(1)), 0, p) for p in self.rolling()]
        last = self.folder / "last.json"
        if last.is_file():
            candidates.append((int(read_meta(last).get("step", -1)), 1, last))
        return max(candidates)[2] if candidates else None


def export_model(checkpoint: Checkpoint, stem: Path, extra: dict[str, Any] | None = None) -> Path:
    """A weights-only copy (model tensors, config, metrics): what gets shared or uploaded."""
    tensors = {k: v for k, v in checkpoint.tensors.items() if k.startswith(MODEL_PREFIX)}
    keep = ("config", "epoch", "step", "metrics", "best", "versions")
    meta = {k: checkpoint.meta[k] for k in keep if k in checkpoint.meta}
    return save_checkpoint(stem, tensors, {**meta, **(extra or {})})


# ---------------------------------------------------------------- a checkpoint argument -> its file

CHECKPOINT_NAMES = ("best.json", "last.json")  # what a finished run's checkpoints/ holds, in order of preference


def resolve_checkpoint_path(spec: str) -> str:
    """What every checkpoint argument (`--from`, `--checkpoint`, `segment --weights`, `pc3d predict CKPT`) means.

    `hf://...` and files pass through (a missing file is reported by whoever reads it); `latest` may be a
    symlink or the text-file fallback (pc3d.runs.resolve_latest). A run folder `runs/NAME/TIME` (or
    `runs/NAME/latest`, or its `checkpoints/` folder) -> its checkpoints/best.json, else last.json; a
    name folder `runs/NAME` -> its latest run. A folder with neither is one line naming what to pass."""
    from pc3d.engine.hub import HF_SCHEME
    from pc3d.runs import LATEST, resolve_latest

    if spec.startswith(HF_SCHEME):
        return spec
    path = resolve_latest(spec)
    if not path.is_dir():
        return str(path)
    if not (path / "checkpoints").is_dir() and not (path / "config.yaml").is_file() \
            and (path / LATEST).exists():  # runs/NAME: its newest run
        path = resolve_latest(path / LATEST)
    folder = path if path.name == "checkpoints" else path / "checkpoints"
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return str(folder / name)
    folds = sorted(p.name for p in path.glob("fold*") if p.is_dir())
    if folds:  # a few-shot run: one classifier per fold, none of the run as a whole
        raise InputError(f"{spec}: a few-shot run of {len(folds)} folds with one classifier each; pass one "
                         f"fold's run, e.g. {Path(spec) / folds[0] / LATEST}")
    rolling = CheckpointFolder(folder, keep_last=1).rolling() if folder.is_dir() else []
    if rolling:  # running or interrupted: only step-N checkpoints so far
        raise InputError(f"{spec}: no checkpoints/best.json or last.json yet (a running or interrupted run?); "
                         f"its newest checkpoint is {rolling[-1]}, pass that file to use it")
    raise InputError(f"{spec}: a folder without checkpoints/best.json or checkpoints/last.json; pass a run folder "
                     "runs/NAME/TIME (or runs/NAME/latest) that trained, or a checkpoint file")


# ---------------------------------------------------------------- weights for --from


def _numpy_float64_globals() -> list[Any]:
    """The pickle globals a numpy float64 scalar needs, and nothing else.

    Official Point-MAE part-segmentation checkpoints store their metrics (`train_acc`, `test_acc`,
    `class_avg_iou`, `inctance_avg_iou`) as numpy float64 next to `model_state_dict`; the weights-only
    unpickler refuses them unless these exact globals are allowed. A numpy-1 pickle names the scalar
    constructor `numpy.core.multiarray.scalar`, a numpy-2 pickle `numpy._core.multiarray.scalar`; the
    dtype is rebuilt through `numpy.dtype` and its BUILD step needs the float64 dtype class."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, type(np.dtype(np.float64))]


def torch_load_weights_only(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)` that also accepts numpy float64 scalars (official metrics).

    Only the globals of `_numpy_float64_globals` are added to torch's weights-only allow-list, and only for
    this call (a context manager, not the process-wide `add_safe_globals`); no other pickled type loads."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5 has no scoped allow-list: plain weights-only loading
        return torch.load(path, map_location=map_location, weights_only=True)
    with safe_globals(_numpy_float64_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


_NESTED_KEYS = ("model", "state_dict", "base_model", "model_state", "model_state_dict", "net", "module")


def _flatten_state(obj: Any, source: str) -> dict[str, Tensor]:
    """A checkpoint object -> flat {name: tensor}: unwrap the usual nestings and DDP's "module." prefix."""
    if not isinstance(obj, dict):
        raise InputError(f"weights {source}: expected a dict of tensors, found {type(obj).__name__}")
    if not any(isinstance(v, Tensor) for v in obj.values()):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                return _flatten_state(obj[key], source)
        raise InputError(f"weights {source}: no tensors found (keys: {', '.join(map(str, list(obj)[:6]))})")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_weights(spec: str, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Model weights for `--from`: a pc3d checkpoint, any .safetensors, or a .pth/.pt (weights_only).

    `spec` is a local path or `hf://owner/repo[@revision][/file]`. For pc3d checkpoints only the
    model tensors are returned, with their `model/` prefix removed."""
    path = resolve_weights(spec)
    if path.suffix == ".json" or (path.suffix == ".safetensors" and path.with_suffix(".json").is_file()):
        checkpoint = read_checkpoint(path)
        return {k: v.to(map_location) for k, v in checkpoint.model_state.items()}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"weights {path}: unreadable safetensors file ({exc})") from None
        if tensors and all(k.startswith(MODEL_PREFIX) for k in tensors):
            tensors = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items()}
        return tensors
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch_load_weights_only(path, map_location)
        except Exception as exc:  # unpickling errors come in many types; all mean the same to the user
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"weights {path}: cannot be loaded safely (weights_only): {first}") from None
        return _flatten_state(obj, str(path))
    raise InputError(f"weights {path}: unsupported file type '{path.suffix}' (use .safetensors, .pth or .pt)")
