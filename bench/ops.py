"""Benchmark pc3d.ops against reference implementations measured in the same run.

    python bench/ops.py            # full sizes (FPS 50k->2048, kNN 2048x50k k=32, Chamfer 32x1024, raster 10k->800x800)
    python bench/ops.py --quick    # small sizes, a few seconds

Each row: pc3d time, the reference's time, and ratio = pc3d / reference (<= 1.0 means pc3d is as fast or
faster). References: Open3D's C++ farthest_point_down_sample; scipy cKDTree (build + query, workers=-1);
for Chamfer forward+backward, its FLOP count divided by the float32 matmul FLOP/s measured here (a roofline,
not an implementation); for the rasteriser, Open3D's C++ project_to_depth_image (one-pixel z-buffer that
returns only depth, no index/colour images). Times are the best of several repeats after a warm-up.
Without open3d (e.g. a GPU machine it was not installed on) its reference rows print nan.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch


def best_time(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops(size: int, repeats: int) -> float:
    a, b = torch.rand(size, size), torch.rand(size, size)
    return 2 * size**3 / best_time(lambda: a @ b, repeats)


def surface_cloud(n: int, seed: int) -> torch.Tensor:
    """Points on a few spheres and a plane: a surface-like cloud, closer to scans than a uniform cube."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for i in range(4):
        d = torch.randn(n // 5, 3, generator=g)
        parts.append(d / d.norm(dim=1, keepdim=True) * (0.2 + 0.1 * i) + torch.tensor([0.5 * i - 0.75, 0.0, 0.3]))
    plane = torch.rand(n - 4 * (n // 5), 3, generator=g) * torch.tensor([2.0, 2.0, 0.0]) - torch.tensor([1.0, 1.0, 0])
    return torch.cat(parts + [plane])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="device for pc3d (references always run on the CPU)")
    args = parser.parse_args()

    try:
        import open3d as o3d
    except ImportError:  # the pc3d timings still matter; only the open3d references are lost
        o3d = None
    from scipy.spatial import cKDTree

    from pc3d.ops import chamfer_distance, farthest_point_sample, knn, look_at, rasterize_points

    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rows = []

    # FPS
    n_pts, n_fps = (10_000, 512) if quick else (50_000, 2048)
    cloud = surface_cloud(n_pts, 0)
    cloud_dev = cloud.to(dev)
    ours = best_time(lambda: farthest_point_sample(cloud_dev, n_fps), repeats, sync)
    ref = float("nan")
    if o3d is not None:
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.double().numpy()))
        ref = best_time(lambda: pcd.farthest_point_down_sample(n_fps), repeats)
    rows.append(("fps", f"{n_pts}->{n_fps}", ours, "open3d farthest_point_down_sample", ref))

    # kNN
    n_q, k = (512, 32) if quick else (2048, 32)
    query = cloud[torch.randperm(n_pts, generator=torch.Generator().manual_seed(1))[:n_q]]
    q_dev = query.to(dev)
    ref_np, q_np = cloud.numpy(), query.numpy()
    ours = best_time(lambda: knn(q_dev, cloud_dev, k), repeats, sync)
    ref = best_time(lambda: cKDTree(ref_np).query(q_np, k=k, workers=-1), repeats)
    rows.append(("knn", f"{n_q}q x {n_pts} k={k}", ours, "scipy cKDTree build+query", ref))

    # Chamfer forward + backward
    batch, n_c = (8, 512) if quick else (32, 1024)
    g = torch.Generator().manual_seed(2)
    a = torch.rand(batch, n_c, 3, generator=g).to(dev).requires_grad_(True)
    b = torch.rand(batch, n_c, 3, generator=g).to(dev).requires_grad_(True)

    def chamfer_step() -> None:
        chamfer_distance(a, b).backward()

    ours = best_time(chamfer_step, repeats, sync)
    # pairwise squared distances: 3 sub + 3 mul + 2 add per pair, plus one comparison per pair per direction
    flops = batch * n_c * n_c * (8 + 2)
    rate = matmul_flops(1024 if quick else 2048, repeats)
    rows.append(("chamfer fwd+bwd", f"{batch}x{n_c} vs {batch}x{n_c}", ours,
                 f"{flops / 1e6:.0f} MFLOP at matmul {rate / 1e9:.0f} GFLOP/s", flops / rate))

    # Rasteriser
    n_r, size = (2_000, 200) if quick else (10_000, 800)
    pts = surface_cloud(n_r, 3)
    focal = size / (2 * np.tan(np.radians(30)))
    K = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]], dtype=torch.float32)
    E = look_at(torch.tensor([0.0, -2.2, 0.8]), torch.zeros(3)).float()
    pts_dev, K_dev, E_dev = pts.to(dev), K.to(dev), E.to(dev)
    colors = torch.rand(n_r, 3).to(dev)
    ref = float("nan")
    if o3d is not None:
        tpcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(pts.numpy()))
        K_o3d, E_o3d = o3d.core.Tensor(K.double().numpy()), o3d.core.Tensor(E.double().numpy())
        ref = best_time(lambda: tpcd.project_to_depth_image(size, size, K_o3d, E_o3d, depth_scale=1.0,
                                                            depth_max=1e3), repeats)
    for radius in (0, 1):
        ours = best_time(lambda r=radius: rasterize_points(pts_dev, K_dev, E_dev, size, size, radius=r,
                                                           colors=colors), repeats, sync)
        rows.append((f"raster r={radius}", f"{n_r} -> {size}x{size}", ours, "open3d project_to_depth_image", ref))

    print(f"device {dev}, torch threads {torch.get_num_threads()}, best of {repeats}")
    header = f"{'op':16s} {'size':24s} {'pc3d ms':>9s} {'ref ms':>9s} {'ratio':>7s}  reference"
    print(header)
    print("-" * len(header))
    for op, size_text, ours, ref_name, ref in rows:
        print(f"{op:16s} {size_text:24s} {ours * 1e3:9.2f} {ref * 1e3:9.2f} {ours / ref:7.2f}  {ref_name}")


if __name__ == "__main__":
    main()
