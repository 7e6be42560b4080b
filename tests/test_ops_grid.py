"""Grid sampling and serialization codes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pc3d.errors import InputError
from pc3d.ops import decode, encode, grid_sample


def test_grid_sample_cells_inverse_and_reductions():
    g = torch.Generator().manual_seed(0)
    coords = torch.rand(500, 3, generator=g, dtype=torch.float64) * 2
    batch = torch.randint(0, 3, (500,), generator=g)
    gs = grid_sample(coords, 0.25, batch)
    for b in range(3):  # Pointcept: origin-aligned cells, shifted so each batch entry's lowest cell is 0
        cells = np.floor(coords[batch == b].numpy() / 0.25).astype(np.int64)
        assert np.array_equal(gs.grid_coord[batch == b].numpy(), cells - cells.min(0))
    # cell edges sit on multiples of the grid size, not on the cloud's minimum: 0.5 and 1.2 differ at g = 1
    assert grid_sample(torch.tensor([[0.5, 0, 0], [1.2, 0, 0]], dtype=torch.float64), 1.0).num_cells == 2
    keys = {(int(b), *map(int, c)) for b, c in zip(batch, gs.grid_coord, strict=True)}
    assert gs.num_cells == len(keys) and int(gs.counts.sum()) == 500
    assert torch.equal(gs.cell_coord[gs.inverse], gs.grid_coord) and torch.equal(gs.cell_batch[gs.inverse], batch)
    for cell in range(gs.num_cells):
        members = (gs.inverse == cell).nonzero().squeeze(1)
        assert int(gs.unique_index[cell]) == int(members.min())
        torch.testing.assert_close(gs.reduce(coords, "mean")[cell], coords[members].mean(0))
        torch.testing.assert_close(gs.reduce(coords, "max")[cell], coords[members].max(0).values)


def test_grid_sample_rejects_bad_input():
    with pytest.raises(InputError):
        grid_sample(torch.rand(5, 2), 0.1)
    with pytest.raises(InputError):
        grid_sample(torch.rand(5, 3), 0.0)


def all_cells(depth: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(1 << depth), repeat=3)))


@pytest.mark.parametrize("order", ["z", "z-trans", "hilbert", "hilbert-trans"])
@pytest.mark.parametrize("depth", [1, 3])
def test_codes_are_bijective(order, depth):
    cells = all_cells(depth)
    codes = encode(cells, depth=depth, order=order)
    assert sorted(codes.tolist()) == list(range(len(cells)))


@pytest.mark.parametrize("order", ["hilbert", "hilbert-trans"])
def test_hilbert_consecutive_codes_are_face_neighbours(order):
    cells = all_cells(4)
    ordered = cells[encode(cells, depth=4, order=order).argsort()]
    steps = (ordered[1:] - ordered[:-1]).abs().sum(1)
    assert torch.all(steps == 1)


def test_z_order_hand_computed_and_decode():
    # x bit -> position 3i+2, y -> 3i+1, z -> 3i
    cells = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 0, 0], [3, 3, 3]])
    assert encode(cells, depth=2).tolist() == [4, 2, 1, 32, 63]
    assert encode(cells, depth=2, order="z-trans").tolist() == [2, 4, 1, 16, 63]
    g = torch.Generator().manual_seed(1)
    coord = torch.randint(0, 1 << 16, (1000, 3), generator=g)
    batch = torch.randint(0, 100, (1000,), generator=g)
    code = encode(coord, batch, depth=16)
    assert torch.equal(code >> 48, batch)
    back, back_batch = decode(code, depth=16)
    assert torch.equal(back, coord) and torch.equal(back_batch, batch)


def test_encode_rejects_out_of_range():
    with pytest.raises(InputError):
        encode(torch.tensor([[4, 0, 0]]), depth=2)
    with pytest.raises(InputError):
        encode(torch.tensor([[0, 0, 0]]), order="peano")
