"""Parity with the official Point-MAE code (tests/fixtures/official/point-mae, numbers from the official
models on the CPU): official checkpoints loaded the way a user loads them (`--from FILE`, i.e.
`pc3d.engine.checkpoint.load_weights` + the method's `load_pretrained`, what the trainer calls) must
reproduce the official forward passes, and every load report must name each tensor it did not use.

Where pc3d differs from the official code, and why that does not change the numbers compared here:
- farthest point sampling: the CUDA kernel never picks a point with squared norm <= 1e-3 after the start
  (a padding guard); pc3d's does. None of the fixture's clouds has such a point.
- pc3d returns the reconstruction as (B, Nm, M, 3); the official `rebuild_points` is (B*Nm, M, 3).
- the part-segmentation net: the official one fetches blocks 3/7/11 of a 12-block encoder (fixed);
  pc3d keeps those of (3, 7, 11) that exist and the last block otherwise, so the 2-block fixture
  encoder feeds block 1 (one block's width where the official has three). The head itself is the
  same; pc3d returns logits where the official returns log_softmax (pc3d's loss applies it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pc3d.config import validate_preset
from pc3d.engine.checkpoint import load_weights
from pc3d.errors import InputError
from pc3d.ops.chamfer import chamfer_distance
from pc3d.ops.grouping import group_patches
from pc3d.ops.sampling import farthest_point_sample

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "point-mae"
CONFIG = json.loads((FIXTURE / "config.json").read_text())
TOL = CONFIG["tolerance_max_abs"]  # 1e-5


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "outputs.npz") as data:
        return {k: data[k] for k in data.files}


def max_err(ours: torch.Tensor, theirs: np.ndarray) -> float:
    assert tuple(ours.shape) == theirs.shape
    return float(np.abs(ours.detach().double().numpy() - theirs.astype(np.float64)).max())


def pretrain_method(drop_path: float):
    """A pc3d point-mae method sized like the official fixture net (config.json)."""
    from pc3d.methods.point_mae import PointMAEPretraining

    cfg = CONFIG["pretrain_model_config"]
    t = cfg["transformer_config"]
    assert t["num_heads"] == t["decoder_num_heads"] and t["trans_dim"] == t["encoder_dims"]  # pc3d shares them
    model = {"dim": t["trans_dim"], "depth": t["depth"], "heads": t["num_heads"],
             "decoder_depth": t["decoder_depth"], "drop_path": drop_path, "num_groups": cfg["num_group"],
             "group_size": cfg["group_size"]}
    config = validate_preset({"command": "pretrain", "method": "point-mae", "model": model,
                              "mask_ratio": t["mask_ratio"], "loss": cfg["loss"]})
    return PointMAEPretraining(config)


def finetune_config(method: str) -> object:
    c = CONFIG["classifier_model_config"]
    model = {"dim": c["trans_dim"], "depth": c["depth"], "heads": c["num_heads"], "drop_path": c["drop_path_rate"],
             "num_groups": c["num_group"], "group_size": c["group_size"]}
    return validate_preset({"command": "finetune", "method": method, "model": model})


def classifier_method(num_classes: int = CONFIG["classifier_model_config"]["cls_dim"]):
    from pc3d.methods.object_finetune import ObjectClassification

    torch.manual_seed(0)
    return ObjectClassification(finetune_config("object-cls"), num_classes)


def official_classifier_state() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURE / "classifier.safetensors"))


def nothing_left_out(report: dict) -> None:
    assert report["skipped"] == [] and report["missing"] == [] and report["notes"] == [], report


# ------------------------------------------------------------------------------- pretraining network


def test_pretrain_checkpoint_reproduces_the_official_forward(outputs, monkeypatch):
    import pc3d.methods.point_mae as point_mae_method

    source = str(FIXTURE / "pretrain.pth")
    method = pretrain_method(CONFIG["pretrain_model_config"]["transformer_config"]["drop_path_rate"])
    report = method.load_pretrained(load_weights(source), source)  # what `--from pretrain.pth` runs
    assert report["skipped"] == [] and report["missing"] == []
    assert report["loaded"] == len(torch.load(FIXTURE / "pretrain.pth", weights_only=True)["base_model"])
    model = method.model.eval()
    points = torch.from_numpy(outputs["points"])

    fps_index = farthest_point_sample(points, model.grouper.num_groups)
    assert np.array_equal(fps_index.numpy(), outputs["fps_index"])
    with torch.no_grad():
        neighborhood, center = model.grouper(points)  # the grouper the model runs
    _, _, patch_index = group_patches(points, model.grouper.num_groups, model.grouper.group_size)
    assert torch.equal(patch_index[:, :, 0], fps_index)  # each centre is its patch's nearest point
    assert np.array_equal(center.numpy(), outputs["centers"])
    assert np.array_equal(neighborhood.numpy(), outputs["neighborhood"])  # same points, nearest first

    with torch.no_grad():
        tokens = model.encoder(neighborhood, center)  # noaug: every patch visible
        assert max_err(tokens, outputs["encoder_tokens"]) <= TOL

    # the official mask (np.random.seed(13)), injected where pc3d draws its own
    mask = torch.from_numpy(outputs["mask"])
    assert mask.sum(dim=1).tolist() == [int(0.6 * 64)] * 3
    monkeypatch.setattr(point_mae_method, "random_patch_mask", lambda *args, **kwargs: mask.clone())
    with torch.no_grad():
        reconstruction = model(neighborhood, center, mask)
        target = neighborhood[mask].reshape(reconstruction.shape)
        loss = method.reconstruction_loss(points)  # the training loss, through the method
    assert max_err(reconstruction, outputs["reconstruction"]) <= TOL
    assert np.array_equal(target.numpy(), outputs["target_patches"])
    assert max_err(loss, outputs["loss_cdl2"]) <= TOL
    assert max_err(chamfer_distance(reconstruction.reshape(-1, 32, 3), target.reshape(-1, 32, 3)),
                   outputs["loss_cdl2"]) <= TOL

    # train mode: BatchNorm uses batch statistics (of all B*G patches, as the official tokenizer does);
    # drop-path 0 as in the fixture, so no randomness is left
    train = pretrain_method(0.0)
    train.load_pretrained(load_weights(source), source)
    train.train()
    with torch.no_grad():
        reconstruction = train.model(neighborhood, center, mask)
        loss = train.reconstruction_loss(points)
    assert max_err(reconstruction, outputs["reconstruction_train"]) <= TOL
    assert max_err(loss, outputs["loss_cdl2_train"]) <= TOL


def test_pretrain_checkpoint_into_a_classifier_reports_the_unused_decoder():
    source = str(FIXTURE / "pretrain.pth")
    method = classifier_method()
    report = method.load_pretrained(load_weights(source), source)
    official = torch.load(FIXTURE / "pretrain.pth", weights_only=True)["base_model"]
    encoder = [k for k in official if k.startswith("MAE_encoder.")]
    assert report["loaded"] == len(encoder) and report["missing"] == []
    # every tensor of the file that the classifier cannot use, under the file's names
    assert report["skipped"] == sorted(k for k in official if not k.startswith("MAE_encoder."))
    assert "mask_token" in report["skipped"] and "increase_dim.0.weight" in report["skipped"]


# ---------------------------------------------------------------------------------- classifier


def test_finetuned_classifier_reproduces_the_official_logits(outputs):
    source = str(FIXTURE / "classifier.safetensors")
    method = classifier_method()
    report = method.load_pretrained(load_weights(source), source)  # `finetune cls-... --from`
    nothing_left_out(report)
    assert report["loaded"] == len(official_classifier_state())
    method.eval()
    points = torch.from_numpy(outputs["points"])
    with torch.no_grad():
        feature = method.model.features(points)
        logits = method.model(points)
    assert max_err(feature, outputs["cls_feature"]) <= TOL
    assert max_err(logits, outputs["logits"]) <= TOL


def test_official_pth_classifier_with_numpy_metrics_and_ddp_prefix(outputs, tmp_path):
    """An official finetuned `.pth`: `base_model` (DDP `module.` names) beside epoch and metrics."""
    state = {f"module.{k}": v for k, v in official_classifier_state().items()}
    path = tmp_path / "ckpt-best.pth"
    torch.save({"base_model": state, "epoch": 299, "metrics": {"acc": np.float64(93.8)},
                "best_metrics": {"acc": np.float64(93.8)}}, path)
    method = classifier_method()
    nothing_left_out(method.load_pretrained(load_weights(str(path)), str(path)))
    with torch.no_grad():
        logits = method.eval().model(torch.from_numpy(outputs["points"]))
    assert max_err(logits, outputs["logits"]) <= TOL


def test_classifier_for_another_class_count_keeps_its_head_and_says_so(outputs):
    source = str(FIXTURE / "classifier.safetensors")
    method = classifier_method(num_classes=40)
    initial = {k: v.clone() for k, v in method.model.head.state_dict().items()}
    report = method.load_pretrained(load_weights(source), source)
    head = sorted(k for k in official_classifier_state() if k.startswith("cls_head_finetune."))
    assert report["skipped"] == head and report["missing"] == []
    assert len(report["notes"]) == 1 and "classifier head" in report["notes"][0]
    assert "is (15,) in the file, the model expects (40,)" in report["notes"][0]  # 15 vs 40 classes
    for key, value in method.model.head.state_dict().items():
        assert torch.equal(value, initial[key])  # none of the head loaded, not even the matching layers
    # the rest did: the pooled feature is the official one
    with torch.no_grad():
        feature = method.eval().model.features(torch.from_numpy(outputs["points"]))
    assert max_err(feature, outputs["cls_feature"]) <= TOL


def test_geomask3d_classifier_norm_p_loads(outputs, tmp_path):
    """A GeoMask3D-finetuned classifier names the final LayerNorm `norm_p`."""
    state = {("norm_p." + k[len("norm."):] if k.startswith("norm.") else k): v
             for k, v in official_classifier_state().items()}
    assert "norm_p.weight" in state and "norm.weight" not in state
    path = tmp_path / "geomask3d-cls.pth"
    torch.save({"base_model": state}, path)
    method = classifier_method()
    nothing_left_out(method.load_pretrained(load_weights(str(path)), str(path)))
    assert torch.equal(method.model.encoder.norm.weight.detach(), state["norm_p.weight"])
    with torch.no_grad():
        logits = method.eval().model(torch.from_numpy(outputs["points"]))
    assert max_err(logits, outputs["logits"]) <= TOL


def test_norm_and_norm_p_together_use_norm_and_report_norm_p():
    state = official_classifier_state()
    state["norm_p.weight"] = torch.zeros_like(state["norm.weight"])
    state["norm_p.bias"] = torch.zeros_like(state["norm.bias"])
    method = classifier_method()
    report = method.load_pretrained(state)
    assert report["skipped"] == ["norm_p.bias", "norm_p.weight"]
    assert torch.equal(method.model.encoder.norm.weight.detach(), state["norm.weight"])
    assert any("norm_p.weight" in note for note in report["notes"])


def test_unknown_tensor_is_reported_as_unused(tmp_path):
    from safetensors.torch import save_file

    state = official_classifier_state()
    state["adapter.scale"] = torch.ones(3)
    path = tmp_path / "extra.safetensors"
    save_file(state, str(path))
    report = classifier_method().load_pretrained(load_weights(str(path)), str(path))
    assert report["skipped"] == ["adapter.scale"] and report["missing"] == []
    assert report["loaded"] == len(state) - 1


def test_wrong_width_is_one_input_error():
    state = official_classifier_state()
    state["pos_embed.2.weight"] = torch.zeros(32, 128)
    with pytest.raises(InputError, match="pos_embed.2.weight"):
        classifier_method().load_pretrained(state)


# ------------------------------------------------------------------------------ part segmentation


def bn(prefix: str, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 1 + 0.1 * torch.randn(n, generator=gen),
            f"{prefix}.bias": 0.1 * torch.randn(n, generator=gen),
            f"{prefix}.running_mean": 0.1 * torch.randn(n, generator=gen),
            f"{prefix}.running_var": 0.5 + torch.rand(n, generator=gen),
            f"{prefix}.num_batches_tracked": torch.tensor(1000)}


def conv(prefix: str, out: int, inp: int, gen: torch.Generator, bias: bool = True) -> dict[str, torch.Tensor]:
    state = {f"{prefix}.weight": torch.randn(out, inp, 1, generator=gen) / inp**0.5}
    if bias:
        state[f"{prefix}.bias"] = 0.1 * torch.randn(out, generator=gen)
    return state


def official_partseg_state(feat_dim: int) -> dict[str, torch.Tensor]:
    """`get_model(50).state_dict()` of the official segmentation/models/pt.py, names as there.

    The encoder is the fixture's pretraining encoder with `MAE_encoder.` removed (exactly what the
    official `load_model_from_ckpt` does); the head is random. The official sizes are those of a
    384-wide net (propagation mlp [4*384, 1024], convs1 from 1024 + 2*1152 + 64 = 3392); here the
    feature width is the fixture encoder's (`feat_dim`), the rest as in the official code."""
    official = torch.load(FIXTURE / "pretrain.pth", weights_only=True)["base_model"]
    state = {k[len("MAE_encoder."):]: v for k, v in official.items() if k.startswith("MAE_encoder.")}
    gen = torch.Generator().manual_seed(3)
    state.update(conv("label_conv.0", 64, 16, gen, bias=False))
    state.update(bn("label_conv.1", 64, gen))
    state.update(conv("propagation_0.mlp_convs.0", 1536, feat_dim + 3, gen))
    state.update(bn("propagation_0.mlp_bns.0", 1536, gen))
    state.update(conv("propagation_0.mlp_convs.1", 1024, 1536, gen))
    state.update(bn("propagation_0.mlp_bns.1", 1024, gen))
    state.update(conv("convs1", 512, 1024 + 2 * feat_dim + 64, gen))
    state.update(bn("bns1", 512, gen))
    state.update(conv("convs2", 256, 512, gen))
    state.update(bn("bns2", 256, gen))
    state.update(conv("convs3", 50, 256, gen))
    return state


def save_official_partseg(path: Path, state: dict[str, torch.Tensor], legacy: bool = False) -> None:
    """The dict segmentation/main.py saves as best_model.pth: numpy float64 metrics, the weights under
    model_state_dict, the AdamW state under optimizer_state_dict."""
    checkpoint = {"epoch": 287, "train_acc": np.float64(0.9541), "test_acc": np.float64(0.9412),
                  "class_avg_iou": np.float64(0.8421), "inctance_avg_iou": np.float64(0.8612),
                  "model_state_dict": state,
                  "optimizer_state_dict": {"state": {0: {"step": torch.tensor(9.0),
                                                         "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
                                           "param_groups": [{"lr": 1e-6, "weight_decay": 0.05, "params": [0]}]}}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)


def official_partseg_log_probs(state: dict[str, torch.Tensor], points: torch.Tensor, center: torch.Tensor,
                               feats: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
    """The official part-segmentation head (pt.py `get_model.forward` after the encoder, eval mode),
    written from its definition with the official tensors: (B,N,50) log-probabilities.

    feats (B,G,C): the LayerNormed block features the official code concatenates."""
    def bn_eval(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state[f"{prefix}.weight"], state[f"{prefix}.bias"], False, 0.0, 1e-5)

    def conv1d(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.conv1d(x, state[f"{prefix}.weight"], state.get(f"{prefix}.bias"))

    b, n, _ = points.shape
    x = feats.transpose(1, 2)  # B C G
    x_max = x.max(dim=2).values.unsqueeze(-1).repeat(1, 1, n)
    x_avg = x.mean(dim=2).unsqueeze(-1).repeat(1, 1, n)
    one_hot = F.one_hot(category, 16).float().view(b, 16, 1)
    label = F.leaky_relu(bn_eval(conv1d(one_hot, "label_conv.0"), "label_conv.1"), 0.2).repeat(1, 1, n)
    x_global = torch.cat([x_max, x_avg, label], dim=1)
    # PointNetFeaturePropagation: 3 nearest centres by squared distance, weights 1/(d^2 + 1e-8)
    dists = ((points.unsqueeze(2) - center.unsqueeze(1)) ** 2).sum(-1)  # B N G
    dists, idx = dists.sort(dim=-1)
    recip = 1.0 / (dists[:, :, :3] + 1e-8)
    weight = recip / recip.sum(dim=2, keepdim=True)
    picked = torch.gather(feats.unsqueeze(1).expand(-1, n, -1, -1), 2,
                          idx[:, :, :3, None].expand(-1, -1, -1, feats.shape[-1]))
    interpolated = (picked * weight.unsqueeze(-1)).sum(dim=2)
    f0 = torch.cat([points, interpolated], dim=-1).transpose(1, 2)
    for i in range(2):
        f0 = F.relu(bn_eval(conv1d(f0, f"propagation_0.mlp_convs.{i}"), f"propagation_0.mlp_bns.{i}"))
    x = torch.cat([f0, x_global], dim=1)
    x = F.relu(bn_eval(conv1d(x, "convs1"), "bns1"))
    x = F.relu(bn_eval(conv1d(x, "convs2"), "bns2"))
    return F.log_softmax(conv1d(x, "convs3"), dim=1).permute(0, 2, 1)


@pytest.mark.parametrize("legacy", [False, True], ids=["numpy2-pickle", "numpy1-pickle"])
def test_official_partseg_checkpoint_loads_whole(outputs, tmp_path, legacy):
    from pc3d.methods.object_finetune import ObjectPartSegmentation
    from pc3d.models.point_mae import run_blocks

    torch.manual_seed(0)
    method = ObjectPartSegmentation(finetune_config("object-partseg"))
    model = method.model
    feat_dim = model.encoder.dim * len(model.fetch_blocks)
    state = official_partseg_state(feat_dim)
    path = tmp_path / "best_model.pth"
    save_official_partseg(path, state, legacy)
    numpy1, numpy2 = b"numpy.core.multiarray\nscalar", b"numpy._core.multiarray\nscalar"
    if legacy:  # a file written under numpy 1.x names the scalar constructor numpy.core.multiarray.scalar
        path.write_bytes(path.read_bytes().replace(numpy2, numpy1))
    elif np.lib.NumpyVersion(np.__version__) < "2.0.0":  # numpy 1 cannot import numpy._core: nothing loads it
        pytest.skip("a numpy-2 pickle needs numpy >= 2 to load")
    assert path.read_bytes().count(numpy1 if legacy else numpy2) == 1
    with pytest.raises(Exception, match="multiarray.scalar"):  # plain weights_only refuses the metrics
        torch.load(path, weights_only=True)

    report = method.load_pretrained(load_weights(str(path)), str(path))  # `finetune partseg --from`
    nothing_left_out(report)
    assert report["loaded"] == len(state)

    # every head tensor landed where the head uses it: pc3d's forward equals the official head's
    points = torch.from_numpy(outputs["points"])
    category = torch.tensor([0, 7, 15])
    model.eval()
    with torch.no_grad():
        ours = F.log_softmax(model(points, category), dim=-1)
        neighborhood, center = model.grouper(points)
        tokens, pos = model.encoder.tokens(neighborhood, center)
        _, kept = run_blocks(model.encoder.blocks, tokens, pos, keep=model.fetch_blocks)
        feats = torch.cat([model.encoder.norm(x) for x in kept], dim=-1)
        theirs = official_partseg_log_probs(state, points, center, feats, category)
    assert float((ours - theirs).abs().max()) <= TOL


def test_numpy_allow_list_is_exact(tmp_path):
    """Only numpy float64 scalars are allowed beside the tensors; any other pickled type is refused."""
    path = tmp_path / "other.pth"
    torch.save({"model_state_dict": official_classifier_state(), "acc": np.float32(0.5)}, path)
    with pytest.raises(InputError, match="weights_only"):
        load_weights(str(path))
    torch.save({"model_state_dict": official_classifier_state(), "hist": np.zeros(3)}, path)
    with pytest.raises(InputError, match="weights_only"):
        load_weights(str(path))


def test_import_official_reads_partseg_checkpoints(tmp_path):
    from pc3d.models.convert import import_official
    from pc3d.models.point_mae import PointMAEPartSeg

    model = PointMAEPartSeg(dim=64, depth=2, heads=4, num_groups=64, group_size=32)
    state = official_partseg_state(64)
    path = tmp_path / "best_model.pth"
    save_official_partseg(path, state)
    report = import_official(model, path)
    assert report.loaded == len(state) and report.unexpected == [] and report.missing == []


# ------------------------------------------------------------------------------------------ GeoMask3D


def test_hard_share_is_the_release_expression():
    from pc3d.methods.geomask3d import hard_share

    # G = 128 patches, mask ratio 0.6: G - int(0.4 G) = 77 masked; epoch 4 of 77
    masked, epoch, epochs = 77, 4, 77
    release = float((epoch + 1) / epochs) * 0.8
    other_order = 0.8 * (epoch + 1) / epochs
    assert hard_share(epoch, epochs) == release
    # the two orders differ in the last bit, and that moves the number of hard patches by one
    assert release != other_order
    assert int(masked * release) == 3 and int(masked * other_order) == 4
    assert int(masked * hard_share(epoch, epochs)) == 3
    assert hard_share(epochs - 1, epochs) == 0.8 and hard_share(epochs + 5, epochs) == 0.8
