"""Probability-integral transform against scipy.stats quantiles; rank order preserved exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from pc3d.errors import InputError
from pc3d.ops import probability_integral_transform

CASES = [
    ("gamma", {"shape": 0.24, "scale": 2.53}, stats.gamma(0.24, scale=2.53)),
    ("gamma", {"shape": 7.5}, stats.gamma(7.5)),
    ("lognormal", {"mu": 0.0, "sigma": 0.76}, stats.lognorm(s=0.76, scale=1.0)),
    ("lognormal", {"mu": 1.5, "sigma": 2.0}, stats.lognorm(s=2.0, scale=np.exp(1.5))),
    ("uniform", {"low": -1.0, "high": 1.0}, stats.uniform(loc=-1.0, scale=2.0)),
]


@pytest.mark.parametrize("prior,params,dist", CASES)
def test_pit_matches_scipy_ppf_at_empirical_cdf(prior, params, dist):
    values = torch.randn(2001, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = probability_integral_transform(values, prior, **params)
    ranks = np.argsort(np.argsort(values.numpy(), kind="stable"), kind="stable")
    expect = dist.ppf((ranks + 0.5) / len(values))
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("prior,params,_", CASES)
def test_pit_keeps_rank_order_exactly(prior, params, _):
    g = torch.Generator().manual_seed(1)
    values = torch.cat([torch.rand(5000, generator=g), torch.tensor([0.5, 0.5, 0.5])])  # with ties
    out = probability_integral_transform(values, prior, **params)
    order = torch.argsort(values, stable=True)
    assert torch.all(out[order][1:] >= out[order][:-1])
    strict = values[order][1:] > values[order][:-1]
    assert torch.all(out[order][1:][strict] > out[order][:-1][strict])
    assert out.dtype == values.dtype and not out.requires_grad


def test_pit_rejects_bad_parameters():
    with pytest.raises(InputError):
        probability_integral_transform(torch.rand(5), "gamma")  # shape missing
    with pytest.raises(InputError):
        probability_integral_transform(torch.rand(5), "lognormal", s=1.0)
    with pytest.raises(InputError):
        probability_integral_transform(torch.rand(5), "beta")
    with pytest.raises(InputError):
        probability_integral_transform(torch.rand(5, 2), "uniform")


def test_groups_are_transformed_on_their_own():
    values = torch.rand(200, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    group = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(2))
    together = probability_integral_transform(values, "lognormal", group, mu=0.0, sigma=0.76)
    for g in range(4):
        rows = group == g
        alone = probability_integral_transform(values[rows], "lognormal", mu=0.0, sigma=0.76)
        torch.testing.assert_close(together[rows], alone, rtol=0, atol=0)
