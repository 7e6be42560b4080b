"""Package layout only (metadata lives in pyproject.toml).

`kernels/` and `presets/` are top-level folders of the repository but install as the
packages `pc3d_kernels` and `pc3d_presets`, which pyproject.toml alone cannot express
next to an automatic package search.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["pc3d", "pc3d.*"]) + ["pc3d_kernels", "pc3d_presets"],
    package_dir={"pc3d_kernels": "kernels", "pc3d_presets": "presets"},
)
