"""How a raw scene becomes a PTv3 encoder's input, per checkpoint family (Sonata, Pointcept v1.6+, older
PT-v3m1, pc3d runs): centring, colour scale, input channels and the pooled-level serialization depth.

Pretraining (methods/sonata) and the probes (methods/scene_probe) both build their inputs here, so a
checkpoint is always fed the way it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from pc3d.errors import InputError

RULE_KEYS = ("pooled_depth", "color_norm", "center_precision")
# pc3d runs whose saved config predates the rule keys were pretrained with these (float64 centring and
# colour / 127.5 - 1 in pc3d.methods.sonata, the v3m1 pooled depth in pc3d.models.ptv3)
LEGACY_PC3D_RULES: dict[str, str] = {"pooled_depth": "parent", "color_norm": "signed", "center_precision": "float64"}


@dataclass(frozen=True)
class InputRules:
    """How a raw scene becomes the encoder's input (see PTv3Config); the defaults are Sonata's."""

    color_norm: str = "unit"
    center_precision: str = "float32"
    feat_keys: tuple[str, ...] = ("coord", "color", "normal")

    @classmethod
    def of(cls, model: Any) -> InputRules:
        """The rules of a model section; unresolved ones take the family of its stem (see `family_rules`)."""
        family = family_rules(model.stem)
        return cls(color_norm=model.color_norm or family["color_norm"],
                   center_precision=model.center_precision or family["center_precision"],
                   feat_keys=model.input_feat_keys())

    def describe(self) -> str:
        colour = "colour / 255" if self.color_norm == "unit" else "colour / 127.5 - 1"
        return f"{' + '.join(self.feat_keys)}; {colour}; {self.center_precision} centring"


def family_rules(stem: str) -> dict[str, str]:
    """Rules of an encoder built without a checkpoint: those of the official family its stem belongs to."""
    from pc3d.models.convert_ptv3 import OFFICIAL_INPUT_RULES

    return dict(OFFICIAL_INPUT_RULES[stem])


def checkpoint_input_rules(spec: str, weights: dict[str, Tensor] | None = None) -> tuple[dict[str, str], str]:
    """(input rules, where they come from) of the checkpoint `spec` (`weights`: its tensors, if already loaded).

    An official Sonata / PTv3 file: its family's rules; a pc3d checkpoint: the rules its saved config records
    (the legacy ones where it records none); any other file: the legacy pc3d rules."""
    from pc3d.engine.checkpoint import load_weights, read_meta
    from pc3d.engine.hub import resolve_weights
    from pc3d.models.convert_ptv3 import official_input_rules

    path = resolve_weights(spec)
    if path.suffix == ".json" or (path.suffix == ".safetensors" and path.with_suffix(".json").is_file()):
        saved = read_meta(path).get("config") or {}
        model = saved.get("model") if isinstance(saved.get("model"), dict) else {}
        rules = {k: model.get(k) or LEGACY_PC3D_RULES[k] for k in RULE_KEYS}
        return rules, "pc3d run config" if all(model.get(k) for k in RULE_KEYS) else "pc3d run (legacy rules)"
    official = official_input_rules(weights if weights is not None else load_weights(spec))
    if official is not None:
        return official[0], f"official {official[1]} checkpoint"
    return dict(LEGACY_PC3D_RULES), "pc3d weights without a config (legacy rules)"


def resolve_input_rules(config: Any, weights: dict[str, Tensor] | None = None) -> Any:
    """`config` with every unset input rule of its model section filled in from the checkpoint it probes (or, with
    none, from the family of model.stem); rules the preset sets are kept as they are."""
    model = config.model
    unset = [k for k in RULE_KEYS if getattr(model, k) is None]
    if not unset:
        return config
    rules = checkpoint_input_rules(config.weights, weights)[0] if config.weights else family_rules(model.stem)
    return config.model_copy(update={"model": model.model_copy(update={k: rules[k] for k in unset})})


def center_shift(coord: np.ndarray, precision: str) -> np.ndarray:
    """Pointcept's CenterShift(apply_z=True): x/y centred on the box, floor at z = 0 (coordinates are input
    features, so official weights expect this frame).

    "float32" repeats the official arithmetic on float32 arrays: the shift is rounded to float32 before it is
    subtracted, so coordinates come out up to an ulp away from exact centring, and a point that close to a cell
    border can change cell. "float64" centres exactly (pc3d's pretraining) and rounds once at the end."""
    if precision == "float32":
        xyz = np.asarray(coord, dtype=np.float32)
        low, high = xyz.min(0), xyz.max(0)
        shift = np.array([(low[0] + high[0]) / np.float32(2), (low[1] + high[1]) / np.float32(2), low[2]],
                         dtype=np.float32)
        return xyz - shift
    if precision != "float64":
        raise InputError(f"model.center_precision must be float32 or float64, got {precision!r}")
    xyz = np.asarray(coord, dtype=np.float64)
    low, high = xyz.min(0), xyz.max(0)
    return (xyz - np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])).astype(np.float32)


def normalize_color(color: np.ndarray, rule: str) -> np.ndarray:
    """Colours 0..255 -> the feature the weights were trained on: "unit" colour / 255 (in float32, as Sonata's
    NormalizeColor on float32 arrays), "signed" colour / 127.5 - 1 (in float64, as pc3d's pretraining)."""
    if rule == "unit":
        return np.asarray(color, dtype=np.float32) / np.float32(255)
    if rule == "signed":
        return (np.asarray(color, dtype=np.float64) / 127.5 - 1.0).astype(np.float32)
    raise InputError(f"model.color_norm must be unit or signed, got {rule!r}")


def input_features(coord: np.ndarray, color: np.ndarray, normal: np.ndarray, rules: InputRules) -> np.ndarray:
    """(N, 3 x len(feat_keys)) float32 encoder input: the named inputs in order (coord is the centred one)."""
    parts = {"coord": lambda: np.asarray(coord, dtype=np.float32),
             "color": lambda: normalize_color(color, rules.color_norm),
             "normal": lambda: np.asarray(normal, dtype=np.float32)}
    unknown = [k for k in rules.feat_keys if k not in parts]
    if unknown or not rules.feat_keys:
        raise InputError(f"model.feat_keys: inputs are coord, color, normal; got {list(rules.feat_keys)}")
    return np.concatenate([parts[k]() for k in rules.feat_keys], axis=1)
