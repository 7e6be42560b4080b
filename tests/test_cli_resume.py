"""`--resume` through the CLI: the run's config.yaml is the truth, drift is refused, `auto` is requeue-safe."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import signal
from pathlib import Path

import pytest
import torch

from pc3d.cli.resume import config_changes, rewrite_resume_argv
from pc3d.engine.checkpoint import read_checkpoint

# Point-MAE quickstart cut to 2 epochs of 2 steps (26 objects, batch 13): seconds on CPU
SMALL = ("--set", "data.synthetic_count=26", "--set", "data.synthetic_test_count=13", "--set", "svm_probe=false",
         "--device", "cpu")
JOB = ("pretrain", "point-mae", "--preset", "quickstart", "--set", "train.epochs=2", *SMALL)


def _tree(root: Path) -> dict[str, str]:
    """Every file below root with a hash of its bytes and its mtime (nothing written means nothing differs)."""
    return {str(p.relative_to(root)): f"{hashlib.sha256(p.read_bytes()).hexdigest()}:{p.stat().st_mtime_ns}"
            for p in sorted(root.rglob("*")) if p.is_file()}


def _stopped(result, code: int) -> str:
    """A run stopped mid-training: its progress lines, then one error line last; nothing on stdout."""
    assert result.code == code, result.err
    lines = result.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("pc3d: error: ")]
    assert errors == [lines[-1]], result.err
    assert "Traceback" not in result.err and result.out == ""
    return lines[-1]


def _one_line_error(result, code: int = 2) -> str:
    assert result.code == code, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pc3d: error: "), result.err
    assert "Traceback" not in result.err and result.out == ""
    return lines[0]


def _stop_at(monkeypatch, step: int) -> None:
    """Preempt the next training at `step` as SIGTERM would (the trainer checkpoints, then stops)."""
    from pc3d.engine import trainer

    monkeypatch.setattr(trainer._Trainer, "_should_stop",
                        lambda self, flag: signal.SIGTERM if self.step == step else 0)


def _weights(result: dict) -> dict[str, torch.Tensor]:
    return read_checkpoint(result["checkpoints"]["last"]).tensors  # model and AdamW moments


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    from pc3d.cli import main

    out = tmp_path_factory.mktemp("whole")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*JOB, "--out", str(out), "--json"]) == 0
    return json.loads(buffer.getvalue())


def test_resume_auto_is_requeue_safe_and_bit_identical(cli, tmp_path, monkeypatch, uninterrupted):
    """The SLURM idiom: the same job line twice; the first starts the run and is preempted, the second finishes it."""
    job = [*JOB, "--out", tmp_path, "--resume", "auto", "--json"]
    _stop_at(monkeypatch, 3)  # step 3 = first step of epoch 2: mid-epoch
    error = _stopped(cli(*job), code=128 + signal.SIGTERM)
    assert "stopped by SIGTERM at step 3" in error
    runs = [p for p in (tmp_path / "point-mae").iterdir() if p.name != "latest"]
    assert len(runs) == 1 and (runs[0] / "config.yaml").is_file()  # auto with no run started one
    assert (tmp_path / "point-mae" / "latest").resolve() == runs[0].resolve()  # the running job is latest
    monkeypatch.undo()
    result = cli(*job)
    assert result.code == 0, result.err
    resumed = json.loads(result.out)
    assert resumed["run_dir"] == str(runs[0]) and resumed["resumed_from"].endswith("step-00000003.json")
    assert resumed["steps"] == uninterrupted["steps"] == 4
    want, got = _weights(uninterrupted), _weights(resumed)
    assert sorted(want) == sorted(got)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name


def test_resume_without_preset_continues_the_runs_own_config(cli, tmp_path, monkeypatch, uninterrupted):
    _stop_at(monkeypatch, 1)
    _stopped(cli(*JOB, "--out", tmp_path), code=128 + signal.SIGTERM)
    monkeypatch.undo()
    # no --preset, no --set: the full point-mae preset (ShapeNet folder, 300 epochs) must not come into it
    result = cli("pretrain", "point-mae", "--resume", "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    resumed = json.loads(result.out)
    assert resumed["steps"] == 4 and resumed["epochs"] == 2
    for name, tensor in _weights(uninterrupted).items():
        assert torch.equal(_weights(resumed)[name], tensor), name


@pytest.fixture
def short_run(cli, tmp_path) -> Path:
    """A finished one-step run (train.max_steps=1) of the quickstart with train.epochs=2."""
    result = cli(*JOB, "--set", "train.max_steps=1", "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    return Path(json.loads(result.out)["run_dir"])


def test_a_command_line_that_changes_the_config_is_refused_and_writes_nothing(cli, tmp_path, short_run):
    before = _tree(tmp_path)
    # the measured case: repeating only --preset quickstart would have run the quickstart's 6 epochs
    error = _one_line_error(cli("pretrain", "point-mae", "--preset", "quickstart", *SMALL, "--resume",
                                "--out", tmp_path))
    assert "--resume: train.epochs 2 -> 6, train.max_steps 1 -> null differ from the run's config.yaml" in error
    assert str(short_run / "config.yaml") in error and "--allow-change" in error
    error = _one_line_error(cli("pretrain", "point-mae", "--resume", "--set", "optim.lr=0.5", "--out", tmp_path))
    assert "optim.lr 0.002 -> 0.5 differs" in error
    error = _one_line_error(cli("pretrain", "point-mae", "--resume", "--seed", "7", "--out", tmp_path))
    assert "run.seed 0 -> 7 differs" in error
    assert _tree(tmp_path) == before
    # the same values again, and run-time fields, are not changes
    result = cli("pretrain", "point-mae", "--resume", "--set", "train.epochs=2", "--device", "cpu", "--nproc", "1",
                 "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["steps"] == 1


def test_allow_change_records_the_change_in_the_run(cli, tmp_path, short_run):
    import yaml

    result = cli("pretrain", "point-mae", "--resume", "--set", "train.max_steps=3", "--allow-change",
                 "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["steps"] == 3
    assert yaml.safe_load((short_run / "config.yaml").read_text())["train"]["max_steps"] == 3
    records = [json.loads(line) for line in (short_run / "metrics.jsonl").read_text().splitlines()]
    marks = [r for r in records if r.get("split") == "resume"]
    assert len(marks) == 1 and marks[0]["step"] == 1
    assert marks[0]["changes"] == {"train.max_steps": {"from": 1, "to": 3}}
    # config.yaml now holds the accepted config: resuming with it again is not a change
    again = cli("pretrain", "point-mae", "--resume", "--out", tmp_path, "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["steps"] == 3
    _one_line_error(cli("pretrain", "point-mae", "--allow-change", "--out", tmp_path))


def test_resume_from_a_run_folder_or_a_checkpoint(cli, tmp_path, short_run):
    sidecar = short_run / "checkpoints" / "last.json"
    for args in (("--resume", short_run), ("--resume", sidecar), ("--resume-from", short_run),
                 (f"--resume={sidecar.with_suffix('.safetensors')}",)):
        result = cli("pretrain", "point-mae", *args, "--json")
        assert result.code == 0, (args, result.err)
        summary = json.loads(result.out)
        assert summary["run_dir"] == str(short_run) and summary["resumed_from"] == str(sidecar)
    assert "not a run folder" in _one_line_error(cli("pretrain", "point-mae", "--resume", tmp_path))
    assert "no such run folder" in _one_line_error(cli("pretrain", "point-mae", "--resume", tmp_path / "nope/x"))
    assert "no earlier run named 'point-mae'" in _one_line_error(
        cli("pretrain", "point-mae", "--resume", "--out", tmp_path / "empty"))
    assert not (tmp_path / "empty").exists()
    # a finetune command does not continue a pretrain run
    assert "is a 'pretrain' run" in _one_line_error(cli("finetune", "cls-synthetic", "--resume", short_run))


def test_resume_value_forms_are_read_before_parsing():
    assert rewrite_resume_argv(["pretrain", "x", "--resume", "auto", "-q"]) == \
        ["pretrain", "x", "--resume-from", "auto", "-q"]
    assert rewrite_resume_argv(["finetune", "x", "--resume", "runs/x/1"]) == \
        ["finetune", "x", "--resume-from", "runs/x/1"]
    assert rewrite_resume_argv(["pretrain", "x", "--resume=a.json"]) == ["pretrain", "x", "--resume-from", "a.json"]
    # a plain flag stays a flag, whatever follows it
    assert rewrite_resume_argv(["pretrain", "--resume", "point-mae"]) == ["pretrain", "--resume", "point-mae"]
    assert rewrite_resume_argv(["pretrain", "x", "--resume", "--json"]) == ["pretrain", "x", "--resume", "--json"]
    assert rewrite_resume_argv(["segment", "a/b.ply", "--resume", "auto"]) == ["segment", "a/b.ply", "--resume", "auto"]


def test_config_changes_ignore_where_a_run_happens():
    before = {"run": {"out": "runs", "name": "a", "device": "cpu", "gpus": 0, "seed": 0}, "train": {"epochs": 40}}
    after = {"run": {"out": "/x", "name": "a", "device": "cuda", "gpus": 4, "seed": 0}, "train": {"epochs": 6}}
    assert config_changes(before, after) == {"train.epochs": {"from": 40, "to": 6}}
