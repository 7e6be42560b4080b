"""Ablation of Affinity3D's affinity random walk, instance queue and visibility test on CLIP-like oracle features.

The oracle (`pc3d.methods.affinity3d_oracle`) replaces CLIP by noisy features of the class each crop shows, with
CLIP-text-like similarities between classes and confusions between similar ones; no feature is built from a crop's
label histogram beyond which class it shows, so the affinity walk has no ground truth to recover by construction.

Per seed (the seed draws the synthetic frames, the prototypes and the noise), the synthetic frames come in
sequences of 10: sequence 00 is the validation sequence, where s_a is chosen (the value of `--scales` with the best
per-point accuracy of the full pipeline); the other sequences are held out, and every row of the table is measured
there with that s_a. Accuracy is per pseudo-labelled point and per ground-truth instance (majority pseudo label of
its labelled points, Table 4's measure), coverage is the labelled share of the labelled points inside the image.

Usage: OMP_NUM_THREADS=1 python scripts/study_affinity3d.py [--preset affinity3d-oracle-noisy] [--seeds 0 1 2]
       [--frames 30] [--scales 1 2 5 10 20 50 100] [--queues 0 256 4096] [--set key=value ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np

# (row, visibility, affinity, instance-queue size: None = the preset's)
ROWS: tuple[tuple[str, bool, bool, int | None], ...] = (
    ("oracle alone", False, False, None),
    ("+ affinity", False, True, None),
    ("+ visibility", True, False, None),
    ("+ both", True, True, None),
    ("+ both, frame alone", True, True, 0),
)


def _config(preset: str, sets: list[str]) -> Any:
    from pc3d.config import apply_overrides, load_preset, validate_preset

    return validate_preset(apply_overrides(load_preset(preset), sets), preset)


def _prepared(config: Any, dataset: Any) -> list[Any]:
    """Steps 1-4 (superpoints, visibility, crops, features) of every frame, done once per visibility setting."""
    from pc3d.engine.device import resolve_device
    from pc3d.methods.affinity3d import PseudoLabeler, build_source

    labeler = PseudoLabeler(config, build_source(config, resolve_device(config.run.device)))
    return [labeler.prepare(dataset[i]) for i in range(len(dataset))]


def _score(config: Any, pending: list[Any]) -> dict[str, Any]:
    """Steps 5-6 (instance queue, walk, labels) of `config` on prepared frames, and their accuracy."""
    from pc3d.engine.device import resolve_device
    from pc3d.methods.affinity3d import Accuracy, PseudoLabeler, _in_image, build_source

    labeler = PseudoLabeler(config, build_source(config, resolve_device(config.run.device)))
    accuracy = Accuracy(config.data.setting)
    finished = [f for frame in pending for f in labeler.push_prepared(frame)] + labeler.flush()
    for sample, result in finished:
        accuracy.add(sample["gt"], sample.get("labels"), result, _in_image(sample), sample.get("instance"))
    return accuracy.summary()


def study_seed(preset: str, sets: list[str], seed: int, frames: int, scales: list[float], out: str,
               queues: list[int] | None = None) -> dict[str, Any]:
    from pc3d.methods.affinity3d import dataset_for, output_root

    base = [f"run.out={out}", f"run.name=seed{seed}", f"run.seed={seed}", f"data.synthetic_count={frames}", *sets]
    first = _config(preset, base)
    root = output_root(first)
    count = -(-frames // 10)
    if count < 2:
        raise SystemExit("the study needs >= 20 frames: sequence 00 validates, the others are held out")
    validation = dataset_for(first, root, ["00"])
    held_out = dataset_for(first, root, [f"{s:02d}" for s in range(1, count)])
    tic = time.perf_counter()
    val_pending = _prepared(_config(preset, base + ["visibility.enabled=true"]), validation)
    grid = []
    for scale in scales:
        summary = _score(_config(preset, base + ["visibility.enabled=true", "affinity.enabled=true",
                                                 f"affinity.scale={scale}"]), val_pending)
        grid.append({"scale": scale, "accuracy": summary.get("accuracy", 0.0),
                     "instance_accuracy": summary.get("instance_accuracy", 0.0)})
    off = _score(_config(preset, base + ["visibility.enabled=true", "affinity.enabled=false"]), val_pending)
    if not off.get("pseudo_points"):  # e.g. GZS on streets without unseen-class objects: nothing to label
        raise SystemExit(f"seed {seed}: no pseudo-labelled point on the validation sequence; nothing to compare")
    chosen = max(grid, key=lambda row: row["accuracy"])["scale"]
    queue_grid = []  # information only: validation accuracy of other queue sizes (s_a is chosen for the preset's)
    for size in queues or []:
        for scale in scales:
            summary = _score(_config(preset, base + ["visibility.enabled=true", "affinity.enabled=true",
                                                     f"affinity.scale={scale}", f"affinity.queue_size={size}"]),
                             val_pending)
            queue_grid.append({"queue_size": size, "scale": scale, "accuracy": summary.get("accuracy", 0.0)})
    del val_pending
    rows = []
    pending = {vis: _prepared(_config(preset, base + [f"visibility.enabled={str(vis).lower()}"]), held_out)
               for vis in (False, True)}
    for name, vis, aff, queue in ROWS:
        switches = [f"visibility.enabled={str(vis).lower()}", f"affinity.enabled={str(aff).lower()}",
                    f"affinity.scale={chosen}"] + ([f"affinity.queue_size={queue}"] if queue is not None else [])
        summary = _score(_config(preset, base + switches), pending[vis])
        # None where no pseudo-labelled point (instance) could be scored: "n/a", left out of the means
        rows.append({"row": name, "accuracy": summary.get("accuracy"), "miou": summary.get("miou"),
                     "instance_accuracy": summary.get("instance_accuracy"),
                     "instances": summary.get("instances", 0), "coverage": summary["coverage"],
                     "pseudo_points": summary.get("pseudo_points", 0)})
    return {"seed": seed, "validation_frames": len(validation), "held_out_frames": len(held_out),
            "validation_grid": grid, "validation_without_affinity": off.get("accuracy", 0.0),
            "chosen_scale": chosen, "queue_grid": queue_grid, "rows": rows, "seconds": time.perf_counter() - tic}


def _cell(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="affinity3d-oracle-noisy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=30, help="synthetic frames per seed (10 per sequence)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 2, 5, 10, 20, 50, 100],
                        help="s_a values tried on the validation sequence")
    parser.add_argument("--queues", type=int, nargs="*", default=[],
                        help="also report validation accuracy for these instance-queue sizes (x every s_a)")
    parser.add_argument("--set", action="append", default=[], help="extra preset overrides key=value")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="pc3d-study-a3d-") as tmp:
        for seed in args.seeds:
            result = study_seed(args.preset, list(args.set), seed, args.frames, args.scales, tmp, args.queues)
            results.append(result)
            grid = "  ".join(f"{g['scale']:g}:{g['accuracy']:.3f}" for g in result["validation_grid"])
            print(f"seed {seed}: validation ({result['validation_frames']} frames) s_a -> accuracy  {grid}  "
                  f"(no affinity {result['validation_without_affinity']:.3f}); chosen s_a = "
                  f"{result['chosen_scale']:g}; {result['seconds']:.0f} s", flush=True)
            for size in args.queues:
                cells = "  ".join(f"{g['scale']:g}:{g['accuracy']:.3f}" for g in result["queue_grid"]
                                  if g["queue_size"] == size)
                print(f"  validation, queue {size:5d}: s_a -> accuracy  {cells}", flush=True)
            for row in result["rows"]:
                print(f"  {row['row']:22s} point acc {_cell(row['accuracy'])}  instance acc "
                      f"{_cell(row['instance_accuracy'])} ({row['instances']})  mIoU {_cell(row['miou'])}  "
                      f"coverage {row['coverage']:.3f}", flush=True)
    print(f"\nheld-out frames, mean +- sd (population) over seeds {args.seeds}; [n] = seeds with a scored point:")
    print(f"{'setting':22s} {'point acc':>20s} {'instance acc':>20s} {'mIoU':>20s}")
    for k, (name, *_rest) in enumerate(ROWS):
        cells = []
        for key in ("accuracy", "instance_accuracy", "miou"):
            values = np.array([r["rows"][k][key] for r in results if r["rows"][k][key] is not None])
            cells.append(f"{values.mean():.4f} +- {values.std():.4f} [{len(values)}]" if len(values) else "n/a")
        print(f"{name:22s} " + " ".join(f"{c:>20s}" for c in cells))
    if args.json:
        from pathlib import Path

        from pc3d.io.atomic import write_text_atomic

        write_text_atomic(Path(args.json), json.dumps({"preset": args.preset, "sets": args.set, "results": results},
                                                      indent=2))


if __name__ == "__main__":
    main()
