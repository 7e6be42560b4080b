"""PointINS overhead: the offset branch + ODR + SCR per training step, as a share of the base SSL step.

Both steps run in this process on the same batches (same views, same seeds): the Sonata/DOS step alone,
and the PointINS step (offset heads, teacher offsets, ODR, SCR, offset losses) with the offset loss on.
Prints median times and the ratio; the target is <= 10 % extra (the paper reports +25 % on GPU).
Also times ODR and SCR alone on the teacher's head-level points.

    python bench/pointins.py                      # tiny model, CPU
    python bench/pointins.py --device cuda --size default --points 60000
    python bench/pointins.py --device cuda --size default --points 60000 --table9   # the paper's SCR graph, 2 cm
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SIZES = {
    "tiny": {"depths": [1, 1, 1], "channels": [16, 32, 64], "heads": [2, 2, 4], "patch_size": 128},
    "small": {"depths": [1, 1, 2, 1], "channels": [32, 64, 128, 256], "heads": [2, 4, 8, 16], "patch_size": 256},
    "default": {"depths": [2, 2, 2, 6, 2], "channels": [32, 64, 128, 256, 512], "heads": [2, 4, 8, 16, 32],
                "patch_size": 1024},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(methods, batches, device, steps: int) -> list[list[float]]:
    """Step times of each method, the methods taking turns step by step, so that load from other processes
    on a shared machine falls on all of them alike (running them one after the other biases the ratio)."""
    from pc3d.engine.method import StepState, total_loss

    optimizers = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m in methods]
    times: list[list[float]] = [[] for _ in methods]
    for i in range(steps + 1):  # step 0 of each pays one-off set-up and is not counted
        batch = batches[i % len(batches)]
        for method, optimizer, record in zip(methods, optimizers, times, strict=True):
            torch.manual_seed(i)
            sync(device)
            tic = time.perf_counter()
            terms = method.training_step(batch, StepState(i, 0, 100, 0.5, 1e-4))  # progress 0.5: offset loss on
            total_loss(terms).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(device)
            if i:
                record.append(time.perf_counter() - tic)
    return times


def main() -> None:
    from pc3d.config.pointins import PointINSPreset, SonataPreset
    from pc3d.engine.data import to_device
    from pc3d.methods.pointins import PointINS, offset_distribution_regularization, spatial_clustering_regularization
    from pc3d.methods.sonata import Sonata, build_sets, collate_views, views_point

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--points", type=int, default=4000, help="points per synthetic scene")
    parser.add_argument("--grid", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--table9", action="store_true",
                        help="Table 9 scale: 2 cm grid and its indoor SCR graph (k 150, 1.2 m, 30 points)")
    args = parser.parse_args()
    if args.table9:
        args.grid = 0.02
    device = torch.device(args.device)
    levels = 2
    common = {"model": {**SIZES[args.size], "grid_size": args.grid, "drop_path": 0.0},
              "head": {"hidden": 256, "bottleneck": 64, "prototypes": 256, "up_cast_levels": levels},
              "data": {"num_points": args.points, "synthetic_count": args.batch * 2, "local_views": 2}}
    sonata_cfg = SonataPreset.model_validate(common)
    # SCR graph of the quickstart (scaled to these sparse synthetic rooms; see presets/pointins-quickstart.yaml)
    offset = {} if args.table9 else {"knn": 16, "radius": 0.3, "min_points": 10}  # {}: Table 9's defaults
    pointins_cfg = PointINSPreset.model_validate({**common, "offset": offset})
    torch.manual_seed(0)
    views, _ = build_sets(sonata_cfg)
    batches = [to_device(collate_views([views[2 * i + j] for j in range(args.batch)]), device) for i in range(2)]
    torch.manual_seed(0)
    base = Sonata(sonata_cfg).to(device)
    torch.manual_seed(0)
    full = PointINS(pointins_cfg).to(device)
    base_times, full_times = timed_steps([base, full], batches, device, args.steps)
    b, f = statistics.median(base_times), statistics.median(full_times)

    # ODR and SCR alone on the teacher's head-level points of one batch
    with torch.no_grad():
        head = full.teacher.encode(views_point(batches[0], "global"))
        offsets = full.teacher.offset_head(head.feat)
    cfg = pointins_cfg.offset
    view = head.batch.long()
    sync(device)
    tic = time.perf_counter()
    odr_offsets = offset_distribution_regularization(offsets, *full.prior, group=view)  # all views at once
    sync(device)
    odr = time.perf_counter() - tic
    tic = time.perf_counter()
    spatial_clustering_regularization(head.extras["origin"], odr_offsets, head.feat, cfg.kmeans_k, cfg.kmeans_iters,
                                      cfg.knn, cfg.radius, cfg.min_points, group=view)
    sync(device)
    scr = time.perf_counter() - tic
    print(f"device {device}, size {args.size}, {args.batch} scenes x {args.points} points, "
          f"{head.feat.shape[0]} head-level points ({head.feat.shape[1]} channels) in the global views")
    print(f"base SSL step      {b * 1000:8.1f} ms (median of {len(base_times)})")
    print(f"PointINS step      {f * 1000:8.1f} ms")
    print(f"overhead           {100 * (f - b) / b:8.1f} %  (target <= 10 %)")
    print(f"  ODR alone        {odr * 1000:8.1f} ms = {100 * odr / b:.1f} % of the base step")
    print(f"  SCR alone        {scr * 1000:8.1f} ms = {100 * scr / b:.1f} % of the base step")


if __name__ == "__main__":
    main()
