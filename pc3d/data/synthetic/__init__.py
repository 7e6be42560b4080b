"""Embedded synthetic data: seeded procedural objects, indoor scenes and LiDAR street scans.

The default data of every command when no dataset is given, and the fixture source of the tests.
`write_synthetic` writes a kind in the public dataset layouts (see pc3d.data.layouts).
"""

from __future__ import annotations

from pc3d.data.synthetic.writer import DEFAULT_COUNT, DEFAULT_POINTS, KINDS, write_synthetic

__all__ = ["DEFAULT_COUNT", "DEFAULT_POINTS", "KINDS", "write_synthetic"]
