"""Study (not a test): scratch vs Point-MAE vs GeoMask3D pretraining on the synthetic object benchmark.

Pipeline, all through the `pc3d` CLI on CPU-sized quickstart models:
  1. pretrain Point-MAE on the synthetic objects;
  2. pretrain GeoMask3D with that Point-MAE run as its frozen distillation teacher (as in the paper,
     where the teacher is a pretrained Point-MAE);
  3. for each starting point (scratch, Point-MAE, GeoMask3D): the linear-SVM probe of frozen features
     and `cls-synthetic` finetuning (test OA, single pass and 10-vote), over several seeds.
Prints a markdown table (mean +- std over seeds) and writes it with the raw numbers to <out>/study.json.

    python scripts/study_object_ssl.py --out runs/study --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def pc3d(*args: str) -> dict[str, Any]:
    """Run one pc3d command and return its --json result."""
    cmd = [sys.executable, "-m", "pc3d", *args, "--json", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def last_checkpoint(result: dict[str, Any]) -> str:
    return result["checkpoints"]["last"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/study_object_ssl")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--finetune-preset", default="quickstart", help="cls-synthetic variant to finetune")
    args = parser.parse_args(argv)
    out = Path(args.out)
    common = ["--out", str(out)]

    print("pretraining Point-MAE ...", file=sys.stderr)
    point_mae = pc3d("pretrain", "point-mae", "--preset", "quickstart", *common,
                     "--set", f"train.epochs={args.pretrain_epochs}")
    print("pretraining GeoMask3D (teacher: the Point-MAE run) ...", file=sys.stderr)
    geomask3d = pc3d("pretrain", "geomask3d", "--preset", "quickstart", *common,
                     "--set", f"train.epochs={args.pretrain_epochs}",
                     "--set", f"teacher.weights={last_checkpoint(point_mae)}",
                     "--set", "teacher.bootstrap_steps=0")
    starts = {"scratch": None, "point-mae": last_checkpoint(point_mae), "geomask3d": last_checkpoint(geomask3d)}

    raw: dict[str, dict[str, list[float]]] = {}
    for name, weights in starts.items():
        from_args = ["--from", weights] if weights else []
        scores = raw.setdefault(name, {"svm_oa": [], "test_oa": [], "test_oa_vote": []})
        print(f"{name}: SVM probe ...", file=sys.stderr)
        scores["svm_oa"].append(pc3d("finetune", "svm-modelnet40", "--preset", "quickstart", *from_args,
                                     *common)["svm_oa"])
        for seed in args.seeds:
            print(f"{name}: finetuning, seed {seed} ...", file=sys.stderr)
            result = pc3d("finetune", "cls-synthetic", "--preset", args.finetune_preset, *from_args, *common,
                          "--seed", str(seed), "--set", f"run.name=study-{name}-seed{seed}")
            scores["test_oa"].append(result["test_oa"])
            scores["test_oa_vote"].append(result["test_oa_vote"])

    def cell(values: list[float]) -> str:
        v = np.array(values) * 100
        return f"{v.mean():.1f}" if len(v) == 1 else f"{v.mean():.1f} ± {v.std():.1f}"

    lines = ["| start | linear SVM OA (%) | finetune OA (%) | finetune OA, 10 votes (%) |",
             "|---|---|---|---|"]
    for name, scores in raw.items():
        lines.append(f"| {name} | {cell(scores['svm_oa'])} | {cell(scores['test_oa'])} | "
                     f"{cell(scores['test_oa_vote'])} |")
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"table": table, "raw": raw, "seeds": args.seeds,
                                                "pretrain_epochs": args.pretrain_epochs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
