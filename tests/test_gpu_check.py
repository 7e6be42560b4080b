"""scripts/gpu_check.py without a GPU: the dry run lists the plan, the real run refuses cleanly, and the
wheel list of scripts/gpu-wheels.sh is well formed. (The wheels script itself needs a network: not run.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def _step_names() -> list[str]:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return [step.name for step in gpu_check.plan()]


def test_dry_run_lists_every_step_with_its_budget_and_exits_0(tmp_path):
    proc = _run("--dry-run", "--budget-s", "480", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = _step_names()
    for name in ["kernels", "train-step", "ptv3[torch]", "ptv3[spconv]", "ptv3[spconv-triton]", "ops", "pointins",
                 "qs:point-mae", "qs:geomask3d", "qs:point-mode", "qs:pointins", "qs:affinity3d-semantickitti",
                 "qs:affinity3d-oracle", "qs:partstad-fewshot", "nccl"]:
        assert name in names
    for name in names:
        assert re.search(rf"^\s+{re.escape(name)}\s+\d+ s\s", proc.stdout, re.MULTILINE), name
    assert "total budget 480 s" in proc.stdout
    assert "CUDA-only code paths of pc3d" in proc.stdout and "reached by no step:" in proc.stdout
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_real_run_without_cuda_is_one_error_line_exit_2_and_no_report(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too
    proc = _run("--out", str(tmp_path / "gpu-check.json"), cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error:"), proc.stderr
    assert not (tmp_path / "gpu-check.json").exists()
    assert not list(tmp_path.iterdir())


def test_wheel_pins_parse_one_version_each_and_include_pydantic_and_spconv_triton():
    text = (ROOT / "scripts" / "gpu-wheels.sh").read_text()
    block = re.search(r'^PINNED="\n(.*?)^"', text, re.MULTILINE | re.DOTALL)
    assert block, "PINNED block missing"
    pins = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    names = []
    for pin in pins:
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\d+(?:\.\d+)*)", pin)
        assert match, f"not name==version: {pin!r}"
        names.append(match.group(1).lower().replace("_", "-"))
    assert len(names) == len(set(names)), "two versions of one distribution stop the install"
    for needed in ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "spconv-triton"]:
        assert needed in names
    assert "open3d" not in " ".join(names)  # too big to travel


@pytest.mark.parametrize("text,expected", [
    ('noise\n{"status": "ok", "x": 1}\n', {"status": "ok", "x": 1}),
    ("no json here\n", None),
])
def test_last_json(text, expected):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert gpu_check.last_json(text) == expected
