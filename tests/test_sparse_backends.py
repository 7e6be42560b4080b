"""pc3d.models.sparse: every operator on the torch backend against spconv 2.x on CPU (same weights), whole
models across backends, the backend choice, and spconv-triton against torch.

spconv-triton is tested on CUDA when there is one, and under TRITON_INTERPRET=1 in a child pytest process
(Triton fixes interpreter-or-compiler when it is imported, so the flag must be set before anything imports
triton; see tests/test_kernels.py). Its 1.0.0 release cannot run on CPU even there (its GEMM asserts CUDA
tensors and its autotuner needs a GPU driver); the child then skips, naming the failing line, and the parent
skips with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from pc3d.errors import InputError
from pc3d.models import sparse
from pc3d.models.sparse import (
    ENV_VAR,
    SparseConv3d,
    SparseConvTensor,
    SparseInverseConv3d,
    SparseSequential,
    SubMConv3d,
    available_backends,
    backend_name,
)

CHILD = os.environ.get("PC3D_SPARSE_TEST_CHILD") == "1"
HAS_SPCONV = importlib.util.find_spec("spconv") is not None
HAS_TRITON_SPCONV = importlib.util.find_spec("spconv_triton") is not None
needs_spconv = pytest.mark.skipif(not HAS_SPCONV or CHILD, reason="spconv is not installed")
parent_only = pytest.mark.skipif(CHILD, reason="runs in the parent process")
child_only = pytest.mark.skipif(not CHILD, reason="runs in the TRITON_INTERPRET=1 child process")
TOL = {"rtol": 1e-5, "atol": 1e-5}


def random_sites(seed: int, batches: int = 3, extent: int = 9, per_batch: int = 120) -> SparseConvTensor:
    """Random sites of several scenes in a 16^3 grid, plus isolated ones (empty neighbourhoods) far off."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batches):
        cells = torch.randint(0, extent, (per_batch, 3), generator=g)
        lonely = torch.tensor([[15, 15, 15], [15, 0, 12], [12, 15, 0]])  # > 2 cells from anything else
        rows.append(torch.cat([torch.full((per_batch + 3, 1), b), torch.cat([cells, lonely])], 1))
    indices = torch.unique(torch.cat(rows), dim=0).int()
    indices = indices[torch.randperm(indices.shape[0], generator=g)]  # rows in no particular order
    features = torch.randn(indices.shape[0], 5, generator=g)
    return SparseConvTensor(features, indices, [16, 16, 16], batches)


def site_order(indices: torch.Tensor) -> torch.Tensor:
    key = indices.long() @ torch.tensor([1 << 36, 1 << 24, 1 << 12, 1], device=indices.device)
    return torch.argsort(key)


def run_ops(monkeypatch: pytest.MonkeyPatch, backend: str, modules: list, x: SparseConvTensor,
            chain: bool) -> tuple[list[SparseConvTensor], torch.Tensor, list[torch.Tensor]]:
    """Apply the modules (in a chain or each to x), backprop a fixed function of the outputs."""
    monkeypatch.setenv(ENV_VAR, backend)
    for m in modules:
        m.zero_grad()
    feats = x.features.clone().requires_grad_(True)
    y = x.replace_feature(feats)
    outs = []
    for m in modules:
        out = m(y)
        outs.append(out)
        if chain:
            y = out
    g = torch.Generator().manual_seed(1)
    # weights of the loss per site in sorted site order: backends list strided outputs in different orders
    loss = sum((o.features[site_order(o.indices)] * torch.randn(o.features.shape, generator=g).to(o.features))
               .sum() for o in outs)
    loss.backward()
    return outs, feats.grad, [m.weight.grad.clone() for m in modules]


def assert_same_sparse(a: SparseConvTensor, b: SparseConvTensor) -> None:
    oa, ob = site_order(a.indices), site_order(b.indices)
    assert torch.equal(a.indices[oa], b.indices[ob])
    assert a.spatial_shape == b.spatial_shape and a.batch_size == b.batch_size
    torch.testing.assert_close(a.features[oa], b.features[ob], **TOL)


OPS = {
    "subm k1": lambda: [SubMConv3d(5, 6, 1, bias=False, indice_key="k1")],
    "subm k3": lambda: [SubMConv3d(5, 6, 3, bias=False, indice_key="k3"),
                        SubMConv3d(6, 4, 3, bias=False, indice_key="k3")],  # the second reuses the map
    "subm k5": lambda: [SubMConv3d(5, 6, 5, bias=False, indice_key="k5")],
    "strided k2s2": lambda: [SparseConv3d(5, 6, 2, 2, bias=False, indice_key="down")],
    "inverse": lambda: [SparseConv3d(5, 6, 2, 2, bias=False, indice_key="down"),
                        SubMConv3d(6, 6, 3, bias=False, indice_key="coarse"),
                        SparseInverseConv3d(6, 3, 2, bias=False, indice_key="down")],
}


@needs_spconv
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("seed", [0, 1])
def test_operator_matches_spconv(monkeypatch: pytest.MonkeyPatch, op: str, seed: int) -> None:
    torch.manual_seed(seed)
    modules = OPS[op]()
    x = random_sites(seed)
    ours = run_ops(monkeypatch, "torch", modules, x, chain=True)
    ref = run_ops(monkeypatch, "spconv", modules, x, chain=True)
    for a, b in zip(ours[0], ref[0], strict=True):
        assert_same_sparse(a, b)
    torch.testing.assert_close(ours[1], ref[1], **TOL)  # input gradient
    for ga, gb in zip(ours[2], ref[2], strict=True):  # weight gradients
        torch.testing.assert_close(ga, gb, **TOL)
    if op == "inverse":  # back on the input sites, in the input's row order
        assert torch.equal(ours[0][-1].indices, x.indices) and torch.equal(ref[0][-1].indices, x.indices)


@needs_spconv
def test_weights_load_from_spconv_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """A state dict written by spconv's own modules loads unchanged and gives the same output."""
    from pc3d.models.sparse.spconv_backend import ADAPTER

    library, algo = ADAPTER.load()
    theirs = library.SparseSequential(library.SubMConv3d(5, 6, 3, bias=False, indice_key="a", algo=algo.Native),
                                      torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                                      library.SubMConv3d(6, 4, 1, bias=False, algo=algo.Native))
    ours = SparseSequential(SubMConv3d(5, 6, 3, bias=False, indice_key="a"), torch.nn.BatchNorm1d(6),
                            torch.nn.ReLU(), SubMConv3d(6, 4, 1, bias=False))
    assert {k: v.shape for k, v in theirs.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    x = random_sites(3)
    expected = theirs(library.SparseConvTensor(x.features, x.indices, x.spatial_shape, x.batch_size)).features
    monkeypatch.setenv(ENV_VAR, "torch")
    torch.testing.assert_close(ours(x).features, expected, **TOL)


def small_ptv3_input() -> object:
    from pc3d.models.ptv3 import Point

    g = torch.Generator().manual_seed(5)
    cells = torch.unique(torch.randint(0, 7, (260, 3), generator=g), dim=0)
    batch = (torch.arange(cells.shape[0]) >= cells.shape[0] // 2).long()
    return Point(coord=cells.float() * 0.05, grid_coord=cells, batch=batch,
                 feat=torch.randn(cells.shape[0], 6, generator=g))


def run_model(monkeypatch: pytest.MonkeyPatch, backend: str, model: torch.nn.Module, call) -> tuple:
    monkeypatch.setenv(ENV_VAR, backend)
    model.zero_grad()
    torch.manual_seed(0)
    out = call()
    g = torch.Generator().manual_seed(2)
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def assert_close_to_scale(a: torch.Tensor, b: torch.Tensor, rel: float, floor: float, what: str) -> None:
    """max |a - b| <= rel * max |b| + floor: the two backends sum the same products in different orders, so
    errors scale with the tensor's magnitude, not with each (possibly tiny or cancelling) element."""
    err, scale = float((a - b).abs().max()), float(b.abs().max())
    assert err <= rel * scale + floor, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def assert_same_model_run(a: tuple, b: tuple) -> None:
    # measured (CPU, float32): outputs within ~1e-6 of their scale, parameter gradients within ~1e-6 of theirs;
    # gradients of biases right before a training-mode BatchNorm are exactly zero in theory, noise of ~1e-5 here
    assert_close_to_scale(a[0], b[0], 1e-5, 1e-6, "output")
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert_close_to_scale(a[1][key], b[1][key], 1e-5, 1e-4, key)


@needs_spconv
def test_ptv3_equal_across_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    from pc3d.models.ptv3 import PTv3Encoder

    torch.manual_seed(0)
    model = PTv3Encoder(6, depths=(2, 1), channels=(8, 16), heads=(2, 2), patch_size=16, drop_path=0.0,
                        shuffle_orders=False, stem="sparse-conv", down_norm="batch")
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def call() -> torch.Tensor:
        model.load_state_dict(state)  # BatchNorm running stats as at the start for both runs
        return model(small_ptv3_input()).feat

    ours = run_model(monkeypatch, "torch", model, call)
    ref = run_model(monkeypatch, "spconv", model, call)
    assert "embedding.conv.weight" in ours[1] and "stages.1.0.cpe.conv.weight" in ours[1]
    assert_same_model_run(ours, ref)


@needs_spconv
def test_spvcnn_equal_across_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    from pc3d.models.spvcnn import SPVCNN

    torch.manual_seed(0)
    model = SPVCNN(4, [8, 8, 16, 16, 32, 32, 16, 16, 16], voxel_size=0.3, dropout=0.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(4)
    xyz = torch.rand(500, 3, generator=g) * torch.tensor([10.0, 10.0, 2.0])
    batch = (torch.arange(500) >= 280).long()
    feats = torch.cat([xyz, torch.rand(500, 1, generator=g)], 1)

    def call() -> torch.Tensor:
        model.load_state_dict(state)
        out, scales = model(xyz, batch, feats)
        return torch.cat([out] + scales, 1)

    ours = run_model(monkeypatch, "torch", model, call)
    ref = run_model(monkeypatch, "spconv", model, call)
    assert "up_conv.0.0.weight" in ours[1] and "down.0.0.weight" in ours[1]
    assert_same_model_run(ours, ref)


@parent_only
def test_env_var_picks_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    x = random_sites(7)
    conv = SubMConv3d(5, 2, 3, indice_key="k")
    monkeypatch.setenv(ENV_VAR, "torch")
    assert backend_name("cpu") == "torch"
    assert set(conv(x).indice_dict) == {"torch"}  # only that backend's maps were built
    monkeypatch.delenv(ENV_VAR)
    assert "torch" in available_backends("cpu")
    assert backend_name("cpu") == available_backends("cpu")[0] == ("spconv" if HAS_SPCONV else "torch")
    if HAS_SPCONV:
        monkeypatch.setenv(ENV_VAR, "spconv")
        assert set(conv(x).indice_dict) == {"spconv"}


@parent_only
def test_unknown_or_missing_backend_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = SubMConv3d(5, 2, 3)
    monkeypatch.setenv(ENV_VAR, "minkowski")
    with pytest.raises(InputError, match="not a sparse backend"):
        conv(random_sites(0))
    monkeypatch.setenv(ENV_VAR, "spconv")
    monkeypatch.setattr(sparse.core, "_importable", lambda name: name == "torch")
    with pytest.raises(InputError, match="spconv is not installed"):
        backend_name("cpu")
    assert available_backends("cpu") == ["torch"]
    monkeypatch.setenv(ENV_VAR, "spconv-triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InputError, match="CUDA devices only"):
        backend_name("cpu")


@parent_only
def test_torch_backend_handles_empty_input_and_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "torch")
    empty = SparseConvTensor(torch.zeros(0, 5, requires_grad=True), torch.zeros(0, 4, dtype=torch.int32),
                             [8, 8, 8], 1)
    conv = SubMConv3d(5, 3, 3, bias=True)
    out = conv(empty)
    assert out.features.shape == (0, 3)
    out.features.sum().backward()
    assert conv.weight.grad is not None and torch.all(conv.weight.grad == 0)
    x = random_sites(2)
    with_bias = conv(x).features.detach()
    bias = conv.bias.detach().clone()
    with torch.no_grad():
        conv.bias.zero_()
    torch.testing.assert_close(with_bias, conv(x).features.detach() + bias)


@pytest.mark.skipif(CHILD or not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(not HAS_TRITON_SPCONV, reason="spconv-triton is not installed")
def test_spconv_triton_matches_torch_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    compare_triton_with_torch(monkeypatch, torch.device("cuda"))


def compare_triton_with_torch(monkeypatch: pytest.MonkeyPatch, device: torch.device) -> None:
    for op in ("subm k3", "strided k2s2", "inverse"):
        torch.manual_seed(0)
        modules = [m.to(device) for m in OPS[op]()]
        x = random_sites(0, batches=2, per_batch=40)
        x = SparseConvTensor(x.features.to(device), x.indices.to(device), x.spatial_shape, x.batch_size)
        ours = run_ops(monkeypatch, "torch", modules, x, chain=True)
        ref = run_ops(monkeypatch, "spconv-triton", modules, x, chain=True)
        for a, b in zip(ours[0], ref[0], strict=True):
            assert_same_sparse(a.__class__(a.features.cpu(), a.indices.cpu(), a.spatial_shape, a.batch_size),
                               b.__class__(b.features.cpu(), b.indices.cpu(), b.spatial_shape, b.batch_size))
        torch.testing.assert_close(ours[1], ref[1], **TOL)
        for ga, gb in zip(ours[2], ref[2], strict=True):
            torch.testing.assert_close(ga, gb, **TOL)


@parent_only
@pytest.mark.skipif(not HAS_TRITON_SPCONV, reason="spconv-triton is not installed")
def test_spconv_triton_under_interpreter_matches_torch() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PC3D_SPARSE_TEST_CHILD": "1", "OMP_NUM_THREADS": "1"}
    env.pop(ENV_VAR, None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:xdist", "-p", "no:cacheprovider",
                           str(Path(__file__)), "-k", "interpreter_child"], env=env, capture_output=True, text=True,
                          timeout=300)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0 and " skipped" in proc.stdout and " passed" not in proc.stdout:
        reasons = re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", proc.stdout)
        pytest.skip(reasons[0] if reasons else "skipped in the interpreter child")
    assert proc.returncode == 0, output[-6000:]
    assert " passed" in proc.stdout, output[-6000:]


@child_only
def test_interpreter_child(monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert "spconv-triton" in available_backends("cpu")
    try:
        compare_triton_with_torch(monkeypatch, torch.device("cpu"))
    except (AssertionError, RuntimeError) as error:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        if "spconv_triton" not in frame.filename and "triton" not in frame.filename:
            raise  # a mismatch against torch, not the library refusing the CPU
        where = f"{Path(frame.filename).name}:{frame.lineno} ({frame.line})"
        pytest.skip(f"spconv-triton cannot run on CPU under TRITON_INTERPRET=1: {type(error).__name__} "
                    f"{str(error)[:80]!r} at {where}")
