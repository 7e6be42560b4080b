"""pc3d: a command-line toolkit for 3D point-cloud deep learning."""

from __future__ import annotations

import sys
from pathlib import Path

__version__ = "0.1.0"


def _unshadow_checkout_root() -> None:
    """Take a source checkout's root off `sys.path`, so its folders cannot shadow installed packages.

    The repository keeps Triton kernels in a top-level `kernels/` folder (installed as `pc3d_kernels`),
    and Hugging Face's `kernels` distribution, which transformers >= 5 requires and imports, has the same
    name. `python -m pc3d`, `python -m pytest` (and pytest-xdist's workers) put the current folder first
    on `sys.path`; run from the checkout root, `import kernels` then finds our folder and every transformers
    model load fails. pc3d itself never needs the root on the path: an editable install maps `pc3d`,
    `pc3d_kernels` and `pc3d_presets` by its own finder, and an already imported `pc3d` loads its
    submodules through `pc3d.__path__`. Only a checkout is touched (a folder holding `pyproject.toml`
    and `kernels/` next to this package); an installed pc3d leaves `sys.path` alone.
    """
    root = Path(__file__).resolve().parent.parent
    if not ((root / "pyproject.toml").is_file() and (root / "kernels").is_dir()):
        return

    def is_root(entry: str) -> bool:
        try:
            return Path(entry or ".").resolve() == root  # "" is the current folder
        except OSError:  # a deleted current folder
            return False

    sys.path[:] = [entry for entry in sys.path if not is_root(entry)]


_unshadow_checkout_root()
