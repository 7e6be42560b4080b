"""Official PTv3 encoder checkpoints (Sonata's `sonata.pth`, Pointcept's PTv3 `model_best.pth`) -> pc3d's encoder.

Facts the mapping rests on (facebookresearch/sonata sonata/model.py, Pointcept point_transformer_v3m1_base.py /
point_transformer_v3m2_sonata.py, pointcept/models/modules.py):
- names: `embedding.stem.{linear|conv,norm}`, `embedding.mask_token`, `enc.enc{s}.down.{proj,norm.0}` (stage s > 0),
  `enc.enc{s}.block{i}.{cpe.0 (SubMConv3d k3, bias), cpe.1 (Linear), cpe.2 (LayerNorm), norm1.0, attn.qkv,
  attn.proj, norm2.0, mlp.0.fc1, mlp.0.fc2, ls1.0.gamma, ls2.0.gamma}`; the decoder (`dec.*`) and task heads are
  not part of the encoder. Pointcept's training checkpoints nest the model under `module.` and `backbone.`
  (Sonata pretraining: `student.backbone.` / `teacher.backbone.`); the released `sonata.pth` is
  `{"config": ..., "state_dict": ...}` with bare names, loaded by Sonata itself with torch.load(weights_only=True).
- Sonata (v3m2): Linear stem + LayerNorm, LayerNorm pooling, optional layer scale (off in the released model).
  PTv3 v3m1: SubMConv3d(k5, no bias) stem + BatchNorm(eps 1e-3), BatchNorm pooling.
- spconv 2.x stores conv weights KRSC = (out, k, k, k, in), as pc3d's spconv does; spconv 1.x's (k, k, k, in, out)
  is transposed.
pc3d's CPE conv has no bias (spconv's CPU path refuses one), so the official bias b is folded into the Linear
after it: W (conv(x) + b) + c = W conv(x) + (W b + c), exact up to float rounding.
- input rules (`official_input_rules`): Sonata's pipeline (sonata/transform.py `default()`) centres with
  CenterShift on float32 arrays (the shift itself rounded to float32) and feeds colour / 255 (NormalizeColor);
  Pointcept before 1.6 fed colour / 127.5 - 1 to PTv3 v3m1, whose pooling shifts the parent's codes (depth - 1)
  where Sonata's re-serialises each pooled level (sonata/structure.py Point.serialization).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pc3d.errors import InputError

MARK = "enc.enc0.block0.cpe.1.weight"  # present in every official PTv3 encoder, in no pc3d checkpoint
# after stripping "module."; Pointcept's Sonata probe configs load the student (CheckpointLoader keywords
# "module.student.backbone" -> "module.backbone"), so the student wins over the teacher here
PREFIX_PREFERENCE = ("backbone.", "student.backbone.", "teacher.backbone.")
NORM_PARAMS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
KEPT_IF_ABSENT = ("mask_token",)  # only used by masked pretraining; probing never reads it

# official block suffix -> pc3d block suffix (None: handled specially)
BLOCK_NAMES: tuple[tuple[str, str | None], ...] = (
    (r"cpe\.0\.weight", "cpe.conv.weight"),
    (r"cpe\.0\.bias", None),  # folded into cpe.linear.bias
    (r"cpe\.1\.(weight|bias)", r"cpe.linear.\1"),
    (rf"cpe\.2\.{NORM_PARAMS}", r"cpe.norm.\1"),
    (rf"norm1\.0\.{NORM_PARAMS}", r"norm1.\1"),
    (rf"norm2\.0\.{NORM_PARAMS}", r"norm2.\1"),
    (r"attn\.(qkv|proj)\.(weight|bias)", r"attn.\1.\2"),
    (r"mlp\.0\.fc1\.(weight|bias)", r"mlp.0.\1"),
    (r"mlp\.0\.fc2\.(weight|bias)", r"mlp.3.\1"),
    (r"ls([12])\.0\.gamma", r"ls\1.gamma"),
)


@dataclass
class ConvertedEncoder:
    """An official encoder in pc3d's names (relative to `PTv3Encoder`) and what was learnt on the way."""

    tensors: dict[str, Tensor]
    prefix: str  # where the encoder sat in the checkpoint (e.g. "module.backbone.")
    used: list[str]  # official keys consumed, each exactly once
    unmapped: list[str]  # keys of the file that are not the encoder (decoder, heads, the other branch)
    stem: str  # "linear" | "sparse-conv"
    down_norm: str  # "layer" | "batch"
    layer_scale: bool
    in_channels: int
    depths: tuple[int, ...]
    channels: tuple[int, ...]
    folded_biases: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"in_channels {self.in_channels}, depths {list(self.depths)}, channels {list(self.channels)}, "
                f"stem {self.stem}, down_norm {self.down_norm}, layer_scale {'yes' if self.layer_scale else 'no'}")


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def official_prefix(state: Mapping[str, Any]) -> str | None:
    """The prefix (after any DDP `module.`) in front of the official encoder's names, or None if there is none."""
    found = {_strip_module(k)[:-len(MARK)] for k in state if _strip_module(k).endswith(MARK)}
    found = {p for p in found if p == "" or p.endswith(".")}
    if not found:
        return None
    for preferred in PREFIX_PREFERENCE:
        if preferred in found:
            return preferred
    return min(found, key=lambda p: (len(p), p))


# checkpoint family (by its stem) -> the input rules its weights were trained with (pc3d model-section keys)
OFFICIAL_INPUT_RULES: dict[str, dict[str, str]] = {
    "linear": {"pooled_depth": "own", "color_norm": "unit", "center_precision": "float32"},  # Sonata, PT-v3m2
    # PTv3 v3m1 as Pointcept < 1.6 trained it; a v3m1 trained by Pointcept >= 1.6 needs model.color_norm: unit
    "sparse-conv": {"pooled_depth": "parent", "color_norm": "signed", "center_precision": "float32"},
}
FAMILY_NAMES = {"linear": "Sonata / PTv3 v3m2", "sparse-conv": "PTv3 v3m1"}


def official_stem(state: Mapping[str, Any]) -> str | None:
    """'linear' (Sonata / v3m2) or 'sparse-conv' (v3m1) for an official PTv3 state dict, None for anything else."""
    prefix = official_prefix(state)
    if prefix is None or not _has_stem(state, prefix):
        return None
    conv = prefix + "embedding.stem.conv.weight"
    return "sparse-conv" if any(_strip_module(k) == conv for k in state) else "linear"


def official_input_rules(state: Mapping[str, Any]) -> tuple[dict[str, str], str] | None:
    """(input rules, family name) of an official PTv3 checkpoint; None if `state` is not one."""
    stem = official_stem(state)
    return None if stem is None else (dict(OFFICIAL_INPUT_RULES[stem]), FAMILY_NAMES[stem])


def is_official_ptv3(state: Mapping[str, Any]) -> bool:
    """True for a Sonata / Pointcept PTv3 state dict (any nesting prefix): it has `enc.enc0.block0.cpe` and a stem."""
    prefix = official_prefix(state)
    return prefix is not None and _has_stem(state, prefix)


def _has_stem(state: Mapping[str, Any], prefix: str) -> bool:
    return any(_strip_module(k).startswith(prefix + "embedding.stem.") for k in state)


def _krsc(weight: Tensor, source: str, key: str) -> Tensor:
    """spconv 2.x layout (out, k, k, k, in); spconv 1.x's (k, k, k, in, out) is transposed."""
    if weight.ndim != 5:
        raise InputError(f"{source}: {key} has shape {tuple(weight.shape)}, not a 3D sparse-conv weight")
    s = weight.shape
    if s[1] == s[2] == s[3]:
        return weight
    if s[0] == s[1] == s[2]:
        return weight.permute(4, 0, 1, 2, 3).contiguous()
    raise InputError(f"{source}: {key} has shape {tuple(s)}, neither (out,k,k,k,in) nor (k,k,k,in,out)")


def _map_block(rest: str) -> str | None:
    for pattern, target in BLOCK_NAMES:
        if target is not None and re.fullmatch(pattern, rest):
            return re.sub(pattern, target, rest)
    return None


def official_to_pc3d(state: Mapping[str, Any], source: str = "weights") -> ConvertedEncoder:
    """Map an official PTv3 encoder to pc3d's `PTv3Encoder` names, folding the CPE conv biases into the Linear.

    Keys outside the encoder (decoder, heads, the other pretraining branch) are listed in `unmapped`; a key inside
    it that pc3d cannot represent (relative position encoding, PDNorm, ...) raises InputError."""
    prefix = official_prefix(state)
    if prefix is None or not _has_stem(state, prefix):
        raise InputError(f"{source}: not an official PTv3 / Sonata checkpoint (no '{MARK}' and stem)")
    ours: dict[str, str] = {}  # stripped official key -> key as given
    unmapped: list[str] = []
    for key in state:
        stripped = _strip_module(key)
        if stripped.startswith(prefix + "embedding.") or stripped.startswith(prefix + "enc."):
            ours[stripped[len(prefix):]] = key
        else:
            unmapped.append(key)
    tensors: dict[str, Tensor] = {}
    used: list[str] = []
    conv_bias: dict[str, Tensor] = {}  # pc3d block prefix -> official CPE conv bias
    stem = "sparse-conv" if "embedding.stem.conv.weight" in ours else "linear"
    down_norm = "batch" if any(k.endswith("norm.running_mean") for k in ours
                               if k.startswith("embedding.stem.") or ".down." in k) else "layer"
    for name, key in ours.items():
        value = state[key]
        if not isinstance(value, Tensor):
            raise InputError(f"{source}: {key} is not a tensor")
        target: str | None = None
        if name in ("embedding.stem.linear.weight", "embedding.stem.linear.bias"):
            target = "embedding.0." + name.rsplit(".", 1)[1]
        elif name == "embedding.stem.conv.weight":
            target, value = "embedding.conv.weight", _krsc(value, source, key)
        elif m := re.fullmatch(rf"embedding\.stem\.norm\.{NORM_PARAMS}", name):
            target = ("embedding.1." if stem == "linear" else "embedding.norm.") + m.group(1)
        elif name == "embedding.mask_token":
            target = "mask_token"
        elif m := re.fullmatch(r"enc\.enc(\d+)\.down\.proj\.(weight|bias)", name):
            target = f"pools.{int(m.group(1)) - 1}.proj.{m.group(2)}"
        elif m := re.fullmatch(rf"enc\.enc(\d+)\.down\.norm\.0\.{NORM_PARAMS}", name):
            target = f"pools.{int(m.group(1)) - 1}.norm.{m.group(2)}"
        elif m := re.fullmatch(r"enc\.enc(\d+)\.block(\d+)\.(.+)", name):
            block = f"stages.{int(m.group(1))}.{int(m.group(2))}."
            if m.group(3) == "cpe.0.bias":
                conv_bias[block] = value
                used.append(key)
                continue
            suffix = _map_block(m.group(3))
            if suffix is not None:
                target = block + suffix
                if suffix == "cpe.conv.weight":
                    value = _krsc(value, source, key)
        if target is None:
            raise InputError(f"{source}: official encoder tensor {key} has no counterpart in pc3d's PTv3 encoder "
                             "(relative position encoding / PDNorm / another variant are not supported)")
        tensors[target] = value
        used.append(key)
    for block, bias in conv_bias.items():
        weight, lin_bias = tensors.get(block + "cpe.linear.weight"), tensors.get(block + "cpe.linear.bias")
        if weight is None or lin_bias is None:
            raise InputError(f"{source}: {block} has a CPE conv bias but no CPE Linear to fold it into")
        folded = weight.double() @ bias.double() + lin_bias.double()
        tensors[block + "cpe.linear.bias"] = folded.to(lin_bias.dtype)
    depths, channels = _stage_sizes(tensors, source)
    in_key = "embedding.0.weight" if stem == "linear" else "embedding.conv.weight"
    if in_key not in tensors:
        raise InputError(f"{source}: the official embedding has no {'Linear' if stem == 'linear' else 'conv'} weight")
    in_channels = int(tensors[in_key].shape[-1])
    notes = [] if "mask_token" in tensors else ["the checkpoint has no mask token"]
    return ConvertedEncoder(tensors=tensors, prefix=prefix, used=used, unmapped=unmapped, stem=stem,
                            down_norm=down_norm, layer_scale=any(".ls1." in k for k in tensors),
                            in_channels=in_channels, depths=depths, channels=channels,
                            folded_biases=len(conv_bias), notes=notes)


def _stage_sizes(tensors: Mapping[str, Tensor], source: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(blocks per stage, width per stage) read off the mapped names; stages must be numbered 0..S-1."""
    blocks: dict[int, set[int]] = {}
    width: dict[int, int] = {}
    for key, value in tensors.items():
        if m := re.fullmatch(r"stages\.(\d+)\.(\d+)\.cpe\.linear\.weight", key):
            stage, index = int(m.group(1)), int(m.group(2))
            blocks.setdefault(stage, set()).add(index)
            width[stage] = int(value.shape[0])
    stages = sorted(blocks)
    if stages != list(range(len(stages))) or any(blocks[s] != set(range(len(blocks[s]))) for s in stages):
        raise InputError(f"{source}: the official encoder's stages / blocks are not numbered consecutively")
    return tuple(len(blocks[s]) for s in stages), tuple(width[s] for s in stages)


def encoder_layout(encoder: nn.Module) -> dict[str, Any]:
    """The same facts as `ConvertedEncoder.describe` for a built pc3d `PTv3Encoder`."""
    own = encoder.state_dict()
    stem = getattr(encoder, "stem", "linear")
    in_key = "embedding.0.weight" if stem == "linear" else "embedding.conv.weight"
    norm = encoder.embedding[1] if stem == "linear" else encoder.embedding.norm
    first = encoder.stages[0][0]
    return {"in_channels": int(own[in_key].shape[-1]), "depths": tuple(len(s) for s in encoder.stages),
            "channels": tuple(int(c) for c in encoder.channels), "stem": stem,
            "down_norm": "batch" if isinstance(norm, nn.BatchNorm1d) else "layer",
            "layer_scale": getattr(first, "ls1", None) is not None}


def load_official_encoder(encoder: nn.Module, state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Load an official PTv3 encoder into `encoder` (a pc3d `PTv3Encoder`) or refuse with one line saying why.

    Every official encoder tensor must land on a pc3d tensor of the same shape and every pc3d tensor must be
    given (except the mask token, kept as initialised when the file has none)."""
    conv = official_to_pc3d(state, source)
    have = encoder_layout(encoder)
    theirs = {"in_channels": conv.in_channels, "depths": conv.depths, "channels": conv.channels, "stem": conv.stem,
              "down_norm": conv.down_norm, "layer_scale": conv.layer_scale}
    if have != theirs:
        wrong = [k for k in theirs if theirs[k] != have[k]]
        fix = ", ".join(f"model.{k}: {_yaml(k, theirs[k])}" for k in wrong)
        heads = " (and model.heads as the original model had them: the file does not store them)" if {
            "depths", "channels"} & set(wrong) else ""
        raise InputError(f"{source}: official PTv3 encoder ({conv.describe()}) does not fit the model section; "
                         f"set {fix}{heads}")
    own = encoder.state_dict()
    for key, value in conv.tensors.items():
        if key not in own:
            raise InputError(f"{source}: official tensor for {key} has no place in this encoder")
        if tuple(own[key].shape) != tuple(value.shape):
            raise InputError(f"{source}: {key} is {tuple(value.shape)} in the file but {tuple(own[key].shape)} here; "
                             "check model.mlp_ratio and the model section")
    kept = [k for k in own if k not in conv.tensors]
    bad = [k for k in kept if k not in KEPT_IF_ABSENT and not k.endswith("num_batches_tracked")]
    if bad:
        raise InputError(f"{source}: the official checkpoint lacks {len(bad)} encoder tensors, e.g. {bad[0]}")
    with torch.no_grad():
        encoder.load_state_dict(conv.tensors, strict=False)
    return {"loaded": len(conv.tensors), "skipped": conv.unmapped, "missing": kept,
            "format": f"official PTv3 ({conv.prefix or 'no prefix'}; {conv.describe()})",
            "folded_conv_biases": conv.folded_biases, "notes": conv.notes}


def _yaml(name: str, value: Any) -> str:
    """How to write `value` into the preset's model section."""
    if name == "layer_scale":  # the file's gammas replace the initial value, any positive one will do
        return "1.0e-5" if value else "null"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
