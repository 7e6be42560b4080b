"""Chamfer distance against numpy loops; gradients by gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pc3d.errors import InputError
from pc3d.ops import chamfer as chamfer_module
from pc3d.ops import chamfer_distance


def numpy_chamfer(a: np.ndarray, b: np.ndarray, variant: str) -> float:
    d1 = np.array([min(((p - q) ** 2).sum() for q in b) for p in a])
    d2 = np.array([min(((p - q) ** 2).sum() for q in a) for p in b])
    if variant == "l2":
        return d1.mean() + d2.mean()
    return (np.sqrt(d1).mean() + np.sqrt(d2).mean()) / 2


@pytest.mark.parametrize("variant", ["l1", "l2"])
@pytest.mark.parametrize("n,m", [(1, 1), (17, 40), (64, 33)])
def test_chamfer_matches_numpy(variant, n, m):
    g = torch.Generator().manual_seed(n * m)
    a = torch.rand(3, n, 3, generator=g, dtype=torch.float64)
    b = torch.rand(3, m, 3, generator=g, dtype=torch.float64)
    per_item = chamfer_distance(a, b, variant=variant, reduction="none")
    expect = [numpy_chamfer(a[i].numpy(), b[i].numpy(), variant) for i in range(3)]
    assert per_item.shape == (3,)
    np.testing.assert_allclose(per_item.numpy(), expect, rtol=1e-10)
    np.testing.assert_allclose(float(chamfer_distance(a, b, variant=variant)), np.mean(expect), rtol=1e-10)


def test_chamfer_large_cloud_block_path(monkeypatch):
    monkeypatch.setattr(chamfer_module, "_BLOCK_PAIRS", 1000)  # force the row-block path on small inputs
    g = torch.Generator().manual_seed(5)
    a = torch.rand(2, 150, 3, generator=g, dtype=torch.float64)
    b = torch.rand(2, 90, 3, generator=g, dtype=torch.float64)
    expect = [numpy_chamfer(a[i].numpy(), b[i].numpy(), "l2") for i in range(2)]
    np.testing.assert_allclose(chamfer_distance(a, b, reduction="none").numpy(), expect, rtol=1e-10)


@pytest.mark.parametrize("variant", ["l1", "l2"])
def test_chamfer_gradcheck(variant):
    g = torch.Generator().manual_seed(11)
    a = torch.rand(2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: chamfer_distance(x, y, variant=variant, reduction="none"),
                                    (a, b), eps=1e-6, atol=1e-6)


def test_chamfer_identical_sets_is_zero_with_finite_gradient():
    a = torch.rand(1, 20, 3, dtype=torch.float64, requires_grad=True)
    loss = chamfer_distance(a, a.detach().clone(), variant="l1")
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(a.grad).all()


def test_chamfer_rejects_bad_input():
    with pytest.raises(InputError):
        chamfer_distance(torch.rand(2, 5, 3), torch.rand(3, 5, 3))
    with pytest.raises(InputError):
        chamfer_distance(torch.rand(2, 5, 3), torch.rand(2, 5, 3), variant="l3")
