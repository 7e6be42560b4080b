"""Official Sonata / Pointcept PTv3 checkpoints -> pc3d's PTv3 encoder (pc3d.models.convert_ptv3).

The official state dicts are written here by hand from the official key names and shapes (Sonata's
sonata/model.py, Pointcept's point_transformer_v3m1_base.py); each official tensor records the pc3d tensor it
must become, so the mapping is checked against this table, not against the converter's own rules. The CPE and
the sparse-conv stem are checked against a numpy loop over the 3x3x3 / 5x5x5 neighbourhood (with the conv
bias), not against spconv."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from pc3d.engine.checkpoint import load_weights
from pc3d.errors import InputError
from pc3d.methods.scene_probe import load_encoder
from pc3d.models.convert_ptv3 import is_official_ptv3, official_to_pc3d
from pc3d.models.ptv3 import Point, PTv3Encoder, serialize, sparse_tensor

DEPTHS, CHANNELS, HEADS, IN = (2, 1), (16, 32), (2, 4), 9


def official_state(stem: str = "linear", norm: str = "layer", layer_scale: bool = False, in_channels: int = IN,
                   depths: tuple[int, ...] = DEPTHS, channels: tuple[int, ...] = CHANNELS, mlp_ratio: int = 4,
                   seed: int = 0) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(official encoder state, official key -> pc3d encoder key; "" for the folded CPE conv bias)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    target: dict[str, str] = {}

    def put(key: str, shape: tuple[int, ...], ours: str) -> None:
        state[key] = torch.randn(shape, generator=g) * 0.2
        target[key] = ours

    def put_norm(key: str, c: int, ours: str) -> None:
        put(key + "weight", (c,), ours + "weight")
        put(key + "bias", (c,), ours + "bias")
        if norm == "batch":
            put(key + "running_mean", (c,), ours + "running_mean")
            state[key + "running_var"] = torch.rand(c, generator=g) + 0.5
            target[key + "running_var"] = ours + "running_var"
            state[key + "num_batches_tracked"] = torch.tensor(7)
            target[key + "num_batches_tracked"] = ours + "num_batches_tracked"

    c0 = channels[0]
    if stem == "linear":
        put("embedding.stem.linear.weight", (c0, in_channels), "embedding.0.weight")
        put("embedding.stem.linear.bias", (c0,), "embedding.0.bias")
        put_norm("embedding.stem.norm.", c0, "embedding.1.")
    else:  # v3m1: SubMConv3d(k5, no bias), KRSC weight (out, k, k, k, in)
        put("embedding.stem.conv.weight", (c0, 5, 5, 5, in_channels), "embedding.conv.weight")
        put_norm("embedding.stem.norm.", c0, "embedding.norm.")
    put("embedding.mask_token", (1, c0), "mask_token")
    for s, (depth, c) in enumerate(zip(depths, channels, strict=True)):
        if s:
            put(f"enc.enc{s}.down.proj.weight", (c, channels[s - 1]), f"pools.{s - 1}.proj.weight")
            put(f"enc.enc{s}.down.proj.bias", (c,), f"pools.{s - 1}.proj.bias")
            put_norm(f"enc.enc{s}.down.norm.0.", c, f"pools.{s - 1}.norm.")
        for i in range(depth):
            o, p = f"enc.enc{s}.block{i}.", f"stages.{s}.{i}."
            put(o + "cpe.0.weight", (c, 3, 3, 3, c), p + "cpe.conv.weight")
            put(o + "cpe.0.bias", (c,), "")
            for name, ours, shape in (("cpe.1", "cpe.linear", (c, c)), ("attn.qkv", "attn.qkv", (3 * c, c)),
                                      ("attn.proj", "attn.proj", (c, c)), ("mlp.0.fc1", "mlp.0", (mlp_ratio * c, c)),
                                      ("mlp.0.fc2", "mlp.3", (c, mlp_ratio * c))):
                put(o + name + ".weight", shape, p + ours + ".weight")
                put(o + name + ".bias", shape[:1], p + ours + ".bias")
            for name, ours in (("cpe.2", "cpe.norm"), ("norm1.0", "norm1"), ("norm2.0", "norm2")):
                put(o + name + ".weight", (c,), p + ours + ".weight")
                put(o + name + ".bias", (c,), p + ours + ".bias")
            if layer_scale:
                put(o + "ls1.0.gamma", (c,), p + "ls1.gamma")
                put(o + "ls2.0.gamma", (c,), p + "ls2.gamma")
    return state, target


def encoder(stem: str = "linear", norm: str = "layer", layer_scale: float | None = None,
            channels: tuple[int, ...] = CHANNELS) -> PTv3Encoder:
    return PTv3Encoder(in_channels=IN, depths=DEPTHS, channels=channels, heads=HEADS, patch_size=16, drop_path=0.0,
                       shuffle_orders=False, stem=stem, down_norm=norm, layer_scale=layer_scale)


class Holder(nn.Module):
    """What load_encoder sees: a method whose `encoder` is the PTv3."""

    def __init__(self, enc: PTv3Encoder) -> None:
        super().__init__()
        self.encoder = enc


def expected_cpe_bias(state: dict[str, Tensor], block: str) -> np.ndarray:
    w = state[block + "cpe.1.weight"].double().numpy()
    return w @ state[block + "cpe.0.bias"].double().numpy() + state[block + "cpe.1.bias"].double().numpy()


def assert_loaded(enc: PTv3Encoder, state: dict[str, Tensor], target: dict[str, str], prefix: str = "") -> None:
    """Every official tensor is where the table says (the CPE Linear bias carries the folded conv bias), and
    every pc3d encoder tensor was given by exactly one official tensor."""
    own = enc.state_dict()
    folded = {target[k[:-len("cpe.0.bias")] + "cpe.1.bias"] for k in target if k.endswith("cpe.0.bias")}
    placed = [t for t in target.values() if t]
    assert len(placed) == len(set(placed)) and set(placed) == set(own)
    for key, ours in target.items():
        if not ours:
            continue
        if ours in folded:
            block = key[:-len("cpe.1.bias")]
            np.testing.assert_allclose(own[ours].double().numpy(), expected_cpe_bias(state, block), atol=1e-6)
        else:
            assert torch.equal(own[ours], state[key].to(own[ours].dtype)), key


def test_sonata_file_layout_loads_every_tensor_exactly_once(tmp_path) -> None:
    state, target = official_state()
    path = tmp_path / "sonata.pth"
    config = {"in_channels": IN, "order": ("z", "z-trans", "hilbert", "hilbert-trans"), "enc_depths": DEPTHS,
              "enc_channels": CHANNELS, "enc_num_head": HEADS, "enc_mode": True, "layer_scale": None}
    torch.save({"config": config, "state_dict": state}, path)
    weights = load_weights(str(path))  # torch.load(weights_only=True) accepts the plain config dict
    assert is_official_ptv3(weights) and not is_official_ptv3({"encoder.embedding.0.weight": torch.zeros(1)})
    converted = official_to_pc3d(weights)
    assert sorted(converted.used) == sorted(state) and len(set(converted.used)) == len(converted.used)
    assert converted.unmapped == [] and converted.folded_biases == sum(DEPTHS)
    holder = Holder(encoder())
    report = load_encoder(holder, weights, str(path))
    assert report["loaded"] == len(state) - sum(DEPTHS) and report["missing"] == []
    assert report["folded_conv_biases"] == sum(DEPTHS)
    assert_loaded(holder.encoder, state, target)


def test_pointcept_layouts_pick_the_backbone_and_list_the_rest() -> None:
    state, target = official_state(stem="sparse-conv", norm="batch", layer_scale=True, seed=1)
    finetuned = {"module.backbone." + k: v for k, v in state.items()}
    extra = {"module.backbone.dec.dec0.up.proj.0.weight": torch.zeros(16, 32),
             "module.seg_head.weight": torch.zeros(20, 16)}
    holder = Holder(encoder("sparse-conv", "batch", layer_scale=1e-5))
    report = load_encoder(holder, {**finetuned, **extra}, "model_best.pth")
    assert sorted(report["skipped"]) == sorted(extra)
    assert_loaded(holder.encoder, state, target)
    # Sonata pretraining: student and teacher branches; Pointcept's probe configs load the student
    other, _ = official_state(stem="sparse-conv", norm="batch", layer_scale=True, seed=2)
    pretrain = {**{"module.student.backbone." + k: v for k, v in state.items()},
                **{"module.teacher.backbone." + k: v for k, v in other.items()}}
    holder = Holder(encoder("sparse-conv", "batch", layer_scale=1e-5))
    report = load_encoder(holder, pretrain, "model_last.pth")
    assert len(report["skipped"]) == len(other)
    assert_loaded(holder.encoder, state, target)


def test_spconv1_weight_layout_is_transposed() -> None:
    state, _ = official_state()
    old = dict(state)
    key = "enc.enc0.block1.cpe.0.weight"
    old[key] = state[key].permute(1, 2, 3, 4, 0).contiguous()  # (k, k, k, in, out)
    converted = official_to_pc3d(old)
    assert torch.equal(converted.tensors["stages.0.1.cpe.conv.weight"], state[key])


def submanifold_conv(coords: np.ndarray, feat: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """out[p] = sum over offsets d of W[:, d + k//2] @ x[p + d], at the input sites only (float64 loop)."""
    k = weight.shape[1]
    where = {tuple(c): i for i, c in enumerate(coords.tolist())}
    out = np.zeros((len(coords), weight.shape[0]))
    for o, c in enumerate(coords.tolist()):
        for a, b, d in itertools.product(range(k), repeat=3):
            i = where.get((c[0] + a - k // 2, c[1] + b - k // 2, c[2] + d - k // 2))
            if i is not None:
                out[o] += weight[:, a, b, d, :] @ feat[i]
    return out


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5) * w + b


def random_scene(n: int, channels: int, seed: int) -> Point:
    g = torch.Generator().manual_seed(seed)
    cells = torch.unique(torch.randint(0, 6, (n, 3), generator=g), dim=0)
    return Point(coord=cells.float() * 0.1, grid_coord=cells, batch=torch.zeros(len(cells), dtype=torch.long),
                 feat=torch.randn(len(cells), channels, generator=g))


def test_folded_cpe_bias_equals_the_conv_with_its_bias() -> None:
    state, _ = official_state(seed=3)
    holder = Holder(encoder())
    load_encoder(holder, state, "sonata.pth")
    point = serialize(random_scene(120, CHANNELS[0], 4), ("z",), shuffle=False)
    point.sparse = sparse_tensor(point)
    with torch.no_grad():
        ours = holder.encoder.stages[0][1].cpe(point, point.feat).double().numpy()
    o = "enc.enc0.block1."
    sd = {k: v.double().numpy() for k, v in state.items() if k.startswith(o)}
    conv = submanifold_conv(point.grid_coord.numpy(), point.feat.double().numpy(), sd[o + "cpe.0.weight"])
    conv = conv + sd[o + "cpe.0.bias"]  # the official conv adds its bias at every active site
    ref = layer_norm(conv @ sd[o + "cpe.1.weight"].T + sd[o + "cpe.1.bias"], sd[o + "cpe.2.weight"],
                     sd[o + "cpe.2.bias"])
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert np.abs(sd[o + "cpe.0.bias"]).max() > 0.05  # the fold is exercised, not a zero bias


def test_sparse_conv_stem_with_batchnorm_matches_its_definition() -> None:
    state, _ = official_state(stem="sparse-conv", norm="batch", seed=5)
    holder = Holder(encoder("sparse-conv", "batch"))
    load_encoder(holder, state, "model_best.pth")
    enc = holder.encoder.eval()
    point = serialize(random_scene(60, IN, 6), ("z",), shuffle=False)
    point.sparse = sparse_tensor(point)
    with torch.no_grad():
        ours = enc.embedding(point).double().numpy()
    sd = {k: v.double().numpy() for k, v in state.items() if k.startswith("embedding.stem.")}
    x = submanifold_conv(point.grid_coord.numpy(), point.feat.double().numpy(), sd["embedding.stem.conv.weight"])
    x = (x - sd["embedding.stem.norm.running_mean"]) / np.sqrt(sd["embedding.stem.norm.running_var"] + 1e-3)
    x = x * sd["embedding.stem.norm.weight"] + sd["embedding.stem.norm.bias"]
    ref = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    out = enc(random_scene(200, IN, 7))  # and the whole encoder runs on it
    assert out.feat.shape[1] == CHANNELS[-1] and torch.isfinite(out.feat).all()


def one_line_error(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_what_does_not_fit_is_refused_in_one_line(tmp_path) -> None:
    state, _ = official_state()
    with pytest.raises(InputError) as exc:  # other widths
        load_encoder(Holder(encoder(channels=(16, 48))), state, "sonata.pth")
    assert "model.channels: [16, 32]" in one_line_error(exc)
    with pytest.raises(InputError) as exc:  # a v3m1 file into a Sonata-shaped encoder
        load_encoder(Holder(encoder()), official_state(stem="sparse-conv", norm="batch")[0], "ptv3.pth")
    assert "model.stem: sparse-conv" in one_line_error(exc) and "model.down_norm: batch" in str(exc.value)
    with pytest.raises(InputError) as exc:  # another mlp ratio
        load_encoder(Holder(encoder()), official_state(mlp_ratio=2)[0], "sonata.pth")
    assert "mlp.0.weight" in one_line_error(exc)
    broken = {k: v for k, v in state.items() if k != "enc.enc1.block0.norm2.0.bias"}
    with pytest.raises(InputError) as exc:
        load_encoder(Holder(encoder()), broken, "sonata.pth")
    assert "stages.1.0.norm2.bias" in one_line_error(exc)
    with pytest.raises(InputError) as exc:  # relative position encoding has no pc3d counterpart
        load_encoder(Holder(encoder()), {**state, "enc.enc0.block0.attn.rpe.rpe_table": torch.zeros(3, 2)}, "x.pth")
    assert "rpe_table" in one_line_error(exc)
    with pytest.raises(InputError) as exc:  # not an official file, nor a pc3d one
        official_to_pc3d({"backbone.conv1.weight": torch.zeros(3)}, "other.pth")
    assert "not an official PTv3" in one_line_error(exc)
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(3)}}, path)
    with pytest.raises(InputError) as exc:
        load_encoder(Holder(encoder()), load_weights(str(path)), str(path))
    assert "does not fit the encoder" in one_line_error(exc)


def test_quickstart_probe_preset_takes_an_official_file(tmp_path) -> None:
    from pc3d.config.loading import load_preset
    from pc3d.config.pointins import ScenePreset
    from pc3d.methods.scene_probe import SceneLabels, SceneProbe

    config = ScenePreset.model_validate({k: v for k, v in load_preset("probe-scannet-quickstart").items()
                                         if k not in ("extends", "description")})
    model = config.model
    state, target = official_state(depths=model.depths, channels=model.channels, in_channels=model.in_channels)
    path = tmp_path / "sonata.pth"
    torch.save({"config": {"enc_channels": model.channels}, "state_dict": state}, path)
    probe = SceneProbe(config, SceneLabels(4, (2, 3), (0, 1)))
    report = probe.load_pretrained(load_weights(str(path)), str(path))
    assert report["offset_init"] == "probe (fresh head on the probe features)"  # Sonata's protocol, the default
    assert_loaded(probe.encoder, state, target)
