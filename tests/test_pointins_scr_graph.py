"""SCR's radius-bounded kNN graph (pc3d.ops.radius_graph): k-d tree (CPU) and cell list (CUDA path, run here on
CPU tensors) against the brute-force graph, incl. ties, duplicates and groups; and that the cell list does not
look at every pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pc3d.ops.radius_graph as rg
from pc3d.errors import InputError
from pc3d.ops.clustering import connected_components
from pc3d.ops.radius_graph import radius_knn


def reference(points: np.ndarray, k: int, radius: float, group: np.ndarray) -> list[list[int]]:
    """Per point: the other same-group points closer than radius, first k by (squared distance, index), in plain
    numpy (the distance summed in the same order as the searches)."""
    out = []
    for i in range(points.shape[0]):
        d = points - points[i]
        d2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]
        cand = [j for j in range(points.shape[0]) if j != i and group[j] == group[i] and d2[j] < radius * radius]
        out.append(sorted(cand, key=lambda j: (d2[j], j))[:k])
    return out


def as_lists(idx: torch.Tensor) -> list[list[int]]:
    return [[j for j in row if j >= 0] for row in idx.tolist()]


def clouds() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    n = 500
    random = rng.random((n, 3)) * 2.0
    # grid-degenerate: dyadic lattice coordinates (exact arithmetic, so equal distances are exactly equal) with
    # duplicated points, where nearly every point has ties at its k-th neighbour
    lattice = rng.integers(0, 8, (n, 3)) * 0.25
    # crowded: most points collapsed onto a few centres (predicted centroids of a trained offset head)
    centres = rng.random((4, 3)) * 3
    crowded = np.concatenate([centres[rng.integers(0, 4, 420)] + rng.normal(scale=0.01, size=(420, 3)),
                              rng.random((80, 3)) * 3])
    group = rng.integers(0, 3, n)
    return {"random": (random, group), "lattice": (lattice, group), "crowded": (crowded, group)}


@pytest.mark.parametrize("name", ["random", "lattice", "crowded"])
@pytest.mark.parametrize("k,radius", [(1, 0.25), (6, 0.5), (40, 1.2)])
def test_searches_equal_the_brute_force_graph(name: str, k: int, radius: float) -> None:
    points, group = clouds()[name]
    want = reference(points, k, radius, group)
    pts, grp = torch.from_numpy(points), torch.from_numpy(group).long()
    if name == "lattice":
        assert sum(len(w) == k for w in want) > 100  # the graph is k-bound somewhere (ties decided by index)
    for method in ("brute", "tree", "cells"):
        idx, dist2 = radius_knn(pts, k, radius, grp, method=method)
        assert as_lists(idx) == want, method
        filled = idx >= 0
        assert torch.equal(dist2[filled], ((pts[idx[filled]] - pts.repeat_interleave(filled.sum(1), 0)) ** 2).sum(1))
        assert torch.isinf(dist2[~filled]).all()


def test_float32_cells_equal_float32_brute_force() -> None:
    points, group = clouds()["random"]
    pts, grp = torch.from_numpy(points).float(), torch.from_numpy(group).long()
    a = radius_knn(pts, 12, 0.6, grp, method="brute")
    b = radius_knn(pts, 12, 0.6, grp, method="cells")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cell_list_refines_crowded_cells_and_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """All 600 points within ~1 cm of one centre: the cell edge halves (finer shells), the answer does not move."""
    rng = np.random.default_rng(2)
    pts = torch.from_numpy(np.concatenate([rng.normal(scale=0.01, size=(600, 3)), rng.random((50, 3))]))
    grp = torch.zeros(650, dtype=torch.long)
    seen_shells = []
    offsets = rg._shell_offsets

    def spy(s: int, device: torch.device) -> torch.Tensor:
        seen_shells.append(s)
        return offsets(s, device)

    monkeypatch.setattr(rg, "_shell_offsets", spy)
    idx, _ = radius_knn(pts, 10, 0.8, grp, method="cells", shells=2)
    assert max(seen_shells) > 2  # finer cells: more shells than asked for
    assert as_lists(idx) == reference(pts.numpy(), 10, 0.8, grp.numpy())


def test_cell_list_is_not_quadratic(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a room-like spread (8000 points on a 10 m x 10 m floor, k 20, radius 1.2 m) the cell list computes a
    small share of the N^2 distances, and the k-d tree agrees with it."""
    rng = np.random.default_rng(3)
    pts = torch.from_numpy(np.concatenate([rng.random((8000, 2)) * 10, np.zeros((8000, 1))], 1))
    counted = []
    distances = rg.squared_distances

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = distances(a, b)
        counted.append(out.numel())
        return out

    monkeypatch.setattr(rg, "squared_distances", spy)
    idx, dist2 = radius_knn(pts, 20, 1.2, method="cells")
    assert sum(counted) < 0.02 * 8000 * 8000
    tree = radius_knn(pts, 20, 1.2, method="tree")
    assert torch.equal(idx, tree[0]) and torch.equal(dist2, tree[1])


def test_components_of_both_paths_agree_on_grouped_lattice() -> None:
    """connected_components on CPU (k-d tree + csgraph) and its CUDA path (cell list + label propagation, here
    on CPU tensors) give the same labels where ties decide the graph."""
    import pc3d.ops.clustering as clustering

    points, group = clouds()["lattice"]
    pts, grp = torch.from_numpy(points), torch.from_numpy(group).long()
    labels = connected_components(pts, 0.3, k=2, min_size=3, group=grp)
    roots = clustering._roots_torch(pts, 0.3, 2, grp)
    _, comp, sizes = torch.unique(roots, return_inverse=True, return_counts=True)
    big = sizes >= 3
    expected = torch.where(big[comp], (torch.cumsum(big.long(), 0) - 1)[comp], torch.full_like(comp, -1))
    assert torch.equal(labels, expected)
    assert int(labels.max()) > 5 and bool((labels == -1).any())


def test_bad_input() -> None:
    pts = torch.rand(10, 3)
    for kwargs, words in (({"k": 0, "radius": 1.0}, "k must be"), ({"k": 2, "radius": 0.0}, "radius"),
                          ({"k": 2, "radius": 1.0, "method": "grid"}, "method")):
        with pytest.raises(InputError, match=words):
            radius_knn(pts, **kwargs)
    with pytest.raises(InputError, match="group"):
        radius_knn(pts, 2, 1.0, torch.zeros(9, dtype=torch.long))
    with pytest.raises(InputError, match="points"):
        radius_knn(torch.rand(10, 2), 2, 1.0)
