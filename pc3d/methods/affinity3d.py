"""Affinity3D: zero-shot LiDAR pseudo-labels from CLIP crops, refined by an affinity random walk.

Per frame (spec §3-4):
  1. superpoints  - DBSCAN on the points without a seen-class label (GZS) or BPSS supervoxels (annotation-free);
                    superpoints of fewer than 2 points are dropped (paper section 3.2)
  2. visibility   - SLIC superpixels; a point is visible iff its depth is within `threshold` of the nearest
                    point of its superpixel (scatter-min); invisible points are left unlabelled
  3. crops        - 2-D box of each superpoint's visible points, enlarged to >= 30x30 px
  4. features     - CLIP image embeddings F of the crops; text embeddings EMB; Y = softmax(s_t F EMB^T)
  5. affinity     - W = row-softmax(s_a F F^T) over the instance queue (section 3.4, `affinity3d_queue`: up to
                    `queue_size` superpoints of consecutive frames, later frames included), A = W^beta,
                    T = D^-1 A, refined scores Y' = T Y; a frame's rows are refined, and its labels written,
                    when its instances leave the queue (or the sequence ends)
  6. labels       - argmax Y' on the visible points of each superpoint if max Y' > the threshold (`gzs_threshold`
                    in GZS, default 0 = always, as the paper; `confidence` annotation-free); seen-class points keep
                    their label
The summary scores the pseudo-labels per point and per ground-truth instance (Table 4), and counts the labelled
points without ground truth (`unscored_points`) and those left out by the threshold (`rejected_points`).
Outputs under OUT: sequences/XX/labels/NNNNNN.label (SemanticKITTI raw ids, 0 = ignore),
visibility/NNNNNN.npy (bool per point: in the image and visible), features/NNNNNN.npz (F and the initial Y).
The oracle feature source (CLIP-like features without CLIP, for studies) is in `affinity3d_oracle`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from pc3d import console as con
from pc3d.data.readers.semantickitti import (
    CLASS_NAMES,
    IGNORE,
    NUM_CLASSES,
    UNSEEN_CLASSES,
    SemanticKITTI,
    unmap_labels,
)
from pc3d.engine.device import resolve_device
from pc3d.errors import InputError
from pc3d.io.atomic import atomic_path, write_text_atomic
from pc3d.methods.affinity3d_oracle import OracleFeatures
from pc3d.methods.affinity3d_queue import Departure, InstanceQueue
from pc3d.ops import grid_sample, knn, scatter_min

# ------------------------------------------------------------------------------------------ superpoints


def dbscan(points: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """Exact DBSCAN labels (N,) int64, -1 = noise. Core points have >= min_samples points (self included) within
    eps; core points within eps of each other share a cluster; a border point joins its nearest core point's.

    Radius neighbourhoods (unbounded in count) come from scipy's KD-tree; pc3d.ops.ball_query caps them at k."""
    from scipy.sparse.csgraph import connected_components as graph_components
    from scipy.spatial import cKDTree

    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    tree = cKDTree(points)
    counts = tree.query_ball_point(points, eps, return_length=True)
    core = np.flatnonzero(counts >= min_samples)
    if len(core) == 0:
        return labels
    graph = cKDTree(points[core]).sparse_distance_matrix(cKDTree(points[core]), eps, output_type="coo_matrix")
    _, comp = graph_components(graph, directed=False)
    labels[core] = comp
    border = np.setdiff1d(np.arange(n), core)
    if len(border):
        dist, nearest = cKDTree(points[core]).query(points[border], k=1, distance_upper_bound=eps)
        ok = np.isfinite(dist)
        labels[border[ok]] = comp[nearest[ok]]
    return labels


def drop_small_superpoints(superpoints: np.ndarray, min_points: int) -> np.ndarray:
    """Superpoint ids (N,) with those of fewer than `min_points` points set to -1 (paper section 3.2 drops
    superpoints under 2 points: a lone point has no shape and its crop is the 30 px minimum around one pixel)."""
    out = np.asarray(superpoints, dtype=np.int64).copy()
    member = out >= 0
    if min_points <= 1 or not member.any():
        return out
    sizes = np.bincount(out[member])
    small = np.zeros(len(out), dtype=bool)
    small[member] = sizes[out[member]] < min_points
    out[small] = -1
    return out


def estimate_normals(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Unit normals (N,3): smallest-eigenvalue eigenvector of each point's neighbourhood covariance."""
    patch = points[neighbours]  # (N,k,3)
    centred = patch - patch.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", centred, centred)
    _, vectors = np.linalg.eigh(cov)
    return vectors[:, :, 0]


def bpss_supervoxels(points: np.ndarray, resolution: float = 1.0, k: int = 15, max_rounds: int = 40,
                     refine_iters: int = 10) -> np.ndarray:
    """Boundary-preserving supervoxels (Lin et al. 2018), labels (N,) 0..K-1.

    Metric d(p, q) = 1 - |n_p . n_q| + 0.4 |p - q| / R. Every point starts alone; in rounds with lambda doubling
    from the median nearest-neighbour metric, a supervoxel j merges into an adjacent i when
    lambda - size_j d(rep_i, rep_j) > 0, until K = occupied cells at resolution R remain. Merges of a round are
    applied together (cheapest first, never below K) instead of the paper's sequential BFS. Then boundary
    points move to an adjacent supervoxel whose representative is closer in the metric, until stable."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as graph_components

    n = len(points)
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    points = np.asarray(points, dtype=np.float64)
    kk = min(k + 1, n)
    _, idx = knn(torch.from_numpy(points), torch.from_numpy(points), kk)
    idx = idx.numpy()
    nbr = idx[:, 1:]
    normals = estimate_normals(points, idx)
    target = grid_sample(torch.from_numpy(points), resolution).num_cells

    def metric(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        cos = np.abs(np.einsum("ij,ij->i", normals[a], normals[b]))
        return 1.0 - cos + 0.4 * np.linalg.norm(points[a] - points[b], axis=1) / resolution

    src = np.repeat(np.arange(n), nbr.shape[1])
    dst = nbr.reshape(-1)
    label = np.arange(n)
    rep = np.arange(n)  # representative point of each supervoxel id
    size = np.ones(n, dtype=np.int64)
    lam = float(np.median(metric(src, dst).reshape(n, -1).min(axis=1)))
    lam = max(lam, 1e-6)
    count = n
    for _ in range(max_rounds):
        if count <= target:
            break
        a, b = label[src], label[dst]
        pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], 1)[a != b], axis=0)
        if len(pairs) == 0:
            break
        small = np.where(size[pairs[:, 0]] <= size[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
        cost = size[small] * metric(rep[pairs[:, 0]], rep[pairs[:, 1]])
        accept = np.flatnonzero(lam - cost > 0)
        accept = accept[np.argsort(cost[accept], kind="stable")][: count - target]
        lam *= 2.0
        if len(accept) == 0:
            continue
        u, v = pairs[accept, 0], pairs[accept, 1]
        graph = coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n))
        _, comp = graph_components(graph, directed=False)
        # the largest member keeps its representative
        alive = np.unique(label)
        order = alive[np.lexsort((-size[alive], comp[alive]))]
        first = np.unique(comp[order], return_index=True)[1]
        winner = np.full(comp.max() + 1, -1)
        winner[comp[order[first]]] = order[first]
        new_size = np.bincount(comp[alive], weights=size[alive], minlength=comp.max() + 1).astype(np.int64)
        label = winner[comp[label]]
        size = np.zeros(n, dtype=np.int64)
        size[winner[winner >= 0]] = new_size[winner >= 0]
        count = len(np.unique(label))
    for _ in range(refine_iters):  # boundary refinement
        candidates = np.concatenate([label[:, None], label[nbr]], axis=1)  # own supervoxel first
        reps = rep[candidates]
        d = metric(np.repeat(np.arange(n), candidates.shape[1]), reps.reshape(-1)).reshape(n, -1)
        best = candidates[np.arange(n), d.argmin(axis=1)]
        if np.array_equal(best, label):
            break
        label = best
    return np.unique(label, return_inverse=True)[1].astype(np.int64)


# ------------------------------------------------------------------------------------------ affinity


def affinity_transition(features: Tensor, scale: float, beta: float, nodes: Tensor | None = None) -> Tensor:
    """T = D^-1 A with A = W^beta (element-wise), W = row-softmax(scale F N^T), D = diag(A 1).

    Rows are the `features` (S, D), columns the graph `nodes` (M, D) (default: the features themselves)."""
    nodes = features if nodes is None else nodes
    w = torch.softmax(scale * features @ nodes.t(), dim=1)
    a = w.pow(beta)
    return a / a.sum(dim=1, keepdim=True)


def refine_scores(features: Tensor, scores: Tensor, queue_features: Tensor | None, queue_scores: Tensor | None,
                  scale: float, beta: float) -> Tensor:
    """Y' = T Y over this frame's nodes and the queue's; only this frame's rows (S, C) are needed (each row of T
    is normalised on its own)."""
    if queue_features is not None and queue_features.shape[0]:
        nodes, values = torch.cat([features, queue_features]), torch.cat([scores, queue_scores])
    else:
        nodes, values = features, scores
    return affinity_transition(features, scale, beta, nodes) @ values


# ------------------------------------------------------------------------------------------ visibility


def slic_superpixels(image: np.ndarray, n_segments: int = 1000, compactness: float = 10.0) -> np.ndarray:
    """(H, W) int64 SLIC superpixel ids starting at 0 (scikit-image)."""
    from skimage.segmentation import slic

    return slic(image, n_segments=n_segments, compactness=compactness, start_label=0).astype(np.int64)


def superpixel_visibility(pixels: np.ndarray, depth: np.ndarray, superpixels: np.ndarray,
                          threshold: float = 0.5) -> np.ndarray:
    """visible (M,) bool: depth - D_k < threshold, D_k = min depth of the points in the point's superpixel k."""
    if len(depth) == 0:
        return np.zeros(0, dtype=bool)
    k = torch.from_numpy(superpixels[pixels[:, 0], pixels[:, 1]].astype(np.int64))
    z = torch.from_numpy(np.asarray(depth, dtype=np.float64))
    nearest, _ = scatter_min(z, k, 0, int(superpixels.max()) + 1)
    return ((z - nearest[k]) < threshold).numpy()


def crop_box(uv: np.ndarray, min_size: int, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) pixel box around `uv` (M,2 as u, v), enlarged symmetrically to at least
    min_size x min_size and clipped to the image."""
    height, width = image_size
    lo, hi = np.floor(uv.min(axis=0)), np.floor(uv.max(axis=0)) + 1  # (u, v)

    def span(low: float, high: float, limit: int) -> tuple[int, int]:
        extra = max(0.0, min_size - (high - low))
        low, high = low - np.floor(extra / 2), high + np.ceil(extra / 2)
        if low < 0:
            high, low = min(limit, high - low), 0
        if high > limit:
            low, high = max(0, low - (high - limit)), limit
        return int(low), int(high)

    left, right = span(lo[0], hi[0], width)
    top, bottom = span(lo[1], hi[1], height)
    return top, left, bottom, right


# ------------------------------------------------------------------------------------------ features


class FeatureSource(Protocol):
    """What gives image features and class embeddings (CLIP, or the oracle)."""

    logit_scale: float

    def class_embeddings(self, classes: list[int]) -> Tensor: ...

    def begin_frame(self, sample: dict[str, Any]) -> None: ...

    def crop_features(self, image: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> Tensor: ...

    def pixel_features(self, image: np.ndarray, pixels: np.ndarray) -> Tensor: ...


class ClipFeatures:
    """CLIP crops and prompt-ensembled text embeddings."""

    def __init__(self, spec: str, device: torch.device, dtype: str = "auto", batch_size: int = 64,
                 logit_scale: float | None = None) -> None:
        from pc3d.foundation.clip import ClipEncoder

        torch_dtype = {"auto": torch.float16 if device.type == "cuda" else None, "float32": None,
                       "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        self.encoder = ClipEncoder(spec, device=device, dtype=torch_dtype)
        self.batch_size = batch_size
        self.logit_scale = logit_scale or self.encoder.logit_scale
        self.seconds = 0.0  # time spent in CLIP (the benchmark separates it)

    def class_embeddings(self, classes: list[int]) -> Tensor:
        return self.encoder.encode_text([CLASS_NAMES[c] for c in classes]).cpu()

    def begin_frame(self, sample: dict[str, Any]) -> None:
        self._dense: Tensor | None = None

    def crop_features(self, image: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> Tensor:
        tic = time.perf_counter()
        crops = [image[t:b, l:r] for t, l, b, r in boxes]
        out = self.encoder.encode_crops(crops, self.batch_size).cpu()
        self.seconds += time.perf_counter() - tic
        return out

    def pixel_features(self, image: np.ndarray, pixels: np.ndarray) -> Tensor:
        tic = time.perf_counter()
        grid = self.encoder.encode_dense(image).cpu()  # (h, w, D) patch grid over the whole image
        rows = np.minimum(pixels[:, 0] * grid.shape[0] // image.shape[0], grid.shape[0] - 1)
        cols = np.minimum(pixels[:, 1] * grid.shape[1] // image.shape[1], grid.shape[1] - 1)
        self.seconds += time.perf_counter() - tic
        return grid[torch.from_numpy(rows), torch.from_numpy(cols)]


# ------------------------------------------------------------------------------------------ the labeller


@dataclass
class FrameResult:
    labels: np.ndarray  # (N,) train ids, 0 = ignore
    visible: np.ndarray  # (N,) bool: in the image and visible
    pseudo: np.ndarray  # (N,) bool: the label comes from the image (not from seen ground truth)
    features: np.ndarray  # (S, D) superpoint features of this frame
    scores: np.ndarray  # (S, C) initial class scores Y
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class PendingFrame:
    """A frame whose superpoints wait in the instance queue: everything but their classes is known."""

    sample: dict[str, Any]  # the frame (without its image) for writing and scoring it
    result: FrameResult  # labels so far (seen classes in GZS), visibility, the crop features and scores
    target: np.ndarray  # (P,) points that take their superpoint's class
    slot: np.ndarray  # (P,) the superpoint (row of features / scores) of each target point


class PseudoLabeler:
    """Affinity3D over a stream of frames. `push(sample)` labels what it can and returns the frames whose labels
    are final; `flush()` ends the stream. With affinity on, a frame's superpoints go through the instance queue
    (section 3.4, `affinity3d_queue`): the frame is final when they leave it, refined together with the queued
    instances of the frames around it, later ones included. The queue empties at the end of each sequence."""

    def __init__(self, config: Any, source: FeatureSource) -> None:
        self.config, self.source = config, source
        setting = config.data.setting
        candidates = config.features.candidates
        if candidates == "auto":
            candidates = "unseen" if setting == "gzs" else "all"
        self.classes = list(UNSEEN_CLASSES) if candidates == "unseen" else list(range(1, NUM_CLASSES))
        self.embeddings = source.class_embeddings(self.classes)
        method = config.superpoints.method
        self.superpoint_method = ("dbscan" if setting == "gzs" else "bpss") if method == "auto" else method
        self.queue: InstanceQueue[PendingFrame] = InstanceQueue(config.affinity.queue_size)
        self.sequence: str | None = None

    def push(self, sample: dict[str, Any]) -> list[tuple[dict[str, Any], FrameResult]]:
        """Label one frame; returns the (sample, result) pairs that became final, in frame order."""
        return self.push_prepared(self.prepare(sample))

    def push_prepared(self, pending: PendingFrame) -> list[tuple[dict[str, Any], FrameResult]]:
        """`push` for a frame already through `prepare` (studies reuse one preparation for several walks)."""
        done = self.flush() if pending.sample["sequence"] != self.sequence else []
        self.sequence = pending.sample["sequence"]
        if not self.config.affinity.enabled or self.config.labeler == "dense":
            scores = torch.from_numpy(pending.result.scores)
            return done + [(pending.sample, self.finish(pending, scores))]
        feats, scores = torch.from_numpy(pending.result.features), torch.from_numpy(pending.result.scores)
        return done + [self._refined(d) for d in self.queue.push(pending, feats, scores)]

    def flush(self) -> list[tuple[dict[str, Any], FrameResult]]:
        """The frames still queued (end of a sequence or of the run), final now."""
        return [self._refined(d) for d in self.queue.flush()]

    def _refined(self, departure: Departure[PendingFrame]) -> tuple[dict[str, Any], FrameResult]:
        cfg = self.config.affinity
        refined = refine_scores(departure.features, departure.scores, departure.other_features,
                                departure.other_scores, cfg.scale, cfg.beta)
        return departure.key.sample, self.finish(departure.key, refined)

    def superpoints(self, points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return np.zeros(0, dtype=np.int64)
        cfg = self.config.superpoints
        if self.superpoint_method == "dbscan":
            return dbscan(points, cfg.eps, cfg.min_samples)
        return bpss_supervoxels(points, cfg.resolution, cfg.k)

    def prepare(self, sample: dict[str, Any]) -> PendingFrame:
        """Steps 1-4 of one frame: superpoints, visibility, crops, features F and initial scores Y."""
        cfg = self.config
        points, image = sample["points"], sample["image"]
        n, image_size = len(points), image.shape[:2]
        gzs = cfg.data.setting == "gzs"
        labels = sample["labels"].copy() if gzs else np.zeros(n, dtype=np.int64)
        fov_index, fov_uv, fov_depth = sample["fov_index"], sample["fov_uv"], sample["fov_depth"]
        pixels = np.stack([np.clip(fov_uv[:, 1].astype(np.int64), 0, image_size[0] - 1),
                           np.clip(fov_uv[:, 0].astype(np.int64), 0, image_size[1] - 1)], axis=1)
        if cfg.visibility.enabled:
            superpixels = slic_superpixels(image, cfg.visibility.n_segments, cfg.visibility.compactness)
            fov_visible = superpixel_visibility(pixels, fov_depth, superpixels, cfg.visibility.threshold)
        else:
            fov_visible = np.ones(len(fov_index), dtype=bool)
        visible = np.zeros(n, dtype=bool)
        visible[fov_index[fov_visible]] = True
        candidate = labels == IGNORE if gzs else np.ones(n, dtype=bool)  # points that need a label
        self.source.begin_frame(sample)
        kept = {k: v for k, v in sample.items() if k != "image"}

        def pending(feats: Tensor, target: np.ndarray, slot: np.ndarray, superpoints: int) -> PendingFrame:
            scores = self._scores(feats) if len(feats) else torch.zeros(0, len(self.classes))
            result = FrameResult(labels, visible, np.zeros(n, dtype=bool), feats.numpy().astype(np.float32),
                                 scores.numpy().astype(np.float32), stats={"superpoints": superpoints})
            return PendingFrame(kept, result, target, slot)

        if cfg.labeler == "dense":  # every visible candidate pixel is its own node (no superpoints, no queue)
            target = visible[fov_index] & candidate[fov_index]
            frame = pending(self.source.pixel_features(image, pixels[target]).float(), fov_index[target],
                            np.arange(int(target.sum())), 0)
            frame.result.features = frame.result.features[:, :0]  # per-pixel features are not kept (size)
            return frame
        cand_index = np.flatnonzero(candidate)
        sp = np.full(n, -1, dtype=np.int64)
        sp[cand_index] = self.superpoints(points[cand_index])
        sp = drop_small_superpoints(sp, cfg.superpoints.min_points)
        # per superpoint: its labelable points (in the image and visible) and their pixels
        usable = np.zeros(n, dtype=bool)
        usable[fov_index[fov_visible]] = True
        usable &= sp >= 0
        uv_of = np.full((n, 2), np.nan)
        uv_of[fov_index] = fov_uv
        ids = np.unique(sp[usable])
        if not len(ids):
            return pending(torch.zeros(0, self.embeddings.shape[1]), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
        boxes = []
        for s in ids:
            members = np.flatnonzero((sp == s) & usable)
            boxes.append(crop_box(uv_of[members], cfg.features.min_crop, image_size))
        feats = self.source.crop_features(image, boxes).float()
        lookup = np.full(int(sp.max()) + 1, -1, dtype=np.int64)
        lookup[ids] = np.arange(len(ids))
        target = np.flatnonzero(usable)
        return pending(feats, target, lookup[sp[target]], len(ids))

    def finish(self, frame: PendingFrame, refined: Tensor) -> FrameResult:
        """Steps 5-6 given the (refined) scores of the frame's superpoints: argmax over the candidate classes on
        their points, if max > the threshold."""
        result = frame.result
        labels, pseudo = result.labels.copy(), result.pseudo.copy()
        if len(frame.target):
            best, chosen = refined.max(dim=1)
            chosen_class = torch.tensor(self.classes)[chosen].numpy()
            keep = best.numpy() > self.threshold
            ok = keep[frame.slot]
            labels[frame.target[ok]] = chosen_class[frame.slot[ok]]
            pseudo[frame.target[ok]] = True
            rejected = int((~ok).sum())
        else:
            rejected = 0
        return FrameResult(labels, result.visible, pseudo, result.features, result.scores,
                           stats={**result.stats, "rejected_points": rejected})

    @property
    def threshold(self) -> float:
        """GZS uses its own threshold (its softmax runs over the unseen classes only); annotation-free `confidence`."""
        cfg = self.config
        return cfg.gzs_threshold if cfg.data.setting == "gzs" else cfg.confidence

    def _scores(self, feats: Tensor) -> Tensor:
        return torch.softmax(self.source.logit_scale * feats @ self.embeddings.t().to(feats.dtype), dim=1)


# ------------------------------------------------------------------------------------------ running


def build_source(config: Any, device: torch.device) -> FeatureSource:
    fcfg = config.features
    if fcfg.source == "oracle":
        return OracleFeatures(fcfg.oracle_radius, fcfg.logit_scale, fcfg.noise, fcfg.confusion, config.run.seed,
                              fcfg.oracle_dim)
    if fcfg.build_tiny_random:
        from pc3d.foundation.clip import build_tiny_random_clip, tiny_random_cached

        con.info("tiny random-weight CLIP: the pseudo-labels are meaningless (offline test preset)")
        if not fcfg.model.startswith("hf://"):
            raise InputError("features.build_tiny_random needs features.model = hf://owner/repo")
        if not tiny_random_cached(fcfg.model):
            build_tiny_random_clip(fcfg.model)
    return ClipFeatures(fcfg.model, device, fcfg.dtype, fcfg.batch_size, fcfg.logit_scale)


def output_root(config: Any) -> Path:
    """A stable folder (no time stamp) for library callers (bench, studies) that share frames between calls;
    `pc3d pseudolabel` writes a run folder instead (see `run`)."""
    return Path(config.run.out) / (config.run.name or "affinity3d")


def synthetic_root(config: Any, folder: Path) -> Path:
    """Generate the embedded synthetic LiDAR frames into `folder` once (SemanticKITTI layout)."""
    from pc3d.data import layouts
    from pc3d.data.synthetic.lidar import generate_lidar_sequence, lidar_rng

    data = config.data
    done = folder / ".complete.json"
    wanted = {"count": data.synthetic_count, "rays": data.synthetic_rays, "image": list(data.synthetic_image),
              "seed": config.run.seed}
    if done.is_file() and json.loads(done.read_text()) == wanted:
        return folder / layouts.SEMANTIC_KITTI_DIR
    per_sequence = 10
    lengths = [min(per_sequence, data.synthetic_count - s) for s in range(0, data.synthetic_count, per_sequence)]
    con.info(f"generating {data.synthetic_count} synthetic LiDAR frames into {folder}")
    sequences = [generate_lidar_sequence(lidar_rng(config.run.seed, s), n, data.synthetic_rays,
                                         tuple(data.synthetic_image)) for s, n in enumerate(lengths)]
    root = layouts.write_semantickitti(folder, sequences)
    write_text_atomic(done, json.dumps(wanted))
    return root


def dataset_for(config: Any, out: Path, sequences: list[str] | None = None) -> SemanticKITTI:
    data = config.data
    if data.source == "folder":
        root, seqs = Path(data.root), sequences or data.sequences
    else:
        root = synthetic_root(config, out / "synthetic")
        count = -(-data.synthetic_count // 10)
        seqs = sequences or [f"{s:02d}" for s in range(count)]
    setting = "gzs" if data.setting == "gzs" else "annotation-free"
    return SemanticKITTI(root, seqs, setting, with_image=True, max_frames=data.max_frames)


def frame_paths(out: Path, sequence: str, frame: str) -> dict[str, Path]:
    folder = out / "sequences" / sequence
    return {"labels": folder / "labels" / f"{frame}.label", "visibility": folder / "visibility" / f"{frame}.npy",
            "features": folder / "features" / f"{frame}.npz"}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def write_frame(paths: dict[str, Path], result: FrameResult) -> None:
    from pc3d.io.kitti import write_kitti_label

    with atomic_path(paths["features"]) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, features=result.features.astype(np.float32), scores=result.scores.astype(np.float32))
    _save_npy(paths["visibility"], result.visible)
    write_kitti_label(paths["labels"], unmap_labels(result.labels))  # written last: marks the frame done


def instance_votes(labels: np.ndarray, gt: np.ndarray, instance: np.ndarray, pseudo: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per ground-truth thing instance (instance id > 0, keyed by (class, id)) with at least one pseudo-labelled
    point: (its GT class, the majority pseudo label of those points); ties go to the smaller class id."""
    hit = pseudo & (gt != IGNORE) & (instance > 0)
    if not hit.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = gt[hit].astype(np.int64) * (1 << 32) + instance[hit].astype(np.int64)
    uniq, inst = np.unique(keys, return_inverse=True)
    votes = np.zeros((len(uniq), NUM_CLASSES), dtype=np.int64)
    np.add.at(votes, (inst, labels[hit]), 1)
    return (uniq >> 32).astype(np.int64), votes.argmax(axis=1)


class Accuracy:
    """Pseudo-label accuracy against ground truth (the paper's Table 4 measures: per point and per instance) and
    coverage. Points that got a pseudo label but have no ground truth ('unlabeled', so no accuracy can be given)
    and visible candidate points left unlabelled by the confidence threshold are counted, not dropped silently."""

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        self.instance_confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        self.targets = 0
        self.unscored = 0  # pseudo-labelled points whose ground truth is 'unlabeled'
        self.rejected = 0  # visible candidate points of superpoints under the threshold (frames labelled this run)

    def add(self, gt: np.ndarray, original: np.ndarray | None, result: FrameResult, in_image: np.ndarray,
            instance: np.ndarray | None = None) -> None:
        """Coverage counts the labelled targets inside the camera image (the only points that can get labels)."""
        from pc3d.metrics import semantic_confusion

        target = (gt != IGNORE) & in_image
        if self.setting == "gzs" and original is not None:
            target &= original == IGNORE  # the points without a seen label
        self.targets += int(target.sum())
        hit = result.pseudo & (gt != IGNORE)
        self.confusion += semantic_confusion(result.labels[hit], gt[hit], NUM_CLASSES)
        self.unscored += int((result.pseudo & (gt == IGNORE)).sum())
        self.rejected += int(result.stats.get("rejected_points", 0))
        if instance is not None:
            truth, voted = instance_votes(result.labels, gt, instance, result.pseudo)
            np.add.at(self.instance_confusion, (truth, voted), 1)

    def summary(self) -> dict[str, Any]:
        from pc3d.metrics import semseg_metrics

        labelled = int(self.confusion.sum())
        counts = {"unscored_points": self.unscored, "rejected_points": self.rejected}
        if not labelled:
            return {"pseudo_points": 0, "coverage": 0.0, **counts}
        metrics = semseg_metrics(self.confusion, [IGNORE], "scannet")
        per_class = {CLASS_NAMES[c]: round(float(v), 4) for c, v in enumerate(metrics["per_class_acc"])
                     if v is not None}
        out = {"accuracy": float(np.trace(self.confusion) / labelled), "miou": metrics["miou"],
               "pseudo_points": labelled, "target_points": self.targets,
               "coverage": labelled / max(self.targets, 1), "per_class_accuracy": per_class, **counts,
               # share of all pseudo-labelled points that the accuracy above cannot judge
               "unscored_share": self.unscored / max(labelled + self.unscored, 1)}
        instances = int(self.instance_confusion.sum())
        out["instances"] = instances
        if instances:
            out["instance_accuracy"] = float(np.trace(self.instance_confusion) / instances)
            rows = self.instance_confusion.sum(axis=1)
            out["per_class_instance_accuracy"] = {CLASS_NAMES[c]: round(float(self.instance_confusion[c, c] / rows[c]),
                                                                        4) for c in range(NUM_CLASSES) if rows[c]}
        return out


def pseudolabel(config: Any, device: torch.device | None = None, out: Path | None = None) -> dict[str, Any]:
    """Run Affinity3D over the configured frames into `out` (default `output_root`); returns the summary
    (also written to OUT/summary.json)."""
    device = device or resolve_device(config.run.device)
    out = Path(out) if out is not None else output_root(config)
    out.mkdir(parents=True, exist_ok=True)
    dataset = dataset_for(config, out)
    source = build_source(config, device)
    labeler = PseudoLabeler(config, source)
    accuracy = Accuracy(config.data.setting)
    done = skipped = 0
    tic = time.perf_counter()

    def emit(finished: list[tuple[dict[str, Any], FrameResult]]) -> None:
        nonlocal done
        for sample, result in finished:  # frames leave the queue in order, each once
            write_frame(frame_paths(out, sample["sequence"], sample["frame"]), result)
            if "gt" in sample:
                accuracy.add(sample["gt"], sample.get("labels"), result, _in_image(sample), sample.get("instance"))
            done += 1

    # frames are written in order as they leave the queue, and the queue only ever holds unwritten frames, so a
    # resumed run skips the written frames at the head of each sequence and rebuilds the same queue from the rest
    resuming: set[str] = set()
    for i in con.track(range(len(dataset)), total=len(dataset), description="pseudo-labels"):
        ref = dataset.frames[i]
        paths = frame_paths(out, ref.sequence, ref.frame)
        if i == 0 or dataset.frames[i - 1].sequence != ref.sequence:
            resuming.add(ref.sequence)
        if ref.sequence in resuming and config.resume and all(p.is_file() for p in paths.values()):
            skipped += 1
            if dataset.has_labels(i):  # finished frames still count in the summary
                _add_finished(accuracy, dataset, i, paths)
            continue
        resuming.discard(ref.sequence)
        emit(labeler.push(dataset[i]))
    emit(labeler.flush())
    seconds = time.perf_counter() - tic
    summary: dict[str, Any] = {
        "out": str(out), "frames": len(dataset), "labelled": done, "skipped": skipped,
        "setting": config.data.setting, "features": config.features.source, "labeler": config.labeler,
        "affinity": config.affinity.enabled, "visibility": config.visibility.enabled,
        "threshold": labeler.threshold, "min_superpoint_points": config.superpoints.min_points,
        "candidate_classes": [CLASS_NAMES[c] for c in labeler.classes],
        "seconds": round(seconds, 3), "feature_seconds": round(getattr(source, "seconds", 0.0), 3),
    }
    if done:
        summary["frames_per_s"] = done / max(seconds, 1e-9)
    summary["pseudo_label"] = accuracy.summary()
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def score_pseudo_labels(config: Any, dataset: SemanticKITTI) -> dict[str, Any]:
    """Pseudo-label accuracy of `config` on every frame of `dataset` in memory (no files): for ablation studies
    that share one set of frames. Frames run in order, so the queue fills as in `pseudolabel`."""
    labeler = PseudoLabeler(config, build_source(config, resolve_device(config.run.device)))
    accuracy = Accuracy(config.data.setting)
    for i in range(len(dataset)):
        sample = dataset[i]
        if "gt" not in sample:
            raise InputError(f"{dataset.label_path(dataset.frames[i])}: scoring pseudo-labels needs ground truth")
        for done, result in labeler.push(sample):
            accuracy.add(done["gt"], done.get("labels"), result, _in_image(done), done.get("instance"))
    for done, result in labeler.flush():
        accuracy.add(done["gt"], done.get("labels"), result, _in_image(done), done.get("instance"))
    return accuracy.summary()


def _add_finished(accuracy: Accuracy, dataset: SemanticKITTI, index: int, paths: dict[str, Path]) -> None:
    """Score a frame written by an earlier run (pseudo = labelled points that had no seen label)."""
    from pc3d.data.readers.semantickitti import map_labels
    from pc3d.io.kitti import read_kitti_bin, read_kitti_label

    ref = dataset.frames[index]
    n = len(read_kitti_bin(dataset.folder(ref.sequence) / "velodyne" / f"{ref.frame}.bin", allow_empty=True).points)
    raw, instance = read_kitti_label(dataset.label_path(ref), num_points=n)
    gt = map_labels(raw)
    written = map_labels(read_kitti_label(paths["labels"], num_points=n)[0])
    original = None
    if accuracy.setting == "gzs":
        from pc3d.data.readers.semantickitti import zero_shot_labels

        original = zero_shot_labels(gt, dataset.unseen)
    pseudo = (written != IGNORE) & (original == IGNORE if original is not None else True)
    result = FrameResult(written, np.load(paths["visibility"]), np.asarray(pseudo), np.zeros((0, 1)), np.zeros((0, 1)))
    accuracy.add(gt, original, result, _in_image(dataset[index]), instance)


def _in_image(sample: dict[str, Any]) -> np.ndarray:
    mask = np.zeros(len(sample["points"]), dtype=bool)
    mask[sample["fov_index"]] = True
    return mask


def run(request: Any) -> dict[str, Any]:
    """`pc3d pseudolabel affinity3d [--data ROOT] [--out DIR]` entry point: a run folder
    <out>/<name>/<time>/; with `resume` (default) the latest one of the same config continues."""
    from pc3d.runs import RunDir

    config = request.config
    torch.manual_seed(config.run.seed)
    run_dir = RunDir.continue_or_create(config.run.out, config.run.name or "affinity3d",
                                        config.model_dump(mode="json"), config.resume)
    return {"run_dir": str(run_dir.path), **pseudolabel(config, out=run_dir.path)}
