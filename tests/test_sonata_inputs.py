"""Pretraining views and the probe pipeline feed the same encoder inputs for the same cloud (issue 19).

A pretraining run records its input rules (colour scale, centring arithmetic) in its saved config; a probe of its
checkpoint resolves them from there. An unaugmented whole-scene view must then equal the probe's input exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pc3d.config.loading import load_preset
from pc3d.config.pointins import ScenePreset, SonataPreset
from pc3d.engine.checkpoint import save_checkpoint
from pc3d.methods.scene_probe import InputRules, ProbeScenes, resolve_input_rules, scene_labels
from pc3d.methods.sonata import ViewAugment, make_view, view_rules
from pc3d.ops.grid import grid_sample

# every augmentation off: the view is the centred scene itself
IDENTITY = ViewAugment(rotate_p=0.0, flip=0.0, scale=(1.0, 1.0), jitter=0.0, elastic=False, color_translation=False)


def cloud(seed: int) -> dict[str, np.ndarray]:
    """A cloud with one point per 2 cm cell (so both pipelines keep the same points), far from the origin and on
    a millimetre grid, where float32 and float64 centring differ."""
    rng = np.random.default_rng(seed)
    coord = (np.round(rng.random((4000, 3)) * [3000, 2000, 1500]) / 1000 + [350.0, -120.0, 2.5]).astype(np.float32)
    coord = coord[grid_sample(torch.from_numpy(coord), 0.02).unique_index.numpy()]
    n = coord.shape[0]
    normal = rng.normal(size=(n, 3))
    return {"coord": coord, "color": rng.integers(0, 256, (n, 3)).astype(np.float32),
            "normal": (normal / np.linalg.norm(normal, axis=1, keepdims=True)).astype(np.float32),
            "segment": rng.integers(0, 20, n), "instance": rng.integers(0, 5, n), "name": "cloud"}


def by_cell(grid: torch.Tensor, *values: torch.Tensor) -> list[torch.Tensor]:
    order = np.lexsort(grid.numpy().T[::-1])
    return [v[torch.from_numpy(order)] for v in (grid, *values)]


@pytest.mark.parametrize("rules", [{}, {"color_norm": "signed", "center_precision": "float64"}])
def test_pretraining_view_equals_probe_input(rules: dict, tmp_path: Path) -> None:
    data = {k: v for k, v in load_preset("sonata-quickstart").items() if k not in ("extends", "description")}
    data["model"] = {**data["model"], **rules, "grid_size": 0.02}
    pretrain = SonataPreset.model_validate(data)
    expected = rules or {"color_norm": "unit", "center_precision": "float32"}  # Sonata's rule by default
    assert {k: getattr(pretrain.model, k) for k in expected} == expected
    sample = cloud(0)
    view = make_view(sample, (1.0, 1.0), np.random.default_rng(0), 0.02, 10**9, IDENTITY,
                     rules=view_rules(pretrain.model))
    # the probe reads the rules back from the checkpoint's saved config
    sidecar = save_checkpoint(tmp_path / "run", {"model/x": torch.zeros(1)},
                              {"config": pretrain.model_dump(mode="json")})
    probe_data = {k: v for k, v in load_preset("probe-scannet-quickstart").items()
                  if k not in ("extends", "description")}
    probe_data["model"] = {**probe_data["model"], "grid_size": 0.02}
    probe = resolve_input_rules(ScenePreset.model_validate({**probe_data, "weights": str(sidecar)}))
    item = ProbeScenes([sample], scene_labels("scannet"), 0.02, train=False, augment=False,
                       rules=InputRules.of(probe.model))[0]
    assert view["feat"].shape == item["feat"].shape == (sample["coord"].shape[0], 9)
    v_grid, v_feat, v_coord = by_cell(view["grid"], view["feat"], view["coord"])
    p_grid, p_feat, p_coord = by_cell(item["grid"], item["feat"], item["coord"])
    assert torch.equal(v_grid, p_grid)
    assert torch.equal(v_coord, p_coord) and torch.equal(v_feat, p_feat)  # bit for bit
    # and they are the rule's inputs: colour scale and centring against direct computations
    colour = v_feat[:, 3:6].double().numpy()
    by_origin = {tuple(o): i for i, o in enumerate(sample["coord"].tolist())}
    rows = [by_origin[tuple(o)] for o in view["origin"][torch.from_numpy(
        np.lexsort(view["grid"].numpy().T[::-1]))].tolist()]
    raw = sample["color"][rows].astype(np.float64)
    want = raw / 255 if expected["color_norm"] == "unit" else raw / 127.5 - 1
    np.testing.assert_allclose(colour, want, atol=1e-6)
    xyz = sample["coord"].astype(np.float64)
    shift = [(xyz[:, 0].min() + xyz[:, 0].max()) / 2, (xyz[:, 1].min() + xyz[:, 1].max()) / 2, xyz[:, 2].min()]
    np.testing.assert_allclose(v_coord.double().numpy(), xyz[rows] - shift, atol=1e-4)


def test_float32_and_float64_centring_differ_on_this_cloud() -> None:
    """The two rules are not the same inputs here (the parametrised test would not notice a swapped rule)."""
    sample = cloud(0)
    a = make_view(sample, (1.0, 1.0), np.random.default_rng(0), 0.02, 10**9, IDENTITY,
                  rules=InputRules("unit", "float32"))
    b = make_view(sample, (1.0, 1.0), np.random.default_rng(0), 0.02, 10**9, IDENTITY,
                  rules=InputRules("unit", "float64"))
    assert not torch.equal(a["coord"], b["coord"])
