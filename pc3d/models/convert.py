"""Official Point-MAE checkpoints <-> pc3d parameter names.

Official `pretrain.pth` = {'base_model': state_dict (maybe `module.`-prefixed), 'optimizer', 'epoch', ...}.
Official finetuned classifiers use the `PointTransformer` layout (`encoder.`, `blocks.blocks.`,
`cls_head_finetune.`). GeoMask3D's student names its final LayerNorm `norm_p` (mapped to `norm`).
Loading always uses `torch.load(weights_only=True)` or safetensors: no pickled code is ever run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pc3d.errors import InputError
from pc3d.io.atomic import atomic_path

# (official prefix, pc3d prefix) for the pretraining network, most specific first
PRETRAIN_PREFIXES: tuple[tuple[str, str], ...] = (
    ("MAE_encoder.encoder.", "encoder.tokenizer."),
    ("MAE_encoder.pos_embed.", "encoder.pos_embed."),
    ("MAE_encoder.blocks.blocks.", "encoder.blocks."),
    ("MAE_encoder.norm_p.", "encoder.norm."),  # GeoMask3D student's name for the final LN
    ("MAE_encoder.norm.", "encoder.norm."),
    ("decoder_pos_embed.", "decoder_pos_embed."),
    ("MAE_decoder.blocks.", "decoder.blocks."),
    ("MAE_decoder.norm.", "decoder.norm."),
    ("increase_dim.0.", "reconstruction_head."),
    ("mask_token", "mask_token"),
)

# the finetuned classifier (`PointTransformer`): the encoder sits at the top level
CLASSIFIER_PREFIXES: tuple[tuple[str, str], ...] = (
    ("encoder.", "encoder.tokenizer."),
    ("pos_embed.", "encoder.pos_embed."),
    ("blocks.blocks.", "encoder.blocks."),
    ("norm.", "encoder.norm."),
    ("cls_token", "cls_token"),
    ("cls_pos", "cls_pos"),
    ("cls_head_finetune.", "head."),
)

_ENCODER_PROBE = "encoder.tokenizer.first_conv.0.weight"


@dataclass
class LoadReport:
    """What `load_state` matched: keys the model wanted but did not get, and keys nobody used."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    loaded: int = 0

    def summary(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        return (f"loaded {self.loaded} tensors; missing {len(self.missing)}: {short(self.missing) or '-'}; "
                f"unexpected {len(self.unexpected)}: {short(self.unexpected) or '-'}")


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP `module.` and `base_model.` prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "base_model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def is_official_layout(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("MAE_encoder.", "blocks.blocks.", "cls_head_finetune.", "MAE_decoder."))
               for k in state)


def _rename(key: str, table: tuple[tuple[str, str], ...], reverse: bool = False) -> str | None:
    for official, ours in table:
        src, dst = (ours, official) if reverse else (official, ours)
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def official_to_pc3d(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename official keys to pc3d's; returns (renamed, keys with no pc3d counterpart)."""
    state = strip_wrappers(state)
    pretrain = any(k.startswith("MAE_encoder.") for k in state)
    table = PRETRAIN_PREFIXES if pretrain else CLASSIFIER_PREFIXES
    out, unmapped = {}, []
    for key, value in state.items():
        new = _rename(key, table)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    return out, unmapped


def pc3d_to_official(state: dict[str, torch.Tensor], layout: str = "pretrain") -> dict[str, torch.Tensor]:
    """Rename a pc3d PointMAE (layout 'pretrain') or PointMAEClassifier ('classifier') state to official."""
    table = PRETRAIN_PREFIXES if layout == "pretrain" else CLASSIFIER_PREFIXES
    # MAE_encoder.norm_p is an import alias only; export the canonical official name
    table = tuple(pair for pair in table if pair[0] != "MAE_encoder.norm_p.")
    out = {}
    for key, value in state.items():
        new = _rename(key, table, reverse=True)
        if new is None:
            raise InputError(f"cannot export parameter '{key}': it has no official Point-MAE name")
        out[new] = value.detach().cpu()
    return out


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a torch file read with weights_only=True.

    A torch file may wrap its weights in 'base_model' (Point-MAE), 'state_dict'/'model' (GeoMask3D, MAE)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise InputError(f"checkpoint {path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"checkpoint {path}: cannot be read with weights_only=True ({first})") from None
    if isinstance(obj, dict):
        for key in ("base_model", "state_dict", "model", "student"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"checkpoint {path}: no state dict of tensors found")
    return strip_wrappers(obj)


def encoder_prefix(state: dict[str, torch.Tensor]) -> str | None:
    """Prefix under which a pc3d state holds a Point-MAE encoder; students before EMA/KD teachers."""
    prefixes = [k[: -len(_ENCODER_PROBE)] for k in state if k.endswith(_ENCODER_PROBE)]
    if not prefixes:
        return None
    return min(prefixes, key=lambda p: (bool(re.search(r"teacher|ema", p)), len(p)))


def backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pc3d-named weights (`encoder.*`, and head keys when present) from any supported checkpoint:
    official Point-MAE / GeoMask3D / finetuned classifier, or a pc3d run of this project."""
    state = strip_wrappers(state)
    if is_official_layout(state):
        state, _ = official_to_pc3d(state)
    prefix = encoder_prefix(state)
    if prefix is None:
        raise InputError("checkpoint holds no Point-MAE encoder (expected keys like "
                         f"'{_ENCODER_PROBE}' or 'MAE_encoder.encoder.first_conv.0.weight')")
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_state(model: nn.Module, state: dict[str, torch.Tensor], only_prefix: str | None = None) -> LoadReport:
    """Non-strict load that reports missing/unexpected keys; a shape mismatch is an InputError.

    `only_prefix` restricts which of the model's keys count as missing (e.g. 'encoder.')."""
    own = model.state_dict()
    usable, unexpected = {}, []
    for key, value in state.items():
        if key not in own:
            unexpected.append(key)
        elif own[key].shape != value.shape:
            raise InputError(f"weight '{key}' has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(own[key].shape)} (different width/depth/groups?)")
        else:
            usable[key] = value
    model.load_state_dict(usable, strict=False)
    missing = [k for k in own if k not in usable and (only_prefix is None or k.startswith(only_prefix))]
    return LoadReport(missing=sorted(missing), unexpected=sorted(unexpected), loaded=len(usable))


def import_official(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load an official Point-MAE `pretrain.pth` (or finetuned classifier) into a pc3d model."""
    state, unmapped = official_to_pc3d(read_checkpoint(path))
    report = load_state(model, state)
    report.unexpected = sorted(report.unexpected + unmapped)
    return report


def export_official(model: nn.Module, path: str | os.PathLike, layout: str = "pretrain",
                    epoch: int = 0) -> Path:
    """Write `model` as an official-layout checkpoint that the Point-MAE repo can load."""
    payload = {"base_model": pc3d_to_official(model.state_dict(), layout), "epoch": epoch,
               "metrics": {}, "best_metrics": {}}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def export_state_official(state: dict[str, torch.Tensor], path: str | os.PathLike,
                          epoch: int = 0) -> tuple[Path, list[str]]:
    """Write the Point-MAE part of a pc3d run's weights (a point-mae run's `model.*`, or a GeoMask3D
    student's encoder/decoder) as an official `pretrain.pth`; returns the path and the skipped keys."""
    state = strip_wrappers(state)
    prefix = encoder_prefix(state)
    if prefix is None:
        raise InputError("weights hold no Point-MAE encoder to export")
    ours = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    official, skipped = {}, []
    for key, value in ours.items():
        new = _rename(key, tuple(p for p in PRETRAIN_PREFIXES if p[0] != "MAE_encoder.norm_p."), reverse=True)
        if new is None:
            skipped.append(key)
        else:
            official[new] = value.detach().cpu()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"base_model": official, "epoch": epoch, "metrics": {}, "best_metrics": {}}, tmp)
    return path, sorted(skipped)
