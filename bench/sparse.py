"""Benchmark pc3d's sparse-conv backends against spconv, all measured in the same run.

    python bench/sparse.py                  # CPU, full sizes (subm k3 on 100k sites C64, PTv3 on 40k points)
    python bench/sparse.py --quick          # small sizes, seconds
    python bench/sparse.py --device cuda    # the backends available on CUDA

Rows, for every backend available on the device (pc3d.models.sparse.available_backends):
- "subm k3 +maps": one SubMConv3d(C, C, 3) on a fresh tensor, so the neighbour map is built and used;
- "subm k3 cached": the same conv when the map is already cached under its indice_key (as in PTv3's blocks);
- "ptv3 fwd": the default PTv3Encoder (Sonata widths) forward in eval mode without gradients.
ratio = time / spconv's time for that row (<= 1.0: as fast as spconv or faster); the reference is spconv
2.x itself (Native algorithm on CPU, its default on CUDA), run through the same interface. Times are the
best of several repeats after a warm-up, the backends taking turns in each round. Sites are voxels of
surface-like clouds (spheres and a plane), close to real scans in neighbourhood occupancy.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from ops import surface_cloud  # bench/ is the script's folder, so its siblings import by name


def best_times(fns: dict[str, Callable[[], object]], repeats: int,
               sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Best time of each function; the functions take turns in every round, so a load that comes and goes
    on the machine (other processes) hits all of them alike instead of whichever happened to run then."""
    for fn in fns.values():
        fn()
        sync()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def voxel_sites(n_points: int, voxel: float, scenes: int) -> torch.Tensor:
    """(N, 4) int32 unique (batch, x, y, z) voxels of `scenes` surface clouds."""
    rows = []
    for b in range(scenes):
        cells = torch.floor((surface_cloud(n_points, b) + 1.5) / voxel).long()
        rows.append(torch.cat([torch.full((cells.shape[0], 1), b), cells], 1))
    return torch.unique(torch.cat(rows), dim=0).int()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()

    from pc3d.models.ptv3 import Point, PTv3Encoder, voxelize
    from pc3d.models.sparse import ENV_VAR, SparseConvTensor, SubMConv3d, available_backends

    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    backends = available_backends(dev)
    torch.manual_seed(0)

    # subm k3
    n_points, voxel, channels = (40_000, 0.02, 32) if quick else (150_000, 0.01, 64)
    sites = voxel_sites(n_points, voxel, 2).to(dev)
    shape = (sites[:, 1:].max(0).values + 1).tolist()
    feats = torch.randn(sites.shape[0], channels, device=dev)
    fresh = SubMConv3d(channels, channels, 3, bias=False).to(dev)
    keyed = SubMConv3d(channels, channels, 3, bias=False, indice_key="bench").to(dev)

    # PTv3 (Sonata's default encoder) on one scene's voxels
    n_ptv3 = 10_000 if quick else 40_000
    cloud = surface_cloud(n_ptv3, 7)
    encoder = PTv3Encoder(in_channels=9).to(dev).eval()
    point, _ = voxelize(cloud, torch.rand(cloud.shape[0], 9), torch.zeros(cloud.shape[0], dtype=torch.long), 0.02)
    point = Point(coord=point.coord.to(dev), grid_coord=point.grid_coord.to(dev), batch=point.batch.to(dev),
                  feat=point.feat.to(dev))

    def ptv3_forward() -> None:
        encoder(Point(coord=point.coord, grid_coord=point.grid_coord, batch=point.batch, feat=point.feat))

    def on(backend: str, fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            os.environ[ENV_VAR] = backend
            return fn()
        return call

    times: dict[tuple[str, str], float] = {}
    previous = os.environ.get(ENV_VAR)
    try:
        with torch.no_grad():
            x = SparseConvTensor(feats, sites, shape, 2)
            cached = {b: on(b, lambda: keyed(x))() for b in backends}  # maps built once, under "bench"
            rows = {
                "subm k3 +maps": {b: on(b, lambda: fresh(SparseConvTensor(feats, sites, shape, 2)))
                                  for b in backends},
                "subm k3 cached": {b: on(b, lambda c=cached[b]: keyed(c)) for b in backends},
                "ptv3 fwd": {b: on(b, ptv3_forward) for b in backends},
            }
            for op, fns in rows.items():
                for backend, t in best_times(fns, repeats, sync).items():
                    times[(op, backend)] = t
    finally:
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous

    print(f"device {dev}, torch threads {torch.get_num_threads()}, best of {repeats}; backends: "
          f"{', '.join(backends)}")
    sizes = {"subm k3 +maps": f"{sites.shape[0]} sites C{channels}", "subm k3 cached": f"{sites.shape[0]} sites "
             f"C{channels}", "ptv3 fwd": f"{point.coord.shape[0]} points, Sonata widths"}
    header = f"{'op':16s} {'size':26s} {'backend':14s} {'ms':>9s} {'vs spconv':>9s}"
    print(header)
    print("-" * len(header))
    for op, size in sizes.items():
        ref = times.get((op, "spconv"))
        for backend in backends:
            t = times[(op, backend)]
            ratio = f"{t / ref:9.2f}" if ref else f"{'n/a':>9s}"
            print(f"{op:16s} {size:26s} {backend:14s} {t * 1e3:9.2f} {ratio}")


if __name__ == "__main__":
    main()
