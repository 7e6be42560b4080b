"""Shared fixtures: run the CLI in-process and capture exit code, stdout and stderr; an empty offline hub cache."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never touch the network
# pytest-xdist runs one worker per core: more than one OpenMP thread per worker oversubscribes the
# CPU and makes the many small tensor ops of these tests 10-100x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run `pc3d ARGS...` in-process through the real entry point (same error path as the console script)."""
    from pc3d.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of the test's own, offline: tiny random models are written into it."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"
