"""Official Point-MAE checkpoints <-> pc3d parameter names.

Official `pretrain.pth` = {'base_model': state_dict (maybe `module.`-prefixed), 'optimizer', 'epoch', ...}.
Official finetuned classifiers use the `PointTransformer` layout (`encoder.`, `blocks.blocks.`,
`cls_head_finetune.`); official part-segmentation checkpoints (`segmentation/models/pt.py`) keep the
same encoder names beside `label_conv`, `propagation_0`, `convs1-3`, `bns1-2`, under `model_state_dict`
with numpy float64 metrics. GeoMask3D names the final LayerNorm `norm_p` (mapped to `norm`).
Loading always uses `torch.load(weights_only=True)` (plus numpy float64 scalars, see
`pc3d.engine.checkpoint.torch_load_weights_only`) or safetensors: no pickled code is ever run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

# the finetuned classifier (`PointTransformer`) and the part-segmentation net (`get_model` of
# segmentation/models/pt.py): the encoder sits at the top level
CLASSIFIER_PREFIXES: tuple[tuple[str, str], ...] = (
    ("encoder.", "encoder.tokenizer."),
    ("pos_embed.", "encoder.pos_embed."),
    ("blocks.blocks.", "encoder.blocks."),
    ("norm_p.", "encoder.norm."),  # a GeoMask3D-finetuned classifier's name for the final LN
    ("norm.", "encoder.norm."),
    ("cls_token", "cls_token"),
    ("cls_pos", "cls_pos"),
    ("cls_head_finetune.", "head."),
    # part segmentation -> PointMAEPartSeg. label_conv is the same Sequential (Conv, BN, LeakyReLU).
    # `propagation_0` is PointNet++'s feature propagation (mlp_convs[i], mlp_bns[i], ReLU after each);
    # pc3d writes it as one Sequential: Conv(0) BN(1) ReLU(2) Conv(3) BN(4) ReLU(5).
    ("label_conv.", "label_conv."),
    ("propagation_0.mlp_convs.0.", "propagation.0."),
    ("propagation_0.mlp_bns.0.", "propagation.1."),
    ("propagation_0.mlp_convs.1.", "propagation.3."),
    ("propagation_0.mlp_bns.1.", "propagation.4."),
    # convs1 -> bns1 -> relu -> dp1 -> convs2 -> bns2 -> relu -> convs3, pc3d's `seg_head` Sequential
    ("convs1.", "seg_head.0."),
    ("bns1.", "seg_head.1."),
    ("convs2.", "seg_head.4."),
    ("bns2.", "seg_head.5."),
    ("convs3.", "seg_head.7."),
)

# import-only alternative names: when a file holds both an alias and the canonical name, the canonical
# tensor is loaded and the alias is reported as unused (never one silently overwriting the other)
_ALIASES = frozenset({"MAE_encoder.norm_p.", "norm_p."})

_ENCODER_PROBE = "encoder.tokenizer.first_conv.0.weight"


@dataclass
class LoadReport:
    """What `load_state` matched: keys the model wanted but did not get, and keys nobody used.

    `notes` says why a whole part of a file was left out (e.g. a classifier head for another class count)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    loaded: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        text = (f"loaded {self.loaded} tensors; missing {len(self.missing)}: {short(self.missing) or '-'}; "
                f"unexpected {len(self.unexpected)}: {short(self.unexpected) or '-'}")
        return text + "".join(f"; {note}" for note in self.notes)

    def as_dict(self) -> dict[str, Any]:
        """The `--from` report of `Method.load_pretrained`: 'skipped' = tensors of the file not used."""
        return {"loaded": self.loaded, "skipped": self.unexpected, "missing": self.missing, "notes": self.notes}


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


def _is_alias(key: str) -> bool:
    return key.startswith(tuple(_ALIASES))


@dataclass
class Renamed:
    """A checkpoint's tensors under pc3d names, remembering each one's name in the file."""

    state: dict[str, torch.Tensor]
    origin: dict[str, str]  # pc3d name -> the key it had in the file
    unused: list[str] = field(default_factory=list)  # keys of the file that have no place (file names)
    notes: list[str] = field(default_factory=list)


def _strip_traced(weights: dict[str, torch.Tensor]) -> Renamed:
    out = Renamed(state={}, origin={})
    for key, value in weights.items():
        new = next(iter(strip_wrappers({key: value})))
        if new in out.state:  # `module.x` and `x` both present: keep the first, report the other
            out.unused.append(key)
            continue
        out.state[new], out.origin[new] = value, key
    return out


def _official_traced(weights: dict[str, torch.Tensor]) -> Renamed:
    """`official_to_pc3d` that keeps track of the file's names; aliases lose to canonical names."""
    stripped = _strip_traced(weights)
    pretrain = any(k.startswith("MAE_encoder.") for k in stripped.state)
    table = PRETRAIN_PREFIXES if pretrain else CLASSIFIER_PREFIXES
    out = Renamed(state={}, origin={}, unused=list(stripped.unused))
    # canonical names first, so that an alias never replaces the tensor of the canonical name
    for key in sorted(stripped.state, key=_is_alias):
        new = _rename(key, table)
        file_key = stripped.origin[key]
        if new is None:
            out.unused.append(file_key)
        elif new in out.state:
            out.unused.append(file_key)
            out.notes.append(f"'{file_key}' and '{out.origin[new]}' both name {new}; used '{out.origin[new]}'")
        else:
            out.state[new], out.origin[new] = stripped.state[key], file_key
    return out


def official_to_pc3d(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename official keys to pc3d's; returns (renamed, keys with no pc3d counterpart)."""
    traced = _official_traced(state)
    return traced.state, traced.unused


def pc3d_to_official(state: dict[str, torch.Tensor], layout: str = "pretrain") -> dict[str, torch.Tensor]:
    """Rename a pc3d PointMAE (layout 'pretrain') or PointMAEClassifier ('classifier') state to official."""
    table = PRETRAIN_PREFIXES if layout == "pretrain" else CLASSIFIER_PREFIXES
    # norm_p is an import alias only; export the canonical official name
    table = tuple(pair for pair in table if pair[0] not in _ALIASES)
    out = {}
    for key, value in state.items():
        new = _rename(key, table, reverse=True)
        if new is None:
            raise InputError(f"cannot export parameter '{key}': it has no official Point-MAE name")
        out[new] = value.detach().cpu()
    return out


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a torch file read with weights_only=True.

    A torch file may wrap its weights in 'base_model' (Point-MAE), 'model_state_dict' (Point-MAE part
    segmentation), 'state_dict'/'model' (GeoMask3D, MAE)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise InputError(f"checkpoint {path}: not a readable safetensors file ({exc})") from None
    from pc3d.engine.checkpoint import torch_load_weights_only

    try:
        obj = torch_load_weights_only(path)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"checkpoint {path}: cannot be read with weights_only=True ({first})") from None
    if isinstance(obj, dict):
        # model_state_dict: official Point-MAE part segmentation (segmentation/main.py)
        for key in ("base_model", "model_state_dict", "state_dict", "model", "student"):
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


def _backbone_traced(weights: dict[str, torch.Tensor]) -> Renamed:
    """`backbone_state`, remembering the file's name of every tensor and which ones were left behind."""
    stripped = _strip_traced(weights)
    if is_official_layout(stripped.state):
        traced = _official_traced(stripped.state)
        traced.origin = {k: stripped.origin[v] for k, v in traced.origin.items()}
        traced.unused = [stripped.origin[k] for k in traced.unused] + stripped.unused
    else:
        traced = stripped
    prefix = encoder_prefix(traced.state)
    if prefix is None:
        raise InputError("checkpoint holds no Point-MAE encoder (expected keys like "
                         f"'{_ENCODER_PROBE}' or 'MAE_encoder.encoder.first_conv.0.weight')")
    out = Renamed(state={}, origin={}, unused=list(traced.unused), notes=list(traced.notes))
    for key, value in traced.state.items():
        if key.startswith(prefix):
            out.state[key[len(prefix):]], out.origin[key[len(prefix):]] = value, traced.origin[key]
        else:  # other sub-models of a pc3d run (EMA / KD teachers, a scene expert): not this backbone
            out.unused.append(traced.origin[key])
    return out


def backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pc3d-named weights (`encoder.*`, and head keys when present) from any supported checkpoint:
    official Point-MAE / GeoMask3D / finetuned classifier / part segmentation, or a pc3d run."""
    return _backbone_traced(state).state


def load_backbone(model: nn.Module, weights: dict[str, torch.Tensor],
                  parts: dict[str, tuple[str, ...]] | None = None) -> LoadReport:
    """Load the Point-MAE backbone of any supported checkpoint into `model` (which has `encoder.*`), plus
    the optional `parts` (name -> pc3d key prefixes, e.g. {'classifier head': ('head.',)}) the file has.

    The encoder must fit (a shape mismatch is an InputError: another width or depth). A part loads whole
    or not at all: if any of its tensors has no place or another shape in `model` (a head trained for
    another class count), none of them loads and a note says why. `unexpected` lists, under the file's
    own names, every tensor of the file that was not loaded; `missing` lists the model's encoder tensors
    and the tensors of loaded parts that the file did not provide."""
    traced = _backbone_traced(weights)
    own = model.state_dict()
    parts = parts or {}
    report = LoadReport(unexpected=list(traced.unused), notes=list(traced.notes))
    usable: dict[str, torch.Tensor] = {}
    for key, value in traced.state.items():
        if key.startswith("encoder.") and key in own and own[key].shape != value.shape:
            raise InputError(f"weight '{traced.origin[key]}' has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(own[key].shape)} for {key} (different width/depth/groups?)")
        if key.startswith("encoder.") and key in own:
            usable[key] = value
    if not usable:
        raise InputError("weights: no encoder tensor matches the model")
    expected = {k for k in own if k.startswith("encoder.")}
    for name, prefixes in parts.items():
        given = {k: v for k, v in traced.state.items() if k.startswith(prefixes)}
        if not given:
            continue  # the file has no such part (a pretraining checkpoint has no head): keep the init
        unfit = [k for k, v in given.items() if k not in own or own[k].shape != v.shape]
        if unfit:
            key = unfit[0]
            theirs = tuple(given[key].shape)
            where = f"the model expects {tuple(own[key].shape)}" if key in own else "the model has no such tensor"
            report.notes.append(f"{name} not loaded: '{traced.origin[key]}' is {theirs} in the file, {where}; "
                                "the model keeps its initial values")
            continue
        usable.update(given)
        expected |= {k for k in own if k.startswith(prefixes)}
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    report.unexpected += [traced.origin[k] for k in traced.state if k not in usable]
    report.unexpected.sort()
    report.missing = sorted(expected - set(usable))
    return report


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
        new = _rename(key, tuple(p for p in PRETRAIN_PREFIXES if p[0] not in _ALIASES), reverse=True)
        if new is None:
            skipped.append(key)
        else:
            official[new] = value.detach().cpu()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"base_model": official, "epoch": epoch, "metrics": {}, "best_metrics": {}}, tmp)
    return path, sorted(skipped)
