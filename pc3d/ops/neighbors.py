"""k-nearest neighbours and ball query between point sets.

CPU: a uniform-grid search (27 neighbouring cells per query, cell size from a sampled k-th neighbour
distance) whose result is checked against the distance to the searched block's boundary; queries that
fail the check fall back to chunked brute force, so the answer is always exact. CUDA: a Triton kernel
when available, else chunked brute force. Distances are recomputed from the found indices in the autograd
graph, so they are exact and differentiable with respect to both point sets.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pc3d.errors import InputError
from pc3d.ops._common import MAX_PAIRS, as_batched, check_points, compute_dtype, safe_sqrt, use_kernels

# Below this many query-reference pairs a single brute-force pass beats building the grid.
_GRID_MIN_PAIRS = 1 << 20
# Queries whose 27-cell neighbourhood holds more candidates than this are answered by brute force.
_GRID_MAX_CANDIDATES = 1 << 15
# Candidate pairs handled per grid chunk (bounds the padded distance matrix).
_GRID_CHUNK_PAIRS = 1 << 24
# Queries sampled to estimate the cell size.
_CELL_SAMPLES = 16


def knn(query: Tensor, ref: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k nearest points of `ref` for each point of `query`.

    query (B,M,3)|(M,3), ref (B,N,3)|(N,3). Returns (dist, idx), each (B,M,k)|(M,k): Euclidean distances
    (not squared) in ascending order and int64 indices into ref's point dimension.
    """
    q, r, squeeze = _check_pair(query, ref, "knn")
    if not 0 < k <= r.shape[1]:
        raise InputError(f"knn: k must be in [1, {r.shape[1]}] (points in ref), got {k}")
    dist, idx = _knn(q, r, k, max_radius=None)
    return (dist.squeeze(0), idx.squeeze(0)) if squeeze else (dist, idx)


def ball_query(query: Tensor, ref: Tensor, radius: float, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Up to k neighbours within `radius` (distance <= radius), nearest first.

    Returns (dist, idx, mask), each (B,M,k)|(M,k). Slots beyond the in-radius neighbours repeat the first
    (nearest) neighbour's index and distance and have mask False; a query with no neighbour in range has
    an all-False mask.
    """
    q, r, squeeze = _check_pair(query, ref, "ball_query")
    if k < 1:
        raise InputError(f"ball_query: k must be >= 1, got {k}")
    if not radius > 0:
        raise InputError(f"ball_query: radius must be > 0, got {radius}")
    found = min(k, r.shape[1])
    dist, idx = _knn(q, r, found, max_radius=float(radius))
    if found < k:  # fewer reference points than slots: pad, the padding is masked below anyway
        pad = k - found
        dist = torch.cat([dist, dist[..., :1].expand(*dist.shape[:-1], pad)], dim=-1)
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], pad)], dim=-1)
    slot = torch.arange(k, device=idx.device)
    mask = (dist <= radius) & (slot < found)
    dist = torch.where(mask, dist, dist[..., :1])
    idx = torch.where(mask, idx, idx[..., :1])
    if squeeze:
        return dist.squeeze(0), idx.squeeze(0), mask.squeeze(0)
    return dist, idx, mask


def _check_pair(query: Tensor, ref: Tensor, op: str) -> tuple[Tensor, Tensor, bool]:
    check_points(query, f"{op}: query")
    check_points(ref, f"{op}: ref")
    if query.ndim != ref.ndim:
        raise InputError(f"{op}: query and ref must both be batched or both unbatched, "
                         f"got {tuple(query.shape)} and {tuple(ref.shape)}")
    q, squeeze = as_batched(query)
    r, _ = as_batched(ref)
    if q.shape[0] != r.shape[0]:
        raise InputError(f"{op}: batch sizes differ: query {q.shape[0]}, ref {r.shape[0]}")
    if r.shape[1] == 0:
        raise InputError(f"{op}: ref has no points")
    if q.device != r.device:
        raise InputError(f"{op}: query on {q.device} but ref on {r.device}")
    return q, r, squeeze


def _knn(q: Tensor, r: Tensor, k: int, max_radius: float | None) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        idx = knn_indices(q, r, k, max_radius)
    gathered = torch.gather(r, 1, idx.reshape(r.shape[0], -1, 1).expand(-1, -1, 3))
    diff = q.unsqueeze(2) - gathered.view(*idx.shape, 3)
    dist = safe_sqrt((diff * diff).sum(-1))  # a query equal to a reference point has distance 0, gradient 0
    dist, order = dist.sort(dim=-1, stable=True)  # exact distances may reorder near-ties; k is small
    return dist, idx.gather(-1, order)


def knn_indices(q: Tensor, r: Tensor, k: int, max_radius: float | None = None) -> Tensor:
    """(B,M,k) int64 indices of the k nearest reference points (no gradients, no input checks)."""
    if q.shape[1] == 0:
        return torch.empty(q.shape[0], 0, k, dtype=torch.long, device=q.device)
    if use_kernels(q):
        from pc3d_kernels.knn import knn_triton

        return knn_triton(q, r, k)
    batch, m, n = q.shape[0], q.shape[1], r.shape[1]
    if q.device.type == "cpu" and m * n >= _GRID_MIN_PAIRS:
        return _knn_grid(q, r, k, max_radius)
    out = torch.empty(batch, m, k, dtype=torch.long, device=q.device)
    for b in range(batch):
        out[b] = knn_brute(q[b], r[b], k)
    return out


def knn_brute(q: Tensor, r: Tensor, k: int) -> Tensor:
    """(M,k) indices by chunked brute force: |q|^2 - 2 q.r + |r|^2 via one matmul per chunk."""
    dtype = compute_dtype(q)
    q, r = q.to(dtype), r.to(dtype)
    centre = r.mean(0)  # centring reduces the cancellation error of the expansion
    q, r = q - centre, r - centre
    r_sq = (r * r).sum(1)
    chunk = max(1, MAX_PAIRS // max(1, r.shape[0]))
    out = []
    for s in range(0, q.shape[0], chunk):
        qc = q[s:s + chunk]
        d = torch.addmm(r_sq.unsqueeze(0), qc, r.t(), alpha=-2.0)
        d += (qc * qc).sum(1, keepdim=True)
        out.append(d.topk(k, dim=1, largest=False, sorted=True).indices)
    return torch.cat(out)


def _cell_size(q: Tensor, r: Tensor, k: int) -> float:
    """Largest k-th neighbour distance among a few evenly spaced queries (one brute-force pass)."""
    batch, m = q.shape[0], q.shape[1]
    picks = torch.linspace(0, batch * m - 1, min(_CELL_SAMPLES, batch * m)).long()
    b, i = picks // m, picks % m
    d = ((r[b] - q[b, i].unsqueeze(1)) ** 2).sum(-1)  # (S, N)
    return float(d.kthvalue(k, dim=1).values.max().sqrt())


def _knn_grid(q: Tensor, r: Tensor, k: int, max_radius: float | None) -> Tensor:
    dtype = compute_dtype(q)
    batch, m, n = q.shape[0], q.shape[1], r.shape[1]
    qf = q.reshape(-1, 3).to(dtype)
    rf = r.reshape(-1, 3).to(dtype)
    qb = torch.arange(batch).repeat_interleave(m)
    # 10% over the sampled maximum: nearly every query then passes the exactness check in the first round.
    h = 1.1 * _cell_size(q.to(dtype), r.to(dtype), k)
    if max_radius is not None:
        h = min(h, max_radius)  # neighbours beyond the radius are masked, so cells of that size suffice
    out = torch.empty(batch * m, k, dtype=torch.long)
    rest = torch.arange(batch * m)
    for _ in range(3):  # queries in sparser regions retry with cells twice as large
        solved = _grid_round(qf, rf, qb, rest, batch, n, k, h, max_radius, out)
        if solved is None:
            break
        rest = rest[~solved]
        if rest.numel() == 0:
            break
        h *= 2.0
    if rest.numel():  # what is left (crowded cells, far-away queries): exact brute force
        rest_batch = qb[rest]
        for b in torch.unique(rest_batch).tolist():
            rows = rest[rest_batch == b]
            out[rows] = knn_brute(qf[rows], rf[b * n:(b + 1) * n], k) + b * n
    return (out - qb.unsqueeze(1) * n).view(batch, m, k)


def _grid_round(qf: Tensor, rf: Tensor, qb: Tensor, rows: Tensor, batch: int, n: int, k: int, h: float,
                max_radius: float | None, out: Tensor) -> Tensor | None:
    """Grid search for the queries `rows` with cell size h; fills `out` and says which rows are exact.

    Returns None when the grid cannot be built (degenerate extent or int64 overflow of the cell keys).
    """
    dtype = qf.dtype
    q = qf[rows]
    lo = torch.minimum(q.min(0).values, rf.min(0).values)
    extent = float((torch.maximum(q.max(0).values, rf.max(0).values) - lo).max())
    if not h > 0 or extent / h > (1 << 18):
        return None
    lo = lo - h  # one empty cell of margin: every query's 27 neighbours have in-range coordinates
    cq = torch.floor((q - lo) / h).long()
    cr = torch.floor((rf - lo) / h).long()
    dx, dy, dz = (int(v) for v in torch.maximum(cq.max(0).values, cr.max(0).values) + 2)
    if batch * dx * dy * dz >= (1 << 62):
        return None

    def cell_key(cells: Tensor, b: Tensor) -> Tensor:
        return ((b * dx + cells[:, 0]) * dy + cells[:, 1]) * dz + cells[:, 2]

    rb = torch.arange(batch).repeat_interleave(n)
    ref_keys, ref_order = torch.sort(cell_key(cr, rb))
    cell_keys, counts = torch.unique_consecutive(ref_keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    ref_sorted = rf.index_select(0, ref_order)
    o = torch.tensor([-1, 0, 1])
    deltas = ((o.view(3, 1, 1) * dy + o.view(1, 3, 1)) * dz + o.view(1, 1, 3)).reshape(-1)
    near = cell_key(cq, qb[rows]).unsqueeze(1) + deltas  # (R, 27) keys of the neighbouring cells
    pos = torch.searchsorted(cell_keys, near).clamp_max(cell_keys.numel() - 1)
    cell_count = torch.where(cell_keys[pos] == near, counts[pos], 0)
    cell_start = starts[pos]
    total = cell_count.sum(1)
    # Distance from each query to the boundary of its 3x3x3 block: no point outside is closer.
    rel = (q - lo) / h - cq.to(dtype)  # position inside the own cell, in [0, 1)
    guaranteed = (torch.minimum(rel, 1.0 - rel).min(1).values + 1.0) * h

    exact = torch.zeros(rows.numel(), dtype=torch.bool)
    todo = torch.nonzero((total >= k) & (total <= _GRID_MAX_CANDIDATES)).squeeze(1)
    if todo.numel():
        per_chunk = max(1, _GRID_CHUNK_PAIRS // int(total[todo].max()))
        for s in range(0, todo.numel(), per_chunk):
            sub = todo[s:s + per_chunk]
            idx, kth = _grid_candidates_topk(q[sub], ref_sorted, cell_start[sub], cell_count[sub],
                                             total[sub], k)
            idx = ref_order[idx]
            bound = kth if max_radius is None else kth.clamp_max(max_radius)
            ok = bound <= guaranteed[sub]
            out[rows[sub[ok]]] = idx[ok]
            exact[sub[ok]] = True
    return exact


def _grid_candidates_topk(q: Tensor, ref_sorted: Tensor, cell_start: Tensor, cell_count: Tensor,
                          total: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k among the candidates of each query's 27 cells.

    ref_sorted holds the reference points ordered by cell, so a cell is a contiguous run. Returns
    positions into ref_sorted (R,k) and the k-th distance (R,).
    """
    rows, cells = cell_count.shape
    counts = cell_count.reshape(-1)
    num = int(total.sum())
    pair = torch.repeat_interleave(torch.arange(rows * cells), counts, output_size=num)
    # position in ref_sorted = start of the candidate's cell + its rank inside that cell's run
    run_shift = (cell_start.reshape(-1) - (torch.cumsum(counts, 0) - counts))
    cand = torch.arange(num) + run_shift.index_select(0, pair)
    # column in the padded (rows, width) matrix = rank among the query's candidates
    row_start = torch.cumsum(total, 0) - total
    col_shift = torch.repeat_interleave(row_start, total, output_size=num)
    flat_pos = torch.arange(num) - col_shift
    width = int(total.max())
    flat_pos += torch.repeat_interleave(torch.arange(rows) * width, total, output_size=num)
    diff = torch.repeat_interleave(q, total, dim=0, output_size=num) - ref_sorted.index_select(0, cand)
    dist = torch.full((rows * width,), float("inf"), dtype=q.dtype)
    dist.index_put_((flat_pos,), (diff * diff).sum(1))
    index = torch.zeros(rows * width, dtype=torch.long)
    index.index_put_((flat_pos,), cand)
    best, where = dist.view(rows, width).topk(k, dim=1, largest=False, sorted=True)
    return index.view(rows, width).gather(1, where), best[:, -1].sqrt()
