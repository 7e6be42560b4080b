"""The install itself: no repository folder shadows an installed package, and the lock is complete.

The shadowing tests start fresh interpreters the way the documented entry points do from the repository
root (`python -m pc3d`, `python -m pytest`, pytest-xdist workers: the root first on `sys.path`). Before the
fix, `import kernels` found the repository's `kernels/` folder instead of Hugging Face's `kernels` package
that transformers >= 5 imports, and every transformers model load failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _in_fresh_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    # the root first on sys.path, as `python -m` from the root and pytest-xdist's workers have it
    prelude = f"import sys; sys.path[:0] = [{str(ROOT)!r}, '']\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)


def test_no_top_level_folder_of_the_repository_is_importable_after_pc3d(tmp_path):
    names = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name.isidentifier() and p.name != "pc3d")
    assert "kernels" in names
    code = (
        "import importlib.util, json\n"
        "import pc3d\n"
        f"names = {names!r}\n"
        "found = {}\n"
        "for name in names:\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    if spec is not None:\n"
        "        found[name] = [spec.origin or ''] + list(spec.submodule_search_locations or [])\n"
        "print(json.dumps(found))\n"
    )
    proc = _in_fresh_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    inside = {name: places for name, places in found.items()
              if any(place and Path(place).resolve().is_relative_to(ROOT / name) for place in places)}
    assert not inside, f"repository folders importable by name (they shadow installed packages): {inside}"


def test_installed_kernels_package_is_the_one_transformers_imports(tmp_path):
    """transformers >= 5 requires Hugging Face's `kernels`; with the root on sys.path it must still get that one."""
    pytest.importorskip("kernels")
    code = (
        "import pc3d, kernels\n"
        "from transformers.utils.import_utils import is_kernels_available\n"
        "print(kernels.__file__, is_kernels_available())\n"
    )
    proc = _in_fresh_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    origin = Path(proc.stdout.split()[0]).resolve()
    assert not origin.is_relative_to(ROOT / "kernels"), origin


@pytest.mark.slow
def test_transformers_model_loads_with_the_root_on_sys_path(tmp_path):
    """Today's failure end to end: a real hub-format CLIP saved and loaded through transformers."""
    code = (
        "from pc3d.foundation.clip import ClipEncoder, build_tiny_random_clip\n"
        "build_tiny_random_clip()\n"
        "from pc3d.foundation.clip import TINY_RANDOM_CLIP\n"
        "encoder = ClipEncoder(TINY_RANDOM_CLIP)\n"
        "print('loaded', type(encoder).__name__)\n"
    )
    proc = _in_fresh_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded ClipEncoder" in proc.stdout


def test_lowest_constraints_pin_exactly_pyprojects_lower_bounds():
    """`make test-lowest` installs constraints-lowest.txt: each pin must be the bound pyproject states, so a
    raised or lowered bound cannot go untested."""
    import re

    from packaging.version import Version

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {}
    for dep in deps:
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", dep)
        assert match, f"dependency without a lower bound: {dep}"
        bounds[match[1].lower().replace("_", "-")] = Version(match[2])
    pins = {}
    for line in (ROOT / "constraints-lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = Version(version.strip())
    # torch: the local CPU wheel stands in (PyPI's old torch is a CUDA build); open3d-cpu is optional at run time
    untested = {"torch", "open3d-cpu"}
    assert {k: v for k, v in pins.items() if k not in untested} == {k: v for k, v in bounds.items()
                                                                     if k not in untested}
