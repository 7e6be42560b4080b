"""L0 cut pursuit (pc3d.ops.cut_pursuit) against independent references: hand-computed energies, brute force over
all set partitions of small graphs, exact 1-D Potts by dynamic programming, trivial partitions and region growing."""

from __future__ import annotations

import numpy as np
import pytest

from pc3d.errors import InputError
from pc3d.ops.cut_pursuit import l0_cut_pursuit, potts_energy
from pc3d.ops.graph_partition import region_growing_partition


def _set_partitions(n: int):
    """Every partition of n items as a restricted growth string (Bell(n) of them)."""
    labels = [0] * n

    def grow(i: int, blocks: int):
        if i == n:
            yield np.array(labels)
            return
        for block in range(blocks + 1):
            labels[i] = block
            yield from grow(i + 1, max(blocks, block + 1))

    yield from grow(1, 1)


def _chain_optimum(f: np.ndarray, w: np.ndarray, reg: float) -> float:
    """Exact 1-D Potts on a chain: the optimum is a split into contiguous segments, found by DP over the last cut."""
    n = len(f)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    for end in range(1, n + 1):
        for start in range(end):
            segment = f[start:end]
            sse = ((segment - segment.mean(0)) ** 2).sum()
            best[end] = min(best[end], best[start] + sse + (reg * w[start - 1] if start > 0 else 0.0))
    return float(best[n])


def _chain(n: int) -> np.ndarray:
    return np.stack([np.arange(n - 1), np.arange(1, n)], 1)


def _two_patches(n_side: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two flat grids (normals +z and +x, with noise) joined along one seam by weak edges, grid edges strong."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n_side * n_side).reshape(n_side, n_side)
    grid = np.concatenate([np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], 1),
                           np.stack([ids[:-1].ravel(), ids[1:].ravel()], 1)])
    m = n_side * n_side
    seam = np.stack([ids[:, -1], m + ids[:, 0]], 1)
    edges = np.concatenate([grid, grid + m, seam])
    weights = np.concatenate([np.ones(2 * len(grid)), np.full(len(seam), 0.05)])
    normals = np.concatenate([np.tile([0.0, 0.0, 1.0], (m, 1)), np.tile([1.0, 0.0, 0.0], (m, 1))])
    features = normals + 0.05 * rng.normal(size=normals.shape)
    return features, edges, weights, np.repeat([0, 1], m)


def test_energy_matches_hand_computation():
    f = np.array([[0.0], [1.0], [5.0]])
    edges = np.array([[0, 1], [1, 2], [0, 2]])
    w = np.array([1.0, 2.0, 4.0])
    # {0,1} mean 0.5 -> 0.25 + 0.25; {2} exact; cut edges (1,2) and (0,2): 0.5 * (2 + 4)
    assert potts_energy(f, edges, w, 0.5, np.array([0, 0, 1])) == pytest.approx(0.5 + 3.0)
    # explicit equal values cost no edge even across labels
    assert potts_energy(f, edges, w, 0.5, np.array([0, 1, 2]), np.array([[2.0], [2.0], [2.0]])) == pytest.approx(
        4 + 1 + 9)


def test_piecewise_constant_chain_is_recovered_exactly():
    rng = np.random.default_rng(3)
    truth = np.repeat([0.0, 2.0, -1.0, 1.5], 15)
    f = (truth + 0.05 * rng.normal(size=len(truth)))[:, None]
    edges, w = _chain(len(f)), np.ones(len(f) - 1)
    labels, values = l0_cut_pursuit(f, edges, w, reg=0.5)
    assert len(values) == 4 and np.array_equal(np.unique(labels, return_index=True)[1], [0, 15, 30, 45])
    assert potts_energy(f, edges, w, 0.5, labels, values) == pytest.approx(_chain_optimum(f, w, 0.5), rel=1e-12)
    np.testing.assert_allclose(values, _means(f, labels), atol=1e-12)


def _means(f: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.stack([f[labels == k].mean(0) for k in range(labels.max() + 1)])


def test_random_chains_stay_close_to_the_dynamic_programming_optimum():
    """Cut pursuit is greedy, not exact: on noisy chains it reaches the DP optimum most of the time."""
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(30):
        n = int(rng.integers(8, 40))
        f = (np.repeat(rng.normal(size=4), n // 4 + 1)[:n] + 0.3 * rng.normal(size=n))[:, None]
        w, reg = rng.uniform(0.2, 1.5, n - 1), float(rng.uniform(0.05, 2.0))
        labels, values = l0_cut_pursuit(f, _chain(n), w, reg)
        ratios.append(potts_energy(f, _chain(n), w, reg, labels, values) / _chain_optimum(f, w, reg))
    ratios = np.array(ratios)
    assert ratios.min() >= 1 - 1e-12  # the DP value is a true lower bound
    assert (ratios <= 1 + 1e-9).mean() >= 0.6 and ratios.mean() <= 1.03 and ratios.max() <= 1.3


def test_small_graphs_against_brute_force_over_all_partitions():
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(12):
        n = 7  # Bell(7) = 877 partitions
        f = rng.normal(size=(n, 2))
        f[: n // 2] += 2.0
        pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < 0.5])
        w, reg = rng.uniform(0.1, 1.0, len(pairs)), float(rng.uniform(0.2, 3.0))
        labels, values = l0_cut_pursuit(f, pairs, w, reg)
        optimum = min(potts_energy(f, pairs, w, reg, p) for p in _set_partitions(n))
        ratios.append(potts_energy(f, pairs, w, reg, labels, values) / optimum)
    ratios = np.array(ratios)
    assert ratios.min() >= 1 - 1e-12
    assert (ratios <= 1 + 1e-9).mean() >= 0.75 and ratios.mean() <= 1.05


def test_never_worse_than_trivial_partitions_or_region_growing():
    features, edges, weights, _ = _two_patches(10, seed=1)
    rng = np.random.default_rng(2)
    features = features + 0.3 * rng.normal(size=features.shape)  # noisy enough that the optimum is not obvious
    weights = weights * rng.uniform(0.5, 1.5, len(weights))
    n, reg = len(features), 0.2
    labels, values = l0_cut_pursuit(features, edges, weights, reg)
    energy = potts_energy(features, edges, weights, reg, labels, values)
    assert energy <= potts_energy(features, edges, weights, reg, np.zeros(n, np.int64)) + 1e-9
    assert energy <= potts_energy(features, edges, weights, reg, np.arange(n)) + 1e-9
    dissimilarity = 1.0 / np.sqrt(weights / weights.max()) - 1.0
    for scale in (0.5, 2.0, 8.0):
        grown = region_growing_partition(n, edges, dissimilarity, scale)
        assert energy <= potts_energy(features, edges, weights, reg, grown) + 1e-9


def test_two_flat_patches_split_into_exactly_two_components():
    features, edges, weights, truth = _two_patches()
    labels, values = l0_cut_pursuit(features, edges, weights, reg=0.5)
    assert len(values) == 2
    assert np.array_equal(labels, truth) or np.array_equal(labels, 1 - truth)
    np.testing.assert_allclose(values[labels], _means(features, truth)[truth], atol=1e-12)


def test_larger_reg_gives_fewer_components():
    features, edges, weights, _ = _two_patches(10, seed=4)
    features = features + 0.25 * np.random.default_rng(5).normal(size=features.shape)
    counts = [len(l0_cut_pursuit(features, edges, weights, reg)[1]) for reg in (0.01, 0.05, 0.2, 1.0, 5.0)]
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)) and counts[0] > counts[-1]
    assert counts[-1] in (1, 2)


def test_partition_ignores_the_scale_of_weights_against_reg():
    """Only reg * w matters: the integer max-flow capacities are scaled per cut, so tiny or huge weights agree."""
    features, edges, weights, _ = _two_patches(8, seed=6)
    features = features + 0.2 * np.random.default_rng(7).normal(size=features.shape)
    reference = l0_cut_pursuit(features, edges, weights, 0.03)[0]  # ~86 components: many cuts to get right
    assert reference.max() > 20
    for factor in (1e-6, 1e6):
        assert np.array_equal(l0_cut_pursuit(features, edges, weights * factor, 0.03 / factor)[0], reference)


def test_bad_input_raises_input_error():
    f = np.zeros((3, 2))
    with pytest.raises(InputError):
        l0_cut_pursuit(f, np.array([[0, 1]]), np.ones(2), 1.0)
    with pytest.raises(InputError):
        l0_cut_pursuit(f, np.array([[0, 3]]), np.ones(1), 1.0)
    with pytest.raises(InputError):
        l0_cut_pursuit(f, np.array([[0, 1]]), -np.ones(1), 1.0)
