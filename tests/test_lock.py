"""scripts/lock.py: the lock pins what is installed, and a mismatch is named in one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("pc3d_lock_script", ROOT / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)


def test_repository_lock_pins_every_runtime_dependency_exactly():
    pins = lock.read_lock(ROOT / "requirements-lock.txt")
    for name in ("torch", "transformers", "kernels", "huggingface-hub", "numpy", "pydantic", "typer", "pytest"):
        assert name in pins, name
    assert "pc3d" not in pins and "pip" not in pins
    # transitive dependencies are pinned too (kernels comes only through transformers)
    assert len(pins) > 50


def test_differences_name_each_changed_added_and_missing_package():
    rows = lock.differences({"torch": "2.13.0+cpu", "numpy": "2.4.6", "gone": "1.0"},
                            {"torch": "2.13.0+cpu", "numpy": "2.5.0", "new-pkg": "0.1"})
    assert rows == ["gone 1.0 -> absent", "new-pkg absent -> 0.1", "numpy 2.4.6 -> 2.5.0"]


def test_names_are_compared_canonically(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text("# header\nHuggingFace_Hub==2.4.0  # trailing comment\n\nzope.interface==1\n")
    assert lock.read_lock(path) == {"huggingface-hub": "2.4.0", "zope-interface": "1"}
    path.write_text("numpy>=2\n")
    with pytest.raises(SystemExit, match="expected NAME==VERSION"):
        lock.read_lock(path)


def test_check_prints_one_line_and_fails_when_the_environment_differs(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text("torch==0.0.1\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock.py"), "check", str(path),
                           "--label", "make test-latest failed"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("make test-latest failed: versions that differ from")
    assert "torch 0.0.1 -> " in proc.stderr


def test_write_is_atomic_and_respects_the_umask(tmp_path):
    import os

    path = tmp_path / "lock.txt"
    old = os.umask(0o027)
    try:
        lock.write(path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert lock.read_lock(path) == lock.installed()
    assert not list(tmp_path.glob(".lock.txt.*"))
