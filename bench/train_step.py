"""Training-step throughput of the Point-MAE-size encoder next to this machine's matmul FLOP/s.

One step = forward + backward + AdamW on `pc3d.models.point_mae.PointMAEEncoder` (mini-PointNet
tokenizer on 64 patches x 32 points, 12 pre-norm blocks, dim 384, 6 heads, MLP 4x), batch 32.
The model's FLOPs per sample are counted twice, by hand (shapes below) and by torch's FlopCounterMode,
and the achieved FLOP/s is divided by the FLOP/s of a large fp32 matmul measured here: the utilisation.

    python bench/train_step.py [--batch 32] [--steps 3] [--device auto] [--threads N] [--json]
    python bench/train_step.py --device cuda --amp    # bf16 autocast; also against a bf16 matmul
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pc3d.models.point_mae import PointMAEEncoder

GROUPS, GROUP_SIZE, DIM, DEPTH, HEADS, MLP_RATIO = 64, 32, 384, 12, 6, 4


def forward_flops_by_hand() -> float:
    """Multiply-adds x 2 of one sample's forward pass (norms, activations, softmax, max-pool left out)."""
    points = GROUPS * GROUP_SIZE
    tokenizer = points * (3 * 128 + 128 * 256 + 512 * 512 + 512 * DIM)  # four 1x1 convolutions per point
    position = GROUPS * (3 * 128 + 128 * DIM)
    per_token = (3 + 1 + 2 * MLP_RATIO) * DIM * DIM + 2 * GROUPS * DIM  # qkv, proj, fc1, fc2; QK^T and AV
    return 2.0 * (tokenizer + position + DEPTH * GROUPS * per_token)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(device: torch.device, n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """Best-of FLOP/s of an n x n matmul (fp32 by default): the machine's practical peak for dense math."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - tic)
    return 2.0 * n**3 / best


def make_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: int, device: torch.device,
              amp: bool = False):
    neighborhood = torch.randn(batch, GROUPS, GROUP_SIZE, 3, device=device) * 0.1
    center = torch.randn(batch, GROUPS, 3, device=device)

    def step() -> None:
        # bf16 autocast as pc3d's trainer uses it on CUDA (train.amp auto); bf16 needs no loss scaling
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(neighborhood, center).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def counted_training_flops(step) -> float:
    """FLOPs of one forward+backward as torch counts them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--matmul", type=int, default=2048, help="matmul size for the FLOP/s reference")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast; utilisation also against a bf16 matmul")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    torch.manual_seed(0)
    model = PointMAEEncoder(DIM, DEPTH, HEADS, drop_path=0.0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    step = make_step(model, optimizer, args.batch, device, args.amp)

    counted = counted_training_flops(step) / args.batch  # also serves as the warm-up step
    synchronize(device)
    times = []
    for _ in range(args.steps):
        tic = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - tic)
    seconds = sorted(times)[len(times) // 2]  # median step
    forward = forward_flops_by_hand()
    training = 3.0 * forward  # backward costs about twice the forward (grads of inputs and of weights)
    peak = matmul_flops_per_s(device, args.matmul, repeats=5)
    achieved = training * args.batch / seconds
    result = {
        "device": str(device), "threads": torch.get_num_threads(), "batch": args.batch,
        "params_millions": sum(p.numel() for p in model.parameters()) / 1e6,
        "step_seconds": seconds, "samples_per_s": args.batch / seconds,
        "forward_gflop_per_sample": forward / 1e9, "train_gflop_per_sample": training / 1e9,
        "train_gflop_per_sample_counted": counted / 1e9,
        "achieved_gflop_per_s": achieved / 1e9, "matmul_gflop_per_s": peak / 1e9,
        "utilisation": achieved / peak, "amp": args.amp,
    }
    if args.amp:
        peak_bf16 = matmul_flops_per_s(device, args.matmul, repeats=5, dtype=torch.bfloat16)
        result.update(matmul_bf16_gflop_per_s=peak_bf16 / 1e9, utilisation_bf16=achieved / peak_bf16)
    if args.json:
        print(json.dumps(result))
        return
    print(f"Point-MAE encoder training step on {device} ({result['threads']} threads), batch {args.batch}, "
          f"{result['params_millions']:.1f}M parameters")
    print(f"  step time             {seconds * 1e3:10.1f} ms   ({args.batch / seconds:.1f} samples/s)")
    print(f"  FLOPs per sample      {training / 1e9:10.2f} GFLOP train (3 x {forward / 1e9:.2f} forward by hand; "
          f"FlopCounterMode counts {counted / 1e9:.2f})")
    print(f"  achieved              {achieved / 1e9:10.1f} GFLOP/s")
    print(f"  fp32 matmul {args.matmul}^3   {peak / 1e9:10.1f} GFLOP/s")
    print(f"  utilisation           {achieved / peak:10.1%}")
    if args.amp:
        print(f"  bf16 matmul {args.matmul}^3   {result['matmul_bf16_gflop_per_s']:10.1f} GFLOP/s")
        print(f"  utilisation (bf16)    {result['utilisation_bf16']:10.1%}")


if __name__ == "__main__":
    main()
