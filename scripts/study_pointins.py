"""Study: does the PointINS offset branch help instance segmentation over the same SSL base without it?

Pretrains Sonata/DOS (no offset branch) and PointINS (once per magnitude prior in --priors) with identical
settings and seed on the embedded synthetic rooms, then linear-probes PointGroup instance segmentation from
each checkpoint (frozen encoder, same probe settings). The probe's offset head starts from the checkpoint's
pretrained (teacher) offset head (`probe.offset_init=pretrained`); Sonata has none, so it gets a random head
of the same shape at the same level. With --controls, each PointINS encoder is also probed with a random
offset head, which separates what the pretrained head brings from what the encoder features bring. Also runs
the label-free instance segmentation from the PointINS offsets. Prints one JSON object (settings, every
probe's AP / AP50 / AP25 / mIoU, timings) and a Markdown table.

The probe loads the EMA *teacher*, so pretraining uses the `study` preset variants (same EMA schedule for both
methods, 0.9 -> 0.99) to make the teacher follow the student in a short CPU run; --check-drift also reports how
far each teacher encoder moved from the shared initialisation and from the other runs' teachers.

    OMP_NUM_THREADS=1 python scripts/study_pointins.py --epochs 20 --probe-epochs 30 --priors gamma fitted \
        --controls --check-drift --seeds 0 1

Measured (session 2; --epochs 100 --probe-epochs 30 --seeds 0 1 2 3, ~5 min per pretraining on one core): instance
AP 0.074 (PointINS) vs 0.060 (Sonata), PointINS ahead in all four seeds (+0.015 +0.015 +0.005 +0.024); AP50 0.151
vs 0.126; AP25 0.273 vs 0.221; mIoU 0.307 vs 0.310. With Table 9's SCR graph unscaled (--pointins-set offset.knn=32
--pointins-set offset.radius=1.2, seeds 0-1, before the last augmentation change) PointINS lost (AP 0.031 vs 0.062):
its pseudo-instances chain neighbouring objects.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def train(command: str, preset: str, variant: str, sets: list[str], out: str, init_from: str | None = None
          ) -> dict[str, Any]:
    from pc3d.cli.common import dispatch, resolve_config

    config = resolve_config(command, preset, variant, sets, {"out": out, "device": "cpu"})
    return dispatch(config, preset, init_from=init_from)


def probe(checkpoint: str, sets: list[str], out: str, offset_init: str) -> dict[str, Any]:
    start = time.perf_counter()
    result = train("finetune", "probe-scannet", "quickstart", [*sets, f"probe.offset_init={offset_init}"], out,
                   init_from=checkpoint)
    metrics = {k[len("val/"):]: v for k, v in result["metrics"].items() if k.startswith("val/")}
    return {"offset_init": result.get("offset_init"), **metrics, "seconds": round(time.perf_counter() - start, 1)}


def pretrain(method: str, sets: list[str], out: str, variant: str) -> tuple[str, dict[str, Any]]:
    start = time.perf_counter()
    result = train("pretrain", method, variant, sets, out)
    return result["checkpoints"]["last"], {"pretrain_loss": result["metrics"].get("loss"),
                                           "pretrain_seconds": round(time.perf_counter() - start, 1)}


def teacher_encoder(checkpoint: str) -> dict[str, Any]:
    """The teacher's encoder parameters (float tensors; BN counters left out) of a pretraining checkpoint."""
    from pc3d.engine.checkpoint import load_weights

    prefix = "teacher.encoder."
    return {k[len(prefix):]: v.double() for k, v in load_weights(checkpoint).items()
            if k.startswith(prefix) and v.is_floating_point() and "running_" not in k}


def relative_distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """||a - b|| / ||b|| over all shared tensors: how far weights `a` are from reference weights `b`."""
    keys = sorted(set(a) & set(b))
    diff = sum(float((a[k] - b[k]).pow(2).sum()) for k in keys)
    norm = sum(float(b[k].pow(2).sum()) for k in keys)
    return (diff / norm) ** 0.5


def initial_teacher(method: str, sets: list[str], out: str, variant: str) -> str:
    """A checkpoint whose teacher is still the initialisation: one epoch at EMA momentum 1 (teacher <- teacher)."""
    keep = [s for s in sets if not s.startswith(("train.epochs=", "train.save_every="))]
    return pretrain(method, [*keep, "train.epochs=1", "train.save_every=1", "train.ema_momentum=1.0",
                             "train.ema_momentum_final=1.0"], out, variant)[0]


def drift(checkpoints: dict[str, str], init: str) -> dict[str, Any]:
    """Relative L2 distance of each teacher encoder from the initialisation and from every other teacher."""
    start = teacher_encoder(init)
    weights = {name: teacher_encoder(path) for name, path in checkpoints.items()}
    names = list(weights)
    return {"from_init": {n: round(relative_distance(weights[n], start), 4) for n in names},
            "between": {f"{a} vs {b}": round(relative_distance(weights[a], weights[b]), 4)
                        for i, a in enumerate(names) for b in names[i + 1:]}}


def table(report: dict[str, Any]) -> str:
    metrics = ("ap", "ap50", "ap25", "miou")
    rows = ["| encoder | offset head | seed | AP | AP50 | AP25 | mIoU |", "|---|---|---|---|---|---|---|"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in report["probes"].values():
        rows.append(f"| {entry['encoder']} | {entry['offset_init']} | {entry['seed']} | "
                    + " | ".join(f"{entry[m]:.4f}" for m in metrics) + " |")
        groups.setdefault(entry["encoder"] + " / " + str(entry["offset_init"]), []).append(entry)
    if any(len(entries) > 1 for entries in groups.values()):
        rows += ["", "| encoder / offset head | seeds | AP | AP50 | AP25 | mIoU |", "|---|---|---|---|---|---|"]
        for group, entries in groups.items():
            cells = []
            for m in metrics:
                values = [e[m] for e in entries]
                mean = sum(values) / len(values)
                cells.append(f"{mean:.4f} ({min(values):.4f}-{max(values):.4f})")
            rows.append(f"| {group} | {len(entries)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def save(report: dict[str, Any], out: str) -> None:
    """The report so far, so a long study that is stopped still leaves its finished probes."""
    from pathlib import Path

    from pc3d.io.atomic import write_text_atomic

    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out) / "study.json", json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="pretraining epochs (quickstart preset otherwise)")
    parser.add_argument("--probe-epochs", type=int, default=30)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--val-scenes", type=int, default=4)
    parser.add_argument("--num-points", type=int, default=4000, help="points per synthetic scene")
    parser.add_argument("--priors", nargs="*", default=["gamma"], choices=["gamma", "lognormal", "fitted"],
                        help="PointINS magnitude priors to pretrain with (one PointINS run each)")
    parser.add_argument("--controls", action="store_true", help="also probe PointINS encoders with a random head")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one full study per seed")
    parser.add_argument("--variant", default="study", help="pretraining preset variant for both methods")
    parser.add_argument("--check-drift", action="store_true",
                        help="report how far each teacher encoder moved from its initialisation and the others")
    parser.add_argument("--pointins-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra preset override for the PointINS pretraining runs only (repeatable), e.g. "
                             "offset.radius=0.3")
    parser.add_argument("--no-base", action="store_true",
                        help="skip the Sonata base run (same seeds and settings reproduce it exactly on CPU)")
    parser.add_argument("--out", default="runs/study-pointins")
    args = parser.parse_args()
    from pc3d.console import set_verbosity

    set_verbosity(quiet=True, verbose=False)
    report: dict[str, Any] = {"settings": vars(args), "pretraining": {}, "probes": {}, "unsupervised": {},
                              "drift": {}}
    for seed in args.seeds:
        data = [f"data.synthetic_count={args.scenes}", f"data.synthetic_val_count={args.val_scenes}",
                f"data.num_points={args.num_points}", f"run.seed={seed}"]
        pretrain_sets = [f"train.epochs={args.epochs}", f"train.save_every={args.epochs}", *data]
        probe_sets = [f"train.epochs={args.probe_epochs}", f"train.eval_every={args.probe_epochs}", *data]
        checkpoints: dict[str, str] = {}
        if not args.no_base:
            checkpoint, info = pretrain("sonata", pretrain_sets, args.out, args.variant)
            checkpoints["sonata"] = checkpoint
            report["pretraining"][f"sonata, seed {seed}"] = {"checkpoint": checkpoint, **info}
            # `pretrained` is the default; Sonata's checkpoint has no offset head, so the probe falls back to random
            report["probes"][f"sonata, seed {seed}"] = {"encoder": "sonata", "seed": seed,
                                                        **probe(checkpoint, probe_sets, args.out, "pretrained")}
            save(report, args.out)
        for prior in args.priors:
            name = f"pointins ({prior} prior)"
            checkpoint, info = pretrain("pointins", [*pretrain_sets, f"offset.prior={prior}", *args.pointins_set],
                                        args.out, args.variant)
            checkpoints[name] = checkpoint
            report["pretraining"][f"{name}, seed {seed}"] = {"checkpoint": checkpoint, **info}
            report["probes"][f"{name}, seed {seed}"] = {"encoder": name, "seed": seed,
                                                        **probe(checkpoint, probe_sets, args.out, "pretrained")}
            save(report, args.out)
            if args.controls:
                report["probes"][f"{name}, random head, seed {seed}"] = {
                    "encoder": name, "seed": seed, **probe(checkpoint, probe_sets, args.out, "random")}
                save(report, args.out)
            unsup = train("finetune", "probe-unsup-scannet", "quickstart", data, args.out, init_from=checkpoint)
            report["unsupervised"][f"{name}, seed {seed}"] = {k: v for k, v in unsup.items()
                                                              if k.startswith("unsup_")}
            save(report, args.out)
        if args.check_drift:
            # Sonata and PointINS build the same encoder from the same seed, so one initial teacher serves both
            init = initial_teacher("sonata", pretrain_sets, args.out, args.variant)
            report["drift"][f"seed {seed}"] = drift(checkpoints, init)
            save(report, args.out)
    print(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
