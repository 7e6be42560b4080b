"""Frames/s of Affinity3D pseudo-labelling (annotation-free: every point in superpoints) on CPU, CLIP time apart.

Runs the pipeline twice on the same synthetic frames in one process: with the tiny random-weight CLIP (the real
CLIP code path, offline) and with the oracle features (no network), and prints frames/s and the share of time
spent in the feature extractor. Usage: python bench/affinity3d.py [--frames 4] [--rays 38400]
"""

from __future__ import annotations

import argparse
import os
import tempfile


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--rays", type=int, default=64 * 600)
    parser.add_argument("--model", default=None, help="CLIP spec (default: tiny random CLIP, offline)")
    args = parser.parse_args()
    from pc3d.config import apply_overrides, load_preset, validate_preset
    from pc3d.methods.affinity3d import pseudolabel

    with tempfile.TemporaryDirectory(prefix="pc3d-bench-a3d-") as tmp:
        os.environ.setdefault("HF_HOME", os.path.join(tmp, "hf"))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        rows = []
        for name, variant in (("clip", "affinity3d-tiny-random"), ("oracle", "affinity3d-oracle")):
            data = load_preset(variant)
            sets = [f"data.synthetic_count={args.frames}", f"data.synthetic_rays={args.rays}",
                    "data.synthetic_image=[188,621]", "data.setting=annotation-free", "features.candidates=all",
                    f"run.out={tmp}", "run.name=shared", "resume=false"]
            if name == "clip" and args.model:
                sets += [f"features.model={args.model}", "features.build_tiny_random=false"]
            config = validate_preset(apply_overrides(data, sets), variant)
            pseudolabel(config)  # warm-up: generates the frames and loads the model
            summary = pseudolabel(config)
            rest = summary["seconds"] - summary["feature_seconds"]
            rows.append((name, summary["frames"] / summary["seconds"], summary["feature_seconds"], rest))
        print(f"{'features':8s} {'frames/s':>9s} {'feature s':>10s} {'other s':>8s} {'feature share':>14s}")
        for name, fps, feat, rest in rows:
            print(f"{name:8s} {fps:9.3f} {feat:10.3f} {rest:8.3f} {feat / max(feat + rest, 1e-9):14.1%}")
        print(f"clip / oracle time ratio: {rows[1][1] / rows[0][1]:.2f}")


if __name__ == "__main__":
    main()
