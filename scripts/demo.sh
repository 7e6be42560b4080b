#!/usr/bin/env bash
# The main job: every method's quickstart on the embedded synthetic data, on CPU, offline.
# Each stage is pretrain -> finetune -> evaluate (or infer), chained through the --json results.
# DEMO_OUT picks the output folder; DEMO_ONLY=objects,scenes,lidar,parts runs only some stages.
set -euo pipefail
out=${DEMO_OUT:-demo-out}
runs="$out/runs"
only=${DEMO_ONLY:-data,objects,scenes,lidar,parts}
export HF_HUB_OFFLINE=1  # the quickstarts build what they need locally; nothing is downloaded

# field KEY.PATH: read one value of the JSON object on stdin
field() { python -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)' "$1"; }
stage() { [[ ",$only," == *",$1,"* ]]; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

pc3d --version
if stage data || [ ! -d "$out/objects" ]; then
  say "embedded synthetic data (summary tables, previews in $out/*/preview.png)"
  pc3d data synth objects "$out/objects" --count 20
  pc3d data synth scenes "$out/scenes" --count 2
  pc3d data synth lidar "$out/lidar" --count 2
fi

if stage objects; then
  say "GeoMask3D pretraining -> classification finetuning (synthetic objects)"
  pc3d pretrain geomask3d --preset quickstart --out "$runs"
  # a run folder (here its `latest` link) stands for its best, else last, checkpoint
  pc3d finetune cls-synthetic --preset quickstart --from "$runs/geomask3d/latest" --out "$runs"
  say "pc3d predict: the trained classifier on new shapes (a glob; outputs in a run folder, not beside the inputs)"
  pc3d predict "$runs/cls-synthetic/latest" "$out/objects/shapes/chair_*.ply" "$out/objects/shapes/lamp_*.ply" \
    --out "$out"
fi

if stage scenes; then
  say "Point-MoDE block-to-scene pretraining -> detection finetuning -> pc3d detect (synthetic rooms)"
  ckpt=$(pc3d pretrain point-mode --preset quickstart --out "$runs" --json | field checkpoints.last)
  det=$(pc3d finetune det-scannet --preset quickstart --from "$ckpt" --out "$runs" --json | field checkpoints.last)
  pc3d detect "$out/scenes/scenes" --checkpoint "$det" --out "$out"  # a folder: the model loads once
  say "PointINS pretraining -> instance-segmentation linear probe (synthetic rooms) -> pc3d predict"
  ckpt=$(pc3d pretrain pointins --preset quickstart --out "$runs" --json | field checkpoints.last)
  probe=$(pc3d finetune probe-scannet --preset quickstart --from "$ckpt" --out "$runs" --json | field run_dir)
  pc3d predict "$probe" "$out/scenes/scenes" --out "$out"
fi

if stage lidar; then
  say "Affinity3D zero-shot pseudo-labels (oracle features; accuracy vs ground truth in the summary)"
  pc3d pseudolabel affinity3d --preset oracle --data "$out/lidar/semantic_kitti" --set "data.sequences=['00']" \
    --out "$runs"
  say "Affinity3D: SPVCNN trained on seen labels + pseudo-labels, evaluated (mIoU seen/unseen, hIoU)"
  pc3d finetune affinity3d-semantickitti --preset quickstart --out "$runs"
fi

if stage parts; then
  say "PartSTAD text-prompted part segmentation (oracle boxes, then tiny random 2D models)"
  chairs=("$out"/objects/shapes/chair_*.ply)
  chair=${chairs[0]}
  pc3d segment "$chair" --parts "arm,back,leg,seat" --preset oracle --out "$out/segment"
  pc3d segment "$chair" --parts "arm,seat,leg" --preset tiny-random --out "$out/segment-tiny"
fi

# the latest run of each name is the one this demo trained (a reused DEMO_OUT keeps older runs too)
trained=()
for name in "$runs"/*/; do
  latest="${name}latest"  # <out>/<name>/latest: the newest run folder of that name
  if [ -s "$latest/metrics.jsonl" ]; then trained+=("$latest"); fi
done
if ((${#trained[@]})); then
  say "training curves of the ${#trained[@]} runs in one figure (each run also has its own curves.png)"
  pc3d plot "${trained[@]}" --out "$out/curves.png"
fi
say "done: outputs under $out"
