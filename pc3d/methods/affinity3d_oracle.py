"""A CLIP-like stand-in for CLIP in Affinity3D studies (no network, no download), whose features do not carry the
ground truth beyond what an image encoder would see.

CLIP's text embeddings of class names are far from orthogonal (mean pairwise cosine ~0.7-0.8 for driving-scene
names, higher for car / truck / bus or road / parking / sidewalk), and its image embeddings of crops are noisy,
context-laden and sometimes closer to a similar class than to their own. The oracle reproduces that geometry:

- class prototypes p_c (unit, `dim`-d) with a fixed pairwise cosine table (`class_similarity`): 0.70 between
  unrelated classes, 0.80-0.90 within families of similar classes; the text embeddings are the prototypes;
- a crop shows the class the camera sees most of in its box (the majority of a z-buffered render of the frame's
  labelled points, so a pole's crop may show the building behind it); its feature is
  F = normalise(gap g + p + n), where p is that class's prototype, moved toward a similar class c' (drawn with
  probability proportional to exp(20 cos(p_c, p_c'))) with probability `confusion`, g a unit "modality gap"
  direction orthogonal to every prototype (it puts image-image cosines near CLIP's ~0.8 and image-text cosines
  near its ~0.3-0.5 without changing any ranking), and n appearance noise: an offset persistent per object (the
  same car looks alike in consecutive frames: keyed by sequence, class and instance id, never by the crop's
  label histogram) plus a per-crop offset, each part isotropic inside the span of the prototypes (what moves the
  zero-shot label) and outside it (what only image-image similarity sees).

The crop's class histogram enters nowhere but in choosing which prototype the crop shows; affinity therefore
works on the same noisy F the zero-shot labels come from. Deterministic per (seed, sequence, frame).
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pc3d.data.readers.semantickitti import IGNORE, NUM_CLASSES, camera_from_projection
from pc3d.errors import InputError
from pc3d.ops import rasterize_points

# families of classes whose names CLIP embeds close together (SemanticKITTI train ids); a pair's cosine is the
# highest of the families it shares
FAMILIES: tuple[tuple[float, tuple[int, ...]], ...] = (
    (0.80, (1, 2, 3, 4, 5)),  # vehicles
    (0.88, (1, 4, 5)),  # car / truck / other-vehicle (bus, trailer)
    (0.88, (2, 3)),  # bicycle / motorcycle
    (0.85, (6, 7, 8)),  # person / bicyclist / motorcyclist
    (0.88, (7, 8)),  # the two riders
    (0.80, (9, 10, 11, 12, 17)),  # ground
    (0.88, (9, 10, 11)),  # road / parking / sidewalk
    (0.80, (13, 14)),  # building / fence
    (0.82, (15, 16, 17)),  # vegetation / trunk / terrain
    (0.80, (16, 18, 19)),  # trunk / pole / traffic-sign (thin vertical things)
    (0.84, (18, 19)),  # pole / traffic-sign
)
BASE_SIMILARITY = 0.70


def class_similarity() -> np.ndarray:
    """(NUM_CLASSES-1)^2 target cosine table of the class prototypes (train ids 1..19 as rows 0..18)."""
    c = NUM_CLASSES - 1
    table = np.full((c, c), BASE_SIMILARITY)
    for value, members in FAMILIES:
        idx = np.array(members) - 1
        block = table[np.ix_(idx, idx)]
        table[np.ix_(idx, idx)] = np.maximum(block, value)
    np.fill_diagonal(table, 1.0)
    return table


def clip_like_prototypes(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prototypes (NUM_CLASSES, dim) with row 0 = 0 for 'unlabeled', gap (dim,)): rows 1.. have exactly the
    cosines of `class_similarity`, placed in a random (seeded) orthonormal frame; gap is orthogonal to all."""
    gram = class_similarity()
    c = len(gram)
    if dim < c + 1:
        raise InputError(f"oracle dim must be >= {c + 1}, got {dim}")
    values, vectors = np.linalg.eigh(gram)
    if values.min() <= 0:
        raise ValueError("class_similarity is not positive definite")
    coords = vectors * np.sqrt(values)  # (c, c): coords @ coords.T == gram
    basis, _ = np.linalg.qr(np.random.default_rng([seed, 7]).normal(size=(dim, c + 1)))
    protos = np.zeros((NUM_CLASSES, dim))
    protos[1:] = coords @ basis[:, :c].T
    return protos, basis[:, c]


class OracleFeatures:
    """CLIP-like crop features (see the module docstring) behind Affinity3D's FeatureSource protocol."""

    def __init__(self, radius: int = 2, logit_scale: float | None = None, noise: float = 0.0,
                 confusion: float = 0.0, seed: int = 0, dim: int = 512, gap: float = 1.5,
                 instance_share: float = 0.5) -> None:
        self.radius = radius
        self.logit_scale = logit_scale or 100.0  # CLIP's
        self.noise, self.confusion, self.seed, self.gap = noise, confusion, seed, gap
        self.instance_share = instance_share  # share of the noise variance that is persistent per object
        self.protos, self.gap_dir = clip_like_prototypes(dim, seed)
        self.span = np.linalg.qr(self.protos[1:].T)[0]  # (dim, 19) orthonormal basis of the prototypes' span
        self.similarity = class_similarity()
        self.seconds = 0.0
        self._labels: np.ndarray | None = None
        self._instances: np.ndarray | None = None
        self._frame_key = (0, 0)
        self._sequence = 0

    # ------------------------------------------------------------------ protocol

    def class_embeddings(self, classes: list[int]) -> Tensor:
        return torch.tensor(self.protos[classes], dtype=torch.float32)

    def begin_frame(self, sample: dict[str, Any]) -> None:
        if "gt" not in sample:
            raise InputError(f"oracle features need ground-truth labels (sequence {sample['sequence']} frame "
                             f"{sample['frame']} has none)")
        self._sequence = zlib.crc32(str(sample["sequence"]).encode())
        # one stream per frame: the same frame gets the same noise whatever ran before it (resume, ablations)
        self._frame_key = (self._sequence, zlib.crc32(f"{sample['sequence']}/{sample['frame']}".encode()))
        height, width = sample["image"].shape[:2]
        k, extrinsics = camera_from_projection(sample["proj"])
        ahead = np.flatnonzero(sample["points"][:, 0] > 0)
        raster = rasterize_points(torch.from_numpy(sample["points"][ahead].astype(np.float64)), torch.from_numpy(k),
                                  torch.from_numpy(extrinsics), height, width, radius=self.radius)
        index = raster.index.numpy()
        hit = index >= 0
        gt = sample["gt"][ahead]
        instance = sample.get("instance")
        instance = np.zeros(len(sample["points"]), np.int64) if instance is None else np.asarray(instance, np.int64)
        self._labels = np.where(hit, gt[np.maximum(index, 0)], IGNORE)
        self._instances = np.where(hit, instance[ahead][np.maximum(index, 0)], 0)

    def crop_features(self, image: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> Tensor:
        tic = time.perf_counter()
        shown = np.zeros(len(boxes), dtype=np.int64)  # the class each crop shows (0: nothing labelled in view)
        objects = np.zeros(len(boxes), dtype=np.int64)
        for i, (t, l, b, r) in enumerate(boxes):
            labels = self._labels[t:b, l:r].reshape(-1)
            seen = labels[labels != IGNORE]
            if len(seen):
                shown[i] = np.bincount(seen, minlength=NUM_CLASSES).argmax()
                ids = self._instances[t:b, l:r].reshape(-1)[labels == shown[i]]
                objects[i] = np.bincount(ids).argmax() if ids.min() >= 0 else 0
        feats = self._features(shown, objects, np.random.default_rng([self.seed, *self._frame_key, 1]))
        self.seconds += time.perf_counter() - tic
        return torch.tensor(feats, dtype=torch.float32)

    def pixel_features(self, image: np.ndarray, pixels: np.ndarray) -> Tensor:
        shown = self._labels[pixels[:, 0], pixels[:, 1]].astype(np.int64)
        objects = self._instances[pixels[:, 0], pixels[:, 1]].astype(np.int64)
        return torch.tensor(self._features(shown, objects, np.random.default_rng([self.seed, *self._frame_key, 2])),
                            dtype=torch.float32)

    # ------------------------------------------------------------------ the feature model

    def _features(self, shown: np.ndarray, objects: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, dim = len(shown), self.protos.shape[1]
        content = self.protos[shown].copy()
        # nothing labelled in view (sky, unlabelled clutter): a random direction in the prototypes' span
        empty = np.flatnonzero(shown == IGNORE)
        if len(empty):
            content[empty] = self._span_noise(rng, len(empty))
        # confusions: the crop looks partly like a similar class (draws for every crop keep the streams aligned)
        flip, mix, pick = rng.random(n) < self.confusion, rng.uniform(0.3, 0.7, n), rng.random(n)
        for i in np.flatnonzero(flip & (shown != IGNORE)):
            weights = np.exp(20.0 * self.similarity[shown[i] - 1])
            weights[shown[i] - 1] = 0.0
            other = 1 + int(np.searchsorted(np.cumsum(weights) / weights.sum(), pick[i]))
            content[i] = (1 - mix[i]) * self.protos[shown[i]] + mix[i] * self.protos[min(other, NUM_CLASSES - 1)]
        persistent = np.zeros((n, dim))
        for key in np.unique(np.stack([shown, objects], 1), axis=0):
            rows = np.flatnonzero((shown == key[0]) & (objects == key[1]))
            obj_rng = np.random.default_rng([self.seed, self._sequence, int(key[0]), int(key[1]), 3])
            persistent[rows] = self._offset(obj_rng, 1)
        fresh = self._offset(rng, n)
        noise = self.noise * (np.sqrt(self.instance_share) * persistent + np.sqrt(1 - self.instance_share) * fresh)
        feats = self.gap * self.gap_dir + content + noise
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def _span_noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, dim) isotropic offsets of unit expected norm inside the prototypes' span."""
        return rng.normal(size=(n, self.span.shape[1])) @ self.span.T / np.sqrt(self.span.shape[1])

    def _offset(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Appearance offsets of unit expected norm: half the variance in the prototypes' span (it moves the
        zero-shot label), half outside it (only image-image similarity sees it)."""
        dim = self.protos.shape[1]
        outside = rng.normal(size=(n, dim)) / np.sqrt(dim)
        outside -= (outside @ self.span) @ self.span.T
        outside *= np.sqrt(dim / max(dim - self.span.shape[1], 1))
        return np.sqrt(0.5) * self._span_noise(rng, n) + np.sqrt(0.5) * outside
