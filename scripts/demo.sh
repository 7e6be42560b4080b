#!/usr/bin/env bash
# The main job on the embedded synthetic data (CPU, minutes). Each method adds its quickstart here.
set -euo pipefail
out=${DEMO_OUT:-demo-out}
pc3d --version
pc3d data synth objects "$out/objects" --count 20
pc3d data synth scenes "$out/scenes" --count 2
pc3d data synth lidar "$out/lidar" --count 2
echo "previews: $out/objects/preview.png $out/scenes/preview.png $out/lidar/preview.png"
