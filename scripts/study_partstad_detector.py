"""Detector adaptation effect on synthetic chairs (issue 21): zero-shot vs adapted tiny random Grounding DINO.

Per seed: `pc3d finetune partstad-detector --preset quickstart` (renders the 8 few-shot chairs, trains, reports box
AP50 / recall / precision on the 8 val and 8 test chairs before and after), then `pc3d segment` on the test chairs
with PartSLIP voting (no SAM) from the zero-shot and from the adapted detector, for part mIoU.

  OMP_NUM_THREADS=1 .venv/bin/python scripts/study_partstad_detector.py --seeds 0 1 --epochs 30 --out /tmp/pdstudy
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PC3D = [sys.executable, "-m", "pc3d"]


def run_json(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([*PC3D, *args, "--json"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"pc3d {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def segment_miou(shapes: list[str], parts: list[str], out: Path, threshold: float, detector: str | None) -> float:
    args = ["segment", *shapes, "--parts", ",".join(parts), "--category", "Chair", "--preset", "tiny-random",
            "--set", "sam.enabled=false", "--set", "render.image_size=128", "--set", f"detector.threshold={threshold}",
            "--set", "detector.max_boxes=50", "--out", str(out)]
    if detector:
        args += ["--detector", detector]
    return float(run_json(args)["mean_miou"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("/tmp/pc3d-partstad-detector-study"))
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        trained = run_json(["finetune", "partstad-detector", "--preset", "quickstart", "--seed", str(seed),
                            "--set", f"adapt.epochs={args.epochs}", "--out", str(out)])
        test_root = Path(out) / "partstad-cache"
        shapes = sorted(str(p) for p in test_root.glob(f"synthetic-chairs-{seed}-*/partnete/data/test/Chair/*/pc.ply"))
        val_ids = set(json.loads(next(test_root.glob(f"synthetic-chairs-{seed}-*/partnete/val_list.json")).read_text())
                      ["Chair"])
        test_shapes = [s for s in shapes if Path(s).parent.name not in val_ids]
        threshold = trained["threshold"]
        row = {"seed": seed, "epochs": args.epochs, "loss_first_epoch": trained["loss_first_epoch"],
               "loss_last_epoch": trained["loss_last_epoch"], "test_shapes": len(test_shapes)}
        for name in ("zero_shot", "adapted"):
            for split in ("val", "test"):
                for metric in ("ap50", "recall", "precision"):
                    row[f"{name}_{split}_{metric}"] = trained[name][split][metric]
        row["zero_shot_test_miou"] = segment_miou(test_shapes, trained["parts"], out / "seg-zero", threshold, None)
        row["adapted_test_miou"] = segment_miou(test_shapes, trained["parts"], out / "seg-adapted", threshold,
                                                trained["run_dir"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "study.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
