"""Probability-integral transform: map values to a target distribution by rank (PointINS ODR).

u_i = (rank_i + 0.5) / N is the empirical CDF; the target is the prior's inverse CDF at u_i. The result
depends only on ranks, so it is non-decreasing in the input: rank order is kept exactly (ties broken by
index). Everything runs in torch (float64 internally); no scipy at runtime.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from pc3d.errors import InputError

_PARAMS = {"gamma": {"shape": None, "scale": 1.0}, "lognormal": {"mu": 0.0, "sigma": 1.0},
           "uniform": {"low": 0.0, "high": 1.0}}


def probability_integral_transform(values: Tensor, prior: Literal["gamma", "lognormal", "uniform"],
                                   group: Tensor | None = None, **params: float) -> Tensor:
    """Targets (N,) with the prior's quantiles at the values' empirical CDF; no gradient flows.

    Params: gamma(shape, scale=1), lognormal(mu=0, sigma=1) (scipy lognorm(s=sigma, scale=exp(mu))),
    uniform(low=0, high=1). `group` (N,) int64: each group (e.g. each view of a batch) is ranked on its own,
    all groups in one sort and one inverse-CDF call; None = one group.
    """
    if prior not in _PARAMS:
        raise InputError(f"probability_integral_transform: prior must be one of {', '.join(_PARAMS)}, "
                         f"got {prior!r}")
    unknown = set(params) - set(_PARAMS[prior])
    if unknown:
        raise InputError(f"probability_integral_transform: unknown parameter(s) for {prior}: "
                         f"{', '.join(sorted(unknown))}")
    p = {**_PARAMS[prior], **params}
    if values.ndim != 1:
        raise InputError(f"probability_integral_transform: values must be 1-D, got {tuple(values.shape)}")
    n = values.numel()
    out_dtype = values.dtype if values.is_floating_point() else torch.float32
    if n == 0:
        return torch.empty(0, dtype=out_dtype, device=values.device)
    group = torch.zeros(n, dtype=torch.long, device=values.device) if group is None else group.long()
    rank, size = grouped_ranks(values, group)
    quantiles = inverse_cdf((rank + 0.5).double() / size.double(), prior, **p)
    # guard monotonicity against round-off: a running max in rank order inside each group, on a
    # (groups, rank) table padded after each group's last rank
    table = quantiles.new_full((int(group.max()) + 1, int(size.max())), float("-inf"))
    table[group, rank] = quantiles
    return torch.cummax(table, 1).values[group, rank].to(out_dtype)


def grouped_ranks(values: Tensor, group: Tensor) -> tuple[Tensor, Tensor]:
    """Rank (0-based, ties broken by index) of each of values (N,) within its group (N,) int64, and the size of
    its group, from one stable sort by (group, value)."""
    n = values.shape[0]
    by_value = torch.argsort(values.detach(), stable=True)
    order = by_value[torch.argsort(group[by_value], stable=True)]
    counts = torch.bincount(group, minlength=int(group.max()) + 1)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=values.device) - start[group[order]]
    return rank, counts[group]


def inverse_cdf(u: Tensor, prior: str, **p: float) -> Tensor:
    """Quantile function of the prior at probabilities u in (0,1) (float64)."""
    u = u.to(torch.float64)
    if prior == "uniform":
        if not p["high"] > p["low"]:
            raise InputError("probability_integral_transform: uniform needs high > low")
        return p["low"] + u * (p["high"] - p["low"])
    if prior == "lognormal":
        if not p["sigma"] > 0:
            raise InputError("probability_integral_transform: lognormal needs sigma > 0")
        return torch.exp(p["mu"] + p["sigma"] * math.sqrt(2.0) * torch.special.erfinv(2.0 * u - 1.0))
    if p["shape"] is None or not p["shape"] > 0 or not p["scale"] > 0:
        raise InputError("probability_integral_transform: gamma needs shape > 0 and scale > 0")
    return p["scale"] * _gamma_ppf(u, float(p["shape"]))


def _gamma_ppf(u: Tensor, a: float) -> Tensor:
    """Inverse of the regularised lower incomplete gamma P(a, x) = u, by safeguarded Newton in log x.

    The bracket [lo, hi] on t = log x is kept throughout; a Newton step that leaves it is replaced by
    bisection, so convergence is guaranteed and usually takes < 10 steps from the start below.
    """
    log_gamma_a = math.lgamma(a)
    # start: the small-x series P ~ x^a / Gamma(a+1), or Wilson-Hilferty for larger quantiles
    z = math.sqrt(2.0) * torch.special.erfinv(2.0 * u - 1.0)
    wh = a * (1.0 - 1.0 / (9.0 * a) + z / (3.0 * math.sqrt(a))).clamp_min(1e-3) ** 3
    small = torch.exp((torch.log(u) + math.lgamma(a + 1.0)) / a)
    t = torch.log(torch.where(small < wh, small, wh).clamp_min(1e-300))
    lo = torch.full_like(u, -745.0)
    hi = torch.full_like(u, math.log(max(1.0, a) * 1e3 + 1e3))
    active = torch.arange(u.numel(), device=u.device)  # only unconverged entries are iterated
    for _ in range(200):
        ta, ua, la, ha = t[active], u[active], lo[active], hi[active]
        x = torch.exp(ta)
        f = torch.special.gammainc(torch.full_like(x, a), x) - ua
        la = torch.where(f < 0, ta, la)
        ha = torch.where(f >= 0, ta, ha)
        slope = torch.exp(a * ta - x - log_gamma_a)  # dP/dt = x * pdf(x)
        newton = ta - f / slope.clamp_min(1e-300)
        inside = (newton >= la) & (newton <= ha) & torch.isfinite(newton)
        new_t = torch.where(inside, newton, 0.5 * (la + ha))
        new_t = torch.where(f == 0, ta, new_t)  # exact root: the bracket end equals ta, keep it
        tol = 1e-13 * new_t.abs().clamp_min(1.0)
        done = ((new_t - ta).abs() <= tol) | (f == 0) | (ha - la <= tol)
        t[active], lo[active], hi[active] = new_t, la, ha
        active = active[~done]
        if active.numel() == 0:
            break
    return torch.exp(t)
