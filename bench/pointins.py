"""PointINS overhead: the offset branch + ODR + SCR per training step, as a share of the base SSL step.

Both steps run in this process on the same batches (same views, same seeds), taking turns: the Sonata/DOS step
alone, and the PointINS step (offset heads, teacher offsets, ODR, SCR, offset losses) with the offset loss on.
Prints median times and the ratio (target <= 10 % extra; the paper reports +25 % total on GPU), one profiled
PointINS step split into its parts (torch.profiler scopes of pc3d.methods.pointins), and ODR / SCR alone on the
teacher's head-level points.

--table9 adds the paper's scale (Table 9, indoor): 2 cm grid, SCR graph k_nn 150 / tau_d 1.2 m / tau_min 30,
and SCR + ODR timed on head-level point sets of ScanNet size (--table9-scenes rooms x 2 global views, each
room sampled densely, grid-sampled at 2 cm, cropped like a global view and pooled twice to the heads' level,
~10^5 points in all). Their features and offsets stand in for a trained teacher's: features separate the
rooms' classes and instances (plus noise), offsets point at the instance centres (plus noise) and then go
through ODR. The base step at that size would take minutes on a CPU, so its time is the measured base step
scaled by head-level points (PTv3's cost is linear in points: fixed-size attention patches); the printout says
which ratios are measured and which scaled.

    python bench/pointins.py                      # tiny model, CPU
    python bench/pointins.py --table9             # default model, 2 cm, Table 9 SCR graph; CPU or CUDA
    python bench/pointins.py --table9 --device cuda --points 100000 --table9-scenes 16
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

SIZES = {
    "tiny": {"depths": [1, 1, 1], "channels": [16, 32, 64], "heads": [2, 2, 4], "patch_size": 128},
    "small": {"depths": [1, 1, 2, 1], "channels": [32, 64, 128, 256], "heads": [2, 4, 8, 16], "patch_size": 256},
    "default": {"depths": [2, 2, 2, 6, 2], "channels": [32, 64, 128, 256, 512], "heads": [2, 4, 8, 16, 32],
                "patch_size": 1024},
}
SCOPES = ("pointins/ssl", "pointins/offset_heads", "pointins/targets", "pointins/odr", "pointins/scr_kmeans",
          "pointins/scr_graph", "pointins/offset_loss")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_step(method, optimizer, batch, step: int, device: torch.device) -> float:
    from pc3d.engine.method import StepState, total_loss

    torch.manual_seed(step)
    sync(device)
    tic = time.perf_counter()
    terms = method.training_step(batch, StepState(step, 0, 100, 0.5, 1e-4))  # progress 0.5: offset loss on
    total_loss(terms).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - tic


def timed_steps(methods, batches, device, steps: int) -> tuple[list[list[float]], list]:
    """Step times of each method, the methods taking turns step by step, so that load from other processes
    on a shared machine falls on all of them alike (running them one after the other biases the ratio)."""
    optimizers = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m in methods]
    times: list[list[float]] = [[] for _ in methods]
    for i in range(steps + 1):  # step 0 of each pays one-off set-up and is not counted
        for method, optimizer, record in zip(methods, optimizers, times, strict=True):
            elapsed = one_step(method, optimizer, batches[i % len(batches)], i, device)
            if i:
                record.append(elapsed)
    return times, optimizers


def profile_parts(method, optimizer, batch, device: torch.device) -> tuple[float, dict[str, float]]:
    """One profiled PointINS step: (step time, seconds inside each pointins/* scope). Scopes nest (odr and
    scr_* are inside targets); the backward pass of the offset heads is in the step but in no scope."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        total = one_step(method, optimizer, batch, 1000, device)
    parts = {name: 0.0 for name in SCOPES}
    for event in prof.key_averages():
        if event.key in parts:
            # the scope's wall time on the host (device time for CUDA kernels overlaps it)
            parts[event.key] = event.cpu_time_total / 1e6
    return total, parts


# ----------------------------------------------------------------------------- Table 9 head-level sets


def head_level_sets(scenes: int, raw_points: int, seed: int, channels: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(coord, offsets, features, view) of `scenes` rooms x 2 global views at the heads' level (8 cm = 2 cm x
    two poolings), stand-ins for a trained teacher's (see the module docstring)."""
    from pc3d.data.synthetic.scenes import generate_scene, scene_rng
    from pc3d.ops.grid import grid_sample

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(64, channels, generator=gen)  # classes and instances -> feature directions
    coords, offsets, feats, views = [], [], [], []
    for s in range(scenes):
        room = generate_scene(scene_rng(seed, s), raw_points)
        xyz = torch.from_numpy(room.points).double()
        fine = grid_sample(xyz.float(), 0.02).unique_index  # the 2 cm input grid
        for v in range(2):  # two global views: crops of 40-100 % of the points nearest a random point
            centre = xyz[fine][rng.integers(fine.numel())]
            keep = max(1, math.ceil(rng.uniform(0.4, 1.0) * fine.numel()))
            crop = fine[torch.argsort(((xyz[fine] - centre) ** 2).sum(1), stable=True)[:keep]]
            cells = grid_sample(xyz[crop].float(), 0.08)  # two 2x poolings: the heads' level, mean coordinates
            ids = cells.inverse
            count = torch.bincount(ids).double().unsqueeze(1)
            point = torch.zeros(cells.num_cells, 3, dtype=torch.float64).index_add_(0, ids, xyz[crop]) / count
            inst = torch.from_numpy(room.instance)[crop][cells.unique_index]
            sem = torch.from_numpy(room.semantic)[crop][cells.unique_index]
            centre_sum = torch.zeros(int(inst.max()) + 1, 3, dtype=torch.float64).index_add_(0, inst, point)
            inst_centre = centre_sum / torch.bincount(inst).double().clamp_min(1).unsqueeze(1)
            noise = torch.randn(point.shape[0], 3, generator=gen, dtype=torch.float64) * 0.1
            offsets.append((inst_centre[inst] - point + noise).float())
            feats.append(basis[sem % 64] + 0.5 * basis[(inst * 7 + 3) % 64]
                         + 0.3 * torch.randn(point.shape[0], channels, generator=gen))
            coords.append(point.float())
            views.append(torch.full((point.shape[0],), 2 * s + v, dtype=torch.long))
    return torch.cat(coords), torch.cat(offsets), torch.cat(feats), torch.cat(views)


def time_targets(coord, offsets, feat, view, cfg, prior, device, repeats: int) -> dict[str, float]:
    """Median seconds of ODR, SCR (k-means + graph + components) and its graph part on one point set."""
    from pc3d.methods.pointins import offset_distribution_regularization
    from pc3d.ops.clustering import connected_components, grouped_kmeans

    coord, offsets, feat, view = (t.to(device) for t in (coord, offsets, feat, view))
    out: dict[str, list[float]] = {"odr": [], "kmeans": [], "graph": []}
    for r in range(repeats):
        sync(device)
        tic = time.perf_counter()
        odr = offset_distribution_regularization(offsets, *prior, group=view)
        sync(device)
        out["odr"].append(time.perf_counter() - tic)
        tic = time.perf_counter()
        labels, _ = grouped_kmeans(torch.nn.functional.normalize(feat, dim=1), view, cfg.kmeans_k, cfg.kmeans_iters,
                                   r)
        sync(device)
        out["kmeans"].append(time.perf_counter() - tic)
        tic = time.perf_counter()
        connected_components(coord + odr, cfg.radius, k=cfg.knn, min_size=cfg.min_points,
                             group=view * cfg.kmeans_k + labels)
        sync(device)
        out["graph"].append(time.perf_counter() - tic)
    med = {key: statistics.median(values) for key, values in out.items()}
    med["scr"] = med["kmeans"] + med["graph"]
    return med


def main() -> None:
    from pc3d.config.pointins import PointINSPreset, SonataPreset
    from pc3d.engine.data import to_device
    from pc3d.methods.pointins import PointINS
    from pc3d.methods.sonata import Sonata, build_sets, collate_views, views_point
    from pc3d.models.ptv3 import expected_upcast_channels

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="tiny (default), or default with "
                        "--table9")
    parser.add_argument("--points", type=int, default=None, help="points per synthetic scene of the timed steps "
                        "(4000; 12000 with --table9)")
    parser.add_argument("--grid", type=float, default=None, help="grid cell (m): 0.1, or 0.02 with --table9")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per method (10; 3 with --table9)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--table9", action="store_true",
                        help="Table 9 scale: default model, 2 cm grid, its indoor SCR graph (k 150, 1.2 m, 30 "
                        "points), and SCR / ODR on ScanNet-size head-level sets")
    parser.add_argument("--table9-scenes", type=int, default=4, help="rooms of the head-level sets (x 2 views)")
    parser.add_argument("--table9-raw", type=int, default=400_000, help="raw points sampled per room")
    args = parser.parse_args()
    size = args.size or ("default" if args.table9 else "tiny")
    points = args.points or (12000 if args.table9 else 4000)
    grid = args.grid or (0.02 if args.table9 else 0.1)
    steps = args.steps or (3 if args.table9 else 10)
    device = torch.device(args.device)
    levels = 2
    common = {"model": {**SIZES[size], "grid_size": grid, "drop_path": 0.0},
              "head": {"hidden": 256, "bottleneck": 64, "prototypes": 256, "up_cast_levels": levels},
              "data": {"num_points": points, "synthetic_count": args.batch * 2, "local_views": 2},
              "run": {"seed": args.seed}}
    if args.table9:  # Sonata's heads (4096 hidden and prototypes, 256 bottleneck): the base step the paper times
        common["head"] = {"hidden": 4096, "bottleneck": 256, "prototypes": 4096, "up_cast_levels": levels}
    sonata_cfg = SonataPreset.model_validate(common)
    # SCR graph of the quickstart (scaled to these sparse synthetic rooms; see presets/pointins-quickstart.yaml)
    offset = {} if args.table9 else {"knn": 16, "radius": 0.3, "min_points": 10}  # {}: Table 9's defaults
    pointins_cfg = PointINSPreset.model_validate({**common, "offset": offset})
    torch.manual_seed(args.seed)
    views, _ = build_sets(sonata_cfg)
    batches = [to_device(collate_views([views[2 * i + j] for j in range(args.batch)]), device) for i in range(2)]
    torch.manual_seed(args.seed)
    base = Sonata(sonata_cfg).to(device)
    torch.manual_seed(args.seed)
    full = PointINS(pointins_cfg).to(device)
    (base_times, full_times), optimizers = timed_steps([base, full], batches, device, steps)
    b, f = statistics.median(base_times), statistics.median(full_times)
    profiled, parts = profile_parts(full, optimizers[1], batches[0], device)
    with torch.no_grad():
        head = full.teacher.encode(views_point(batches[0], "global"))
        offsets = full.teacher.offset_head(head.feat)
    cfg = pointins_cfg.offset
    view = head.batch.long()
    alone = time_targets(head.extras["origin"].float(), offsets, head.feat, view, cfg, full.prior, device, 3)
    n_head = head.feat.shape[0]

    print(f"device {device}, size {size}, grid {grid} m, {args.batch} scenes x {points} points, "
          f"{batches[0]['global_coord'].shape[0]} input points in the global views, {n_head} head-level points "
          f"({head.feat.shape[1]} channels); SCR k {cfg.knn}, tau_d {cfg.radius} m, tau_min {cfg.min_points}")
    print(f"base SSL step      {b * 1000:9.1f} ms (median of {len(base_times)})")
    print(f"PointINS step      {f * 1000:9.1f} ms (median of {len(full_times)})")
    print(f"overhead           {100 * (f - b) / b:9.1f} %  (measured; target <= 10 %)")
    print(f"one profiled PointINS step {profiled * 1000:.1f} ms, of which (profiler scopes, % of the base step):")
    for name in SCOPES[1:]:
        indent = "    " if name in ("pointins/odr", "pointins/scr_kmeans", "pointins/scr_graph") else "  "
        print(f"{indent}{name:24s}{parts[name] * 1000:9.1f} ms = {100 * parts[name] / b:5.1f} %")
    rest = profiled - sum(parts[n] for n in ("pointins/ssl", "pointins/offset_heads", "pointins/targets",
                                              "pointins/offset_loss"))
    print(f"  {'backward + optimiser':24s}{rest * 1000:9.1f} ms (whole step minus the forward scopes)")
    print(f"ODR alone          {alone['odr'] * 1000:9.1f} ms = {100 * alone['odr'] / b:.1f} % of the base step")
    print(f"SCR alone          {alone['scr'] * 1000:9.1f} ms = {100 * alone['scr'] / b:.1f} % (k-means "
          f"{alone['kmeans'] * 1000:.1f} ms, graph + components {alone['graph'] * 1000:.1f} ms)")
    if not args.table9:
        return
    width = expected_upcast_channels(tuple(pointins_cfg.model.channels), levels)
    coord, offs, feat, view9 = head_level_sets(args.table9_scenes, args.table9_raw, args.seed, width)
    t9 = time_targets(coord, offs, feat, view9, cfg, full.prior, device, 3)
    n9 = coord.shape[0]
    scaled = b * n9 / n_head
    print(f"Table 9 head-level sets: {args.table9_scenes} rooms x 2 views, {n9} points ({width} channels)")
    print(f"  base step scaled to {n9} head-level points: {scaled:.2f} s (= measured {b:.2f} s x {n9}/{n_head})")
    for name in ("odr", "kmeans", "graph", "scr"):
        print(f"  {name:8s}{t9[name] * 1000:10.1f} ms = {100 * t9[name] / scaled:5.1f} % of the scaled base step")


if __name__ == "__main__":
    main()
