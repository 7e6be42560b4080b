"""Sonata-style SSL pieces against their definitions: Sinkhorn marginals, Zipf prior, masking, matching, views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from pc3d.config.pointins import SonataPreset
from pc3d.engine.method import StepState
from pc3d.methods.sonata import (
    Sonata,
    ViewAugment,
    collate_views,
    make_view,
    match_views,
    patch_mask,
    scene_mean,
    sinkhorn,
    warmup_schedule,
    zipf_marginals,
)
from pc3d.models.ptv3 import Point
from pc3d.ops.grid import grid_sample

TINY = {"model": {"depths": [1, 1], "channels": [8, 16], "heads": [2, 2], "patch_size": 32, "grid_size": 0.2,
                  "drop_path": 0.0},
        "head": {"hidden": 16, "bottleneck": 8, "prototypes": 12, "up_cast_levels": 1},
        "data": {"num_points": 600, "synthetic_count": 2, "local_views": 1}}


def sonata_reference(scores: np.ndarray, temp: float, iters: int) -> np.ndarray:
    """Sonata's Sinkhorn-Knopp written out with numpy loops (uniform prototype marginals)."""
    q = np.exp(scores / temp).T
    q /= q.sum()
    k, n = q.shape
    for _ in range(iters):
        for r in range(k):
            q[r] /= q[r].sum() * k
        for c in range(n):
            q[:, c] /= q[:, c].sum() * n
    return (q * n).T


def test_sinkhorn_matches_the_reference_and_hits_marginals() -> None:
    torch.manual_seed(0)
    scores = torch.rand(50, 6) * 2 - 1
    np.testing.assert_allclose(sinkhorn(scores.double(), 0.1, 3).numpy(), sonata_reference(scores.double().numpy(),
                                                                                             0.1, 3), rtol=1e-9)
    q = sinkhorn(scores.double(), 0.5, 500)
    np.testing.assert_allclose(q.sum(1).numpy(), np.ones(50), atol=1e-9)  # one unit per point
    np.testing.assert_allclose(q.sum(0).numpy(), np.full(6, 50 / 6), rtol=1e-5)  # uniform prototype totals
    zipf = sinkhorn(scores.double(), 0.5, 500, alpha=1.3)
    totals = zipf.sum(0)
    expected = 50 * zipf_marginals(6, 1.3)
    np.testing.assert_allclose(torch.sort(totals, descending=True).values.numpy(), expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(zipf.sum(1).numpy(), np.ones(50), atol=1e-9)


def test_zipf_marginals_by_hand() -> None:
    np.testing.assert_allclose(zipf_marginals(3, 1.0).numpy(), np.array([1, 0.5, 1 / 3]) / (11 / 6))
    np.testing.assert_allclose(zipf_marginals(4, 0.0).numpy(), np.full(4, 0.25))


def test_patch_mask_hides_whole_patches_at_the_ratio() -> None:
    torch.manual_seed(0)
    coord = torch.rand(2000, 3) * 4
    batch = (torch.arange(2000) >= 1200).long()
    mask = patch_mask(coord, batch, 0.5, 0.3)
    cells = grid_sample(coord, 0.5, batch)
    per_cell = torch.zeros(cells.num_cells).index_add_(0, cells.inverse, mask.float()) / cells.counts
    assert torch.all((per_cell == 0) | (per_cell == 1))  # a patch is masked entirely or not at all
    for b in (0, 1):
        in_view = cells.cell_batch == b
        assert int((per_cell[in_view] == 1).sum()) == round(0.3 * int(in_view.sum()))


def test_schedules_and_scene_mean() -> None:
    assert warmup_schedule(0.1, 0.4, 0.05, 0.0) == 0.1
    assert warmup_schedule(0.1, 0.4, 0.05, 0.025) == pytest.approx(0.25)
    assert warmup_schedule(0.1, 0.4, 0.05, 0.5) == 0.4
    values = torch.tensor([1.0, 3.0, 10.0])
    assert float(scene_mean(values, torch.tensor([0, 0, 1]))) == pytest.approx((2.0 + 10.0) / 2)


def test_match_views_is_nearest_neighbour_in_origin_coordinates() -> None:
    rng = np.random.default_rng(0)
    s_origin, t_origin = rng.random((40, 3)), rng.random((30, 3))
    s_batch, t_batch = np.repeat([0, 1], 20), np.repeat([0, 1], 15)

    def point(origin: np.ndarray, batch: np.ndarray) -> Point:
        o = torch.from_numpy(origin).float()
        return Point(o, torch.zeros(len(o), 3, dtype=torch.long), torch.from_numpy(batch), o, extras={"origin": o})

    s_idx, t_idx = match_views(point(s_origin, s_batch), point(t_origin, t_batch), torch.tensor([1, 0]), 0.2)
    expected = []
    for v, target in ((0, 1), (1, 0)):
        ts = np.nonzero(t_batch == target)[0]
        dist, nn = cKDTree(t_origin[ts]).query(s_origin[s_batch == v])
        expected += [(s, ts[j]) for s, d, j in zip(np.nonzero(s_batch == v)[0], dist, nn, strict=True) if d < 0.2]
    assert list(zip(s_idx.tolist(), t_idx.tolist(), strict=True)) == expected


def test_view_tracks_its_linear_augmentation() -> None:
    rng = np.random.default_rng(1)
    coord = rng.random((500, 3)).astype(np.float32) * 3
    sample = {"coord": coord, "color": rng.random((500, 3)) * 255, "normal": np.tile([0, 0, 1.0], (500, 1))}
    view = make_view(sample, (0.5, 0.8), rng, 0.05, 10_000, ViewAugment(elastic=False))  # linear part + jitter
    a = view["transform"].double()
    d_aug = (view["coord"] - view["coord"][0]).double()
    d_orig = (view["origin"] - view["origin"][0]).double()
    # relative positions follow x_aug = A x up to the clipped jitter of both points
    assert float((d_aug - d_orig @ a.t()).abs().max()) <= 2 * 0.02 + 1e-5
    assert torch.allclose(view["feat"][:, :3], view["coord"])


def test_sonata_step_gives_finite_losses_and_ema_moves_teacher() -> None:
    torch.manual_seed(0)
    config = SonataPreset.model_validate(TINY)
    from pc3d.methods.sonata import build_sets

    views, _ = build_sets(config)
    batch = collate_views([views[0], views[1]])
    method = Sonata(config)
    terms = method.training_step(batch, StepState(0, 0, 10, 0.0, 1e-3))
    assert {"mask", "roll_mask", "unmask"} <= set(terms)
    loss = sum(v for k, v in terms.items() if not k.startswith("metric/"))
    assert torch.isfinite(loss)
    loss.backward()
    before = method.teacher.mask_head.prototypes.clone()
    with torch.no_grad():
        method.student.mask_head.prototypes.add_(1.0)
    method.after_optimizer_step(StepState(1, 0, 10, 0.1, 1e-3))
    m = method.config.train.ema_momentum
    from pc3d.engine.ema import momentum_schedule

    m = momentum_schedule(m, 1.0, 0.1)
    torch.testing.assert_close(method.teacher.mask_head.prototypes,
                               m * before + (1 - m) * method.student.mask_head.prototypes)
    scales = {g["lr_scale"] for g in method.param_groups(0.05)}
    assert max(scales) == 1.0 and min(scales) == pytest.approx(0.9 ** 3)  # embedding: decay^(blocks + 1)


def _mask_loss(observable: bool, bump: torch.Tensor | None, masks: list[torch.Tensor],
               monkeypatch: pytest.MonkeyPatch) -> tuple[float, dict]:
    """The mask term of one step on one global view per scene; `bump` is added to the teacher's mask-head
    scores (head level = input points here: one encoder level below the last, up-cast once)."""
    import pc3d.methods.sonata as sonata

    cfg = {**TINY, "data": {**TINY["data"], "global_views": 1, "local_views": 0},
           "loss": {"observable_only": observable}}
    config = SonataPreset.model_validate(cfg)
    torch.manual_seed(0)
    views, _ = sonata.build_sets(config)
    batch = collate_views([views[0], views[1]])
    torch.manual_seed(1)
    method = Sonata(config)
    if bump is not None:
        method.teacher.mask_head.register_forward_hook(lambda module, args, out: out + bump)
    original = sonata.patch_mask
    monkeypatch.setattr(sonata, "patch_mask", lambda *a, **k: masks.append(original(*a, **k)) or masks[-1])
    torch.manual_seed(2)
    terms = method.training_step(batch, StepState(0, 0, 10, 0.0, 1e-3))
    assert set(k for k in terms if not k.startswith("metric/")) == {"mask"}
    return float(terms["mask"].detach()), terms


@pytest.mark.parametrize("observable", [True, False])
def test_observable_only_ignores_the_teacher_at_masked_points(observable: bool, monkeypatch) -> None:
    masks: list[torch.Tensor] = []
    base, terms = _mask_loss(observable, None, masks, monkeypatch)
    mask = masks[0]
    assert 0 < int(mask.sum()) < mask.numel()
    bump = torch.zeros(mask.numel(), TINY["head"]["prototypes"])
    bump[mask] = torch.randn(int(mask.sum()), TINY["head"]["prototypes"]) * 5  # scores only at masked points
    changed, _ = _mask_loss(observable, bump, masks, monkeypatch)
    assert torch.equal(masks[1], mask)  # the same masking in both runs
    if observable:
        assert changed == base  # masked points neither give targets nor enter the Sinkhorn balance
        assert float(terms["metric/observed_share"]) == pytest.approx(1 - float(mask.float().mean()))
    else:
        assert abs(changed - base) > 1e-4  # Sonata distils at every matched point
        assert "metric/observed_share" not in terms
