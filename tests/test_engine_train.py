"""The training loop end to end on the toy method: loss falls, DDP equals one process, accumulation, logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import engine_toy
import pytest
import torch

from pc3d.config.base import RunConfig
from pc3d.engine.checkpoint import read_checkpoint
from pc3d.engine.distributed import plan_topology
from pc3d.engine.schedule import WarmupCosine
from pc3d.engine.trainer import fit
from pc3d.errors import InputError
from pc3d.runs import RunRequest

TESTS = Path(__file__).parent


def _fit(config, **request):
    return fit(RunRequest(config=config, preset_name="toy", **request), engine_toy.build)


def _weights(result) -> dict[str, torch.Tensor]:
    return read_checkpoint(result["checkpoints"]["last"]).model_state


def _records(result) -> list[dict]:
    return [json.loads(line) for line in Path(result["run_dir"], "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_run_folder_is_complete(tmp_path):
    config = engine_toy.preset(tmp_path, train={"epochs": 6, "log_every": 1, "best_metric": "mse",
                                                "best_mode": "min", "keep_last": 2})
    result = _fit(config)
    steps = [r for r in _records(result) if "split" not in r]
    assert [r["step"] for r in steps] == list(range(1, 49))  # 64 samples / batch 8 = 8 steps x 6 epochs
    first, last = sum(r["mse"] for r in steps[:8]) / 8, sum(r["mse"] for r in steps[-8:]) / 8
    assert last < 0.5 * first
    run = Path(result["run_dir"])
    assert (run / "config.yaml").is_file() and "torch" in json.loads((run / "versions.json").read_text())["versions"]
    # schedule reaches the optimiser: the record of step s carries the lr of its last update (step s - 1)
    schedule = WarmupCosine.from_config(config.optim, 6, 8)
    assert steps[0]["lr"] == pytest.approx(schedule(0)) and steps[20]["lr"] == pytest.approx(schedule(20))
    assert len(list((run / "checkpoints").glob("step-*.json"))) == 2  # keep_last
    best = read_checkpoint(result["checkpoints"]["best"]).meta["best"]
    epochs = [r for r in _records(result) if r.get("split") == "epoch"]
    assert best["value"] == pytest.approx(min(r["val/mse"] for r in epochs))


def test_best_checkpoint_only_judges_validated_epochs(tmp_path):
    """With validation every 2nd epoch, best_metric waits for it and ignores stale values in between."""
    config = engine_toy.preset(tmp_path, train={"epochs": 5, "eval_every": 2, "best_metric": "mse",
                                                "best_mode": "min"})
    result = _fit(config)
    best = read_checkpoint(result["checkpoints"]["best"]).meta["best"]
    assert best["epoch"] in (2, 4, 5)  # epochs after which validation ran (the last one always validates)
    validated = [r for r in _records(result) if r.get("split") == "epoch" and "val/mse" in r]
    assert best["value"] == pytest.approx(min(r["val/mse"] for r in validated))


def test_accumulation_matches_one_big_batch(tmp_path):
    big = _fit(engine_toy.preset(tmp_path, "big", train={"epochs": 2}))
    accumulated = _fit(engine_toy.preset(tmp_path, "acc", train={"epochs": 2, "accumulate": 2}))
    assert big["steps"] == accumulated["steps"] == 16
    for name, value in _weights(big).items():
        torch.testing.assert_close(_weights(accumulated)[name], value, rtol=1e-5, atol=1e-6)


def test_two_process_gloo_ddp_equals_one_process(tmp_path):
    one = _fit(engine_toy.preset(tmp_path, "one", train={"epochs": 2}))
    two = _fit(engine_toy.preset(tmp_path, "two", train={"epochs": 2}, run={"nproc": 2}))
    assert two["world_size"] == 2 and two["steps"] == one["steps"] == 16
    for name, value in _weights(one).items():
        torch.testing.assert_close(_weights(two)[name], value, rtol=1e-5, atol=1e-6)
    assert two["metrics"]["val/mse"] == pytest.approx(one["metrics"]["val/mse"], rel=1e-5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_style_environment_is_used_instead_of_launching(tmp_path):
    """Two processes started from outside with RANK/WORLD_SIZE (what torchrun or SLURM provide) share one run."""
    config = engine_toy.preset(tmp_path, "env", train={"epochs": 1})
    preset_file = tmp_path / "preset.json"
    preset_file.write_text(config.model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(TESTS), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", "import engine_toy; engine_toy.main()", str(preset_file)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert results[0]["run_dir"] == results[1]["run_dir"] and results[0]["world_size"] == 2
    # rank 0 created the folder (and its `latest` link), rank 1 reused it
    assert len([p for p in (tmp_path / "env").iterdir() if p.name != "latest"]) == 1
    single = _fit(engine_toy.preset(tmp_path, "single", train={"epochs": 1}))
    for name, value in _weights(single).items():
        torch.testing.assert_close(_weights(results[0])[name], value, rtol=1e-5, atol=1e-6)


def test_init_from_loads_matching_weights(tmp_path):
    source = _fit(engine_toy.preset(tmp_path, "source", train={"epochs": 1}))
    tuned = _fit(engine_toy.preset(tmp_path, "tuned", train={"epochs": 1, "max_steps": 1},
                                   optim={"lr": 1e-12, "warmup_epochs": 0, "min_lr": 0.0, "weight_decay": 0.0}),
                 init_from=source["checkpoints"]["last"].replace(".json", ".safetensors"))
    assert tuned["steps"] == 1
    for name, value in _weights(source).items():
        torch.testing.assert_close(_weights(tuned)[name], value, rtol=0, atol=1e-9)


def test_device_requests_this_machine_cannot_meet(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="--gpus 2: no CUDA device"):
        plan_topology(RunConfig(gpus=2))
    with pytest.raises(InputError, match="--device cuda"):
        plan_topology(RunConfig(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="--gpus 4: only 1 CUDA device"):
        plan_topology(RunConfig(gpus=4))
    with pytest.raises(InputError, match="use --gpus 2"):
        plan_topology(RunConfig(nproc=2, device="cuda"))


def test_topology_from_environment(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node0"}
    assert plan_topology(RunConfig(), torchrun).mode == "env"
    assert plan_topology(RunConfig(), torchrun).world_size == 4
    slurm = {"SLURM_PROCID": "2", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0", "MASTER_ADDR": "node0"}
    assert (plan_topology(RunConfig(), slurm).mode, plan_topology(RunConfig(), slurm).world_size) == ("env", 8)
    assert plan_topology(RunConfig(nproc=2), {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).mode == "launch"
    assert plan_topology(RunConfig(), {}).mode == "single"


def test_batch_size_must_split_over_workers(tmp_path):
    with pytest.raises(InputError, match="not divisible"):
        _fit(engine_toy.preset(tmp_path, train={"batch_size": 7, "accumulate": 2}))
