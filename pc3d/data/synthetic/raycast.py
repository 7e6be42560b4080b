"""Ray casting against a triangle mesh in numpy: the stand-in for open3d's RaycastingScene.

The synthetic LiDAR scans and camera images cast ~0.6 M rays per frame into a street of ~20 k
triangles; open3d (Embree) does that in well under a second, and this module is what runs when open3d
is not installed. It builds a bounding-volume hierarchy over the triangles (object-median splits along
the widest centroid axis, a few triangles per leaf) and walks it for a chunk of rays at a time in
lockstep: every iteration each live ray does one step of the classic stack traversal (test both child
boxes, descend into the nearer, push the farther; at a leaf intersect its triangles with
Möller-Trumbore and pop). Nearer-first order plus culling boxes that start beyond the best hit so far
keeps the number of steps per ray small, and work per step is a handful of vectorised numpy ops over
the live rays, so memory stays bounded by the chunk size.

Geometry is taken in float32 (as RaycastingScene stores it) and intersected in float64, so hit
distances agree with open3d's to float32 rounding; on edges shared by two triangles either one may be
reported, as with Embree.
"""

from __future__ import annotations

import numpy as np

INVALID_ID = np.iinfo(np.uint32).max  # RaycastingScene's primitive id for a miss


def _segment_reduce(values: np.ndarray, start: np.ndarray, end: np.ndarray, op: np.ufunc) -> np.ndarray:
    """op.reduce of values[start[k]:end[k]] for every k (all segments non-empty)."""
    padded = np.concatenate([values, values[:1]])  # reduceat reads one past the last `end`
    return op.reduceat(padded, np.stack([start, end], axis=1).ravel(), axis=0)[::2]


def _bounds_of(size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of consecutive segments of the given sizes."""
    end = np.cumsum(size)
    return end - size, end


class RayCaster:
    """cast_rays(origins, directions) -> (t_hit, primitive_ids, primitive_normals), like RaycastingScene.

    t_hit is inf and the id INVALID_ID where a ray hits nothing; directions need not be unit length (t is
    in units of the direction's length, as in open3d)."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, leaf_size: int = 4) -> None:
        vertices = np.asarray(vertices, dtype=np.float32).astype(np.float64)
        triangles = np.asarray(triangles, dtype=np.int64)
        if triangles.ndim != 2 or triangles.shape[1] != 3 or len(triangles) == 0:
            raise ValueError(f"need (F, 3) triangles with F > 0, got shape {triangles.shape}")
        self.leaf_size = int(leaf_size)
        tri = vertices[triangles]  # (F, 3 corners, 3)
        self._build(tri)
        tri = tri[self.order]  # leaves reference contiguous runs of this BVH order
        self.v0 = tri[:, 0]
        self.e1 = tri[:, 1] - tri[:, 0]
        self.e2 = tri[:, 2] - tri[:, 0]
        normal = np.cross(self.e1, self.e2)  # counter-clockwise winding: Embree's geometric normal
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        self.normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)

    # ------------------------------------------------------------------ build

    def _build(self, tri: np.ndarray) -> None:
        n_tri = len(tri)
        lo_tri, hi_tri = tri.min(axis=1), tri.max(axis=1)
        centroid = tri.mean(axis=1)
        order = np.arange(n_tri)
        starts, ends = np.array([0]), np.array([n_tri])
        ids = np.array([0])
        n_nodes = 1
        lo, hi, left, start, count = [], [], [], [], []  # per level, in node-id order
        depth = 0
        while len(ids):
            depth += 1
            lo.append(_segment_reduce(lo_tri[order], starts, ends, np.minimum))
            hi.append(_segment_reduce(hi_tri[order], starts, ends, np.maximum))
            sizes = ends - starts
            split = sizes > self.leaf_size
            child = np.full(len(ids), -1, np.int64)
            child[split] = n_nodes + 2 * np.arange(int(split.sum()))
            left.append(child)
            start.append(starts)
            count.append(np.where(split, 0, sizes))
            if not split.any():
                break
            s, e = starts[split], ends[split]
            seg = np.repeat(np.arange(len(s)), e - s)
            pos = np.arange(len(seg)) - np.repeat(np.cumsum(e - s) - (e - s), e - s) + np.repeat(s, e - s)
            faces = order[pos]
            key, left_size = self._split(centroid[faces], lo_tri[faces], hi_tri[faces], seg, len(s))
            order[pos] = faces[np.lexsort((key, seg))]  # stable: each segment's left part comes first
            mid = s + left_size
            starts = np.stack([s, mid], axis=1).ravel()
            ends = np.stack([mid, e], axis=1).ravel()
            ids = n_nodes + np.arange(len(starts))
            n_nodes += len(starts)
        # level k's nodes carry consecutive ids, so concatenating the levels lists them by id
        pad = 1e-9 + 1e-7 * np.abs(np.concatenate(hi + lo)).max()  # keep flat boxes hittable despite rounding
        lo_all, hi_all = np.concatenate(lo) - pad, np.concatenate(hi) + pad
        self.box = tuple(np.ascontiguousarray(a) for a in (*lo_all.T, *hi_all.T))  # lo x, y, z, hi x, y, z
        self.left = np.concatenate(left)
        self.start = np.concatenate(start)
        self.count = np.concatenate(count)
        self.order = order
        self.depth = depth

    @staticmethod
    def _split(centroid: np.ndarray, lo: np.ndarray, hi: np.ndarray, seg: np.ndarray, n_seg: int,
               bins: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Binned surface-area-heuristic split of every segment (faces grouped by `seg`, in order).

        Returns a per-face sort key (within its segment, the left part sorts first) and each segment's
        left size. The SAH matters here: a street mixes 100 m road triangles with centimetre-sized bicycle
        spokes, and object-median splits would leave the big ones inflating boxes all the way down.
        Segments whose centroids all fall in one bin are halved at the median of their widest axis."""
        size = np.bincount(seg, minlength=n_seg)
        c_lo = _segment_reduce(centroid, *_bounds_of(size), np.minimum)
        c_hi = _segment_reduce(centroid, *_bounds_of(size), np.maximum)
        extent = c_hi - c_lo
        best_cost = np.full(n_seg, np.inf)
        best_axis = np.zeros(n_seg, np.int64)
        best_bin = np.zeros(n_seg, np.int64)
        face_bins = np.zeros((len(seg), 3), np.int64)
        for axis in range(3):
            scale = np.divide(bins, extent[:, axis], out=np.zeros(n_seg), where=extent[:, axis] > 0)
            b = np.clip(((centroid[:, axis] - c_lo[seg, axis]) * scale[seg]).astype(np.int64), 0, bins - 1)
            face_bins[:, axis] = b
            cell = seg * bins + b
            box_lo = np.full((n_seg * bins, 3), np.inf)
            box_hi = np.full((n_seg * bins, 3), -np.inf)
            np.minimum.at(box_lo, cell, lo)
            np.maximum.at(box_hi, cell, hi)
            count = np.bincount(cell, minlength=n_seg * bins).reshape(n_seg, bins)
            box_lo, box_hi = box_lo.reshape(n_seg, bins, 3), box_hi.reshape(n_seg, bins, 3)

            def area(low: np.ndarray, high: np.ndarray) -> np.ndarray:
                d = np.maximum(high - low, 0.0)  # empty prefixes (inf, -inf) get area 0
                return 2.0 * (d[..., 0] * d[..., 1] + d[..., 1] * d[..., 2] + d[..., 2] * d[..., 0])

            left_area = area(np.minimum.accumulate(box_lo, axis=1), np.maximum.accumulate(box_hi, axis=1))
            right_area = area(np.minimum.accumulate(box_lo[:, ::-1], axis=1)[:, ::-1],
                              np.maximum.accumulate(box_hi[:, ::-1], axis=1)[:, ::-1])
            n_left = np.cumsum(count, axis=1)
            n_right = size[:, None] - n_left
            cost = left_area[:, :-1] * n_left[:, :-1] + right_area[:, 1:] * n_right[:, :-1]
            cost[(n_left[:, :-1] == 0) | (n_right[:, :-1] == 0)] = np.inf
            where = np.argmin(cost, axis=1)
            value = cost[np.arange(n_seg), where]
            better = value < best_cost
            best_cost[better], best_axis[better], best_bin[better] = value[better], axis, where[better]
        sah = np.isfinite(best_cost)
        key = (face_bins[np.arange(len(seg)), best_axis[seg]] > best_bin[seg]).astype(np.float64)
        widest = np.argmax(extent, axis=1)
        median = ~sah[seg]
        key[median] = centroid[median, widest[seg[median]]]
        left_size = np.where(sah, 0, size // 2)
        left_size[sah] = np.bincount(seg, weights=(key == 0) & sah[seg], minlength=n_seg)[sah].astype(np.int64)
        return key, left_size

    # ------------------------------------------------------------------ traversal

    def cast_rays(self, origins: np.ndarray, directions: np.ndarray, chunk: int = 1 << 16
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(R, 3) origins (or one (3,) origin) and (R, 3) directions -> t_hit (R,) float64,
        primitive_ids (R,) int64 (INVALID_ID on a miss), primitive_normals (R, 3) float64 (0 on a miss)."""
        directions = np.asarray(directions, dtype=np.float32).astype(np.float64).reshape(-1, 3)
        origins = np.broadcast_to(np.asarray(origins, dtype=np.float32).astype(np.float64), directions.shape)
        n = len(directions)
        # each ray of a chunk holds a traversal stack as deep as the tree: cap chunk x depth (a lopsided
        # SAH tree over degenerate input could be deep) so memory stays bounded
        chunk = max(1024, min(int(chunk), (1 << 23) // (self.depth + 1)))
        t_hit = np.full(n, np.inf)
        face = np.full(n, -1, np.int64)
        for begin in range(0, n, chunk):
            window = slice(begin, min(begin + chunk, n))
            t_hit[window], face[window] = self._cast_chunk(origins[window], directions[window])
        hit = face >= 0
        normals = np.zeros((n, 3))
        normals[hit] = self.normal[face[hit]]
        ids = np.full(n, INVALID_ID, np.int64)
        ids[hit] = self.order[face[hit]]
        return t_hit, ids, normals

    def _boxes(self, node: np.ndarray, ray: tuple[np.ndarray, ...], best: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Slab test of each ray against its node's box: (hit, entry distance clipped at 0).

        `ray` is (ox, oy, oz, 1/dx, 1/dy, 1/dz) per ray; boxes are kept one array per coordinate because
        numpy reduces over a short trailing axis far slower than it combines three flat arrays."""
        near, far = np.zeros(len(node)), np.full(len(node), np.inf)
        for axis in range(3):
            origin, inv = ray[axis], ray[3 + axis]
            t0 = (self.box[axis].take(node) - origin) * inv
            t1 = (self.box[3 + axis].take(node) - origin) * inv
            near = np.maximum(near, np.minimum(t0, t1))
            far = np.minimum(far, np.maximum(t0, t1))
        return (near <= far) & (near <= best), near

    def _leaf(self, node: np.ndarray, origin: np.ndarray, direction: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest Möller-Trumbore hit of each ray among its leaf's triangles: (t or inf, BVH face)."""
        k = np.arange(self.leaf_size)
        tri = self.start[node][:, None] + k
        valid = k < self.count[node][:, None]
        tri = np.where(valid, tri, 0)
        e1, e2 = self.e1[tri], self.e2[tri]  # (m, L, 3)
        d = direction[:, None, :]
        p = np.cross(d, e2)
        det = np.einsum("mlc,mlc->ml", e1, p)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / det
            s = origin[:, None, :] - self.v0[tri]
            u = np.einsum("mlc,mlc->ml", s, p) * inv
            q = np.cross(s, e1)
            v = np.einsum("mlc,mlc->ml", d, q) * inv
            t = np.einsum("mlc,mlc->ml", e2, q) * inv
            ok = valid & (det != 0) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        t = np.where(ok, t, np.inf)
        first = np.argmin(t, axis=1)
        rows = np.arange(len(node))
        return t[rows, first], tri[rows, first]

    def _cast_chunk(self, origin: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = len(direction)
        # a zero component becomes 1e-300, not 0: its slab distances are then 0 or +-inf, never 0 * inf = nan
        inv_dir = 1.0 / np.where(direction == 0, 1e-300, direction)
        best = np.full(m, np.inf)
        face = np.full(m, -1, np.int64)
        stack = np.zeros((m, self.depth + 1), np.int64)
        stack_t = np.zeros((m, self.depth + 1))
        top = np.zeros(m, np.int64)
        ray = np.arange(m)
        per_ray = tuple(np.ascontiguousarray(a) for a in (*origin.T, *inv_dir.T))
        hit, entry = self._boxes(np.zeros(m, np.int64), per_ray, best)
        ray = ray[hit]
        node = np.zeros(len(ray), np.int64)
        node_t = entry[hit]
        while len(ray):
            # a node reached (or popped) beyond the best hit so far needs no work: pop again
            alive = node_t <= best[ray]
            leaf = alive & (self.left[node] < 0)
            inner = alive & ~leaf
            if leaf.any():
                r, nd = ray[leaf], node[leaf]
                t, f = self._leaf(nd, origin[r], direction[r])
                better = t < best[r]
                best[r[better]] = t[better]
                face[r[better]] = f[better]
            descend = np.zeros(len(ray), bool)
            if inner.any():
                r, nd = ray[inner], node[inner]
                sub = tuple(a.take(r) for a in per_ray)
                b = best.take(r)
                hit_l, t_l = self._boxes(self.left[nd], sub, b)
                hit_r, t_r = self._boxes(self.left[nd] + 1, sub, b)
                left_first = t_l <= t_r
                near = np.where(left_first, self.left[nd], self.left[nd] + 1)
                far = np.where(left_first, self.left[nd] + 1, self.left[nd])
                near_t, far_t = np.where(left_first, t_l, t_r), np.where(left_first, t_r, t_l)
                near_hit = np.where(left_first, hit_l, hit_r)
                far_hit = np.where(left_first, hit_r, hit_l)
                both = near_hit & far_hit
                rb = r[both]
                stack[rb, top[rb]] = far[both]
                stack_t[rb, top[rb]] = far_t[both]
                top[rb] += 1
                one = near_hit | far_hit
                nxt = np.where(near_hit, near, far)
                nxt_t = np.where(near_hit, near_t, far_t)
                idx = np.flatnonzero(inner)[one]
                node[idx] = nxt[one]
                node_t[idx] = nxt_t[one]
                descend[idx] = True
            # everything that did not descend pops its stack, or finishes when it is empty
            pop = ~descend
            empty = pop & (top[ray] == 0)
            popping = pop & ~empty
            rp = ray[popping]
            top[rp] -= 1
            node[popping] = stack[rp, top[rp]]
            node_t[popping] = stack_t[rp, top[rp]]
            keep = ~empty
            ray, node, node_t = ray[keep], node[keep], node_t[keep]
        return best, face
