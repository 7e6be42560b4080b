"""Study (not CI): does Point-MoDE pretraining help detection on the synthetic scenes?

Runs, through the real CLI: Point-MoDE pretraining (quickstart sizes), then detection finetuning
twice with the same seed and schedule -- from scratch and from the pretraining checkpoint -- and
prints AP25 / AP50 of both (best and last validation), plus an untrained detector's AP as the floor.

    OMP_NUM_THREADS=1 python scripts/study_point_mode.py --pretrain-epochs 8 --finetune-epochs 50
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path


def cli_json(*args: str) -> dict:
    from pc3d.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([*args, "--json", "--quiet"])
    if code != 0:
        raise SystemExit(f"pc3d {' '.join(args)} failed with exit code {code}")
    return json.loads(buffer.getvalue().strip().splitlines()[-1])


def validation_rows(run: dict) -> list[dict]:
    rows = [json.loads(line) for line in open(Path(run["run_dir"]) / "metrics.jsonl")]
    return [r for r in rows if "val/ap25" in r]


def best_and_last(rows: list[dict], key: str) -> tuple[float, float]:
    values = [r[f"val/{key}"] for r in rows]
    return max(values), values[-1]


# classes of the synthetic rooms that are furniture standing on the floor (the rest are 3-5 cm thin wall items)
FURNITURE = ("cabinet", "bed", "chair", "sofa", "table", "bookshelf")


def untrained_ap(sets: list[str]) -> dict:
    import torch

    from pc3d.config import apply_overrides, load_preset, validate_preset
    from pc3d.methods.scene_detection import build
    from pc3d.metrics import detection_ap

    config = validate_preset(apply_overrides(load_preset("det-scannet-quickstart"), sets), "det")
    torch.manual_seed(config.run.seed)
    setup = build(config, 0)
    setup.method.eval()
    samples = []
    for i in range(len(setup.val_set)):
        batch = {k: v.unsqueeze(0) for k, v in setup.val_set[i].items()}
        samples += setup.method.validation_step(batch)["scenes"]
    return detection_ap(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=50)
    parser.add_argument("--pretrain-scenes", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run folder parent (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="pc3d-study-point-mode-"))

    tic = time.perf_counter()
    pre = cli_json("pretrain", "point-mode", "--preset", "quickstart", "--out", str(out), "--seed", str(args.seed),
                   "--set", f"train.epochs={args.pretrain_epochs}",
                   "--set", f"data.synthetic_count={args.pretrain_scenes}")
    pretrain_s = time.perf_counter() - tic
    sets = [f"train.epochs={args.finetune_epochs}"]
    set_args = [a for s in sets for a in ("--set", s)]
    results = {}
    for name, extra in (("scratch", []), ("point-mode", ["--from", pre["checkpoints"]["last"]])):
        tic = time.perf_counter()
        run = cli_json("finetune", "det-scannet", "--preset", "quickstart", "--out", str(out / name),
                       "--seed", str(args.seed), *set_args, *extra)
        rows = validation_rows(run)
        results[name] = {key: best_and_last(rows, key) for key in ("ap25", "ap50")}
        results[name]["per_class"] = {k[len("val/ap25_"):]: v for k, v in rows[-1].items()
                                      if k.startswith("val/ap25_")}
        results[name]["seconds"] = time.perf_counter() - tic
    floor = untrained_ap(sets)

    print(f"pretraining: {args.pretrain_epochs} epochs on {args.pretrain_scenes} synthetic scenes, "
          f"{pretrain_s:.0f} s; final losses "
          + ", ".join(f"{k} {v:.4f}" for k, v in pre["metrics"].items() if k in ("chamfer", "giou")))
    print(f"detection finetuning: {args.finetune_epochs} epochs, quickstart sizes, seed {args.seed}")
    print(f"{'start':<12}{'AP25 best':>10}{'AP25 last':>10}{'AP50 best':>10}{'AP50 last':>10}{'time s':>8}")
    print(f"{'untrained':<12}{floor['ap25']:>10.4f}{'':>10}{floor['ap50']:>10.4f}")
    for name, r in results.items():
        furniture = [v for k, v in r["per_class"].items() if k in FURNITURE]
        print(f"{name:<12}{r['ap25'][0]:>10.4f}{r['ap25'][1]:>10.4f}{r['ap50'][0]:>10.4f}{r['ap50'][1]:>10.4f}"
              f"{r['seconds']:>8.0f}  furniture AP25 (last) {sum(furniture) / max(len(furniture), 1):.4f}")
    print("per-class AP25 at the last validation:")
    classes = sorted({k for r in results.values() for k in r["per_class"]})
    print(f"{'start':<12}" + "".join(f"{c[:9]:>10}" for c in classes))
    for name, r in results.items():
        print(f"{name:<12}" + "".join(f"{r['per_class'].get(c, float('nan')):>10.3f}" for c in classes))
    print(f"runs under {out}")


if __name__ == "__main__":
    main()
