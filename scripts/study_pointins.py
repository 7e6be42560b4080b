"""Study: does the PointINS offset branch help instance segmentation over the same SSL base without it?

Pretrains Sonata/DOS (no offset branch) and PointINS (once per magnitude prior in --priors) with identical
settings and seed on the embedded synthetic rooms, then probes PointGroup instance segmentation from each
checkpoint with Sonata's protocol, identical for both (pc3d.methods.scene_probe): the pretraining run's student
encoder frozen, fresh semantic and offset heads on the concatenation of every encoder level at the input grid
(`--mode linear`), or the PTv3 decoder trained on the frozen encoder (`--mode decoder`). Each probe validates every
--eval-every epochs, keeps the checkpoint with the best val AP, and scores it once on a disjoint synthetic test
split (generator indices 200 000..); the table reports test metrics, mean +- std over seeds. With --controls both
encoders are also probed with `probe.offset_init=pretrained` (PointINS: its own pretrained offset head warm-started;
Sonata has none, so a random head of that shape) -- the old, non-paper comparison. Also runs the label-free
instance segmentation from the PointINS offsets. Prints one JSON object (settings, every probe's metrics,
timings) and a Markdown table.

    OMP_NUM_THREADS=1 python scripts/study_pointins.py --epochs 50 --probe-epochs 30 --seeds 0 1 2 3

Measured 2026-12-04 (session 3, Sonata's protocol; --epochs 20 --probe-epochs 30 --eval-every 5, one process per
seed S = 0..3 with --seeds S, 8 train / 4 val / 4 test rooms of 4 000 points, on a shared 2-core CPU: 7-20 min
per pretraining, as the load varied): test AP 0.043 +- 0.016 (PointINS) vs 0.039 +- 0.028 (Sonata), paired
+0.005 +- 0.014 (+0.011 +0.021 -0.001 -0.011); AP50 0.096 vs 0.074; AP25 0.128 vs 0.142; mIoU 0.198 vs 0.194 --
no measurable difference at this scale. The session-2 numbers (AP 0.074 vs 0.060) warm-started PointINS's own
pretrained offset head against a random one for Sonata and are superseded.

Decoder probe of the same encoders (session 5, `--mode decoder --reuse runs/study-pointins-v3-sS/study.json --seeds
S`, 30-55 s per probe): test AP 0.038 +- 0.030 (PointINS) vs 0.038 +- 0.021 (Sonata), paired -0.000 +- 0.020
(-0.012 -0.022 +0.009 +0.023); AP50 0.081 vs 0.113; mIoU 0.225 vs 0.231 -- no measurable difference either.

Longer pretraining (session 5, --epochs 50 / 100, seeds 0-3, linear then decoder with --reuse): at 100 epochs
PointINS leads on every seed with both probes -- linear test AP 0.066 vs 0.051 (paired +0.015 +- 0.012), decoder
0.048 vs 0.037 (paired +0.011 +- 0.006), mIoU 0.279 vs 0.257 / 0.270 vs 0.231; at 50 epochs no difference yet
(linear paired -0.000 +- 0.015, decoder +0.013 +- 0.025). 5-10 min per 100-epoch pretraining, ~1 min per probe.
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


def probe(checkpoint: str, sets: list[str], out: str, offset_init: str, mode: str) -> dict[str, Any]:
    """One probe run: best val AP checkpoint, scored on the test split (`test/...`, else the last val metrics)."""
    start = time.perf_counter()
    preset = "probe-scannet-decoder" if mode == "decoder" else "probe-scannet"
    result = train("finetune", preset, "quickstart", [*sets, f"probe.offset_init={offset_init}"], out,
                   init_from=checkpoint)
    scores = result.get("test_metrics") or result["metrics"]
    split = "test/" if result.get("test_metrics") else "val/"
    metrics = {k[len(split):]: v for k, v in scores.items() if k.startswith(split)}
    best = result.get("best") or {}
    return {"offset_init": result.get("offset_init"), "split": split.rstrip("/"), **metrics,
            "val_ap_selected": best.get("value"), "selected_epoch": best.get("epoch"),
            "seconds": round(time.perf_counter() - start, 1)}


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
    if report["probes"]:
        rows.insert(0, f"scores on the {next(iter(report['probes'].values()))['split']} split\n")
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
                std = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5  # sample std
                cells.append(f"{mean:.4f} +- {std:.4f}")
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
    parser.add_argument("--eval-every", type=int, default=5, help="probe epochs between validations (selection)")
    parser.add_argument("--mode", choices=["linear", "decoder"], default="linear", help="probing protocol")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--val-scenes", type=int, default=4)
    parser.add_argument("--num-points", type=int, default=4000, help="points per synthetic scene")
    parser.add_argument("--priors", nargs="*", default=["gamma"], choices=["gamma", "lognormal", "fitted"],
                        help="PointINS magnitude priors to pretrain with (one PointINS run each)")
    parser.add_argument("--controls", action="store_true",
                        help="also probe every encoder with probe.offset_init=pretrained (warm-started head)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one full study per seed")
    parser.add_argument("--variant", default="study", help="pretraining preset variant for both methods")
    parser.add_argument("--check-drift", action="store_true",
                        help="report how far each teacher encoder moved from its initialisation and the others")
    parser.add_argument("--pointins-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra preset override for the PointINS pretraining runs only (repeatable), e.g. "
                             "offset.radius=0.3")
    parser.add_argument("--no-base", action="store_true",
                        help="skip the Sonata base run (same seeds and settings reproduce it exactly on CPU)")
    parser.add_argument("--reuse", metavar="STUDY_JSON",
                        help="probe the pretraining checkpoints of an earlier study (its study.json) instead of "
                             "pretraining again, e.g. a --mode decoder study of the linear study's encoders")
    parser.add_argument("--out", default="runs/study-pointins")
    args = parser.parse_args()
    # import every module the study runs now, so that edits to the checkout during a long study do not change it
    import pc3d.methods.pointins  # noqa: F401
    import pc3d.methods.scene_probe  # noqa: F401
    import pc3d.methods.sonata  # noqa: F401
    from pc3d.console import set_verbosity

    set_verbosity(quiet=True, verbose=False)
    report: dict[str, Any] = {"settings": vars(args), "pretraining": {}, "probes": {}, "unsupervised": {},
                              "drift": {}}
    reused = json.loads(open(args.reuse).read())["pretraining"] if args.reuse else None

    def pretrained(name: str, seed: int, method: str, sets: list[str]) -> tuple[str, dict[str, Any]]:
        if reused is None:
            return pretrain(method, sets, args.out, args.variant)
        key = f"{name}, seed {seed}"
        if key not in reused:
            raise SystemExit(f"study_pointins: error: {args.reuse} has no pretraining '{key}'")
        return reused[key]["checkpoint"], {**reused[key], "reused_from": args.reuse}
    for seed in args.seeds:
        data = [f"data.synthetic_count={args.scenes}", f"data.synthetic_val_count={args.val_scenes}",
                f"data.num_points={args.num_points}", f"run.seed={seed}"]
        pretrain_sets = [f"train.epochs={args.epochs}", f"train.save_every={args.epochs}", *data]
        probe_sets = [f"train.epochs={args.probe_epochs}", f"train.eval_every={args.eval_every}",
                      f"train.save_every={args.probe_epochs}", "train.best_metric=ap", *data]
        checkpoints: dict[str, str] = {}
        if not args.no_base:
            checkpoint, info = pretrained("sonata", seed, "sonata", pretrain_sets)
            checkpoints["sonata"] = checkpoint
            report["pretraining"][f"sonata, seed {seed}"] = {"checkpoint": checkpoint, **info}
            report["probes"][f"sonata, seed {seed}"] = {
                "encoder": "sonata", "seed": seed, **probe(checkpoint, probe_sets, args.out, "probe", args.mode)}
            save(report, args.out)
            if args.controls:  # no offset head in Sonata's checkpoint: a random one of PointINS's head shape
                report["probes"][f"sonata, pretrained-head control, seed {seed}"] = {
                    "encoder": "sonata", "seed": seed,
                    **probe(checkpoint, probe_sets, args.out, "pretrained", args.mode)}
                save(report, args.out)
        for prior in args.priors:
            name = f"pointins ({prior} prior)"
            checkpoint, info = pretrained(name, seed, "pointins",
                                          [*pretrain_sets, f"offset.prior={prior}", *args.pointins_set])
            checkpoints[name] = checkpoint
            report["pretraining"][f"{name}, seed {seed}"] = {**info, "checkpoint": checkpoint}
            report["probes"][f"{name}, seed {seed}"] = {
                "encoder": name, "seed": seed, **probe(checkpoint, probe_sets, args.out, "probe", args.mode)}
            save(report, args.out)
            if args.controls:
                report["probes"][f"{name}, pretrained-head control, seed {seed}"] = {
                    "encoder": name, "seed": seed, **probe(checkpoint, probe_sets, args.out, "pretrained", args.mode)}
                save(report, args.out)
            if reused is not None:  # the unsupervised segmentation depends on the pretraining only: reported there
                continue
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
