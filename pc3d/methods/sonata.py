"""Sonata-style teacher-student SSL on scenes (Wu et al., CVPR 2025), with DOS's Zipfian prototype prior.

Per step:
1. each scene gives G global crops (40-100 %) and L local crops (10-40 %), each augmented (rotation, tilt,
   flip, scale, jitter, colour) with the linear part of the augmentation tracked per view;
2. the EMA teacher encodes the unmasked global views; its up-cast features go through prototype heads;
3. the student encodes the global views with grid patches masked (patch size and ratio on a warm-up
   schedule; mask token for the features, jittered coordinates) and the local views unmasked;
4. student points find their teacher point by 1-NN in the original (pre-augmentation) coordinates;
5. targets are Sinkhorn-Knopp assignments of the teacher scores whose prototype marginals follow a
   Zipf law r_k ~ rank(k)^-alpha (alpha = 0: uniform, Sonata);
6. cross-entropy of the student's prototype softmax against the targets: mask (same view), roll-mask
   (other global view), unmask (local -> principal global view);
7. teacher <- EMA(student), momentum on a cosine schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from pc3d.engine.ema import EMA, momentum_schedule
from pc3d.engine.method import Method, StepState
from pc3d.errors import InputError
from pc3d.models.ptv3 import Point, PTv3Encoder, expected_upcast_channels, up_cast
from pc3d.ops.grid import grid_sample
from pc3d.ops.neighbors import knn

# ----------------------------------------------------------------------------- scene data


class ConcatScenes:
    """Several scene lists read as one (pretraining on more than one dataset)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part][index - int(self.offsets[part])]


def load_scenes(data: Any, seed: int, split: str) -> Any:
    """Scenes of a split from a preset's data section: synthetic rooms, or a ScanNet / ScanNet200 / S3DIS /
    SemanticKITTI / nuScenes folder, plus the training scenes of `data.also` (pretraining)."""
    extra = getattr(data, "also", ())
    if extra and split == "train":
        first = load_scenes(data.model_copy(update={"also": ()}), seed, split)
        return ConcatScenes([first] + [load_scenes(data.model_copy(update={"dataset": s.dataset, "root": s.root,
                                                                           "source": "folder", "also": ()}),
                                                   seed, split) for s in extra])
    if data.source == "synthetic":
        from pc3d.data.readers.scannet import SyntheticScanNet

        if data.dataset != "scannet":
            raise InputError(f"data.source synthetic makes ScanNet-like rooms; set data.dataset to scannet "
                             f"(got {data.dataset})")
        if split == "train":
            return SyntheticScanNet(data.synthetic_count, seed, data.num_points)
        return SyntheticScanNet(data.synthetic_val_count, seed, data.num_points, index_offset=100_000)
    if data.dataset in ("scannet", "scannet200"):
        from pc3d.data.readers.scannet import ScanNetPointcept

        return ScanNetPointcept(data.root, split, labels="segment200" if data.dataset == "scannet200" else "segment20")
    if data.dataset == "nuscenes":
        from pc3d.data.readers.nuscenes import NuScenesScenes

        mini = data.nuscenes_version.endswith("mini")
        return NuScenesScenes(data.root, ("mini_" if mini else "") + ("train" if split == "train" else "val"),
                              data.nuscenes_version, data.nuscenes_sweeps, data.max_frames)
    if data.dataset == "s3dis":
        from pc3d.data.readers.s3dis import S3DISPointcept

        return S3DISPointcept(data.root, split)
    return KittiScenes(data, split)


# SemanticKITTI train ids 1..8 are the "things" (vehicles, people, riders); scene labels are train id - 1
KITTI_THING_CLASSES: tuple[int, ...] = tuple(range(8))
KITTI_STUFF_CLASSES: tuple[int, ...] = tuple(range(8, 19))


class KittiScenes:
    """SemanticKITTI scans in the scene-sample form: remission as a grey colour, no normals (zeros),
    segment = train id - 1 (unlabelled -> -1), instance only on thing points."""

    def __init__(self, data: Any, split: str) -> None:
        from pc3d.data.readers.semantickitti import SemanticKITTI

        sequences = data.train_sequences if split == "train" else data.val_sequences
        self.reader = SemanticKITTI(data.root, sequences, "full", max_frames=data.max_frames)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.reader[index]
        points = sample["points"].astype(np.float32)
        segment = sample["labels"].astype(np.int64) - 1
        instance = np.where(np.isin(segment, KITTI_THING_CLASSES) & (sample["instance"] > 0),
                            sample["instance"].astype(np.int64), -1)
        grey = np.repeat(np.clip(sample["intensity"], 0, 1)[:, None] * 255.0, 3, axis=1).astype(np.float32)
        return {"coord": points, "color": grey, "normal": np.zeros_like(points), "segment": segment,
                "instance": instance, "name": f"{sample['sequence']}/{sample['frame']}"}


def view_rules(model: Any | None = None) -> Any:
    """The input rules a pretraining run builds its views with (`InputRules` of pc3d.methods.scene_probe): the
    model section's colour scale, centring arithmetic and input channels, by default Sonata's (colour / 255,
    float32 CenterShift, coord + colour + normal). The run's saved config records them, so a probe of its
    checkpoint feeds exactly these inputs."""
    from pc3d.models.ptv3_inputs import InputRules

    if model is None:
        return InputRules()
    return InputRules(color_norm=model.color_norm or "unit", center_precision=model.center_precision or "float32",
                      feat_keys=model.input_feat_keys())


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def smoothed_noise(nodes: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A random 3-vector per grid node, (nodes..., 3): N(0, 1), then a width-3 box blur (zero padding)
    applied twice along each axis, as Pointcept's ElasticDistortion smooths its noise."""
    from scipy.ndimage import uniform_filter1d  # scipy only loads when a view is distorted

    noise = rng.standard_normal((*nodes, 3)).astype(np.float32)
    for _ in range(2):
        for axis in range(3):
            noise = uniform_filter1d(noise, size=3, axis=axis, mode="constant", cval=0.0)
    return noise


def elastic_displacement(coord: np.ndarray, granularity: float, magnitude: float,
                         rng: np.random.Generator) -> np.ndarray:
    """Displacement (N,3) of an elastic distortion: smoothed noise on nodes `granularity` apart (one node of
    margin below the points, two above), trilinearly interpolated at the points, times `magnitude`.

    Trilinear interpolation is a convex combination of 8 node values, so |displacement| <= magnitude x the
    largest node value, and points in the same cell move nearly alike (a smooth, non-rigid warp)."""
    from scipy.interpolate import RegularGridInterpolator

    low = coord.min(0)
    nodes = ((coord - low).max(0) // granularity).astype(int) + 3
    field = smoothed_noise((int(nodes[0]), int(nodes[1]), int(nodes[2])), rng)
    axes = [low[k] - granularity + granularity * np.arange(nodes[k]) for k in range(3)]
    interp = RegularGridInterpolator(axes, field, method="linear", bounds_error=False, fill_value=0.0)
    return interp(coord) * magnitude


def elastic_distortion(coord: np.ndarray, params: tuple[tuple[float, float], ...],
                       rng: np.random.Generator) -> np.ndarray:
    """Pointcept's ElasticDistortion: the (granularity, magnitude) warps applied in turn, each on the
    coordinates the previous one produced."""
    out = coord.astype(np.float64, copy=True)
    for granularity, magnitude in params:
        out += elastic_displacement(out, granularity, magnitude, rng)
    return out


def auto_contrast(color: np.ndarray, blend: float) -> np.ndarray:
    """Blend colours (0..255) with their per-channel min-max stretch to [0, 255] (ChromaticAutoContrast);
    a constant channel is left as it is."""
    lo, hi = color.min(0, keepdims=True), color.max(0, keepdims=True)
    span = hi - lo
    stretched = np.where(span > 0, (color - lo) * 255.0 / np.where(span > 0, span, 1.0), color)
    return (1.0 - blend) * color + blend * stretched


@dataclass
class ViewAugment:
    """Sonata's view augmentations; the linear part (rotation, tilt, flip, scale) is returned per view.

    Defaults follow Pointcept's configs/sonata/pretrain-sonata-v1m1-0-base.py: ElasticDistortion (p 0.95,
    (granularity, magnitude) = (0.2, 0.4) then (0.8, 1.6)) and ChromaticTranslation (p 0.95, ratio 0.05) are
    applied; ChromaticAutoContrast (p 0.2, random blend) and ChromaticJitter (p 0.95, std 0.05) are commented
    out there, so they are off unless switched on."""

    rotate: float = math.pi
    tilt: float = math.pi / 64
    rotate_p: float = 0.8
    scale: tuple[float, float] = (0.9, 1.1)
    flip: float = 0.5
    jitter: float = 0.005
    jitter_clip: float = 0.02
    elastic: bool = True
    elastic_p: float = 0.95
    elastic_params: tuple[tuple[float, float], ...] = ((0.2, 0.4), (0.8, 1.6))
    auto_contrast: bool = False
    auto_contrast_p: float = 0.2
    auto_contrast_blend: float | None = None  # None: U(0, 1) per application
    color_translation: bool = True
    color_translation_p: float = 0.95
    color_translation_ratio: float = 0.05
    color_jitter: bool = False
    color_jitter_p: float = 0.95
    color_jitter_std: float = 0.05
    shared_global_color: bool = True

    @classmethod
    def from_config(cls, config: Any | None) -> ViewAugment:
        """From a preset's `data.augment` section (same field names); None gives the defaults."""
        if config is None:
            return cls()
        values = config.model_dump()
        values["elastic_params"] = tuple(tuple(pair) for pair in values["elastic_params"])
        return cls(**values)

    def matrix(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(A, R): x_aug = A x; R is the rotation-and-flip part (for normals)."""
        # Pointcept's RandomRotate z / x / y, each applied with p = rotate_p; RandomFlip flips x and y independently
        angles = [rng.uniform(-limit, limit) if rng.random() < self.rotate_p else 0.0
                  for limit in (self.rotate, self.tilt, self.tilt)]
        rot = _rotation(1, angles[2]) @ _rotation(0, angles[1]) @ _rotation(2, angles[0])
        flip = np.diag([-1.0 if rng.random() < self.flip else 1.0, -1.0 if rng.random() < self.flip else 1.0, 1.0])
        orient = flip @ rot
        return rng.uniform(*self.scale) * orient, orient

    def distort(self, xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The non-rigid part on top of x_aug = A x: clipped per-point jitter, then (p) elastic distortion."""
        xyz = xyz + np.clip(rng.normal(0, self.jitter, xyz.shape), -self.jitter_clip, self.jitter_clip)
        if self.elastic and self.elastic_params and rng.random() < self.elastic_p:
            xyz = elastic_distortion(xyz, self.elastic_params, rng)
        return xyz

    def colors(self, color: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Colour augmentations on 0..255 values in Sonata's order: auto-contrast, translation, jitter."""
        color = color.astype(np.float64, copy=True)
        if self.auto_contrast and rng.random() < self.auto_contrast_p:
            blend = rng.random() if self.auto_contrast_blend is None else self.auto_contrast_blend
            color = auto_contrast(color, blend)
        if self.color_translation and rng.random() < self.color_translation_p:
            shift = rng.uniform(-1.0, 1.0, (1, 3)) * self.color_translation_ratio * 255.0
            color = np.clip(color + shift, 0, 255)
        if self.color_jitter and rng.random() < self.color_jitter_p:
            color = np.clip(color + rng.normal(0.0, self.color_jitter_std * 255.0, color.shape), 0, 255)
        return color


def make_view(sample: dict[str, Any], scale: tuple[float, float], rng: np.random.Generator, grid_size: float,
              max_points: int, augment: ViewAugment, augment_color: bool = True, rules: Any = None
              ) -> dict[str, Tensor]:
    """A crop of the nearest U[scale] share of points around a random point, augmented and grid-sampled.

    `origin` keeps the pre-augmentation coordinates (cross-view matching) and `transform` the linear part A
    only. Jitter and elastic distortion come after A as non-rigid perturbations that no matrix undoes, so
    A^-1 maps a view's vectors (PointINS offsets) back only up to the warp's local stretch: at Sonata's
    (granularity, magnitude) pairs both have magnitude / granularity = 2 and the smoothed noise changes by
    ~0.05 per node, so the warp's Jacobian departs from I by ~10 % (and moves points by ~0.1 m rms per
    axis). `augment_color=False`: colours as given (global views whose colours were augmented once per scene).
    `rules`: the input rules (`view_rules`; None = Sonata's)."""
    from pc3d.models.ptv3_inputs import center_shift, input_features

    coord = sample["coord"]
    n = coord.shape[0]
    centre = coord[rng.integers(n)]
    keep = max(int(math.ceil(rng.uniform(*scale) * n)), 1)
    idx = np.argsort(((coord - centre) ** 2).sum(1), kind="stable")[:keep]
    origin = coord[idx].astype(np.float64)
    matrix, orient = augment.matrix(rng)
    rules = view_rules() if rules is None else rules
    # the probe's CenterShift (x, y on the crop's box centre, floor at z = 0) in the rule's arithmetic, then the
    # linear part: an unaugmented view of a whole scene is exactly the probe's input (tests/test_sonata_inputs.py)
    centred = center_shift(coord[idx], rules.center_precision).astype(np.float64)
    xyz = augment.distort(centred @ matrix.T, rng)
    color = sample["color"][idx].astype(np.float64)
    if augment_color:
        color = augment.colors(color, rng)
    normal = sample["normal"][idx].astype(np.float64) @ orient.T
    coord_t = torch.from_numpy(xyz).float()
    cells = grid_sample(coord_t, grid_size)
    chosen = cells.unique_index
    if chosen.numel() > max_points:
        chosen = chosen[torch.from_numpy(rng.permutation(chosen.numel())[:max_points])]
    feat = input_features(xyz.astype(np.float32), color, normal, rules)
    return {"coord": coord_t[chosen], "origin": torch.from_numpy(origin).float()[chosen],
            "grid": cells.grid_coord[chosen], "feat": torch.from_numpy(feat)[chosen],
            "transform": torch.from_numpy(matrix).float()}


class SceneViews(Dataset):
    """Each item: G global and L local augmented views of one scene (random per access)."""

    def __init__(self, scenes: Any, data: Any, grid_size: float, augment: ViewAugment | None = None,
                 rules: Any = None) -> None:
        self.scenes, self.data, self.grid_size = scenes, data, grid_size
        self.augment = augment or ViewAugment.from_config(getattr(data, "augment", None))
        self.rules = view_rules() if rules is None else rules

    def __len__(self) -> int:
        return len(self.scenes) * self.data.loop

    def __getitem__(self, index: int) -> dict[str, list[dict[str, Tensor]]]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))  # follows the trainer's torch seed
        sample = self.scenes[index % len(self.scenes)]
        d, shared = self.data, self.augment.shared_global_color
        # Sonata's global_shared_transform: one colour draw for the scene, seen by every global view
        scene = {**sample, "color": self.augment.colors(sample["color"], rng)} if shared else sample
        return {"global": [make_view(scene, d.global_scale, rng, self.grid_size, d.max_view_points, self.augment,
                                     augment_color=not shared, rules=self.rules) for _ in range(d.global_views)],
                "local": [make_view(sample, d.local_scale, rng, self.grid_size, d.max_view_points, self.augment,
                                    rules=self.rules) for _ in range(d.local_views)]}


def collate_views(samples: list[dict[str, list[dict[str, Tensor]]]]) -> dict[str, Tensor]:
    """Concatenate views: `<kind>_batch` is the view id scene * views_per_scene + view."""
    out: dict[str, Tensor] = {}
    for kind in ("global", "local"):
        views = [v for sample in samples for v in sample[kind]]
        if not views:
            continue
        for key in ("coord", "origin", "grid", "feat"):
            out[f"{kind}_{key}"] = torch.cat([v[key] for v in views])
        out[f"{kind}_transform"] = torch.stack([v["transform"] for v in views])
        out[f"{kind}_batch"] = torch.cat([torch.full((v["coord"].shape[0],), i, dtype=torch.long)
                                          for i, v in enumerate(views)])
        out[f"{kind}_views"] = torch.tensor(len(samples[0][kind]))
    return out


def views_point(batch: dict[str, Tensor], kind: str, feat: Tensor | None = None) -> Point:
    return Point(coord=batch[f"{kind}_coord"], grid_coord=batch[f"{kind}_grid"], batch=batch[f"{kind}_batch"],
                 feat=batch[f"{kind}_feat"] if feat is None else feat, extras={"origin": batch[f"{kind}_origin"]})


# ----------------------------------------------------------------------------- schedules and masking


def warmup_schedule(start: float, end: float, warmup: float, progress: float) -> float:
    """Linear from `start` to `end` over the first `warmup` share of training, then constant."""
    if warmup <= 0 or progress >= warmup:
        return end
    return start + (end - start) * progress / warmup


def patch_mask(coord: Tensor, batch: Tensor, size: float, ratio: float, generator: torch.Generator | None = None
               ) -> Tensor:
    """Boolean mask of the points inside a random `ratio` share of the grid patches of edge `size` (per view)."""
    cells = grid_sample(coord.detach().float(), size, batch)
    scores = torch.rand(cells.num_cells, generator=generator, device="cpu").to(coord.device)
    # rank the cells of each view by score; the lowest round(ratio * cells) of that view are masked
    counts = torch.bincount(cells.cell_batch)
    order = torch.argsort(scores + cells.cell_batch.to(scores.dtype) * 2.0)  # groups views, random inside
    first = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    rank -= first[cells.cell_batch]
    masked = rank < torch.round(counts[cells.cell_batch].to(torch.float64) * ratio).long()
    return masked[cells.inverse]


# ----------------------------------------------------------------------------- heads and targets


class PrototypeHead(nn.Module):
    """Sonata's OnlineCluster: MLP -> L2-normalise -> cosine similarity to unit-norm prototypes (g fixed 1)."""

    def __init__(self, in_channels: int, hidden: int, bottleneck: int, prototypes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.empty(prototypes, bottleneck))
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, feat: Tensor) -> Tensor:
        z = F.normalize(self.mlp(feat), dim=-1)
        return z @ F.normalize(self.prototypes, dim=-1).t()


def zipf_marginals(k: int, alpha: float, device: torch.device | None = None) -> Tensor:
    """r_rank ~ rank^-alpha over ranks 1..k, summing to 1 (alpha = 0: uniform)."""
    r = torch.arange(1, k + 1, dtype=torch.float64, device=device).pow(-alpha)
    return r / r.sum()


@torch.no_grad()
def sinkhorn(scores: Tensor, temperature: float, iters: int, alpha: float = 0.0) -> Tensor:
    """Soft assignments (n,K), each row summing to 1, whose prototype totals approach n * r.

    Q = exp(s / T)^T is scaled alternately so prototype k holds mass r_k and each point 1/n. With a Zipf
    prior the marginal a prototype gets follows its rank in the teacher's current total mass (the most
    used prototype gets the largest share), so the prior does not depend on prototype numbering."""
    logits = scores.detach().double() / temperature
    q = torch.exp(logits - logits.max()).t()  # (K,n); a global shift cancels in the normalisation
    q /= q.sum()
    k, n = q.shape
    if alpha > 0:
        rank = torch.argsort(torch.argsort(q.sum(1), descending=True))
        r = zipf_marginals(k, alpha, q.device)[rank]
    else:
        r = torch.full((k,), 1.0 / k, dtype=q.dtype, device=q.device)
    for _ in range(iters):
        q *= (r / q.sum(1).clamp_min(1e-300)).unsqueeze(1)
        q /= (q.sum(0, keepdim=True) * n).clamp_min(1e-300)
    return (q * n).t().to(scores.dtype)


def scene_mean(values: Tensor, scene: Tensor) -> Tensor:
    """Mean per scene, then over the scenes present (Sonata averages losses this way)."""
    ids, inverse = torch.unique(scene, return_inverse=True)
    sums = torch.zeros(ids.numel(), dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    counts = torch.bincount(inverse, minlength=ids.numel()).to(values.dtype)
    return (sums / counts).mean()


def match_views(student: Point, teacher: Point, pairs: Tensor, max_r: float) -> tuple[Tensor, Tensor]:
    """1-NN in original coordinates from each student view v to teacher view pairs[v]; (student, teacher)
    indices of the matches closer than max_r."""
    s_idx, t_idx = [], []
    s_origin, t_origin = student.extras["origin"], teacher.extras["origin"]
    for view in range(pairs.numel()):
        s_sel = torch.nonzero(student.batch == view).squeeze(1)
        t_sel = torch.nonzero(teacher.batch == int(pairs[view])).squeeze(1)
        if s_sel.numel() == 0 or t_sel.numel() == 0:
            continue
        dist, nn_idx = knn(s_origin[s_sel].float(), t_origin[t_sel].float(), 1)
        close = dist[:, 0] < max_r
        s_idx.append(s_sel[close])
        t_idx.append(t_sel[nn_idx[close, 0]])
    if not s_idx:
        empty = torch.empty(0, dtype=torch.long, device=student.batch.device)
        return empty, empty
    return torch.cat(s_idx), torch.cat(t_idx)


def observable_pair(pair: tuple[Tensor, Tensor, str], observed: Tensor) -> tuple[Tensor, Tensor, str]:
    """The matches whose student point was observed (DOS distils soft-maps only where the student saw)."""
    s_idx, t_idx, kind = pair
    keep = observed[s_idx]
    return s_idx[keep], t_idx[keep], kind


def observable_targets(scores: Tensor, targets: list[Tensor], temperature: float, loss: Any) -> Tensor:
    """Sinkhorn targets balanced over the teacher points that some observed student point distils from;
    the other rows stay 0 (no loss reads them), so the teacher's scores elsewhere cannot leak in."""
    q = torch.zeros_like(scores)
    used = torch.unique(torch.cat(targets)) if targets else scores.new_empty(0, dtype=torch.long)
    if used.numel():
        q[used] = sinkhorn(scores[used], temperature, loss.sinkhorn_iters, loss.zipf_alpha)
    return q


# ----------------------------------------------------------------------------- networks


def build_encoder(model: Any, teacher: bool = False) -> PTv3Encoder:
    return PTv3Encoder(in_channels=model.in_channels, depths=tuple(model.depths), channels=tuple(model.channels),
                       heads=tuple(model.heads), patch_size=model.patch_size, mlp_ratio=model.mlp_ratio,
                       drop_path=0.0 if teacher else model.drop_path, orders=tuple(model.orders),
                       shuffle_orders=model.shuffle_orders, stem=model.stem, down_norm=model.down_norm,
                       layer_scale=model.layer_scale)


class OffsetHead(nn.Module):
    """PointGroup's bias head: Linear(C,C) + BN(eps 1e-3, momentum 0.01) + ReLU + Linear(C,3)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, channels), nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01),
                                 nn.ReLU(), nn.Linear(channels, 3))

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat)


class SSLNet(nn.Module):
    """Encoder + the two prototype heads (+ the PointINS offset head); student and teacher share this shape."""

    def __init__(self, config: Any, teacher: bool = False, with_offset: bool = False) -> None:
        super().__init__()
        self.levels = config.head.up_cast_levels
        if self.levels >= len(config.model.channels):
            raise InputError(f"head.up_cast_levels {self.levels} needs more than {len(config.model.channels)} "
                             "encoder stages")
        self.encoder = build_encoder(config.model, teacher)
        width = expected_upcast_channels(tuple(config.model.channels), self.levels)
        h = config.head
        self.mask_head = PrototypeHead(width, h.hidden, h.bottleneck, h.prototypes)
        self.unmask_head = PrototypeHead(width, h.hidden, h.bottleneck, h.prototypes)
        self.offset_head = OffsetHead(width) if with_offset else None

    def encode(self, point: Point, mask: Tensor | None = None) -> Point:
        """Up-cast features at the heads' level (coarser than the input by `levels` poolings from the top)."""
        return up_cast(self.encoder(point, mask), self.levels)


# ----------------------------------------------------------------------------- the method


@dataclass
class SSLContext:
    """What one Sonata step computed, for methods that add terms (PointINS)."""

    teacher: Point  # teacher's head-level points of the global views
    student_global: Point
    student_local: Point | None
    pairs: dict[str, tuple[Tensor, Tensor, str]]  # loss name -> (student idx, teacher idx, student kind)
    global_views: int
    local_views: int


class Sonata(Method):
    with_offset = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.student = SSLNet(config, with_offset=self.with_offset)
        self.teacher = SSLNet(config, teacher=True, with_offset=self.with_offset)
        self.teacher.load_state_dict(self.student.state_dict())
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self._ema: EMA | None = None  # made lazily: device moves replace buffers the EMA would hold

    # -- schedules

    def schedules(self, progress: float) -> dict[str, float]:
        loss = self.config.loss
        return {"mask_size": warmup_schedule(*loss.mask_size, loss.warmup, progress),
                "mask_ratio": warmup_schedule(*loss.mask_ratio, loss.warmup, progress),
                "teacher_temp": warmup_schedule(*loss.teacher_temp, loss.warmup, progress)}

    # -- the step

    def ssl_step(self, batch: dict[str, Tensor], state: StepState) -> tuple[dict[str, Tensor], SSLContext]:
        loss_cfg, sched = self.config.loss, self.schedules(state.progress)
        g_views = int(batch["global_views"])
        l_views = int(batch["local_views"]) if "local_batch" in batch else 0
        global_point = views_point(batch, "global")
        self.teacher.eval()
        with torch.no_grad():
            teacher = self.teacher.encode(global_point)
            t_mask = self.teacher.mask_head(teacher.feat).float()
            t_unmask = self.teacher.unmask_head(teacher.feat).float()
        mask = patch_mask(batch["global_coord"], batch["global_batch"], sched["mask_size"], sched["mask_ratio"])
        feat = batch["global_feat"].clone()
        noise = (torch.randn_like(feat[:, :3]) * loss_cfg.mask_jitter).clamp(max=2 * loss_cfg.mask_jitter)
        feat[:, :3] = torch.where(mask.unsqueeze(1), feat[:, :3] + noise, feat[:, :3])
        student_point = views_point(batch, "global", feat)
        # pooled by mean like the origin: the masked share of each head-level point (DOS's observable points,
        # and PointINS's offset loss, read it)
        student_point.extras["masked"] = mask.to(feat.dtype)
        student_global = self.student.encode(student_point, mask)
        s_mask = self.student.mask_head(student_global.feat).float()
        n_global = int(batch["global_transform"].shape[0])
        view_ids = torch.arange(n_global, device=feat.device)
        scene_first = view_ids - view_ids % g_views
        pairs = {"mask": (*match_views(student_global, teacher, view_ids, loss_cfg.match_max_r), "global")}
        if g_views > 1:
            other = scene_first + (view_ids % g_views + 1) % g_views
            pairs["roll_mask"] = (*match_views(student_global, teacher, other, loss_cfg.match_max_r), "global")
        student_local = None
        if l_views:
            student_local = self.student.encode(views_point(batch, "local"))
            s_unmask = self.student.unmask_head(student_local.feat).float()
            local_ids = torch.arange(int(batch["local_transform"].shape[0]), device=feat.device)
            principal = (local_ids // l_views) * g_views
            pairs["unmask"] = (*match_views(student_local, teacher, principal, loss_cfg.match_max_r), "local")
        temp = sched["teacher_temp"]
        observed = None
        if loss_cfg.observable_only:
            observed = student_global.extras["masked"] == 0  # no masked input point inside
            losses = {name: observable_pair(pair, observed) for name, pair in pairs.items() if pair[2] == "global"}
            q_mask = observable_targets(t_mask, [pair[1] for pair in losses.values()], temp, loss_cfg)
            terms_pairs = {**pairs, **losses}
        else:
            q_mask = sinkhorn(t_mask, temp, loss_cfg.sinkhorn_iters, loss_cfg.zipf_alpha)
            terms_pairs = pairs
        q_unmask = sinkhorn(t_unmask, temp, loss_cfg.sinkhorn_iters, loss_cfg.zipf_alpha) if l_views else None
        terms: dict[str, Tensor] = {}
        weights = dict(zip(("mask", "roll_mask", "unmask"), loss_cfg.weights, strict=True))
        for name, (s_idx, t_idx, kind) in terms_pairs.items():
            scores = s_mask if kind == "global" else s_unmask
            target = q_mask if kind == "global" else q_unmask
            if s_idx.numel() == 0:
                terms[name] = scores.sum() * 0.0
                continue
            log_p = F.log_softmax(scores[s_idx] / loss_cfg.student_temp, dim=-1)
            ce = -(target[t_idx] * log_p).sum(-1)
            views_per_scene = g_views if kind == "global" else l_views
            point = student_global if kind == "global" else student_local
            terms[name] = weights[name] * scene_mean(ce, point.batch[s_idx] // views_per_scene)
        terms.update({"metric/teacher_temp": torch.tensor(temp), "metric/mask_ratio": torch.tensor(
            sched["mask_ratio"]), "metric/mask_size": torch.tensor(sched["mask_size"])})
        if observed is not None:
            terms["metric/observed_share"] = observed.float().mean()
        context = SSLContext(teacher, student_global, student_local, pairs, g_views, l_views)
        return terms, context

    def training_step(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        return self.ssl_step(batch, state)[0]

    def after_optimizer_step(self, state: StepState) -> None:
        if self._ema is None:
            self._ema = EMA(self.student, self.teacher)
        train = self.config.train
        self._ema.update(momentum_schedule(train.ema_momentum, train.ema_momentum_final, state.progress))

    def train(self, mode: bool = True) -> Sonata:
        super().train(mode)
        self.teacher.eval()  # the teacher never drops paths nor updates BN statistics itself
        return self

    # -- optimisation

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Layer-wise lr decay: encoder block j of B gets decay^(B - j); the embedding decay^(B+1); heads 1."""
        decay = self.config.loss.layer_decay
        depths = list(self.config.model.depths)
        total = sum(depths)
        first_block = [sum(depths[:s]) for s in range(len(depths))]

        def layer(name: str) -> int:
            parts = name.split(".")
            if parts[1] != "encoder":
                return total + 1
            if parts[2] in ("embedding", "mask_token"):
                return 0
            if parts[2] == "pools":
                return first_block[int(parts[3]) + 1] + 1
            return first_block[int(parts[3])] + int(parts[4]) + 1

        groups: dict[tuple[int, bool], dict] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim < 2 or name.endswith(".bias") or "token" in name
            key = (layer(name), no_decay)
            if key not in groups:
                groups[key] = {"params": [], "param_names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                               "lr_scale": decay ** (total + 1 - key[0])}
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(name)
        return [groups[k] for k in sorted(groups)]


def build_sets(config: Any) -> tuple[SceneViews, None]:
    scenes = load_scenes(config.data, config.run.seed, "train")
    return SceneViews(scenes, config.data, config.model.grid_size, rules=view_rules(config.model)), None


def build(config: Any, rank: int) -> Any:
    from pc3d.engine.trainer import TrainingSetup

    train_set, _ = build_sets(config)
    return TrainingSetup(method=Sonata(config), train_set=train_set, collate_fn=collate_views)


def run(request: Any) -> dict:
    from pc3d.engine.trainer import fit

    return fit(request, build)
