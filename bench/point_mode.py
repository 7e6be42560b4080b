"""Point-MoDE pretraining step: wall time and the share of each component.

Components of one training step (forward + backward): block sampling and the scene-to-object
transform, the object expert (Point-MAE masked reconstruction on K blocks per scene), the scene
tokenizer (FPS + ball query + PointNet), the scene encoder + decoder + box heads, the losses, and
the backward pass. The reference measured in the same run is a plain Point-MAE step on the same
blocks (the `object-only` ablation), so the printed ratio says what the scene branch costs.

    python bench/point_mode.py                      # quickstart sizes on CPU
    python bench/point_mode.py --preset point-mode --device cuda --batch 8   # paper sizes
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                sync(timer.device)
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                sync(timer.device)
                timer.totals[name] += time.perf_counter() - self.start

        return _Span()


def instrumented_step(method, points: torch.Tensor, timer: Timer, generator: torch.Generator) -> None:
    """The same computation as PointMoDEPretraining.block_losses, split into timed parts."""
    from pc3d.methods.point_mode import rotate_scenes_z
    from pc3d.models.point_mode import block_boxes, replicate_to, sample_blocks, to_object_view
    from pc3d.ops.boxes import paired_giou

    cfg = method.blocks
    with timer("blocks + transform"):
        points = rotate_scenes_z(points, generator)
        blocks = sample_blocks(points, cfg.count, cfg.points, generator)
        targets = block_boxes(blocks, cfg.centre)
        view = to_object_view(blocks, cfg.rotation, generator).reshape(-1, cfg.points, 3)
    with timer("object expert (MAE)"):
        rec, feats = method.object_pass(view, True, generator)
    model = method.model
    with timer("scene tokenizer"):
        from pc3d.models.point_mode import SceneTokens

        low, high = points.amin(dim=1), points.amax(dim=1)
        xyz, tokens, _ = model.scene.tokenizer(points)
    with timer("scene encoder+decoder"):
        for layer in model.scene.encoder:
            tokens = layer(tokens)
        from pc3d.models.detr3d import apply_conv_mlp

        tokens = apply_conv_mlp(model.scene.encoder_to_decoder, tokens)
        scene = SceneTokens(xyz, tokens, model.scene.pos_encoding(xyz, low, high), low, high)
        tgt, pos = model.block_queries(feats.reshape(points.shape[0], cfg.count, -1).detach(), points.shape[0])
        outputs = model.scene.decode(tgt, pos, scene)
        boxes, _ = model.predict_boxes(outputs, scene)
    with timer("losses"):
        target = replicate_to(targets, boxes.shape[2]).unsqueeze(0).expand(boxes.shape[0], -1, -1, -1)
        giou = (1 - paired_giou(boxes.reshape(-1, 6), target.reshape(-1, 6))).mean()
        loss = rec + giou
    with timer("backward"):
        loss.backward()


def object_only_step(method, points: torch.Tensor, generator: torch.Generator) -> None:
    from pc3d.models.point_mode import sample_blocks, to_object_view

    cfg = method.blocks
    blocks = sample_blocks(points, cfg.count, cfg.points, generator)
    view = to_object_view(blocks, cfg.rotation, generator).reshape(-1, cfg.points, 3)
    rec, _ = method.object_pass(view, True, generator)
    rec.backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="point-mode-quickstart")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    from pc3d.config import load_preset, validate_preset
    from pc3d.data.synthetic.scenes import generate_scene, scene_rng
    from pc3d.methods.point_mode import PointMoDEPretraining

    config = validate_preset(load_preset(args.preset), args.preset)
    device = torch.device(args.device)
    torch.manual_seed(0)
    method = PointMoDEPretraining(config).to(device).train()
    n = config.data.num_points
    points = torch.stack([torch.from_numpy(generate_scene(scene_rng(0, i), n).points)
                          for i in range(args.batch)]).to(device)
    generator = torch.Generator().manual_seed(0)

    timer = Timer(device)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            timer.totals.clear()
        method.zero_grad(set_to_none=True)
        instrumented_step(method, points, timer, generator)
    total = sum(timer.totals.values()) / args.steps

    ref = 0.0
    for step in range(args.warmup + args.steps):
        method.zero_grad(set_to_none=True)
        sync(device)
        start = time.perf_counter()
        object_only_step(method, points, generator)
        sync(device)
        if step >= args.warmup:
            ref += (time.perf_counter() - start) / args.steps

    print(f"Point-MoDE pretraining step, preset {args.preset}, batch {args.batch} scenes x {n} points, "
          f"{config.blocks.count} blocks x {config.blocks.points} points, device {device}, "
          f"threads {torch.get_num_threads()}")
    print(f"{'component':<24}{'ms':>10}{'share':>9}")
    for name, seconds in timer.totals.items():
        ms = 1000 * seconds / args.steps
        print(f"{name:<24}{ms:>10.1f}{100 * seconds / args.steps / total:>8.1f}%")
    print(f"{'total step':<24}{1000 * total:>10.1f}")
    print(f"reference: Point-MAE-only step on the same blocks {1000 * ref:.1f} ms; "
          f"Point-MoDE / Point-MAE = {total / ref:.2f}x")


if __name__ == "__main__":
    main()
