"""Few-shot study of PartSTAD's weight network on synthetic chairs with noisy oracle boxes whose features never encode
the box's label or correctness (image statistics of the box region and box geometry, `pc3d.methods.partstad_oracle`)
and whose confidences are one distribution for every box.

Per seed and setting it runs `pc3d finetune partstad-fewshot --preset quickstart` (8 few-shot chairs train, 8 val
chairs select the checkpoint, the rest are the held-out test) and prints test mIoU of the trained weights, of PartSLIP
voting on the same boxes, their difference, the trained null weight with one constant box weight (what the per-box
weights add), and the training loss (relaxed mIoU on the few-shot chairs) before and after training.

Usage: OMP_NUM_THREADS=1 python scripts/study_partstad.py [--seeds 0 1 2] [--chairs 24] [--set key=value ...]
       [--no-spurious] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np


def run_seed(seed: int, sets: list[str], out: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "pc3d", "finetune", "partstad-fewshot", "--preset", "quickstart",
               "--seed", str(seed), "--out", out, "--json", "--quiet"]
    for item in sets:
        command += ["--set", item]
    tic = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"seed {seed} failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    constant = constant_weight_control(result, seed, sets, out)
    test, loss = result["test"], result["train_loss"]
    trained, voting = test["partstad"], test["partslip_voting"]
    return {"seed": seed, "test_shapes": test["shapes"], "partstad": trained["miou"], "voting": voting["miou"],
            "gain": trained["miou"] - voting["miou"], "map50_partstad": trained["map50_part_aware"],
            "map50_voting": voting["map50_part_aware"], "train_loss_before": loss["untrained"],
            "train_loss_after": loss["partstad"], "best_epoch": result["best"]["epoch"],
            "constant_weights": constant, "seconds": time.perf_counter() - tic}


def constant_weight_control(run: dict[str, Any], seed: int, sets: list[str], out: str) -> float:
    """Test mIoU of the trained null weight with every box weighing the same: the mean trained weight over the
    few-shot shapes' boxes. It separates what the per-box weights add from what the learned null (in effect a
    learned vote threshold) adds."""
    import torch

    from pc3d.config import apply_overrides, load_preset, validate_preset
    from pc3d.engine.checkpoint import load_weights
    from pc3d.methods.partstad import WeightNetwork, _load_split, evaluate_shapes
    from pc3d.methods.partstad_io import votes_of

    cfg = validate_preset(apply_overrides(load_preset("partstad-fewshot-quickstart"),
                                          [*sets, f"run.out={out}", f"run.seed={seed}"]), "partstad-fewshot-quickstart")
    parts, train, feature_dim = _load_split(cfg, "train")
    _, test, _ = _load_split(cfg, "test")
    network = WeightNetwork(feature_dim, cfg.network)
    state = load_weights(run["weights"])
    network.load_state_dict({k[len("network."):]: v for k, v in state.items() if k.startswith("network.")})
    network.eval()
    with torch.no_grad():
        weights = torch.cat([network(v.box_feature, v.box_geometry) for v in map(votes_of, train)])
        null = network.null_score().detach()

    class Constant(torch.nn.Module):
        def forward(self, features: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
            return torch.full((len(features),), float(weights.mean()))

        def null_score(self) -> torch.Tensor:
            return null

    voting = cfg.voting.model_copy(update={"weighting": "network"})
    return float(evaluate_shapes(test, parts, voting, Constant(), cfg.network.tau)["miou"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chairs", type=int, default=24, help="synthetic chairs: 8 few-shot, 8 val, the rest test")
    parser.add_argument("--no-spurious", action="store_true", help="oracle_extra=0 (no spurious boxes)")
    parser.add_argument("--set", action="append", default=[], help="extra preset overrides key=value")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    sets = [f"data.synthetic_count={args.chairs}", *args.set]
    if args.no_spurious:
        sets.append("detector.oracle_extra=0")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pc3d-study-partstad-") as tmp:
        for seed in args.seeds:
            rows.append(run_seed(seed, sets, f"{tmp}/seed{seed}"))
            r = rows[-1]
            print(f"seed {seed}: test shapes {r['test_shapes']}  PartSTAD {r['partstad']:.4f}  voting "
                  f"{r['voting']:.4f}  gain {r['gain']:+.4f}  mAP50 {r['map50_partstad']:.3f} vs "
                  f"{r['map50_voting']:.3f}  constant weights + trained null {r['constant_weights']:.4f}  "
                  f"train loss {r['train_loss_before']:.4f} -> {r['train_loss_after']:.4f}  "
                  f"best epoch {r['best_epoch']}  {r['seconds']:.0f}s", flush=True)
    gains = np.array([r["gain"] for r in rows])
    print(f"settings: {' '.join(sets)}")
    print(f"gain over {len(rows)} seeds: mean {gains.mean():+.4f}  std {gains.std(ddof=1) if len(gains) > 1 else 0:.4f}"
          f"  min {gains.min():+.4f}  max {gains.max():+.4f}")
    print(f"PartSTAD mean {np.mean([r['partstad'] for r in rows]):.4f}  voting mean "
          f"{np.mean([r['voting'] for r in rows]):.4f}  constant weights + trained null mean "
          f"{np.mean([r['constant_weights'] for r in rows]):.4f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": sets, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
