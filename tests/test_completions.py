"""Shell completions are generated from the app; stale files in completions/ fail here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pc3d.cli.completions import render_all

ROOT = Path(__file__).resolve().parents[1]


def test_completion_files_are_current():
    for name, text in render_all().items():
        on_disk = (ROOT / "completions" / name).read_text()
        assert on_disk == text, f"completions/{name} is stale: run `make completions`"


def _bash_complete(words: list[str]) -> list[str]:
    script = ROOT / "completions" / "pc3d.bash"
    line = " ".join(words)
    probe = (
        f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        "_pc3d; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.split()


def test_bash_completes_commands_options_and_choices():
    assert "pretrain" in _bash_complete(["pc3d", "pre"])
    assert _bash_complete(["pc3d", "pretrain", "--gp"]) == ["--gpus"]
    assert sorted(_bash_complete(["pc3d", "finetune", "--device", ""])) == ["auto", "cpu", "cuda"]
    assert "point-mode" in _bash_complete(["pc3d", "pretrain", "point-m"])
    assert _bash_complete(["pc3d", "data", "sy"]) == ["synth", "synth-raw"]
    assert "lidar" in _bash_complete(["pc3d", "data", "synth", "li"])


@pytest.mark.parametrize("shell,name", [("zsh", "_pc3d"), ("fish", "pc3d.fish")])
def test_other_shells_parse(shell, name):
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} not installed")
    flag = ["-n"] if shell == "zsh" else ["--no-execute"]
    subprocess.run([exe, *flag, str(ROOT / "completions" / name)], check=True)
