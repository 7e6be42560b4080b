"""Parity with the official Sonata code (facebookresearch/sonata, PT-v3m2) on one scene: tests/fixtures/official/ptv3.

The checkpoint goes through the path `pc3d finetune probe-scannet-sonata --from sonata_tiny.pth` takes (the probe
preset, `resolve_input_rules`, `SceneProbe.load_pretrained(load_weights(...))`), the scene through the probe's own
input pipeline (`ProbeScenes`), and the features through `SceneProbe.features` (the linear probe's read-out).

Where pc3d differs from the official code on purpose (each handled below, none changes a number):
- GridSample(mode="train") keeps a random point per cell; pc3d keeps the lowest-index one. The cloud is handed to
  the pipeline reordered so that the point the official run kept (`chosen`) is the first of its cell.
- The official level 0 lists cells in fnv-hash order, pc3d in (x, y, z) order; level 0 is permuted into the
  official order before the encoder (a row permutation: every value still comes from pc3d's pipeline), and one test
  runs pc3d's own order to show the read-out does not depend on it.
- Sonata shuffles the curve list at every serialisation, also in eval; the fixture used the identity permutation,
  which is what pc3d does in eval (a frozen probe encoder never shuffles).
- pc3d's CPE conv has no bias: the official one is folded into the Linear after it (pc3d.models.convert_ptv3).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pc3d.config.loading import load_preset
from pc3d.config.pointins import ScenePreset
from pc3d.engine.checkpoint import load_weights
from pc3d.errors import InputError
from pc3d.methods.scene_probe import (
    InputRules,
    ProbeScenes,
    SceneLabels,
    SceneProbe,
    center_shift,
    collate_scenes,
    resolve_input_rules,
)
from pc3d.models.ptv3 import Point
from pc3d.models.sparse import ENV_VAR, available_backends
from pc3d.ops.grid import grid_sample

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "ptv3"
CHECKPOINT = FIXTURE / "sonata_tiny.pth"
META = json.loads((FIXTURE / "meta.json").read_text())
TOL = META["tolerance_features_max_abs"]  # 1e-4
LABELS = SceneLabels(2, (1,), (0,))


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in ("input_cloud", "official_pipeline", "official_encoder"):
        with np.load(FIXTURE / f"{name}.npz") as data:
            out.update({f"{name}.{k}": data[k] for k in data.files})
    return out


def probe_config(preset: str = "probe-scannet-sonata", **model: object) -> ScenePreset:
    """The preset as the CLI validates it, with the tiny model's sizes (heads: the file does not store them)."""
    data = {k: v for k, v in load_preset(preset).items() if k not in ("extends", "description")}
    cfg = META["config"]
    data["model"] = {**data["model"], "depths": cfg["enc_depths"], "channels": cfg["enc_channels"],
                     "heads": cfg["enc_num_head"], "patch_size": cfg["enc_patch_size"][0],
                     "mlp_ratio": cfg["mlp_ratio"], "orders": cfg["order"], "grid_size": META["grid_size"], **model}
    data["weights"] = str(CHECKPOINT)
    return ScenePreset.model_validate(data)


def loaded_probe(config: ScenePreset) -> SceneProbe:
    """`run` + `build` of pc3d.methods.scene_probe minus the data: resolve the rules, build, load, freeze."""
    weights = load_weights(str(CHECKPOINT))
    config = resolve_input_rules(config, weights)
    probe = SceneProbe(config, LABELS)
    report = probe.load_pretrained(weights, str(CHECKPOINT))
    # every tensor of the file is used once; the 14 CPE conv biases are folded into the Linear after the conv
    assert report["loaded"] + report["folded_conv_biases"] == len(weights) and not report["skipped"]
    assert report["folded_conv_biases"] == sum(META["config"]["enc_depths"])
    return probe.eval()


def pipeline(official: dict[str, np.ndarray], rules: InputRules) -> tuple[dict, np.ndarray]:
    """The probe's input pipeline on the official cloud -> (item, official row of each of its points).

    The cloud is handed over reordered so that in every cell the point the official run kept (`chosen`) has the
    lowest index, the one pc3d keeps. Each cell holds one kept point, so rows are matched by cell; the tests then
    compare the points' coordinates and features, which only agree if the same input points were kept."""
    chosen = official["official_pipeline.chosen"]
    n = official["input_cloud.coord"].shape[0]
    order = np.concatenate([chosen, np.setdiff1d(np.arange(n), chosen)])
    scene = {k: official[f"input_cloud.{k}"][order] for k in ("coord", "color", "normal")}
    scene.update(segment=np.zeros(n, np.int64), instance=np.zeros(n, np.int64))
    item = ProbeScenes([scene], LABELS, META["grid_size"], train=False, augment=False, rules=rules)[0]

    def key(grid: np.ndarray) -> np.ndarray:
        return (grid[:, 0].astype(np.int64) * 4096 + grid[:, 1]) * 4096 + grid[:, 2]

    ref = key(official["official_pipeline.grid_coord"])
    sorter = np.argsort(ref)
    ours = key(item["grid"].numpy())
    rows = sorter[np.clip(np.searchsorted(ref[sorter], ours), 0, ref.size - 1)]
    assert np.array_equal(ref[rows], ours), "the pipeline made cells the official transform did not"
    return item, rows


def in_official_order(item: dict, rows: np.ndarray) -> dict:
    """Permute the pipeline's points into the official level-0 order (`rows`: official row of each pc3d point)."""
    to_pc3d = torch.from_numpy(np.argsort(rows))
    return {k: (v[to_pc3d] if k in ("coord", "grid", "feat", "segment", "instance") else v) for k, v in item.items()}


def levels(top: Point) -> list[Point]:
    out = []
    while top is not None:
        out.insert(0, top)
        top = top.parent
    return out


def max_abs(a: torch.Tensor, b: np.ndarray) -> float:
    return float((a.detach().double() - torch.from_numpy(b).double()).abs().max())


# ----------------------------------------------------------------------------- input rules


def test_official_files_resolve_to_their_familys_input_rules() -> None:
    """Sonata's rules come from the checkpoint when the preset leaves them unset, and end up in the config."""
    generic = probe_config("probe-scannet", stem="linear", down_norm="layer", layer_scale=None)
    assert generic.model.color_norm is None and generic.model.pooled_depth is None
    resolved = resolve_input_rules(generic)
    m = resolved.model
    assert (m.color_norm, m.center_precision, m.pooled_depth) == ("unit", "float32", "own")
    assert resolved.model_dump()["model"]["color_norm"] == "unit"  # what the run saves
    explicit = resolve_input_rules(probe_config(color_norm="signed"))
    assert explicit.model.color_norm == "signed"  # a rule the preset sets is kept


def test_pipeline_matches_the_official_transform(official: dict[str, np.ndarray]) -> None:
    rules = InputRules.of(probe_config().model)
    assert rules == InputRules("unit", "float32", ("coord", "color", "normal"))
    item, rows = pipeline(official, rules)
    assert np.array_equal(np.sort(rows), np.arange(META["level_sizes"][0]))  # the same cells, each once
    assert np.array_equal(item["grid"].numpy(), official["official_pipeline.grid_coord"][rows])
    assert max_abs(item["coord"], official["official_pipeline.coord"][rows]) == 0.0
    assert max_abs(item["feat"], official["official_pipeline.feat"][rows]) == 0.0
    # every input point's cell (the official `inverse`, in cells of the official order)
    cell_of_input = grid_sample(torch.from_numpy(center_shift(official["input_cloud.coord"], "float32")),
                                META["grid_size"]).grid_coord.numpy()
    grid = official["official_pipeline.grid_coord"]
    assert np.array_equal(cell_of_input, grid[official["official_pipeline.inverse"]])


def test_float32_centring_is_the_official_arithmetic(official: dict[str, np.ndarray]) -> None:
    """The official CenterShift rounds the shift to float32; exact (float64) centring lands 1 ulp away on most
    points of this cloud. Here no point changes cell either way (only 5 lie within 1e-4 cells of a border), but a
    point that close to a border would, hence center_precision: float32 for official checkpoints."""
    coord = official["input_cloud.coord"]
    chosen = official["official_pipeline.chosen"]
    reference = official["official_pipeline.coord"]
    assert np.array_equal(center_shift(coord, "float32")[chosen], reference)
    exact = center_shift(coord, "float64")[chosen]
    assert 0 < np.abs(exact - reference).max() < 1e-6
    official_cells = official["official_pipeline.grid_coord"][official["official_pipeline.inverse"]]
    for precision in ("float32", "float64"):
        cells = grid_sample(torch.from_numpy(center_shift(coord, precision)), META["grid_size"]).grid_coord
        assert np.array_equal(cells.numpy(), official_cells), precision


def test_signed_colour_and_six_channel_inputs(official: dict[str, np.ndarray]) -> None:
    color = official["input_cloud.color"]
    item, rows = pipeline(official, InputRules("signed", "float32", ("color", "normal")))
    assert item["feat"].shape[1] == 6
    kept = official["official_pipeline.chosen"][rows]
    np.testing.assert_allclose(item["feat"][:, :3].numpy(), color[kept] / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(item["feat"][:, 3:].numpy(), official["input_cloud.normal"][kept])
    with pytest.raises(InputError):
        pipeline(official, InputRules("unit", "float32", ("coord", "depth")))


# ----------------------------------------------------------------------------- the encoder


@pytest.mark.parametrize("backend", ["torch", "spconv"])
def test_encoder_levels_and_probe_readout_match_the_official_forward(official: dict[str, np.ndarray],
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     backend: str) -> None:
    if backend not in available_backends("cpu"):
        pytest.skip(f"sparse backend {backend} is not installed")
    monkeypatch.setenv(ENV_VAR, backend)
    probe = loaded_probe(probe_config())
    item, rows = pipeline(official, InputRules.of(probe.config.model))
    batch = collate_scenes([in_official_order(item, rows)])
    with torch.no_grad():
        feat, top = probe.features(batch)
    got = levels(top)
    assert [p.feat.shape[0] for p in got] == META["level_sizes"]
    errors = {}
    for s, p in enumerate(got):
        ref = {k: official[f"official_encoder.L{s}_{k}"] for k in ("grid_coord", "code", "order", "depth")}
        assert np.array_equal(p.grid_coord.numpy(), ref["grid_coord"]), s
        assert np.array_equal(p.codes.numpy(), ref["code"]), s
        assert np.array_equal(p.orders.numpy(), ref["order"]), s
        assert p.depth == int(ref["depth"]) == META["serialized_depth"][s]
        if s:
            assert np.array_equal(p.pooling_inverse.numpy(), official[f"official_encoder.L{s}_pooling_inverse"])
        errors[f"L{s}_coord"] = max_abs(p.coord, official[f"official_encoder.L{s}_coord"])
        errors[f"L{s}_feat"] = max_abs(p.feat, official[f"official_encoder.L{s}_feat"])
    errors["upcast"] = max_abs(feat, official["official_encoder.upcast_all_levels"])
    assert max(errors.values()) <= TOL, errors


def test_the_v3m1_depth_rule_changes_this_scenes_orders(official: dict[str, np.ndarray]) -> None:
    """The input level's largest cell is 126 = 2^7 - 2, so v3m1's parent-minus-one depth (6) differs from
    Sonata's recomputed one (7) at level 1, and the Hilbert orders with it: the rule matters for this file."""
    probe = loaded_probe(probe_config(pooled_depth="parent"))
    item, rows = pipeline(official, InputRules.of(probe.config.model))
    with torch.no_grad():
        top = probe.features(collate_scenes([in_official_order(item, rows)]))[1]
    first = levels(top)[1]
    assert first.depth == 6 != META["serialized_depth"][1]
    assert not np.array_equal(first.orders.numpy(), official["official_encoder.L1_order"])


def test_readout_does_not_depend_on_the_order_of_the_input_points(official: dict[str, np.ndarray]) -> None:
    """pc3d's own level-0 order ((x, y, z) of the cells) gives the official read-out, row for row."""
    probe = loaded_probe(probe_config())
    item, rows = pipeline(official, InputRules.of(probe.config.model))
    with torch.no_grad():
        feat = probe.features(collate_scenes([item]))[0]
    assert max_abs(feat, official["official_encoder.upcast_all_levels"][rows]) <= TOL


# ----------------------------------------------------------------------------- other checkpoint families


def test_a_v3m1_checkpoint_gets_six_channels_and_its_familys_rules(official: dict[str, np.ndarray],
                                                                   tmp_path: Path) -> None:
    """A standard PT-v3m1 file (k5 sparse-conv stem, colour + normal): after `model.in_channels: 6` (what the
    loader asks for) the probe feeds those 6 channels, colour / 127.5 - 1, and pools with the parent's depth - 1."""
    path = tmp_path / "model_best.pth"  # the family is read off the names; the encoder itself is not loaded here
    torch.save({"state_dict": {"module.backbone.embedding.stem.conv.weight": torch.zeros(8, 5, 5, 5, 6),
                               "module.backbone.enc.enc0.block0.cpe.1.weight": torch.zeros(8, 8)}}, path)
    config = probe_config("probe-scannet", in_channels=6, stem="sparse-conv", down_norm="batch", layer_scale=None)
    config = resolve_input_rules(config.model_copy(update={"weights": str(path)}))
    m = config.model
    assert (m.color_norm, m.center_precision, m.pooled_depth) == ("signed", "float32", "parent")
    rules = InputRules.of(m)
    assert rules.feat_keys == ("color", "normal")
    item, rows = pipeline(official, rules)
    kept = official["official_pipeline.chosen"][rows]
    assert item["feat"].shape[1] == 6
    np.testing.assert_allclose(item["feat"][:, :3].numpy(), official["input_cloud.color"][kept] / 127.5 - 1,
                               atol=1e-6)
    np.testing.assert_array_equal(item["feat"][:, 3:].numpy(), official["input_cloud.normal"][kept])
    encoder = SceneProbe(config, LABELS).encoder
    assert encoder.embedding.conv.weight.shape[-1] == 6 and encoder.pooled_depth == "parent"
    assert all(pool.depth_rule == "parent" for pool in encoder.pools)


def test_input_channels_the_probe_cannot_build_are_refused_in_one_line() -> None:
    from pc3d.config.loading import validate_preset
    from pc3d.errors import ConfigError

    data = {k: v for k, v in load_preset("probe-scannet").items() if k not in ("extends", "description")}
    for model, words in (({"in_channels": 12}, "model.feat_keys"),
                         ({"in_channels": 6, "feat_keys": ["coord", "color", "normal"]}, "model.in_channels 6"),
                         ({"feat_keys": ["color", "color", "normal"]}, "distinct")):
        with pytest.raises(ConfigError) as exc:
            validate_preset({**data, "model": {**data["model"], **model}})
        assert words in str(exc.value) and "\n" not in str(exc.value)


def test_pc3d_runs_keep_the_rules_they_were_trained_with(tmp_path: Path) -> None:
    """A pretraining preset records pc3d's rules in its config; a probe of a run reads them back, and a run
    saved before the rules existed gets the ones pc3d used then."""
    from pc3d.config.pointins import SonataPreset
    from pc3d.engine.checkpoint import save_checkpoint

    data = {k: v for k, v in load_preset("sonata-quickstart").items() if k not in ("extends", "description")}
    pretrain = SonataPreset.model_validate(data)
    m = pretrain.model
    assert (m.color_norm, m.center_precision, m.pooled_depth) == ("unit", "float32", "own")  # Sonata's rule
    with pytest.raises(ValueError, match="model.feat_keys"):  # pretraining builds only the inputs it records
        SonataPreset.model_validate({**data, "model": {**data["model"], "in_channels": 6}})
    probe = probe_config("probe-scannet")
    for name, saved, expected in (("new", pretrain.model_dump(mode="json"), ("unit", "float32", "own")),
                                  ("old", {"model": {"depths": [1, 1, 1]}}, ("signed", "float64", "parent"))):
        sidecar = save_checkpoint(tmp_path / name, {"model/x": torch.zeros(1)}, {"config": saved})
        resolved = resolve_input_rules(probe.model_copy(update={"weights": str(sidecar)})).model
        assert (resolved.color_norm, resolved.center_precision, resolved.pooled_depth) == expected, name
