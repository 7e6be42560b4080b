"""L0 cut pursuit (Landrieu & Obozinski 2017): a piecewise-constant approximation of node features on a graph.

Solves, approximately, the Potts / minimal-partition problem

    min_x  E(x) = sum_i ||x_i - f_i||^2 + reg * sum_(i,j) w_ij [x_i != x_j]

whose constant components are PartSLIP's superpoints. Every partition with component means as values is a
candidate; the algorithm refines one greedily and never accepts a step that raises E:

1. start from the connected components of the graph (splitting them is free: no edge is cut);
2. split: in every component not yet known to be uncuttable ("saturated"), look for the binary partition
   that lowers E most with two candidate values h0, h1: seed the sides by the sign along the component's
   principal direction, refine h0, h1 with a few 2-means steps, then alternate an exact s-t min cut
   (unary ||f_i - h||^2, pairwise reg * w_ij on the component's own edges) with recomputing h0, h1 as the
   means of the two sides (`flow_steps` times). The sides' connected pieces become new components when that
   lowers E exactly (means as values, cut edges paid); otherwise the component is marked saturated;
3. merge (the "backward step"): join adjacent components while some pair's join lowers E:
   gain(a, b) = reg * W_ab - n_a n_b / (n_a + n_b) * ||mean_a - mean_b||^2,  W_ab = weight of edges a-b;
4. repeat 2-3 until no component splits, E stops improving by `stopping_ratio`, or `max_iterations`.

Min cuts use `scipy.sparse.csgraph.maximum_flow`, which needs integer capacities: all capacities of one cut
are scaled so that their sum is 2^30 and rounded, so a cut is optimal up to 0.5 / scale per cut edge; the
exact float energy decides whether a split is kept, so the rounding never makes E worse.

Difference with libcp (loicland/cut-pursuit, used by PartSLIP): libcp weighs the fidelity by 1/2, i.e. it
minimises 1/2 sum ||x - f||^2 + reg sum w [x_i != x_j], the same problem as here with reg_here = 2 * reg_libcp.
On PartSLIP graphs of synthetic chairs this reaches about half libcp's energy (libcp stops after 5% progress and
leaves noisy curved regions whole; here they break into many small facets, which PartSLIP's small-component
merge then hands to their neighbours).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_flow

from pc3d.errors import InputError

# Integer capacity budget of one max-flow: scipy works in int32; the sum of all capacities stays below this.
_CAPACITY_SUM = float(1 << 30)


def potts_energy(features: np.ndarray, edges: np.ndarray, weights: np.ndarray, reg: float, labels: np.ndarray,
                 values: np.ndarray | None = None) -> float:
    """E(x) for x_i = values[labels[i]] (values default: the component means)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if values is None:
        values = _component_means(features, labels, int(labels.max()) + 1 if len(labels) else 0)
    x = np.asarray(values, dtype=np.float64)[labels]
    differ = np.any(x[edges[:, 0]] != x[edges[:, 1]], axis=1)
    return float(((x - features) ** 2).sum() + reg * np.asarray(weights, dtype=np.float64)[differ].sum())


def l0_cut_pursuit(features: np.ndarray, edges: np.ndarray, weights: np.ndarray, reg: float,
                   max_iterations: int = 10, flow_steps: int = 3, kmeans_steps: int = 3,
                   stopping_ratio: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Components (N,) int64 numbered 0..S-1 and their values (S,D) (the component means).

    `edges` (E,2) are undirected; a pair listed twice counts twice (its weights add up), self-loops are
    ignored. `stopping_ratio`: stop once an iteration lowers E by less than this fraction of the previous E.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim == 1:
        features = features[:, None]
    n = len(features)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if features.ndim != 2 or not np.isfinite(features).all():
        raise InputError(f"cut pursuit: features must be finite (N,D), got shape {features.shape}")
    if len(edges) != len(weights):
        raise InputError(f"cut pursuit: {len(edges)} edges but {len(weights)} weights")
    if len(edges) and (edges.min() < 0 or edges.max() >= n):
        raise InputError(f"cut pursuit: edge endpoints must lie in [0, {n})")
    if not (np.isfinite(weights).all() and (weights >= 0).all()) or not (np.isfinite(reg) and reg >= 0):
        raise InputError("cut pursuit: weights and reg must be finite and >= 0")
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, features.shape[1]))
    keep = edges[:, 0] != edges[:, 1]
    edges, weights = edges[keep], weights[keep] * reg  # from here on, `weights` is the price of cutting an edge

    labels = _connected_labels(n, edges)
    num = int(labels.max()) + 1
    saturated = np.bincount(labels, minlength=num) < 2
    energy = _partition_energy(features, edges, weights, labels, num)
    for _ in range(max_iterations):
        labels, saturated, num, changed = _split(features, edges, weights, labels, saturated, num, flow_steps,
                                                 kmeans_steps)
        labels, saturated, num = _merge(features, edges, weights, labels, saturated, num)
        previous, energy = energy, _partition_energy(features, edges, weights, labels, num)
        if not changed or saturated.all() or previous - energy <= stopping_ratio * previous:
            break
    return labels, _component_means(features, labels, num)


# ---------------------------------------------------------------------------------------------------- helpers


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    unique, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), len(unique)


def _connected_labels(n: int, edges: np.ndarray) -> np.ndarray:
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _component_means(features: np.ndarray, labels: np.ndarray, num: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=num).astype(np.float64)
    sums = np.stack([np.bincount(labels, features[:, d], minlength=num) for d in range(features.shape[1])], 1)
    return sums / np.maximum(counts, 1.0)[:, None]


def _component_sse(features: np.ndarray, labels: np.ndarray, num: int) -> np.ndarray:
    """Sum of squared distances to the component mean, per component (computed directly, no cancellation)."""
    residual = features - _component_means(features, labels, num)[labels]
    return np.bincount(labels, (residual ** 2).sum(1), minlength=num)


def _partition_energy(features: np.ndarray, edges: np.ndarray, cut_price: np.ndarray, labels: np.ndarray,
                      num: int) -> float:
    cut = labels[edges[:, 0]] != labels[edges[:, 1]]
    return float(_component_sse(features, labels, num).sum() + cut_price[cut].sum())


def _side_means(features: np.ndarray, labels: np.ndarray, side: np.ndarray, num: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Means (num,2,D) of the two sides of every component, and the side sizes (num,2)."""
    key = labels * 2 + side
    counts = np.bincount(key, minlength=2 * num).reshape(num, 2)
    means = _component_means(features, key, 2 * num).reshape(num, 2, -1)
    return means, counts


def _principal_sides(features: np.ndarray, labels: np.ndarray, num: int) -> np.ndarray:
    """Side of every node along its component's first principal axis: a deterministic 2-means seed."""
    centered = features - _component_means(features, labels, num)[labels]
    dim = features.shape[1]
    outer = (centered[:, :, None] * centered[:, None, :]).reshape(len(features), dim * dim)
    indicator = sparse.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))),
                                  shape=(num, len(labels)))
    scatter = np.asarray(indicator @ outer).reshape(num, dim, dim)
    axis = np.linalg.eigh(scatter)[1][:, :, -1]  # eigenvector of the largest eigenvalue
    return ((centered * axis[labels]).sum(1) > 0).astype(np.int64)


def _binary_min_cut(cost0: np.ndarray, cost1: np.ndarray, edges: np.ndarray, cut_price: np.ndarray
                    ) -> np.ndarray:
    """argmin over s in {0,1}^m of sum_i cost_{s_i}(i) + sum_e cut_price_e [s_i != s_j], via one s-t max flow."""
    m = len(cost0)
    source, sink = m, m + 1
    gap = cost1 - cost0  # > 0: side 1 (the sink side) costs more, paid by cutting source -> i
    to_source = np.maximum(gap, 0.0)
    to_sink = np.maximum(-gap, 0.0)
    total = to_source.sum() + to_sink.sum() + 2.0 * cut_price.sum()
    if total <= 0:
        return np.zeros(m, np.int64)
    scale = _CAPACITY_SUM / total
    rows = np.concatenate([np.full(m, source), np.arange(m), edges[:, 0], edges[:, 1]])
    cols = np.concatenate([np.arange(m), np.full(m, sink), edges[:, 1], edges[:, 0]])
    caps = np.rint(np.concatenate([to_source, to_sink, cut_price, cut_price]) * scale).astype(np.int64)
    nonzero = caps > 0
    capacity = sparse.csr_matrix((caps[nonzero].astype(np.int32), (rows[nonzero], cols[nonzero])),
                                 shape=(m + 2, m + 2))
    capacity.sum_duplicates()
    flow = maximum_flow(capacity, source, sink).flow
    residual = (capacity - flow).tocsr()
    residual.data[residual.data < 0] = 0  # cannot happen for a valid flow; keeps the search honest
    residual.eliminate_zeros()
    reachable = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    side = np.ones(m + 2, np.int64)
    side[reachable] = 0
    return side[:m]


def _split(features: np.ndarray, edges: np.ndarray, cut_price: np.ndarray, labels: np.ndarray,
           saturated: np.ndarray, num: int, flow_steps: int, kmeans_steps: int
           ) -> tuple[np.ndarray, np.ndarray, int, bool]:
    active = ~saturated[labels]
    if not active.any():
        return labels, saturated, num, False
    nodes = np.nonzero(active)[0]
    local = np.full(len(labels), -1, np.int64)
    local[nodes] = np.arange(len(nodes))
    sub_labels, sub_num = _relabel(labels[nodes])
    sub_features = features[nodes]
    inner = (labels[edges[:, 0]] == labels[edges[:, 1]]) & active[edges[:, 0]]
    sub_edges, sub_price = local[edges[inner]], cut_price[inner]

    side = _principal_sides(sub_features, sub_labels, sub_num)
    for _ in range(kmeans_steps):  # 2-means refinement of the seed
        means, _ = _side_means(sub_features, sub_labels, side, sub_num)
        d0 = ((sub_features - means[sub_labels, 0]) ** 2).sum(1)
        d1 = ((sub_features - means[sub_labels, 1]) ** 2).sum(1)
        side = (d1 < d0).astype(np.int64)
    for _ in range(flow_steps):  # alternate: exact binary partition for fixed values, then values = side means
        means, counts = _side_means(sub_features, sub_labels, side, sub_num)
        empty = (counts == 0)[sub_labels]  # a one-sided component offers the whole component's mean on both
        whole = _component_means(sub_features, sub_labels, sub_num)[sub_labels]
        h0 = np.where(empty[:, [0]], whole, means[sub_labels, 0])
        h1 = np.where(empty[:, [1]], whole, means[sub_labels, 1])
        side = _binary_min_cut(((sub_features - h0) ** 2).sum(1), ((sub_features - h1) ** 2).sum(1),
                               sub_edges, sub_price)

    # candidate partition: the connected pieces of each side inside each component
    same = side[sub_edges[:, 0]] == side[sub_edges[:, 1]]
    pieces = _connected_labels(len(nodes), sub_edges[same])  # never crosses components: only inner edges
    num_pieces = int(pieces.max()) + 1
    parent = np.zeros(num_pieces, np.int64)
    parent[pieces] = sub_labels
    new_sse = np.bincount(parent, _component_sse(sub_features, pieces, num_pieces), minlength=sub_num)
    old_sse = _component_sse(sub_features, sub_labels, sub_num)
    cut = pieces[sub_edges[:, 0]] != pieces[sub_edges[:, 1]]
    paid = np.bincount(sub_labels[sub_edges[cut, 0]], sub_price[cut], minlength=sub_num)
    gain = old_sse - new_sse - paid
    # exact float gain decides; a tiny margin keeps rounding noise from splitting a constant component
    accept = (gain > 1e-12 * np.maximum(old_sse, 1e-300)) & (np.bincount(parent, minlength=sub_num) > 1)

    # ids: old component id, or num + piece id where the component was split; then renumber 0..S-1
    split_nodes = accept[sub_labels]
    ids = labels.copy()
    ids[nodes[split_nodes]] = num + pieces[split_nodes]
    rejected = np.zeros(num, bool)
    rejected[labels[nodes[~split_nodes]]] = True
    was_saturated = np.concatenate([saturated | rejected, np.zeros(num_pieces, bool)])
    new_labels, new_num = _relabel(ids)
    new_saturated = np.zeros(new_num, bool)
    new_saturated[new_labels] = was_saturated[ids]
    new_saturated |= np.bincount(new_labels, minlength=new_num) < 2
    return new_labels, new_saturated, new_num, bool(accept.any())


def _merge(features: np.ndarray, edges: np.ndarray, cut_price: np.ndarray, labels: np.ndarray,
           saturated: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Join adjacent components while a join lowers E, in rounds of disjoint best-gain pairs."""
    while num > 1:
        a, b = labels[edges[:, 0]], labels[edges[:, 1]]
        between = a != b
        if not between.any():
            break
        lo, hi = np.minimum(a, b)[between], np.maximum(a, b)[between]
        pair, inverse = np.unique(lo * num + hi, return_inverse=True)
        shared = np.bincount(inverse.reshape(-1), cut_price[between], minlength=len(pair))
        first, second = pair // num, pair % num
        counts = np.bincount(labels, minlength=num).astype(np.float64)
        means = _component_means(features, labels, num)
        harmonic = counts[first] * counts[second] / (counts[first] + counts[second])
        gain = shared - harmonic * ((means[first] - means[second]) ** 2).sum(1)
        order = np.nonzero(gain > 1e-12 * np.maximum(shared, 1e-300))[0]
        if len(order) == 0:
            break
        order = order[np.argsort(-gain[order], kind="stable")]
        target = np.arange(num)
        taken = np.zeros(num, bool)
        # disjoint pairs: each join's gain is computed against the partition it actually changes
        for i, j in zip(first[order].tolist(), second[order].tolist(), strict=True):
            if not (taken[i] or taken[j]):
                taken[i] = taken[j] = True
                target[j] = i
        still_saturated = (saturated & ~taken)[labels]  # a joined component is new: it may split differently
        labels, num = _relabel(target[labels])
        saturated = np.zeros(num, bool)
        saturated[labels] = still_saturated
    return labels, saturated, num
