"""Presets: lookup, `extends`, `--set` overrides, and validation errors that name the key path."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from pc3d.config import (
    PLANNED,
    SCHEMAS,
    PresetBase,
    StrictModel,
    TrainConfig,
    apply_overrides,
    available_presets,
    load_preset,
    parse_override,
    register_schema,
    validate_preset,
)
from pc3d.config.registry import schema_for
from pc3d.errors import ConfigError, InputError, NotBuiltError


class _Model(StrictModel):
    depth: int = Field(12, ge=1)
    drop_path: float = 0.1


@register_schema
class _ToyPreset(PresetBase):
    command: Literal["pretrain"] = "pretrain"
    method: Literal["toy-method"]
    model: _Model = Field(default_factory=_Model)
    train: TrainConfig = Field(default_factory=TrainConfig)


def test_register_schema_uses_method_literal():
    assert SCHEMAS["toy-method"] is _ToyPreset
    assert schema_for("toy-method") is _ToyPreset


def test_unknown_key_names_path_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        validate_preset({"method": "toy-method", "train": {"lrr": 1.0}}, "toy.yaml")
    msg = str(err.value)
    assert "train.lrr: unknown key" in msg and "batch_size" in msg and "toy.yaml" in msg


def test_renamed_key_names_its_new_name():
    from pc3d.config.loading import RENAMED_KEYS, _allowed_keys

    data = apply_overrides(load_preset("affinity3d", command="pseudolabel"), ["affinity.queue=16"])
    with pytest.raises(ConfigError, match=r"affinity\.queue: renamed to affinity\.queue_size \("):
        validate_preset(data, "old.yaml")
    removed = apply_overrides(load_preset("affinity3d", command="pseudolabel"), ["features.oracle_text_weight=0.5"])
    with pytest.raises(ConfigError, match=r"features\.oracle_text_weight: removed \(.*\); delete the line"):
        validate_preset(removed, "old.yaml")
    # every new name is a key the schema accepts, so the hint cannot point at a key that no longer exists
    schema = schema_for("affinity3d")
    for new in RENAMED_KEYS.values():
        section, key = new.split(" ")[0].split(".")
        assert key in _allowed_keys(schema, (section,))


def test_bad_value_and_bad_literal_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.depth: .*greater than or equal to 1"):
        validate_preset({"method": "toy-method", "model": {"depth": 0}})
    with pytest.raises(ConfigError, match=r"train\.amp: .*'bf16'"):
        validate_preset({"method": "toy-method", "train": {"amp": "fp8"}})


def test_unknown_and_planned_methods():
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        validate_preset({"method": "nope"})
    planned = [name for name in PLANNED if name not in SCHEMAS]
    if not planned:
        pytest.skip("every planned method is built")
    with pytest.raises(NotBuiltError, match="not built yet"):
        schema_for(planned[0])


def test_parse_override_types():
    assert parse_override("train.lr=1e-4") == (["train", "lr"], 1e-4)
    assert parse_override("model.depth=6") == (["model", "depth"], 6)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a.name=chair") == (["a", "name"], "chair")
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_overrides_are_validated_like_presets():
    data = apply_overrides({"method": "toy-method"}, ["train.epochs=3", "model.depth=2"])
    cfg = validate_preset(data)
    assert cfg.train.epochs == 3 and cfg.model.depth == 2
    with pytest.raises(ConfigError, match="train.epochs"):
        validate_preset(apply_overrides({"method": "toy-method"}, ["train.epochs=zero"]))
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"method": "toy-method", "train": 3}, ["train.epochs=1"])


def test_extends_deep_merges_and_detects_cycles(tmp_path):
    base = tmp_path / "base.yaml"
    child = tmp_path / "child.yaml"
    base.write_text("method: toy-method\ntrain:\n  epochs: 5\n  batch_size: 8\n")
    child.write_text(f"extends: {base}\ntrain:\n  epochs: 1\n")
    data = load_preset(str(child))
    assert data["train"] == {"epochs": 1, "batch_size": 8}
    base.write_text(f"extends: {child}\nmethod: toy-method\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_preset(str(child))


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_preset(str(bad))
    with pytest.raises(InputError, match="not found"):
        load_preset(str(tmp_path / "missing.yaml"))
    with pytest.raises(InputError, match="unknown preset 'nonexistent-preset'"):
        load_preset("nonexistent-preset")


@pytest.mark.parametrize("name", available_presets())
def test_every_shipped_preset_validates(name):
    data = load_preset(name)
    cfg = validate_preset(data, name)
    assert cfg.command == data["command"]
    assert type(cfg).entry, f"{name}: schema has no entry point"
