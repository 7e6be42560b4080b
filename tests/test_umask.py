"""Files pc3d writes get the mode the umask gives ordinary files (atomic writes go through mkstemp's 0600)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from pc3d.engine.checkpoint import save_checkpoint
from pc3d.io.atomic import atomic_path, current_umask, write_text_atomic
from pc3d.runs import RunDir


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_the_process_umask(umask):
    assert current_umask() == umask


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    write_text_atomic(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"y")
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.bin") == 0o666 & ~umask


def test_checkpoint_and_config_follow_the_umask(tmp_path, umask):
    run = RunDir.create(tmp_path, "run")
    run.save_config({"method": "x"})
    sidecar = save_checkpoint(run.checkpoints / "last", {"model/w": torch.ones(2)}, {"step": 1})
    for path in (run.path / "config.yaml", run.path / "versions.json", sidecar, sidecar.with_suffix(".safetensors")):
        assert _mode(path) == 0o666 & ~umask, path.name


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_segment_outputs_follow_the_umask(cli, tmp_path, mask):
    from pc3d.data.synthetic.writer import write_synthetic

    write_synthetic("objects", tmp_path / "objects", count=6, points=512, preview=False)  # the 6th is a chair
    previous = os.umask(mask)
    try:
        result = cli("segment", tmp_path / "objects" / "shapes" / "chair_0001.ply", "--parts", "back,leg,seat",
                     "--preset", "oracle", "--out", tmp_path / "out", "--device", "cpu", "--json")
    finally:
        os.umask(previous)
    assert result.code == 0, result.err
    out = Path(json.loads(result.out)["out"])
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"summary.json", "config.yaml", "chair_0001.labels.npy", "chair_0001.parts.ply"}
    assert {p.name: _mode(p) for p in files} == {p.name: 0o666 & ~mask for p in files}
