"""Checkpoints: exact resume after SIGKILL, SIGTERM leaves a checkpoint, damaged files refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import engine_toy
import pytest
import torch

from pc3d.engine.checkpoint import (
    CheckpointFolder,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    split_optimizer_state,
)
from pc3d.engine.trainer import fit
from pc3d.errors import InputError
from pc3d.runs import RunRequest

TESTS = Path(__file__).parent
# dropout and input noise draw from the global RNG, so exact resume also proves RNG states are restored
RESUME_SECTIONS = {"train": {"epochs": 3, "log_every": 1, "save_every_steps": 3, "keep_last": 2},
                   "toy": {"dropout": 0.2, "noise": 0.05}}


def _start(config, *flags: str) -> subprocess.Popen:
    preset_file = Path(config.run.out) / f"{config.run.name}-{len(flags)}-{time.monotonic_ns()}.json"
    preset_file.write_text(config.model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", "import engine_toy; engine_toy.main()", str(preset_file), *flags],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_resume_after_sigkill_mid_epoch_is_bit_identical(tmp_path):
    full = _start(engine_toy.preset(tmp_path, "full", **RESUME_SECTIONS))
    marker = tmp_path / "hung"
    # the victim hangs after optimiser step 13 (epoch 2 of 3, 8 steps per epoch); its last checkpoint is step 12
    victim_sections = {**RESUME_SECTIONS, "toy": {**RESUME_SECTIONS["toy"], "hang_at_step": 13,
                                                  "marker": str(marker)}}
    victim = _start(engine_toy.preset(tmp_path, "victim", **victim_sections))
    expected = _finish(full)
    _wait_for(marker, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    checkpoints = CheckpointFolder(next((tmp_path / "victim").iterdir()) / "checkpoints", 2)
    assert read_checkpoint(checkpoints.latest()).meta["step"] == 12
    assert read_checkpoint(checkpoints.latest()).meta["batches_done"] == 4  # mid-epoch

    resumed = _finish(_start(engine_toy.preset(tmp_path, "victim", **RESUME_SECTIONS), "--resume"))
    assert resumed["run_dir"] != expected["run_dir"] and resumed["resumed_from"].endswith("step-00000012.json")
    assert resumed["steps"] == expected["steps"] == 24
    want, got = read_checkpoint(expected["checkpoints"]["last"]), read_checkpoint(resumed["checkpoints"]["last"])
    assert sorted(want.tensors) == sorted(got.tensors)
    for name, tensor in want.tensors.items():  # model and AdamW moments, bit for bit
        assert torch.equal(got.tensors[name], tensor), name
    steps = [json.loads(line)["step"] for line in Path(resumed["run_dir"], "metrics.jsonl").read_text().splitlines()
             if "split" not in json.loads(line)]
    assert steps == list(range(1, 25))  # the killed run's lines after step 12 were replaced, not duplicated


def test_sigterm_writes_a_loadable_checkpoint(tmp_path):
    config = engine_toy.preset(tmp_path, "preempted", train={"epochs": 100, "log_every": 1},
                               toy={"step_delay": 0.02})
    proc = _start(config)
    run_dir = tmp_path / "preempted"
    deadline = time.monotonic() + 60
    while not any(run_dir.glob("*/metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1].startswith("pc3d: error: stopped by SIGTERM at step")
    latest = CheckpointFolder(next(run_dir.iterdir()) / "checkpoints", 2).latest()
    checkpoint = read_checkpoint(latest)
    assert 1 <= checkpoint.meta["step"] < 800
    method = engine_toy.ToyMethod(engine_toy.ToySection())
    method.load_state_dict(checkpoint.model_state)  # strict: every tensor present with its shape


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ckpt")
    return fit(RunRequest(config=engine_toy.preset(out, "done", train={"epochs": 1}), preset_name="toy"),
               engine_toy.build)


def _copy_checkpoint(result: dict, dest: Path) -> Path:
    source = Path(result["checkpoints"]["last"])
    for suffix in (".json", ".safetensors"):
        dest.with_suffix(suffix).write_bytes(source.with_suffix(suffix).read_bytes())
    return dest.with_suffix(".json")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_truncated_checkpoint_refused(finished_run, tmp_path):
    sidecar = _copy_checkpoint(finished_run, tmp_path / "cut")
    data = sidecar.with_suffix(".safetensors").read_bytes()
    sidecar.with_suffix(".safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        read_checkpoint(sidecar)
    assert "truncated" in _one_line(exc)
    sidecar.write_text(sidecar.read_text()[:40])
    with pytest.raises(InputError) as exc:
        read_checkpoint(sidecar)
    assert "not valid JSON" in _one_line(exc)


def test_tampered_checkpoint_refused(finished_run, tmp_path):
    sidecar = _copy_checkpoint(finished_run, tmp_path / "edited")
    data = bytearray(sidecar.with_suffix(".safetensors").read_bytes())
    data[-5] ^= 0xFF  # same size, one flipped byte inside a tensor
    sidecar.with_suffix(".safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError) as exc:
        load_weights(str(sidecar.with_suffix(".safetensors")))
    assert "sha256" in _one_line(exc)


def test_resume_refuses_a_damaged_or_mismatched_checkpoint(finished_run, tmp_path):
    config = engine_toy.preset(tmp_path, "grown", train={"epochs": 1})
    fit(RunRequest(config=config, preset_name="toy"), engine_toy.build)
    bigger = engine_toy.preset(tmp_path, "grown", train={"epochs": 2}, toy={"hidden": 32})
    with pytest.raises(InputError) as exc:
        fit(RunRequest(config=bigger, preset_name="toy", resume=True), engine_toy.build)
    assert "does not fit this model" in _one_line(exc)
    with pytest.raises(InputError, match="no earlier run named 'absent'"):
        fit(RunRequest(config=engine_toy.preset(tmp_path, "absent"), preset_name="toy", resume=True),
            engine_toy.build)


def test_optimizer_state_round_trips(tmp_path):
    param = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.randn(3, 2)
    opt.step()
    tensors, rest = split_optimizer_state(opt.state_dict())
    sidecar = save_checkpoint(tmp_path / "opt", tensors, {"optimizer": rest})
    loaded = read_checkpoint(sidecar)
    fresh = torch.optim.AdamW([torch.nn.Parameter(param.detach().clone())], lr=0.1)
    from pc3d.engine.checkpoint import merge_optimizer_state

    fresh.load_state_dict(merge_optimizer_state(loaded.tensors, loaded.meta["optimizer"]))
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(fresh.state_dict()["state"][0][key], opt.state_dict()["state"][0][key])


def test_load_weights_from_pth_with_weights_only(tmp_path):
    state = {"module.encoder.weight": torch.ones(2, 2), "module.encoder.bias": torch.zeros(2)}
    torch.save({"base_model": state, "epoch": 300}, tmp_path / "official.pth")
    weights = load_weights(str(tmp_path / "official.pth"))
    assert sorted(weights) == ["encoder.bias", "encoder.weight"]
    torch.save({"model": state, "extra": _Pickled()}, tmp_path / "unsafe.pth")
    with pytest.raises(InputError) as exc:
        load_weights(str(tmp_path / "unsafe.pth"))
    assert "weights_only" in _one_line(exc)
    with pytest.raises(InputError, match="not found"):
        load_weights(str(tmp_path / "absent.pth"))


class _Pickled:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""
