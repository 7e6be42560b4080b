"""PartSTAD seconds per shape on this machine: render / 2D models / superpoints / voting.

    python bench/partstad.py [--points 10000] [--shapes 3] [--detector tiny-random|oracle|grounding-dino]

Prints each stage's mean seconds per synthetic chair and its ratio to rendering (the reference measured in the
same run). `grounding-dino` uses the real hub models (needs them in the cache or network); `tiny-random` builds
tiny random-weight Grounding DINO + SAM offline, so its 2D time says little about the real models.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--shapes", type=int, default=3)
    parser.add_argument("--detector", choices=("tiny-random", "oracle", "grounding-dino"), default="tiny-random")
    parser.add_argument("--image-size", type=int, default=800)
    args = parser.parse_args()

    import torch

    from pc3d.config import load_preset, validate_preset
    from pc3d.data.synthetic.objects import generate_object, object_rng
    from pc3d.io.pointcloud import PointCloud
    from pc3d.methods.partstad import segment_votes
    from pc3d.methods.partstad_detections import TwoDModels
    from pc3d.methods.partstad_io import ground_truth_parts
    from pc3d.methods.partstad_pipeline import prepare_shape

    preset = {"tiny-random": "partstad-tiny-random", "oracle": "partstad-oracle", "grounding-dino": "partstad"}
    data = load_preset(preset[args.detector])
    data.setdefault("render", {})["image_size"] = args.image_size
    cfg = validate_preset(data)
    parts = ["arm", "back", "leg", "seat"]
    models = TwoDModels(cfg, "cuda" if torch.cuda.is_available() else "cpu")
    totals: dict[str, list[float]] = {}
    for i in range(args.shapes):
        shape = generate_object("chair", object_rng(11, i), args.points)
        cloud = PointCloud(shape.points, shape.colors, fields={"part": shape.part, "instance": shape.part_instance})
        from pathlib import Path

        truth = ground_truth_parts(Path("chair.ply"), cloud, parts)
        prepared = prepare_shape(cloud.points, cloud.colors, parts, models, truth)
        tic = time.perf_counter()
        segment_votes(prepared.votes, cfg.voting.model_copy(update={"weighting": "none"}), None, parts)
        prepared.timings["voting"] += time.perf_counter() - tic
        for key, value in prepared.timings.items():
            totals.setdefault(key, []).append(value)
    reference = float(np.mean(totals["render"]))
    print(f"{args.shapes} chairs x {args.points} points, {args.image_size} px, detector {args.detector}")
    for key, values in totals.items():
        mean = float(np.mean(values))
        print(f"{key:12s} {mean:8.3f} s/shape   x{mean / max(reference, 1e-9):6.2f} of render")


if __name__ == "__main__":
    main()
