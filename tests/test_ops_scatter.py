"""Segment reductions against explicit Python loops."""

from __future__ import annotations

import pytest
import torch

from pc3d.errors import InputError
from pc3d.ops import scatter_max, scatter_mean, scatter_min, scatter_sum


def test_scatter_1d_hand_computed():
    src = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0, 9.0])
    index = torch.tensor([0, 0, 2, 2, 2, 4])
    assert scatter_sum(src, index).tolist() == [4.0, 0.0, 10.0, 0.0, 9.0]
    torch.testing.assert_close(scatter_mean(src, index, dim_size=6), torch.tensor([2.0, 0.0, 10 / 3, 0.0, 9.0, 0.0]))
    values, arg = scatter_max(src, index)
    assert values.tolist() == [3.0, 0.0, 5.0, 0.0, 9.0] and arg.tolist() == [0, 6, 4, 6, 5]
    values, arg = scatter_min(src, index)
    assert values.tolist() == [1.0, 0.0, 1.0, 0.0, 9.0] and arg.tolist() == [1, 6, 3, 6, 5]


def test_scatter_ties_pick_lowest_position():
    values, arg = scatter_min(torch.tensor([2.0, 1.0, 1.0, 1.0]), torch.tensor([0, 0, 0, 0]))
    assert values.tolist() == [1.0] and arg.tolist() == [1]


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_along_any_dim_matches_loops(dim):
    g = torch.Generator().manual_seed(dim + 5)
    src = torch.randn(6, 7, 4, generator=g, dtype=torch.float64)
    size = src.shape[dim]
    index = torch.randint(0, 5, (size,), generator=g)
    moved = src.movedim(dim, 0)
    out_sum = scatter_sum(src, index, dim=dim, dim_size=5).movedim(dim, 0)
    out_mean = scatter_mean(src, index, dim=dim, dim_size=5).movedim(dim, 0)
    out_max, arg_max = (t.movedim(dim, 0) for t in scatter_max(src, index, dim=dim, dim_size=5))
    for seg in range(5):
        members = (index == seg).nonzero().squeeze(1)
        if members.numel() == 0:
            assert torch.all(out_sum[seg] == 0) and torch.all(out_max[seg] == 0)
            assert torch.all(arg_max[seg] == size)
            continue
        torch.testing.assert_close(out_sum[seg], moved[members].sum(0))
        torch.testing.assert_close(out_mean[seg], moved[members].mean(0))
        best, where = moved[members].max(0)
        torch.testing.assert_close(out_max[seg], best)
        assert torch.equal(arg_max[seg], members[where])


def test_scatter_full_shape_index_and_errors():
    src = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    index = torch.tensor([[0, 1], [1, 1]])
    assert scatter_sum(src, index, dim=1).tolist() == [[1.0, 2.0], [0.0, 7.0]]
    with pytest.raises(InputError):
        scatter_sum(src, torch.tensor([0, 1, 2]), dim=0)
    with pytest.raises(InputError):
        scatter_sum(src, torch.tensor([0.0, 1.0]))
