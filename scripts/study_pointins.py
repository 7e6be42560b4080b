"""Study: does the PointINS offset branch help instance segmentation over the same SSL base without it?

Pretrains Sonata/DOS (no offset branch) and PointINS (once per magnitude prior in --priors) with identical
settings and seed on the embedded synthetic rooms, then linear-probes PointGroup instance segmentation from
each checkpoint (frozen encoder, same probe settings). The probe's offset head starts from the checkpoint's
pretrained (teacher) offset head (`probe.offset_init=pretrained`); Sonata has none, so it gets a random head
of the same shape at the same level. With --controls, each PointINS encoder is also probed with a random
offset head, which separates what the pretrained head brings from what the encoder features bring. Also runs
the label-free instance segmentation from the PointINS offsets. Prints one JSON object (settings, every
probe's AP / AP50 / AP25 / mIoU, timings) and a Markdown table.

    python scripts/study_pointins.py --epochs 20 --probe-epochs 30 --priors gamma fitted --controls
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


def pretrain(method: str, sets: list[str], out: str) -> tuple[str, dict[str, Any]]:
    start = time.perf_counter()
    result = train("pretrain", method, "quickstart", sets, out)
    return result["checkpoints"]["last"], {"pretrain_loss": result["metrics"].get("loss"),
                                           "pretrain_seconds": round(time.perf_counter() - start, 1)}


def table(report: dict[str, Any]) -> str:
    rows = ["| encoder | offset head | AP | AP50 | AP25 | mIoU |", "|---|---|---|---|---|---|"]
    for name, entry in report["probes"].items():
        rows.append(f"| {name} | {entry['offset_init']} | {entry['ap']:.4f} | {entry['ap50']:.4f} | "
                    f"{entry['ap25']:.4f} | {entry['miou']:.4f} |")
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
    parser.add_argument("--priors", nargs="+", default=["gamma"], choices=["gamma", "lognormal", "fitted"],
                        help="PointINS magnitude priors to pretrain with (one PointINS run each)")
    parser.add_argument("--controls", action="store_true", help="also probe PointINS encoders with a random head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/study-pointins")
    args = parser.parse_args()
    from pc3d.console import set_verbosity

    set_verbosity(quiet=True, verbose=False)
    data = [f"data.synthetic_count={args.scenes}", f"data.synthetic_val_count={args.val_scenes}",
            f"data.num_points={args.num_points}", f"run.seed={args.seed}"]
    pretrain_sets = [f"train.epochs={args.epochs}", f"train.save_every={args.epochs}", *data]
    probe_sets = [f"train.epochs={args.probe_epochs}", f"train.eval_every={args.probe_epochs}", *data]
    report: dict[str, Any] = {"settings": vars(args), "pretraining": {}, "probes": {}, "unsupervised": {}}
    checkpoint, info = pretrain("sonata", pretrain_sets, args.out)
    report["pretraining"]["sonata"] = {"checkpoint": checkpoint, **info}
    # `pretrained` is the default; Sonata's checkpoint has no offset head, so the probe falls back to random
    report["probes"]["sonata"] = probe(checkpoint, probe_sets, args.out, "pretrained")
    save(report, args.out)
    for prior in args.priors:
        name = f"pointins ({prior} prior)"
        checkpoint, info = pretrain("pointins", [*pretrain_sets, f"offset.prior={prior}"], args.out)
        report["pretraining"][name] = {"checkpoint": checkpoint, **info}
        report["probes"][name] = probe(checkpoint, probe_sets, args.out, "pretrained")
        save(report, args.out)
        if args.controls:
            report["probes"][f"{name}, random head"] = probe(checkpoint, probe_sets, args.out, "random")
            save(report, args.out)
        unsup = train("finetune", "probe-unsup-scannet", "quickstart", data, args.out, init_from=checkpoint)
        report["unsupervised"][name] = {k: v for k, v in unsup.items() if k.startswith("unsup_")}
        save(report, args.out)
    print(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
