"""Study (not CI): does Point-MoDE pretraining help detection on the synthetic scenes?

Runs, through the real CLI and for each seed: Point-MoDE pretraining (the quickstart preset), then detection
finetuning twice with that seed and schedule -- from scratch and from the pretraining checkpoint -- exactly as
the README's commands do:

    pc3d pretrain point-mode --preset quickstart --seed S
    pc3d finetune det-scannet --preset quickstart --seed S [--from <pretraining last.json>]

Each finetuning keeps the checkpoint with the best val AP25 and scores it once on its own synthetic test
scenes; this prints the test AP25 / AP50 per seed and their mean +- std (sample std), the selected val AP25,
and an untrained detector's test AP as the floor.

    OMP_NUM_THREADS=1 python scripts/study_point_mode.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
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


# classes of the synthetic rooms that are furniture standing on the floor (the rest are 3-5 cm thin wall items)
FURNITURE = ("cabinet", "bed", "chair", "sofa", "table", "bookshelf")


def untrained_test_ap(seed: int) -> dict:
    """AP of the quickstart detector at its initial weights on the seed's test scenes: the floor."""
    import torch

    from pc3d.config import apply_overrides, load_preset, validate_preset
    from pc3d.engine.selection import score
    from pc3d.methods.scene_detection import build, synthetic_test_scenes

    config = validate_preset(apply_overrides(load_preset("det-scannet-quickstart"), [f"run.seed={seed}"]), "det")
    torch.manual_seed(seed)
    setup = build(config, 0)
    test = synthetic_test_scenes(config)
    assert test is not None
    return score(setup.method, test, config.train.batch_size)


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {std:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="default: the quickstart preset's")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default: the quickstart preset's")
    parser.add_argument("--pretrain-scenes", type=int, default=None, help="default: the quickstart preset's")
    parser.add_argument("--starts", nargs="+", default=["scratch", "point-mode"], choices=["scratch", "point-mode"])
    parser.add_argument("--out", default=None, help="run folder parent (default: a temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="pc3d-study-point-mode-"))
    pre_sets = ([f"train.epochs={args.pretrain_epochs}"] if args.pretrain_epochs else []) + (
        [f"data.synthetic_count={args.pretrain_scenes}"] if args.pretrain_scenes else [])
    fine_sets = [f"train.epochs={args.finetune_epochs}"] if args.finetune_epochs else []

    rows: dict[str, list[dict]] = {name: [] for name in ("untrained", *args.starts)}
    for seed in args.seeds:
        pre = None
        if "point-mode" in args.starts:
            pre = cli_json("pretrain", "point-mode", "--preset", "quickstart", "--out", str(out / f"pretrain-{seed}"),
                           "--seed", str(seed), *[a for s in pre_sets for a in ("--set", s)])
        for name in args.starts:
            extra = ["--from", pre["checkpoints"]["last"]] if name == "point-mode" and pre else []
            tic = time.perf_counter()
            run = cli_json("finetune", "det-scannet", "--preset", "quickstart", "--out", str(out / f"{name}-{seed}"),
                           "--seed", str(seed), *[a for s in fine_sets for a in ("--set", s)], *extra)
            test = run["test"]
            furniture = [v for k, v in test.items() if k[len("ap25_"):] in FURNITURE]
            rows[name].append({"seed": seed, "test_ap25": test["ap25"], "test_ap50": test["ap50"],
                               "test_ar25": test["ar25"], "val_ap25": run["val"]["ap25"],
                               "epoch": run["selection"]["epoch"], "furniture_ap25": sum(furniture) / len(furniture),
                               "seconds": time.perf_counter() - tic})
            print(json.dumps({"start": name, **rows[name][-1]}), flush=True)
        floor = untrained_test_ap(seed)
        rows["untrained"].append({"seed": seed, "test_ap25": floor["ap25"], "test_ap50": floor["ap50"],
                                  "test_ar25": floor["ar25"]})

    print(f"detection finetuning, quickstart preset, seeds {args.seeds}; checkpoint selected on val AP25, "
          "scored once on the test scenes")
    print(f"{'start':<12}{'test AP25':>18}{'test AP50':>18}{'test AR25':>18}{'val AP25 (sel.)':>18}  per seed AP25")
    for name, runs in rows.items():
        val = mean_std([r["val_ap25"] for r in runs]) if "val_ap25" in runs[0] else ""
        print(f"{name:<12}" + "".join(f"{mean_std([r[k] for r in runs]):>18}"
                                      for k in ("test_ap25", "test_ap50", "test_ar25"))
              + f"{val:>18}  " + " / ".join(f"{r['test_ap25']:.3f}" for r in runs))
    print(f"runs under {out}")


if __name__ == "__main__":
    main()
