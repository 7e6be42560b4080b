"""Pretraining throughput: Point-MAE vs GeoMask3D training steps (samples/s), and GeoMask3D's overhead.

One "step" is what the engine does per batch: forward, backward, AdamW step (and GeoMask3D's EMA update).
GeoMask3D adds the EMA teacher's pass over the unmasked cloud, a 12-block GC predictor, and the frozen
Point-MAE teacher's encoder + decoder passes, so its cost per sample is several times Point-MAE's.

    python bench/pretrain.py                      # official sizes, batch 32, CUDA if available
    python bench/pretrain.py --size quickstart --device cpu --batch 8 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

SIZES: dict[str, dict[str, Any]] = {
    "official": {"model": {"dim": 384, "depth": 12, "heads": 6, "decoder_depth": 4, "num_groups": 64,
                           "group_size": 32, "drop_path": 0.1}, "gc_depth": 12, "num_points": 1024},
    "quickstart": {"model": {"dim": 96, "depth": 4, "heads": 6, "decoder_depth": 2, "num_groups": 16,
                             "group_size": 16, "drop_path": 0.0}, "gc_depth": 2, "num_points": 256},
}


def build_methods(size: str) -> tuple[Any, Any, int]:
    from pc3d.config import validate_preset
    from pc3d.methods.geomask3d import GeoMask3D
    from pc3d.methods.point_mae import PointMAEPretraining, build_point_mae

    spec = SIZES[size]
    data = {"source": "synthetic", "num_points": spec["num_points"], "augment": True}
    point_mae = PointMAEPretraining(validate_preset({"command": "pretrain", "method": "point-mae",
                                                     "model": spec["model"], "data": data}))
    gm_config = validate_preset({"command": "pretrain", "method": "geomask3d", "model": spec["model"],
                                 "gc_depth": spec["gc_depth"], "data": data, "teacher": {"weights": "unused"}})
    teacher = build_point_mae(gm_config.model).state_dict()  # timing only: any weights do
    return point_mae, GeoMask3D(gm_config, teacher), spec["num_points"]


def time_steps(method: Any, points: torch.Tensor, steps: int, warmup: int) -> float:
    """Seconds per training step (median-free mean after warm-up; CUDA synchronised)."""
    from pc3d.engine.method import StepState, total_loss

    optimizer = torch.optim.AdamW(method.param_groups(0.05), lr=1e-4)
    method.train()
    state = StepState(step=0, epoch=0, total_steps=steps + warmup, progress=0.0, lr=1e-4)
    for i in range(warmup + steps):
        if i == warmup:
            if points.is_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = total_loss(method.training_step({"points": points}, state))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_optimizer_step(state)
    if points.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="official")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    point_mae, geomask3d, num_points = build_methods(args.size)
    from pc3d.data.readers.objects import SyntheticObjects

    objects = SyntheticObjects(args.batch, seed=0, num_points=num_points)
    points = torch.stack([objects[i]["points"] for i in range(args.batch)]).to(device)
    seconds = {}
    for name, method in (("point_mae", point_mae), ("geomask3d", geomask3d)):
        seconds[name] = time_steps(method.to(device), points, args.steps, args.warmup)
        method.cpu()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result = {
        "size": args.size, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch": args.batch, "num_points": num_points,
        "point_mae_samples_per_s": args.batch / seconds["point_mae"],
        "geomask3d_samples_per_s": args.batch / seconds["geomask3d"],
        "geomask3d_overhead": seconds["geomask3d"] / seconds["point_mae"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value:.2f}" if isinstance(value, float) else f"{key:28s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
