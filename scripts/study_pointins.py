"""Study: does the PointINS offset branch help instance segmentation over the same SSL base without it?

Pretrains Sonata/DOS (no offset branch) and PointINS with identical settings and seed on the embedded
synthetic rooms, then linear-probes PointGroup instance segmentation from each checkpoint (frozen encoder,
same probe settings), and runs the label-free instance segmentation from the PointINS offsets. Prints one
JSON object with both probes' AP / AP50 / AP25 / mIoU.

    python scripts/study_pointins.py --epochs 20 --probe-epochs 30 --out runs/study-pointins
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def train(command: str, preset: str, variant: str, sets: list[str], out: str, init_from: str | None = None
          ) -> dict[str, Any]:
    from pc3d.cli.common import dispatch, resolve_config

    config = resolve_config(command, preset, variant, sets, {"out": out, "device": "cpu"})
    return dispatch(config, preset, init_from=init_from)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="pretraining epochs (quickstart preset otherwise)")
    parser.add_argument("--probe-epochs", type=int, default=30)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--val-scenes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/study-pointins")
    args = parser.parse_args()
    from pc3d.console import set_verbosity

    set_verbosity(quiet=True, verbose=False)
    data = [f"data.synthetic_count={args.scenes}", f"data.synthetic_val_count={args.val_scenes}",
            f"run.seed={args.seed}"]
    pretrain_sets = [f"train.epochs={args.epochs}", *data]
    probe_sets = [f"train.epochs={args.probe_epochs}", f"train.eval_every={args.probe_epochs}", *data]
    report: dict[str, Any] = {"settings": vars(args)}
    for method in ("sonata", "pointins"):
        pretrained = train("pretrain", method, "quickstart", pretrain_sets, args.out)
        checkpoint = pretrained["checkpoints"]["last"]
        probe = train("finetune", "probe-scannet", "quickstart", probe_sets, args.out, init_from=checkpoint)
        metrics = probe["metrics"]
        report[method] = {"checkpoint": checkpoint, "pretrain_loss": pretrained["metrics"].get("loss"),
                          **{k[len("val/"):]: v for k, v in metrics.items() if k.startswith("val/")}}
    unsup = train("finetune", "probe-unsup-scannet", "quickstart", data, args.out,
                  init_from=report["pointins"]["checkpoint"])
    report["pointins_unsupervised"] = {k: v for k, v in unsup.items() if k.startswith("unsup_")}
    report["ap50_gain"] = report["pointins"]["ap50"] - report["sonata"]["ap50"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
