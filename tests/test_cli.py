"""The CLI surface: help, version, the design card's examples, one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from pc3d import __version__
from pc3d.cli import app

COMMANDS = ["pretrain", "finetune", "pseudolabel", "segment", "detect", "eval"]


def _parse(args: list[str]):
    """Parse a command line with the real click tree without running the command."""
    root = typer.main.get_command(app)
    ctx = root.make_context("pc3d", [args[0]], resilient_parsing=True)
    sub = root.get_command(ctx, args[0])
    return sub.make_context(args[0], list(args[1:]), parent=ctx).params


def test_version(cli):
    res = cli("--version")
    assert res.code == 0 and res.out.strip() == f"pc3d {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_real_help(cli, command):
    res = cli(command, "--help")
    assert res.code == 0
    assert "Usage: pc3d" in res.out and "Example" in res.out or "--pred" in res.out
    assert "--json" in res.out


def test_design_card_examples_parse_as_written():
    params = _parse(["pretrain", "point-mode", "--gpus", "8"])
    assert params["method"] == "point-mode" and params["gpus"] == 8
    params = _parse(["segment", "chair.ply", "--parts", "arm,seat,leg"])
    assert [str(c) for c in params["cloud"]] == ["chair.ply"] and params["parts"] == "arm,seat,leg"


def test_common_options_parse():
    params = _parse(["finetune", "cls-modelnet40", "--from", "hf://o/r@v1/m.safetensors", "--set", "train.lr=1e-4",
                     "--set", "train.epochs=2", "--out", "x", "--seed", "3", "--device", "cpu", "--json", "-q"])
    assert list(params["set_"]) == ["train.lr=1e-4", "train.epochs=2"]  # a tuple with older typer
    assert params["init_from"] == "hf://o/r@v1/m.safetensors" and params["seed"] == 3
    # newer typer converts to the enum at parse time, older releases only in the command wrapper
    assert getattr(params["device"], "value", params["device"]) == "cpu" and params["json_out"] and params["quiet"]


def _one_line_error(res, code=2):
    assert res.code == code
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error: "), res.err
    assert "Traceback" not in res.err
    assert res.out == ""


def test_usage_errors_are_one_line_exit_2(cli):
    _one_line_error(cli("pretrain", "--bogus"))
    _one_line_error(cli("pretrain"))
    _one_line_error(cli("pretrain", "x", "--gpus", "-1"))
    _one_line_error(cli("pretrain", "x", "--device", "tpu"))


def test_unknown_preset_and_bad_override_exit_2(cli, tmp_path):
    _one_line_error(cli("pretrain", "no-such-method"))
    preset = tmp_path / "p.yaml"
    preset.write_text("method: nope\ncommand: pretrain\n")
    res = cli("pretrain", "x", "--preset", str(preset))
    _one_line_error(res)
    assert "unknown method 'nope'" in res.err
    res = cli("pretrain", "x", "--preset", str(preset), "--set", "broken")
    _one_line_error(res)
    assert "key.path=value" in res.err


def test_wrong_command_for_preset_exit_2(cli, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("method: nope\ncommand: finetune\n")
    res = cli("pretrain", "x", "--preset", str(preset))
    _one_line_error(res)
    assert "is a 'finetune' preset" in res.err


def test_segment_needs_part_names(cli):
    _one_line_error(cli("segment", "chair.ply", "--parts", " , "))


def test_json_mode_prints_one_object(cli, tmp_path):
    res = cli("data", "synth", "objects", str(tmp_path / "o"), "--count", "2", "--points", "256",
              "--no-preview", "--json")
    assert res.code == 0, res.err
    assert isinstance(json.loads(res.out), dict)
    assert len(res.out.strip().splitlines()) == 1


def test_cli_import_stays_light():
    """`pc3d --help` must not import torch or model code (fast start, fast completion)."""
    heavy = "('torch', 'open3d', 'transformers', 'spconv')"
    code = f"import sys, pc3d.cli; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_exit_code_and_stderr():
    out = subprocess.run([sys.executable, "-m", "pc3d", "pretrain", "--bogus"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stdout == ""


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("args", [
    ("pretrain", "point-mae", "--preset", "quickstart"),
    ("pseudolabel", "affinity3d", "--preset", "oracle"),
    ("segment", "{cloud}", "--parts", "arm,seat,leg", "--preset", "oracle"),
])
def test_device_cuda_without_cuda_is_one_line_exit_2(cli, tmp_path, args):
    """Every command ends like `--gpus 2` does, not in torch's `AssertionError: Torch not compiled with CUDA`."""
    import numpy as np

    cloud = tmp_path / "chair.npy"
    np.save(cloud, np.random.default_rng(0).random((64, 3), dtype=np.float32))
    result = cli(*[a.format(cloud=cloud) for a in args], "--device", "cuda", "--out", tmp_path / "out")
    assert result.code == 2, result.err
    assert result.err.count("\n") == 1 and result.err.startswith("pc3d: error: --device cuda: ")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.safetensors"))


def test_resolve_device_never_falls_back_silently(monkeypatch):
    import torch

    from pc3d.engine.device import resolve_device
    from pc3d.errors import InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="--device cuda"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") == resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
