#!/usr/bin/env bash
# Download, on this (networked, CPU) machine, the wheels that `scripts/gpu_check.py` installs on a bare CUDA
# machine that can download nothing: Python 3.12, torch/triton/transformers/scipy/typer/rich/pyyaml/
# safetensors/huggingface_hub/numpy/pillow/scikit-image/h5py already there, pc3d's other needs missing.
#
#   bash scripts/gpu-wheels.sh          # fills .whl/ (ignored by git; name it in the device call's `carry`)
#
# Only wheels that are missing from .whl/ are fetched. The versions are pinned (the ones pc3d's CPU venv is
# tested with) so the check runs the same code every time. Not here, on purpose:
#   - open3d (several hundred MB; the check avoids every open3d path instead),
#   - spconv-cu120 (a CUDA 12 build; the target has CUDA 13) - spconv-triton stands in for it,
#   - h5py (only pc3d's ScanObjectNN reader imports it, which no step reaches; the target has it anyway).
# The total must stay far below the 64 MiB that travels with the checkout; over MAX_MB this script fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# name==version, one a line; tests/test_gpu_check.py parses this block (keep the format)
PINNED="
pydantic==2.14.4
pydantic-core==2.50.5
annotated-types==0.8.0
typing-inspection==0.4.5
typing-extensions==4.16.0
spconv-triton==1.0.0
"
# pydantic 2.14 needs typing-extensions >= 4.16 (the target's may be older: it shadows it harmlessly)
MAX_MB=${MAX_MB:-20}
DEST=.whl
PYTHON=${PYTHON:-python3}

mkdir -p "$DEST"
# a wheel's file name spells the distribution with underscores, lower case
have() {
  local name=${1%%==*} version=${1##*==}
  compgen -G "$DEST/${name//-/_}-${version}-*.whl" >/dev/null
}
missing=()
for pin in $PINNED; do
  have "$pin" || missing+=("$pin")
done
if ((${#missing[@]})); then
  echo "downloading ${missing[*]}" >&2
  "$PYTHON" -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${missing[@]}"
fi

# two versions of one distribution would stop the install on the target
dupes=$(for f in "$DEST"/*.whl; do basename "$f" | cut -d- -f1 | tr '[:upper:]' '[:lower:]'; done | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "pc3d: error: more than one wheel of: $dupes (remove the stale ones from $DEST/)" >&2
  exit 1
fi
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
ls -l "$DEST"/*.whl | awk '{printf "  %8.1f KiB  %s\n", $5 / 1024, $NF}'
echo "total $(awk -v b="$bytes" 'BEGIN { printf "%.2f MB", b / 1e6 }') in $DEST/ (limit $MAX_MB MB)"
if ((bytes > MAX_MB * 1000000)); then
  echo "pc3d: error: $DEST/ holds more than $MAX_MB MB" >&2
  exit 1
fi
