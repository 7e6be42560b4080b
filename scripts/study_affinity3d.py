"""Ablation of Affinity3D's affinity random walk and visibility test with noisy oracle crop labels.

The oracle replaces CLIP by ground-truth class embeddings of what each crop sees; `features.noise` makes a share of
the crops' text-aligned embeddings name a wrong class (a wrong CLIP label) while their appearance stays true (see
`OracleFeatures`). All rows label the same synthetic frames in one process and print pseudo-label accuracy and mIoU
on the labelled points, and the coverage (labelled share of the labelled points inside the image).

Usage: python scripts/study_affinity3d.py [--preset affinity3d-oracle-noisy] [--frames 6] [--noise 0.3]
       [--set key=value ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

ROWS: tuple[tuple[str, list[str]], ...] = (
    ("oracle alone", ["affinity.enabled=false", "visibility.enabled=false"]),
    ("+ affinity", ["affinity.enabled=true", "visibility.enabled=false"]),
    ("+ visibility", ["affinity.enabled=false", "visibility.enabled=true"]),
    ("+ both", ["affinity.enabled=true", "visibility.enabled=true"]),
)


def study(preset: str, sets: list[str], out: str) -> list[dict[str, Any]]:
    from pc3d.config import apply_overrides, load_preset, validate_preset
    from pc3d.methods.affinity3d import dataset_for, output_root, score_pseudo_labels

    base = [f"run.out={out}", "run.name=study", *sets]
    first = validate_preset(apply_overrides(load_preset(preset), base), preset)
    dataset = dataset_for(first, output_root(first))  # the frames are generated once and shared by every row
    rows = []
    for name, switches in ROWS:
        config = validate_preset(apply_overrides(load_preset(preset), base + switches), preset)
        tic = time.perf_counter()
        summary = score_pseudo_labels(config, dataset)
        rows.append({"row": name, "accuracy": summary.get("accuracy", 0.0), "miou": summary.get("miou", 0.0),
                     "coverage": summary["coverage"], "seconds": time.perf_counter() - tic})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="affinity3d-oracle-noisy")
    parser.add_argument("--frames", type=int, default=None, help="synthetic frames (default: the preset's)")
    parser.add_argument("--noise", type=float, default=None, help="features.noise (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], help="extra preset overrides key=value")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    sets = list(args.set)
    if args.frames is not None:
        sets.append(f"data.synthetic_count={args.frames}")
    if args.noise is not None:
        sets.append(f"features.noise={args.noise}")
    with tempfile.TemporaryDirectory(prefix="pc3d-study-a3d-") as tmp:
        rows = study(args.preset, sets, tmp)
    print(f"{'setting':20s} {'accuracy':>9s} {'mIoU':>7s} {'coverage':>9s} {'s':>6s}")
    for row in rows:
        print(f"{row['row']:20s} {row['accuracy']:9.4f} {row['miou']:7.4f} {row['coverage']:9.3f} "
              f"{row['seconds']:6.1f}")
    if args.json:
        from pathlib import Path

        from pc3d.io.atomic import write_text_atomic

        write_text_atomic(Path(args.json), json.dumps({"preset": args.preset, "sets": sets, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
