"""PTv3 pieces against their definitions: serialisation, patch layout, patch attention, spconv CPE, pooling."""

from __future__ import annotations

import itertools

import pytest
import torch

from pc3d.errors import InputError
from pc3d.models.ptv3 import (
    GridPooling,
    Point,
    PTv3Encoder,
    SerializedAttention,
    SparseCPE,
    expected_upcast_channels,
    patch_layout,
    serialize,
    sparse_tensor,
    up_cast,
)


def cube_point(side: int, batch: int = 1, channels: int = 4) -> Point:
    cells = torch.tensor(list(itertools.product(range(side), repeat=3)), dtype=torch.long)
    grid = cells.repeat(batch, 1)
    b = torch.arange(batch).repeat_interleave(cells.shape[0])
    return Point(coord=grid.float() * 0.1, grid_coord=grid, batch=b, feat=torch.randn(grid.shape[0], channels))


def test_serialization_orders_are_permutations_with_local_neighbours() -> None:
    point = serialize(cube_point(8, batch=2), ("z", "z-trans", "hilbert", "hilbert-trans"), shuffle=False)
    n = point.grid_coord.shape[0]
    for order, inverse in zip(point.orders, point.inverses, strict=True):
        assert torch.equal(torch.sort(order).values, torch.arange(n))
        assert torch.equal(order[inverse], torch.arange(n))
        assert torch.equal(point.batch[order], torch.sort(point.batch).values)  # scenes stay contiguous
    steps = {}
    for name, order in zip(("z", "z-trans", "hilbert", "hilbert-trans"), point.orders, strict=True):
        within = point.batch[order][1:] == point.batch[order][:-1]
        diff = (point.grid_coord[order][1:] - point.grid_coord[order][:-1]).abs().sum(1)[within]
        steps[name] = diff.float()
    # a Hilbert curve moves to a face neighbour at every step; Morton stays local on average
    assert torch.all(steps["hilbert"] == 1) and torch.all(steps["hilbert-trans"] == 1)
    random_step = (point.grid_coord[torch.randperm(n)][1:] - point.grid_coord[torch.randperm(n)][:-1]).abs().sum(1)
    assert steps["z"].mean() < 2.0 < random_step.float().mean()
    # "-trans" swaps x and y before encoding
    swapped = serialize(Point(point.coord, point.grid_coord[:, [1, 0, 2]], point.batch, point.feat), ("z",), False)
    assert torch.equal(swapped.orders[0], point.orders[1])


def test_serialize_shuffles_order_list_and_rejects_huge_grids() -> None:
    torch.manual_seed(0)
    point = cube_point(4)
    seen = {tuple(serialize(point, ("z", "hilbert"), shuffle=True).orders[0][:8].tolist()) for _ in range(12)}
    assert len(seen) == 2
    big = Point(point.coord, point.grid_coord * 30000, point.batch, point.feat)
    with pytest.raises(InputError):
        serialize(big, ("z",), False)


@pytest.mark.parametrize("counts,patch", [((10,), 4), ((7, 12, 5), 4), ((3, 9), 16)])
def test_patch_layout_covers_every_point_once(counts: tuple[int, ...], patch: int) -> None:
    batch = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    layout = patch_layout(batch, patch)
    k = min(patch, min(counts))
    assert layout.size == k and layout.index.shape[1] == k
    flat = layout.index.reshape(-1)
    assert torch.equal(flat[layout.back], torch.arange(batch.numel()))
    # every patch stays inside one scene, and the scene needs ceil(n/k) patches
    assert torch.all(batch[layout.index].min(1).values == batch[layout.index].max(1).values)
    assert layout.index.shape[0] == sum(-(-c // k) for c in counts)


def test_patch_attention_equals_full_attention_per_scene() -> None:
    torch.manual_seed(0)
    point = serialize(cube_point(3, batch=2, channels=8), ("hilbert",), False)
    attn = SerializedAttention(8, 2, patch_size=1000).eval()
    out = attn(point, point.feat, 0)
    qkv = attn.qkv(point.feat).view(-1, 3, 2, 4)
    expected = torch.empty(point.feat.shape[0], 8)
    for b in range(2):
        sel = point.batch == b
        q, k, v = (qkv[sel, i].transpose(0, 1) for i in range(3))  # (H,n,d)
        weights = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1)
        expected[sel] = (weights @ v).transpose(0, 1).reshape(-1, 8)
    torch.testing.assert_close(out, attn.proj(expected), atol=1e-5, rtol=1e-5)


def test_sparse_cpe_runs_on_cpu_and_matches_a_brute_force_convolution() -> None:
    torch.manual_seed(0)
    grid = torch.unique(torch.randint(0, 5, (40, 3)), dim=0)
    point = Point(coord=grid.float(), grid_coord=grid, batch=torch.zeros(grid.shape[0], dtype=torch.long),
                  feat=torch.randn(grid.shape[0], 4))
    point.sparse = sparse_tensor(point)
    cpe = SparseCPE(4, "test")
    out = cpe(point, point.feat)  # picks spconv's native algorithm on CPU
    conv = cpe.conv(point.sparse.replace_feature(point.feat)).features
    weight = cpe.conv.weight.detach()  # (out, kx, ky, kz, in)
    lookup = {tuple(g): i for i, g in enumerate(grid.tolist())}
    expected = torch.zeros_like(conv)
    for i, g in enumerate(grid.tolist()):
        for d in itertools.product((-1, 0, 1), repeat=3):
            j = lookup.get((g[0] + d[0], g[1] + d[1], g[2] + d[2]))
            if j is not None:
                expected[i] += weight[:, d[0] + 1, d[1] + 1, d[2] + 1, :] @ point.feat[j]
    torch.testing.assert_close(conv, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, cpe.norm(cpe.linear(conv)))
    assert out.shape == (grid.shape[0], 4)
    out.sum().backward()
    assert cpe.conv.weight.grad is not None


def test_grid_pooling_takes_segment_max_and_mean() -> None:
    torch.manual_seed(0)
    point = cube_point(4, batch=2, channels=3)
    pool = GridPooling(3, 5)
    coarse = pool(point)
    projected = pool.proj(point.feat)
    cells: dict[tuple[int, ...], list[int]] = {}
    for i, (b, g) in enumerate(zip(point.batch.tolist(), (point.grid_coord // 2).tolist(), strict=True)):
        cells.setdefault((b, *g), []).append(i)
    assert coarse.feat.shape[0] == len(cells) == 16
    for c, key in enumerate(zip(coarse.batch.tolist(), *coarse.grid_coord.t().tolist(), strict=True)):
        members = cells[key]
        assert sorted(torch.nonzero(coarse.pooling_inverse == c).squeeze(1).tolist()) == members
        expected = pool.act(pool.norm(projected[members].max(0).values))
        torch.testing.assert_close(coarse.feat[c], expected)
        torch.testing.assert_close(coarse.coord[c], point.coord[members].mean(0))
    fine = up_cast(coarse, 1)
    assert fine.feat.shape == (point.feat.shape[0], 8)
    torch.testing.assert_close(fine.feat[:, 3:], coarse.feat[coarse.pooling_inverse])


def test_pooled_levels_serialise_with_the_parent_depth_minus_one() -> None:
    """PTv3 orders a pooled level by its parent's codes >> 3 (depth - 1), not by a depth recomputed from the
    pooled extent; the two differ for Hilbert curves when the finest max cell is 2^k - 2 (here 6)."""
    from pc3d.ops.serialization import encode

    point = serialize(cube_point(7, batch=2), ("hilbert", "z-trans"), shuffle=False)
    assert point.depth == 3
    coarse = serialize(GridPooling(4, 4)(point), ("hilbert", "z-trans"), shuffle=False)
    assert coarse.depth == 2  # recomputing would give bit_length(3 + 1) = 3
    for row, name in enumerate(("hilbert", "z-trans")):
        parent_codes = encode(point.grid_coord, point.batch, 3, name) >> 3
        # every fine point of a coarse cell has the same code >> 3: scatter any of them to the cell
        shifted = torch.zeros(coarse.feat.shape[0], dtype=torch.long).scatter_(0, coarse.pooling_inverse, parent_codes)
        assert torch.equal(coarse.orders[row], torch.argsort(shifted))
    recomputed = encode(coarse.grid_coord, coarse.batch, 3, "hilbert")
    assert not torch.equal(coarse.orders[0], torch.argsort(recomputed))


def test_encoder_forward_and_upcast_widths() -> None:
    torch.manual_seed(0)
    point = cube_point(6, batch=2, channels=9)
    encoder = PTv3Encoder(9, depths=(1, 1, 1), channels=(8, 16, 32), heads=(2, 2, 4), patch_size=16, drop_path=0.1)
    mask = torch.rand(point.feat.shape[0]) < 0.5
    top = encoder(point, mask)
    assert top.feat.shape[1] == 32
    full = up_cast(top, 2)
    assert full.feat.shape == (point.feat.shape[0], expected_upcast_channels((8, 16, 32), 2)) == (432, 56)
    full.feat.sum().backward()
    assert encoder.mask_token.grad is not None and encoder.stages[0][0].cpe.conv.weight.grad is not None
