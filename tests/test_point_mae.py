"""Point-MAE backbone: official checkpoint import/export, shapes, and the pretraining loss falling."""

from __future__ import annotations

import pytest
import torch

from pc3d.models.convert import export_official, import_official, load_state, read_checkpoint
from pc3d.models.point_mae import PointMAE, PointMAEClassifier, random_patch_mask


def official_pretrain_keys(dim: int = 384, depth: int = 12, decoder_depth: int = 4,
                           group_size: int = 32) -> dict[str, tuple[int, ...]]:
    """The official `pretrain.pth` keys and shapes, written out from the reference table."""
    keys: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, n: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{name}"] = (n,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    def block(prefix: str) -> None:
        keys.update({f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
                     f"{prefix}.attn.qkv.weight": (3 * dim, dim),
                     f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
                     f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
                     f"{prefix}.mlp.fc1.weight": (4 * dim, dim), f"{prefix}.mlp.fc1.bias": (4 * dim,),
                     f"{prefix}.mlp.fc2.weight": (dim, 4 * dim), f"{prefix}.mlp.fc2.bias": (dim,)})

    enc = "MAE_encoder.encoder"
    keys.update({f"{enc}.first_conv.0.weight": (128, 3, 1), f"{enc}.first_conv.0.bias": (128,),
                 f"{enc}.first_conv.3.weight": (256, 128, 1), f"{enc}.first_conv.3.bias": (256,),
                 f"{enc}.second_conv.0.weight": (512, 512, 1), f"{enc}.second_conv.0.bias": (512,),
                 f"{enc}.second_conv.3.weight": (dim, 512, 1), f"{enc}.second_conv.3.bias": (dim,)})
    bn(f"{enc}.first_conv.1", 128)
    bn(f"{enc}.second_conv.1", 512)
    for prefix in ("MAE_encoder.pos_embed", "decoder_pos_embed"):
        keys.update({f"{prefix}.0.weight": (128, 3), f"{prefix}.0.bias": (128,),
                     f"{prefix}.2.weight": (dim, 128), f"{prefix}.2.bias": (dim,)})
    for i in range(depth):
        block(f"MAE_encoder.blocks.blocks.{i}")
    for i in range(decoder_depth):
        block(f"MAE_decoder.blocks.{i}")
    for prefix in ("MAE_encoder.norm", "MAE_decoder.norm"):
        keys.update({f"{prefix}.weight": (dim,), f"{prefix}.bias": (dim,)})
    keys["mask_token"] = (1, 1, dim)
    keys["increase_dim.0.weight"] = (3 * group_size, dim, 1)
    keys["increase_dim.0.bias"] = (3 * group_size,)
    return keys


def random_official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_pretrain_keys().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5  # must be positive
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.05
    return state


@pytest.fixture(scope="module")
def official_file(tmp_path_factory) -> tuple:
    state = random_official_state()
    payload = {"base_model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {"state": {}},
               "epoch": 299, "metrics": {"acc": 0.0}, "best_metrics": {"acc": 0.0}}
    path = tmp_path_factory.mktemp("official") / "pretrain.pth"
    torch.save(payload, path)
    return path, state


def test_official_file_is_weights_only_loadable(official_file):
    path, state = official_file
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert set(loaded["base_model"]) == {f"module.{k}" for k in state}
    assert set(read_checkpoint(path)) == set(state)  # `module.` stripped, base_model unwrapped


def test_official_import_into_pretraining_model_matches_every_key(official_file):
    path, state = official_file
    model = PointMAE()
    report = import_official(model, path)
    assert report.missing == [] and report.unexpected == []
    assert report.loaded == len(state)
    own = model.state_dict()
    assert torch.equal(own["encoder.blocks.11.attn.qkv.weight"], state["MAE_encoder.blocks.blocks.11.attn.qkv.weight"])
    assert torch.equal(own["encoder.tokenizer.second_conv.1.running_var"],
                       state["MAE_encoder.encoder.second_conv.1.running_var"])
    assert torch.equal(own["reconstruction_head.weight"], state["increase_dim.0.weight"])
    assert torch.equal(own["decoder.blocks.3.mlp.fc2.bias"], state["MAE_decoder.blocks.3.mlp.fc2.bias"])
    assert "encoder.blocks.0.attn.qkv.bias" not in own  # qkv has no bias


def test_official_import_into_classifier_reports_expected_keys(official_file):
    path, _ = official_file
    model = PointMAEClassifier(num_classes=40)
    from pc3d.methods.object_finetune import encoder_report

    report = encoder_report(model, read_checkpoint(path))
    assert report["missing"] == []  # every encoder weight arrived
    assert report["loaded"] == len([k for k in model.state_dict() if k.startswith("encoder.")])
    # the whole-model view: what Point-MAE's load_model_from_ckpt prints
    full = import_official(model, path)
    assert {k.split(".")[0] for k in full.missing} == {"cls_token", "cls_pos", "head"}
    assert {k.split(".")[0] for k in full.unexpected} == {"mask_token", "decoder_pos_embed", "decoder",
                                                          "reconstruction_head"}


def test_import_export_import_gives_identical_outputs(official_file, tmp_path):
    path, state = official_file
    first = PointMAE().eval()
    import_official(first, path)
    torch.manual_seed(0)
    points = torch.rand(2, 1024, 3) * 2 - 1
    neighborhood, center = first.grouper(points)
    mask = random_patch_mask(2, 64, 0.6, "cpu", torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = first(neighborhood, center, mask)
    exported = export_official(first, tmp_path / "exported.pth")
    raw = torch.load(exported, map_location="cpu", weights_only=True)["base_model"]
    assert set(raw) == set(state)
    assert all(torch.equal(raw[k], state[k]) for k in state)
    second = PointMAE().eval()
    report = import_official(second, exported)
    assert report.missing == [] and report.unexpected == []
    with torch.no_grad():
        again = second(neighborhood, center, mask)
    assert expected.shape == (2, 38, 32, 3)  # int(0.6 * 64) masked patches of 32 points
    assert torch.equal(expected, again)


def test_shape_mismatch_is_a_clear_input_error():
    from pc3d.errors import InputError

    model = PointMAE(dim=48, depth=1, heads=6, decoder_depth=1)
    with pytest.raises(InputError, match="shape"):
        load_state(model, {"mask_token": torch.zeros(1, 1, 384)})


def test_random_mask_hides_exact_count_per_sample():
    mask = random_patch_mask(5, 64, 0.6, "cpu", torch.Generator().manual_seed(0))
    assert mask.sum(dim=1).tolist() == [38] * 5
    assert not torch.equal(mask[0], mask[1])


def test_pretraining_loss_falls_on_synthetic_objects():
    from pc3d.config import validate_preset
    from pc3d.data.readers.objects import SyntheticObjects
    from pc3d.engine.method import StepState
    from pc3d.methods.point_mae import PointMAEPretraining

    torch.manual_seed(0)
    config = validate_preset({"command": "pretrain", "method": "point-mae",
                              "model": {"dim": 48, "depth": 2, "heads": 4, "decoder_depth": 1,
                                        "num_groups": 16, "group_size": 16},
                              "data": {"num_points": 256, "augment": False}})
    data = SyntheticObjects(16, seed=0, num_points=256)
    points = torch.stack([data[i]["points"] for i in range(16)])
    method = PointMAEPretraining(config)
    optimizer = torch.optim.AdamW(method.param_groups(0.05), lr=2e-3)
    state = StepState(step=0, epoch=0, total_steps=1, progress=0.0, lr=2e-3)
    losses = []
    for _ in range(40):
        loss = method.training_step({"points": points}, state)["chamfer"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_export_of_a_pc3d_run_state_round_trips(official_file, tmp_path):
    from pc3d.models.convert import export_state_official

    path, state = official_file
    model = PointMAE().eval()
    import_official(model, path)
    run_state = {f"model.{k}": v for k, v in model.state_dict().items()}  # a point-mae run's method keys
    run_state["model.extra_buffer"] = torch.zeros(1)
    out, skipped = export_state_official(run_state, tmp_path / "out.pth")
    assert skipped == ["extra_buffer"]
    raw = torch.load(out, map_location="cpu", weights_only=True)["base_model"]
    assert set(raw) == set(state) and all(torch.equal(raw[k], state[k]) for k in state)


@pytest.mark.slow
def test_cli_point_mae_quickstart_run_exports_to_the_official_layout(tmp_path, cli):
    import json

    from pc3d.engine.checkpoint import load_weights
    from pc3d.models.convert import export_state_official

    result = cli("pretrain", "point-mae", "--preset", "quickstart", "--out", str(tmp_path), "--device", "cpu",
                 "--set", "train.epochs=2", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert 0 < summary["metrics"]["val/svm_acc"] <= 1 and summary["metrics"]["val/chamfer"] > 0
    state = load_weights(summary["checkpoints"]["last"])
    path, skipped = export_state_official(state, tmp_path / "pretrain.pth")
    assert skipped == []
    model = PointMAE(dim=96, depth=4, heads=6, decoder_depth=2, num_groups=16, group_size=16)
    report = import_official(model, path)
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(model.state_dict()["encoder.norm.weight"], state["model.encoder.norm.weight"])
