"""One shape through PartSTAD's stages before the paper's step: normalise, render, detect (+ SAM), superpoints,
votes. `prepare_shape` returns everything the weighting (pc3d.methods.partstad) and the outputs need."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pc3d.methods.partstad_detections import TwoDModels, ViewDetections
from pc3d.methods.partstad_render import Views, normalize_unit_sphere, render_views
from pc3d.methods.partstad_superpoints import superpoints
from pc3d.methods.partstad_voting import ShapeVotes, build_votes


@dataclass
class PreparedShape:
    points: np.ndarray  # normalised
    views: Views
    detections: ViewDetections
    votes: ShapeVotes
    timings: dict[str, float]


def prepare_shape(points: np.ndarray, colors: np.ndarray | None, parts: Sequence[str], models: TwoDModels,
                  truth: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0) -> PreparedShape:
    cfg = models.cfg
    timings = {}
    tic = time.perf_counter()
    xyz = normalize_unit_sphere(points)
    views = render_views(xyz, colors, cfg.render)
    timings["render"] = time.perf_counter() - tic
    tic = time.perf_counter()
    detections = models.detect(views, parts, truth, seed)
    timings["models_2d"] = time.perf_counter() - tic
    tic = time.perf_counter()
    sp = superpoints(xyz, colors, cfg.superpoints)
    timings["superpoints"] = time.perf_counter() - tic
    tic = time.perf_counter()
    votes = build_votes(xyz, sp, views, detections, len(parts))
    timings["voting"] = time.perf_counter() - tic
    return PreparedShape(xyz, views, detections, votes, timings)
